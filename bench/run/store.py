"""Result records: one JSON file per run, written atomically, read back for tables."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.run.spec import RunSpec

SCHEMA_VERSION = 1
RUN_FILE_GLOB = "[0-9]*T[0-9]*Z_*.json"

#: Sections later features fill in; until then a result says why they are absent.
TELEMETRY_ABSENT = "GPU telemetry sampling is not part of this version of the harness"
COST_ABSENT = "runs are priced when compared (bench compare / bench report), not when measured"


class ResultError(ValueError):
    """A file that is not a result record this harness can read."""


def new_record(spec: RunSpec, environment: dict[str, Any]) -> dict[str, Any]:
    """A record with every section present; the runner fills in what it measured."""
    now = datetime.now(UTC)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": f"{now:%Y%m%dT%H%M%SZ}_{spec.label}_{uuid.uuid4().hex[:6]}",
        "created_utc": now.isoformat(timespec="seconds"),
        "spec": spec.to_dict(),
        "outcome": {"status": "error", "message": "the run did not finish"},
        "environment": environment,
        "workload": None,
        "timing": None,
        "throughput": None,
        "latency": None,
        "latencies_ms": [],
        "telemetry": {"available": False, "reason": TELEMETRY_ABSENT},
        "cost": {"available": False, "reason": COST_ABSENT},
    }


def write_record(record: dict[str, Any], out_dir: Path) -> Path:
    """Write ``<run_id>.json`` into ``out_dir`` atomically (no half-written files)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{record['run_id']}.json"
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh, indent=1, allow_nan=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_record(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(data, dict) or "schema_version" not in data or "spec" not in data:
        raise ResultError(f"{path}: not a benchmark result (no schema_version/spec)")
    if data["schema_version"] > SCHEMA_VERSION:
        raise ResultError(
            f"{path}: schema version {data['schema_version']} is newer than this harness "
            f"reads ({SCHEMA_VERSION}); update the harness"
        )
    return data


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
