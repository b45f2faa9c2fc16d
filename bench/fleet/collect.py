"""What a fleet brought back: the manifest of its instance types, the result records under
``<out>/<instance type>/``, a summary per instance type and the report over them. Pure."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from bench.analysis.compare import compare
from bench.analysis.pricing import Pricing
from bench.fleet.plan import FleetPlan
from bench.run.ec2 import validate_instance_type
from bench.run.store import load_records, write_json_atomic
from bench.schema.record import ResultError, RunRecord

#: The manifest beside the instance directories: what was launched and how each ended.
MANIFEST = "fleet.json"
MANIFEST_VERSION = 1
#: The suite's exit status, written by the run command beside its results.
EXIT_CODE_FILE = "exit_code"
#: The job's log as SkyPilot streamed it, and the launch's, in each instance's directory.
JOB_LOG, LAUNCH_LOG = "job.log", "launch.log"

#: How an instance type's part of the fleet ended (or how far it got).
PLANNED, LAUNCHING, RUNNING = "planned", "launching", "running"
#: No capacity or no quota for the instance type: nothing ran on it.
UNAVAILABLE = "unavailable"
#: The launch failed, or the results could not be brought back (the cluster was torn down).
FAILED = "failed"
#: The run ended and its results came back (the message says if the suite failed).
COLLECTED = "collected"
#: Stopped by Ctrl-C or SIGTERM; its cluster was torn down.
INTERRUPTED = "interrupted"
FINAL = frozenset({UNAVAILABLE, FAILED, COLLECTED, INTERRUPTED})


@dataclass
class InstanceEntry:
    instance_type: str
    cluster_name: str
    hourly_usd: float
    cost_usd_max: float
    status: str = PLANNED
    message: str | None = None


@dataclass
class Manifest:
    suite: str
    precision: str | None
    use_spot: bool
    region: str
    created_utc: str
    instances: dict[str, InstanceEntry] = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    @classmethod
    def for_plan(cls, plan: FleetPlan) -> Manifest:
        o = plan.options
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return cls(
            suite=o.suite,
            precision=o.precision,
            use_spot=o.use_spot,
            region=o.region,
            created_utc=now,
            instances={
                t.instance_type: InstanceEntry(
                    t.instance_type, t.cluster_name, t.hourly_usd, round(t.cost_usd, 4)
                )
                for t in plan.tasks
            },
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        try:
            if data["version"] != MANIFEST_VERSION:
                raise ResultError(f"manifest version {data['version']} is not {MANIFEST_VERSION}")
            fields = {k: v for k, v in data.items() if k != "instances"}
            entries = {name: InstanceEntry(**e) for name, e in data["instances"].items()}
            return cls(**fields, instances=entries)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ResultError(f"not a fleet manifest: {exc!r}") from None


def write_manifest(root: Path, manifest: Manifest) -> Path:
    return write_json_atomic(manifest.to_dict(), root / MANIFEST)


def read_manifest(root: Path) -> Manifest | None:
    """The manifest under ``root``, or None where there is none."""
    path = root / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultError(f"{path}: not a readable JSON file ({exc})") from None
    try:
        return Manifest.from_dict(data)
    except ResultError as exc:
        raise ResultError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class InstanceSummary:
    """One instance type's results as they came back."""

    instance_type: str
    #: The manifest's word for how it ended; None where the manifest does not list it.
    status: str | None
    message: str | None
    runs: int
    ok: int
    #: The suite's exit status from the instance (None: it never wrote one).
    exit_code: int | None
    #: Files that could not be read, runs recorded on another instance type.
    problems: tuple[str, ...]


def instance_dirs(root: Path) -> list[Path]:
    """The directories under ``root`` named like an instance type, sorted."""
    out = []
    for path in sorted(root.iterdir()) if root.is_dir() else ():
        try:
            validate_instance_type(path.name)
        except ValueError:
            continue
        if path.is_dir():
            out.append(path)
    return out


def _exit_code(directory: Path) -> int | None:
    try:
        return int((directory / EXIT_CODE_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _records(directory: Path, problems: list[str]) -> list[tuple[Path, RunRecord]]:
    skipped: list[str] = []
    runs = load_records([directory], strict=False, skipped=skipped)
    problems += [f"skipped {reason}" for reason in skipped]
    for path, record in runs:
        recorded = record.environment.instance.instance_type
        if recorded != directory.name:
            problems.append(f"{path.name} was recorded on {recorded or 'no instance type'}")
    return runs


def summarize(root: Path) -> list[InstanceSummary]:
    """A summary for each instance type of the manifest and each instance directory."""
    manifest = read_manifest(root)
    entries = manifest.instances if manifest else {}
    names = list(entries) + [d.name for d in instance_dirs(root) if d.name not in entries]
    out = []
    for name in names:
        directory = root / name
        problems: list[str] = []
        runs = _records(directory, problems) if directory.is_dir() else []
        entry = entries.get(name)
        out.append(
            InstanceSummary(
                instance_type=name,
                status=entry.status if entry else None,
                message=entry.message if entry else None,
                runs=len(runs),
                ok=sum(r.ok for _, r in runs),
                exit_code=_exit_code(directory),
                problems=tuple(problems),
            )
        )
    return out


def render_summary(summaries: Iterable[InstanceSummary]) -> str:
    """The summary table, then each instance type's message and problems."""
    rows, notes = [], []
    for s in summaries:
        code = "" if s.exit_code is None else str(s.exit_code)
        rows.append([s.instance_type, s.status or "(not in the manifest)", s.runs, s.ok, code])
        if s.message:
            notes.append(f"{s.instance_type}: {s.message}")
        notes += [f"{s.instance_type}: {p}" for p in s.problems]
    table = tabulate(
        rows, headers=["instance", "status", "runs", "ok", "suite exit"], tablefmt="github"
    )
    return "\n".join([table, *notes])


def fleet_records(root: Path) -> list[tuple[Path, RunRecord]]:
    """Every readable record under the instance directories of ``root``."""
    dirs = instance_dirs(root)
    runs = load_records(dirs, strict=False, skipped=[]) if dirs else []
    if not runs:
        raise ResultError(f"no readable result files under {root}/<instance type>/")
    return runs


def report(root: Path, out: Path, pricing: Pricing, title: str) -> dict[str, Path]:
    """``bench report`` over the fleet's records (priced by the instance types they
    recorded): report.md, report.html and runs.csv in ``out``."""
    runs = fleet_records(root)
    from bench.analysis.report import build  # matplotlib: only when a report is asked for

    return build(compare(runs, pricing), out, title)
