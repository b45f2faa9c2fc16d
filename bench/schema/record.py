"""The result record of one run, as typed dataclasses, and the one place that turns it into
JSON and back.

Version 2 adds the scenario section and the workload's epoch size to version 1; version 3
adds the execution mode (compile, CUDA graphs, timing) to the spec and the execution
section. Older files are upgraded on reading and show the same numbers: they were eager
runs timed synchronously. Every reader of results goes through :class:`RunRecord`.
"""

from __future__ import annotations

import dataclasses
import reprlib
import types
import typing
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, Union

import dacite

from bench.schema.gpu import GpuInfo
from bench.schema.spec import RunSpec, SpecError
from bench.schema.telemetry import (
    Mfu,
    TelemetrySummary,
)

SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)

COST_ABSENT = "runs are priced when compared (bench compare / bench report), not when measured"
UNFINISHED = "the run did not finish"


class ResultError(ValueError):
    """A file or mapping that is not a result record this harness can read."""


@dataclass
class Outcome:
    #: ok | error | oom | target_missed (a to-accuracy run that measured everything but did
    #: not reach its target); ``running`` only in the worker's checkpoints, never in a
    #: stored run.
    status: str = "running"
    message: str | None = UNFINISHED
    traceback: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class InstanceFacts:
    """The EC2 instance the run was on, from the metadata service or given by the user."""

    instance_type: str | None = None
    region: str | None = None
    availability_zone: str | None = None
    lifecycle: str | None = None
    source: str = "absent"
    reason: str | None = None


@dataclass
class ProjectFacts:
    commit: str | None = None
    dirty: bool | None = None


@dataclass
class Environment:
    """What was known about the machine and software; ``framework`` is filled in the worker
    by the backend (CUDA runtime, cuDNN, the device's name as the framework sees it)."""

    hostname: str | None = None
    os: str | None = None
    python: str | None = None
    python_executable_env: str | None = None
    cpu_model: str | None = None
    cpu_count_logical: int | None = None
    cpu_count_usable: int | None = None
    memory_total_bytes: int | None = None
    gpu_count: int = 0
    gpus: list[GpuInfo] = field(default_factory=list)
    driver_version: str | None = None
    cuda_visible_devices: str | None = None
    packages: dict[str, str] = field(default_factory=dict)
    project: ProjectFacts = field(default_factory=ProjectFacts)
    nvml: dict[str, Any] = field(default_factory=dict)
    instance: InstanceFacts = field(default_factory=InstanceFacts)
    framework: dict[str, Any] = field(default_factory=dict)
    #: How the GPUs are connected (``bench.telemetry.topology``): NVLink or PCIe only.
    interconnect: dict[str, Any] = field(default_factory=dict)

    def device_name(self, device: str) -> str:
        """The GPU's name for ``cuda:N`` runs, else the CPU model and its usable cores."""
        if device.startswith("cuda"):
            name = self.framework.get("device_name")
            if not name:
                ordinal = int(device.split(":")[1]) if ":" in device else 0
                name = self.gpus[ordinal].name if ordinal < len(self.gpus) else device
            return str(name)
        cpu = self.cpu_model or "CPU"
        cores = self.cpu_count_usable or self.cpu_count_logical
        return f"{cpu} ({cores} cores)" if cores else cpu


@dataclass
class WorkloadFacts:
    """What the timed step does and how much arithmetic it holds."""

    implementation: str
    step_description: str
    samples_per_step: int
    flops_forward_per_sample: float | None
    flops_source: str
    #: Training counts forward + backward as 3x the forward FLOPs; inference 1x.
    flops_factor: int
    fp32_uses_tf32: bool
    details: dict[str, Any] | None = None
    #: Samples in one epoch of the workload's reference dataset (None: version-1 record).
    epoch_samples: int | None = None


@dataclass
class ScenarioFacts:
    """How work was issued: ``loop`` is a fixed loop of synchronized steps."""

    name: str = "loop"
    #: ``synchronized``: the host waits for the device after every step before the clock;
    #: ``pipelined``: steps queued without waiting, one synchronize at the window's end;
    #: ``loadgen``: MLPerf LoadGen issued the queries and timed them.
    timing: str = "synchronized"
    #: Why the timing is not the one the spec asked for (a pipelined run whose step waits
    #: for the device inside the framework is synchronized in fact); None when it is.
    timing_reason: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    #: LoadGen's summary: valid or not and why, completed QPS, latency percentiles, early
    #: stopping (``bench.run.loadgen_log``), and the batching SUT's statistics.
    result: dict[str, Any] | None = None
    #: Directory beside the record holding the scenario's own files (LoadGen's logs).
    artifacts: str | None = None


