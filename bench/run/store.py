"""Where records live: one JSON file per run, written atomically, read back for tables."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from bench.run import registry
from bench.run.registry import run_label
from bench.schema.record import Environment, ResultError, RunRecord
from bench.schema.spec import RunSpec, SpecError

RUN_FILE_GLOB = "[0-9]*T[0-9]*Z_*.json"


def new_record(spec: RunSpec, environment: Environment) -> RunRecord:
    """The record of a run about to start, its id made of the time, its label and a nonce."""
    return RunRecord.new(spec, environment, run_label(spec))


def weights_dir_name(run_id: str) -> str:
    """The folder beside a record that holds its training run's saved weights."""
    return f"{run_id}.weights"


class OutputError(OSError):
    """A directory the harness cannot write its results into; the message names it."""


def check_writable(directory: Path, option: str = "--out") -> None:
    """Refuse, before anything runs, a ``directory`` that cannot be created or written
    (read-only, under a file, no permission): one sentence naming it."""
    created = [p for p in (directory, *directory.parents) if not p.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        why = exc.strerror if exc.filename == str(directory) else describe(exc)
        raise OutputError(f"{option} {directory}: cannot write there ({why})") from None
    finally:
        for folder in created:  # deepest first: a check leaves no trace
            with contextlib.suppress(OSError):
                folder.rmdir()


def describe(exc: OSError) -> str:
    """An OS error as its reason and path, without Python's ``[Errno N]`` prefix."""
    reason = exc.strerror or str(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason


def write_json_atomic(data: object, path: Path) -> Path:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename, so a reader
    never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, allow_nan=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_record(record: RunRecord, out_dir: Path) -> Path:
    """Write ``<run_id>.json`` into ``out_dir`` atomically (no half-written files)."""
    return write_json_atomic(record.to_dict(), out_dir / f"{record.run_id}.json")


def load_record(path: Path) -> RunRecord:
    """The record in ``path``; ResultError if it is no record, or one of a workload or
    backend this harness does not know (its tables could not show it)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultError(f"{path}: not a readable JSON file ({exc})") from exc
    try:
        record = RunRecord.from_dict(data)
        registry.check_names(record.spec.workload, record.spec.backend)
    except SpecError as exc:
        raise ResultError(f"{path}: malformed result record: {exc}") from exc
    except ResultError as exc:
        raise ResultError(f"{path}: {exc}") from exc
    return record


def result_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Expand directories to the result files under them, in name (time) order.

    In directories only files named like run ids (``<UTC time>Z_<label>_<id>.json``) count,
    so notes kept beside runs (``env.json``, ``overhead.json``) are not mistaken for runs.
    """
    for path in paths:
        if path.is_dir():
            yield from sorted(path.rglob(RUN_FILE_GLOB))
        elif path.exists():
            yield path
        else:
            raise ResultError(f"{path}: no such file or directory")


def load_records(
    paths: Iterable[Path], *, strict: bool = True, skipped: list[str] | None = None
) -> list[tuple[Path, RunRecord]]:
    """The records under ``paths``. With ``strict`` the first unreadable or malformed file
    raises; otherwise it is left out and its reason appended to ``skipped``."""
    records = []
    for path in result_files(paths):
        try:
            records.append((path, load_record(path)))
        except ResultError as exc:
            if strict or skipped is None:
                raise
            skipped.append(str(exc))
    return records