@dataclass
class Execution:
    """How the step ran, beyond the spec's switches, and what it cost once before timing."""

    #: What the path did (channels-last, fused optimizer, the attention kernel that ran,
    #: the framework's graph and fusion switches, ONNX Runtime's provider options).
    details: dict[str, Any] = field(default_factory=dict)
    #: One-off costs outside the measured window, in seconds: ``setup_s`` (build and stage),
    #: ``compile_s`` (the first compiled call), ``capture_s`` (CUDA graph capture),
    #: ``engine_build_s`` (ONNX Runtime session and engines), ``first_step_s`` (the first
    #: warm-up step).
    one_off_s: dict[str, float] = field(default_factory=dict)
    #: Pipelined timing: how the steps' device time was measured (``cuda_events``,
    #: ``host_clock``), or None where it could not be.
    step_timer: str | None = None
    #: The top kernels (or operators on the CPU) of a profiled stretch after the window.
    profile: list[dict[str, Any]] | None = None


@dataclass
class DataFacts:
    """Where a run's batches came from, and how long the timed steps waited for them."""

    #: ``synthetic`` (staged before timing) or the dataset path.
    source: str = "synthetic"
    format: str | None = None
    samples: int | None = None
    loader_workers: int | None = None
    #: Host time the measured steps spent waiting for the loader's next batch.
    wait_s: float | None = None
    #: ``wait_s`` over the window: near 1 means the input pipeline bounds the run.
    wait_share: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Timing:
    warmup_iters: int
    warmup_s: float
    measured_iters: int
    measured_samples: int
    window_s: float
    #: Wall-clock (unix) phase boundaries: warmup_start, measure_start, measure_end.
    marks_unix_s: dict[str, float] = field(default_factory=dict)


@dataclass
class Throughput:
    samples_per_s: float
    iters_per_s: float
    tflops_per_s: float | None = None
    mfu: Mfu | None = None


@dataclass
class Latency:
    """Per-iteration latency statistics in milliseconds."""

    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    #: None where the figures are a reference tool's that gives no spread (LoadGen).
    stdev_ms: float | None
    iqr_ms: float | None
    cv: float | None
    #: Percentiles the iteration count is too small for (``p95``, ``p99``).
    unreliable_percentiles: list[str] = field(default_factory=list)


@dataclass
class Flag:
    code: str
    message: str


@dataclass
class Validity:
    flags: list[Flag] = field(default_factory=list)


@dataclass
class RankFacts:
    """One data-parallel rank (or inference replica) of a multi-device run, as it measured
    itself: the run's own figures are the ranks' together."""

    rank: int
    device: str
    device_name: str | None = None
    status: str = "ok"
    message: str | None = None
    measured_samples: int | None = None
    window_s: float | None = None
    samples_per_s: float | None = None
    latency: Latency | None = None
    telemetry: TelemetrySummary = field(default_factory=TelemetrySummary)
    flags: list[Flag] = field(default_factory=list)
    run_id: str | None = None
    #: The rank's own account of the distributed set-up (``execution.details.distributed``).
    distributed: dict[str, Any] | None = None


@dataclass
class CostSection:
    available: bool = False
    reason: str | None = COST_ABSENT


@dataclass
class RunRecord:
    run_id: str
    created_utc: str
    spec: RunSpec
    outcome: Outcome = field(default_factory=Outcome)
    environment: Environment = field(default_factory=Environment)
    workload: WorkloadFacts | None = None
    scenario: ScenarioFacts | None = None
    execution: Execution = field(default_factory=Execution)
    data: DataFacts = field(default_factory=DataFacts)
    timing: Timing | None = None
    throughput: Throughput | None = None
    latency: Latency | None = None
    latencies_ms: list[float] = field(default_factory=list)
    telemetry: TelemetrySummary = field(default_factory=TelemetrySummary)
    #: Multi-device runs: each rank's own figures (empty for one-device runs).
    ranks: list[RankFacts] = field(default_factory=list)
    cost: CostSection = field(default_factory=CostSection)
    validity: Validity = field(default_factory=Validity)
    #: The version of the file it was read from (written files are always the current one).
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def new(cls, spec: RunSpec, environment: Environment, label: str) -> RunRecord:
        """A record for a run about to start, named by the run's ``label`` (the registry's
        ``run_label``, :func:`bench.run.store.new_record`); its outcome says it did not
        finish until the runner sets it."""
        now = datetime.now(UTC)
        return cls(
            run_id=f"{now:%Y%m%dT%H%M%SZ}_{label}_{uuid.uuid4().hex[:6]}",
            created_utc=now.isoformat(timespec="seconds"),
            spec=spec,
            environment=environment,
            # a run that fails before its loader reports says where its data came from
            data=(
                DataFacts(source=spec.data, loader_workers=spec.loader_workers)
                if spec.data is not None
                else DataFacts()
            ),
        )

    @property
    def ok(self) -> bool:
        return self.outcome.ok

    @property
    def device_name(self) -> str:
        return self.environment.device_name(self.spec.device)

    @property
    def samples_per_s(self) -> float | None:
        return self.throughput.samples_per_s if self.throughput is not None else None

    @property
    def loadgen_valid(self) -> bool | None:
        """LoadGen's verdict for a LoadGen scenario run; None for the loop."""
        result = self.scenario.result if self.scenario is not None else None
        if not result or "valid" not in result:
            return None
        return bool(result["valid"])

    # -- (de)serialisation: the only place that knows the JSON layout ----------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON mapping, in the current version's layout (whatever version was read)."""
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for f in dataclasses.fields(self):
            if f.name != "schema_version":
                out[f.name] = to_plain(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, data: Any) -> RunRecord:
        """A record from its JSON mapping, any readable version; ResultError if malformed."""
        if not isinstance(data, dict) or "schema_version" not in data or "spec" not in data:
            raise ResultError("not a benchmark result (no schema_version/spec)")
        version = data["schema_version"]
        if isinstance(version, bool) or not isinstance(version, int):
            raise ResultError(f"schema version {version!r} is not a number")
        if version > SCHEMA_VERSION:
            raise ResultError(
                f"schema version {version} is newer than this harness reads "
                f"({SCHEMA_VERSION}); update the harness"
            )
        if version not in READABLE_VERSIONS:
            raise ResultError(f"schema version {version} is not readable")
        if version == 1:
            data = _upgrade_v1(data)
        if version <= 2:
            data = _upgrade_v2(data)
        try:
            spec = RunSpec.from_dict(data["spec"])
            record = from_plain(cls, {**data, "spec": spec})
        except (SpecError, TypeError, ValueError, KeyError) as exc:
            raise ResultError(f"malformed result record: {exc}") from exc
        return record


def _upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 had no scenario section and no epoch size, and its mean power was the
    mean of NVML's sampled readings: where the energy counter was read, mean power becomes
    energy over the window, as version 2 measures it, and the sampled mean is kept."""
    out = dict(data)
    spec = out.get("spec") or {}
    if out.get("workload") is not None and out.get("timing") is not None:
        out.setdefault("scenario", {"name": spec.get("scenario", "loop")})
    tele = out.get("telemetry")
    timing = out.get("timing")
    if isinstance(tele, dict) and tele.get("power_mean_w") is not None:
        tele = {**tele, "power_sampled_mean_w": tele["power_mean_w"]}
        tele["power_method"] = "sampled_mean"
        window = timing.get("window_s") if isinstance(timing, dict) else None
        energy = tele.get("energy_j")
        if tele.get("energy_method") == "nvml_energy_counter" and energy and window:
            tele["power_mean_w"] = energy / window
            tele["power_method"] = "nvml_energy_counter"
        out["telemetry"] = tele
    return out


def _upgrade_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Before version 3 every run was eager and timed with a synchronize after each step."""
    spec = data.get("spec")
    if not isinstance(spec, dict):
        return data
    spec = {**spec, "timing": spec.get("timing", "synchronized")}
    return {**data, "spec": spec}


def to_plain(value: Any) -> Any:
    """Dataclasses to dicts, tuples to lists, recursively; everything else as it is."""
    if isinstance(value, RunSpec):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


T = TypeVar("T")


def _json_float(value: Any) -> Any:
    """A float field's value: JSON writes a whole float as an int (``3``), read back as the
    float it was; a bool is no number here (dacite alone would take it)."""
    if isinstance(value, bool):
        raise dacite.WrongTypeError(field_type=float, value=value)
    return float(value) if isinstance(value, int) else value


#: Lists become the tuples a field declares (a GPU's compute capability).
_READING = dacite.Config(cast=[tuple], type_hooks={float: _json_float})


def from_plain(cls: type[T], data: Any) -> T:
    """Build dataclass ``cls`` from a mapping, converting nested values by the field types
    (dacite). Missing fields take their defaults; unknown keys are ignored (a newer minor
    writer); a missing or mistyped value is a TypeError naming its field."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    try:
        return dacite.from_dict(cls, data, _READING)
    except dacite.WrongTypeError as exc:
        why = _mismatch(exc.field_type, exc.value)
        raise TypeError(f"{cls.__name__}.{exc.field_path}: {why}") from None
    except dacite.MissingValueError as exc:
        raise TypeError(f"{cls.__name__}.{exc.field_path}: missing") from None


def _mismatch(expected: Any, value: Any) -> str:
    """What is wrong with ``value`` where a field declares ``expected``."""
    if value is None:
        return "null where a value is required"
    if typing.get_origin(expected) in (Union, types.UnionType):  # X | None: X
        inner = [t for t in typing.get_args(expected) if t is not type(None)]
        expected = inner[0] if len(inner) == 1 else expected
    origin = typing.get_origin(expected) or expected
    if (origin is dict or dataclasses.is_dataclass(origin)) and not isinstance(value, dict):
        return "expected a mapping"
    # (a string read where a list is declared reaches here as a string)
    if origin in (list, tuple) and not isinstance(value, list | tuple):
        return "expected a list"
    name = expected.__name__ if expected is origin and isinstance(expected, type) else expected
    return f"expected {name}, got {reprlib.repr(value)}"
