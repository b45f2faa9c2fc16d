"""The run specification: one frozen record, validated on creation, stored whole in results."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bench.schema.errors import SpecError as SpecError

MODES = ("train", "infer")
PRECISIONS = ("fp32", "fp16", "bf16")
#: ``auto``: bf16 where the GPU and backend have it, else fp16; fp32 on the CPU. Resolved
#: before the run starts; stored specs hold the resolved precision.
AUTO_PRECISION = "auto"
#: How work is issued (bench.run.scenarios): ``loop``, a fixed loop of synchronized steps,
#: or one of MLPerf LoadGen's scenarios (inference only).
LOADGEN_SCENARIOS = ("single-stream", "multi-stream", "server", "offline")
#: Scenarios that measure accuracy on a dataset's test split (bench.run.accuracy):
#: ``evaluate`` once, or train ``to-accuracy`` until a target metric, evaluating as it goes.
ACCURACY_SCENARIOS = ("evaluate", "to-accuracy")
SCENARIOS = ("loop", *LOADGEN_SCENARIOS, *ACCURACY_SCENARIOS)
#: How the batching system under test shapes its batches: ``fixed`` pads every batch to
#: ``max_batch`` (one input shape), ``bucketed`` to the next power of two, ``exact`` not at
#: all. ``auto`` (the default) pads to a fixed shape only where a compiled or captured
#: graph needs static shapes, else buckets; the spec keeps what it resolved to.
BATCH_SHAPES = ("fixed", "bucketed", "exact")
AUTO_SHAPES = "auto"
ORT_PROVIDERS = ("auto", "tensorrt", "cuda", "cpu")
#: ``torch.compile`` modes of the PyTorch path (``off``: eager). ``reduce-overhead`` and
#: ``max-autotune`` also capture CUDA graphs (inductor's own), on a GPU.
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: Compile modes in which inductor captures CUDA graphs itself.
COMPILE_CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
#: How the loop times steps: ``synchronized`` waits for the device after every step before
#: it reads the clock (latency); ``pipelined`` queues steps without waiting, times each on the
#: device's stream and synchronizes once at the end (throughput). ``auto`` is resolved on
#: creation: pipelined for training, synchronized for inference.
TIMINGS = ("synchronized", "pipelined")
AUTO_TIMING = "auto"

_T = TypeVar("_T")

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")

#: ``gpus``: every GPU the machine has (resolved before the run starts).
ALL_GPUS = "all"
#: Most data-parallel ranks accepted (a p5 has 8 GPUs; this only catches typos).
MAX_RANKS = 64

#: Largest batch accepted; far above any GPU's memory for these models, it only catches typos.
MAX_BATCH = 65536
#: BERT-base has 512 learned positions.
MAX_SEQ_LEN = 512


#: The commands that build a spec from their options (bench.commands.spec_flags): ``run``,
#: its alias ``eval`` (the evaluate scenario) and ``sla`` (a search over server runs) each
#: build one; ``suite`` takes some of the options as overrides of its runs' own values.
_ONE_RUN = frozenset({"run", "eval", "sla"})
_EVERY = _ONE_RUN | {"suite"}
_RUN = frozenset({"run"})
_RUN_EVAL = frozenset({"run", "eval"})
_RUN_SLA = frozenset({"run", "sla"})
#: ``serve`` builds the spec of the model it serves from the options that say which model.
_SERVE = frozenset({"serve"})
_MODEL = _ONE_RUN | _SERVE
#: Help sections, and the commands their options belong to.
_LOADGEN_TITLE = "LoadGen scenarios"
_ACCURACY_TITLE = "accuracy (scenarios evaluate and to-accuracy)"
_LOADGEN: dict[str, Any] = {"group": _LOADGEN_TITLE, "commands": _RUN_SLA}
_EXECUTION: dict[str, Any] = {"group": "execution mode", "commands": _EVERY}
_ACCURACY: dict[str, Any] = {"group": _ACCURACY_TITLE, "commands": _RUN}
#: The window of a scenario other than the loop when the command line gives neither
#: ``--duration`` nor ``--iters``: LoadGen's minimum duration, to-accuracy's training time
#: (``bench sla`` and ``bench eval`` have their own).
SCENARIO_DEFAULT_DURATION_S = 10.0


@dataclass(frozen=True)
class Variant:
    """What differs in one command's option of a :class:`Flag` (None: the flag's own)."""

    help: str | None = None
    name: str | None = None
    choices: tuple[str, ...] | str | None = None


@dataclass(frozen=True)
class Flag:
    """How a spec field is given on the command line (read by
    :mod:`bench.commands.spec_flags`, which turns it into an option of each command in
    ``commands``).

    The field's default is the option's default. ``defaults`` holds a command's own default
    where it differs (``bench eval`` reads batches of 16) and, for a command that does not
    offer the option, the value it fixes (``bench sla`` runs the server scenario).
    """

    help: str
    #: The option; None: ``--`` and the field's name with dashes.
    name: str | None = None
    #: Allowed values, or the name of a list the registry keeps (``workloads``, ``backends``,
    #: ``served_workloads``).
    choices: tuple[str, ...] | str | None = None
    #: The name of the parser that reads the text, where the field's type is not enough.
    parse: str | None = None
    metavar: str | None = None
    #: The title of the help section the option is listed under (None: the command's own).
    group: str | None = None
    #: Options of one exclusive set (``window``: ``--iters`` or ``--duration``): given one,
    #: the others are None.
    exclusive: str | None = None
    commands: frozenset[str] = _ONE_RUN
    defaults: Mapping[str, Any] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    #: A command's own form of the option where it differs (``bench serve``'s batch is
    #: ``--max-batch``, the largest batch Triton forms).
    variants: Mapping[str, Variant] = field(default_factory=dict)

    def for_command(self, command: str) -> Flag:
        """The flag as ``command`` offers it: its variant's values in place of these."""
        variant = self.variants.get(command)
        if variant is None:
            return self
        changes = {
            f.name: value
            for f in dataclasses.fields(variant)
            if (value := getattr(variant, f.name)) is not None
        }
        return dataclasses.replace(self, **changes)


#: The metadata key of a field's :class:`Flag`.
FLAG = "flag"


def _flag(default: _T, help: str, **options: Any) -> _T:
    """A spec field with a default and its :class:`Flag`."""
    return field(default=default, metadata={FLAG: Flag(help, **options)})


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one benchmark run.

    ``device`` may be ``auto`` or ``cuda`` here; the runner resolves it to ``cpu`` or
    ``cuda:N`` before the run starts, and the stored spec holds the resolved value.
    Exactly one of ``iters`` and ``duration_s`` bounds the measured window; in a LoadGen
    scenario they are the test's minimum query count or minimum duration instead.
    """

    workload: str = field(
        metadata={
            FLAG: Flag(
                "the model",
                choices="workloads",
                commands=_MODEL,
                variants={"serve": Variant(choices="served_workloads")},
            )
        }
    )
    backend: str = _flag("torch", "the framework path", choices="backends", commands=_MODEL)
    mode: str = _flag(
        "infer", "train or infer", choices=MODES, commands=_RUN, defaults={"serve": "infer"}
    )
    batch: int = _flag(
        1,
        "samples per step, per GPU with several",
        commands=_MODEL,
        defaults={"eval": 16, "serve": 8},
        variants={"serve": Variant(name="--max-batch", help="largest batch Triton forms")},
    )
    precision: str = _flag(
        "fp32",
        "auto: bf16 where the GPU and backend have it (compute capability 8.0+), else fp16; "
        "fp32 on the CPU",
        choices=(*PRECISIONS, AUTO_PRECISION),
        commands=_EVERY | _SERVE,
        variants={"serve": Variant(help="the served model's precision", choices=PRECISIONS)},
    )
    device: str = _flag("auto", "auto, cpu, cuda or cuda:N", commands=_EVERY | _SERVE)
    warmup: int = _flag(5, "warm-up iterations", commands=_EVERY, defaults={"eval": 0})
    iters: int | None = _flag(
        20,
        "measured iterations",
        exclusive="window",
        commands=_EVERY,
        defaults={"eval": 1, "sla": None},
    )
    duration_s: float | None = _flag(
        None,
        "measure for this many seconds instead",
        name="--duration",
        exclusive="window",
        commands=_EVERY,
        defaults={"sla": 5.0},  # an SLA search's runs: LoadGen's early stopping sets the count
    )
    seq_len: int = _flag(128, "BERT sequence length", commands=_MODEL)
    image_size: int = _flag(512, "SSD input side in pixels", commands=_MODEL)
    include_h2d: bool = _flag(
        False, "time the host-to-device copy of the batch in every step", commands=_EVERY
    )
    seed: int = _flag(
        0,
        "seed of the synthetic batch and weights",
        commands=_RUN_SLA | _SERVE,
        variants={"serve": Variant(help="seed of the weights, as in bench run")},
    )
    pretrained: str | None = _flag(None, "load weights from this local directory", commands=_MODEL)
    scenario: str = _flag(
        "loop",
        "loop: a fixed loop of steps; single-stream, multi-stream, server, offline: MLPerf "
        "LoadGen issues and times the queries (inference only; --duration/--iters are then the "
        f"test's minimum duration/query count, default {SCENARIO_DEFAULT_DURATION_S:g} s); "
        "evaluate: the metric on --data's test split (bench eval); to-accuracy: train until "
        "--target",
        choices=SCENARIOS,
        commands=_RUN,
        defaults={"eval": "evaluate", "sla": "server"},
    )
    ort_provider: str = _flag(
        "auto",
        "ONNX Runtime execution provider; auto: TensorRT, CUDA or CPU, the first available",
        choices=ORT_PROVIDERS,
        commands=_EVERY,
    )
    # -- LoadGen scenarios (ignored by ``loop``) ---------------------------------------------
    #: offline: LoadGen's expected QPS (sizes the test); ``bench sla`` sets each run's.
    target_qps: float | None = _flag(
        None,
        "server: arrival rate; offline: hint",
        group=_LOADGEN_TITLE,
        commands=_RUN,
        defaults={"sla": 1.0},
    )
    latency_bound_ms: float | None = _flag(
        None,
        "latency constraint, e.g. 15ms (server; expected latency for the streams)",
        name="--latency-bound",
        parse="latency_ms",
        **_LOADGEN,
        required=frozenset({"sla"}),
    )
    latency_percentile: float = _flag(
        99.0, "the percentile the bound applies to", name="--percentile", **_LOADGEN
    )
    max_batch: int | None = _flag(None, "largest batch the SUT forms (default --batch)", **_LOADGEN)
    batch_timeout_ms: float = _flag(
        2.0,
        "milliseconds (or a time with its unit: 500us) the SUT waits for a batch to fill after "
        "its first query",
        name="--batch-timeout",
        parse="latency_ms",
        **_LOADGEN,
    )
    batch_shapes: str = _flag(
        AUTO_SHAPES,
        "fixed: pad every batch to --max-batch; bucketed: to the next power of two; exact: no "
        "padding; auto: fixed only where a compiled or captured graph needs static shapes, "
        "else bucketed",
        choices=(AUTO_SHAPES, *BATCH_SHAPES),
        **_LOADGEN,
    )
    #: Staged on the device for LoadGen's query sample library.
    sample_count: int = _flag(256, "samples staged for LoadGen", **_LOADGEN)
    endpoint: str | None = _flag(
        None,
        "send the queries to an Open Inference Protocol (KServe v2) server instead of an "
        "in-process model: grpc://host:port/model or http://host:port/model (bench serve "
        "starts one); --max-batch/--batch-timeout then are the server's to apply",
        metavar="URL",
        **_LOADGEN,
    )
    # -- execution mode ----------------------------------------------------------------------
    compile: str = _flag(
        "off",
        "torch.compile mode of the PyTorch path (off: eager); a compile failure fails the run",
        choices=COMPILE_MODES,
        **_EXECUTION,
    )
    cuda_graphs: bool = _flag(
        False,
        "capture the whole step in a CUDA graph on static inputs and replay it (GPU)",
        **_EXECUTION,
    )
    #: ``auto`` is resolved on creation: stored specs never hold it.
    timing: str = _flag(
        AUTO_TIMING,
        "synchronized: wait for the device after every step (latency); pipelined: queue "
        "steps, time them with device events, synchronize once at the end (throughput); "
        "auto: pipelined for training, synchronized for inference",
        choices=(*TIMINGS, AUTO_TIMING),
        **_EXECUTION,
    )
    # -- whole instances -----------------------------------------------------------------------
    #: ``all`` is resolved before the run; None: one process on ``device``.
    gpus: int | str | None = _flag(
        None,
        "data-parallel ranks (training) or replicas (inference), one per GPU, --batch per "
        "GPU; with --device cpu, N CPU ranks (gloo)",
        parse="gpu_count",
        metavar="N|all",
        commands=_RUN,
    )
    # -- real data ------------------------------------------------------------------------------
    #: None: synthetic.
    data: str | None = _flag(
        None,
        "synthetic, or a dataset the timed step reads through a loader: a VOC folder or "
        "RecordIO .rec (ssd), aclImdb (bert), SQuAD's folder (bert-qa); synthetic batches are "
        "seeded and staged before timing",
        parse="dataset",
        commands=_RUN_EVAL,
        required=frozenset({"eval"}),
        variants={
            "eval": Variant(
                help="the dataset whose test split is scored: a VOC folder or RecordIO .rec "
                "(ssd), aclImdb (bert), SQuAD's folder or dev-v1.1.json (bert-qa)"
            )
        },
    )
    #: 0: load in the training process.
    loader_workers: int = _flag(2, "loader processes with --data", commands=_RUN_EVAL)
    vocab: str | None = _flag(
        None, "BERT with --data: vocab.txt (default: in --pretrained)", commands=_RUN_EVAL
    )
    # -- accuracy (scenarios evaluate and to-accuracy) -----------------------------------------
    target_metric: float | None = _flag(
        None, "to-accuracy: the metric to reach (e.g. 0.75 mAP)", name="--target", **_ACCURACY
    )
    eval_every: int = _flag(100, "to-accuracy: steps between evaluations", **_ACCURACY)
    #: None: the whole test split.
    eval_samples: int | None = _flag(
        None, "test samples per evaluation (default all)", group=_ACCURACY_TITLE, commands=_RUN_EVAL
    )

    def __post_init__(self) -> None:
        # the workload and backend names, and what each can do, are the registry's to check
        # (bench.run.registry.lookup, bench.run.capabilities: runner.prepare calls both)
        _choice("mode", self.mode, MODES)
        _choice("precision", self.precision, (*PRECISIONS, AUTO_PRECISION))
        _choice("scenario", self.scenario, SCENARIOS)
        _choice("ort_provider", self.ort_provider, ORT_PROVIDERS)
        if self.ort_provider != "auto" and self.backend != "onnxruntime":
            raise SpecError("ort_provider applies to the onnxruntime backend only")
        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device):
            raise SpecError(f"device must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        _int_range("batch", self.batch, 1, MAX_BATCH)
        _int_range("warmup", self.warmup, 0, 1_000_000)
        _int_range("seq_len", self.seq_len, 1, MAX_SEQ_LEN)
        _int_range("image_size", self.image_size, 64, 2048)
        if self.image_size % 32:
            raise SpecError(f"image_size must be a multiple of 32, not {self.image_size}")
        _int_range("seed", self.seed, 0, 2**32 - 1)
        if (self.iters is None) == (self.duration_s is None):
            raise SpecError("give exactly one of iters and duration_s")
        if self.iters is not None:
            _int_range("iters", self.iters, 1, 10_000_000)
        if self.duration_s is not None and not (
            isinstance(self.duration_s, (int, float)) and 0 < self.duration_s <= 86_400
        ):
            raise SpecError(f"duration_s must be in (0, 86400] seconds, not {self.duration_s!r}")
        if not isinstance(self.include_h2d, bool):
            raise SpecError("include_h2d must be true or false")
        if self.pretrained is not None and not isinstance(self.pretrained, str):
            raise SpecError("pretrained must be a directory path")
        self._check_loadgen()
        self._check_execution()
        self._check_ranks()
        self._check_data()
        self._check_accuracy()

    @property
    def uses_loadgen(self) -> bool:
        return self.scenario in LOADGEN_SCENARIOS

    @property
    def effective_max_batch(self) -> int:
        return self.max_batch if self.max_batch is not None else self.batch

    def _check_loadgen(self) -> None:
        if self.batch_shapes == AUTO_SHAPES:
            static = self.compile != "off" or self.cuda_graphs or not self.uses_loadgen
            object.__setattr__(self, "batch_shapes", "fixed" if static else "bucketed")
        _choice("batch_shapes", self.batch_shapes, BATCH_SHAPES)
        if self.max_batch is not None:
            _int_range("max_batch", self.max_batch, 1, MAX_BATCH)
        _int_range("sample_count", self.sample_count, 1, 1_000_000)
        _positive("batch_timeout_ms", self.batch_timeout_ms, allow_zero=True)
        if not _number(self.latency_percentile) or not 0 < self.latency_percentile < 100:
            raise SpecError(
                f"latency_percentile must be in (0, 100), not {self.latency_percentile!r}"
            )
        if self.target_qps is not None:
            _positive("target_qps", self.target_qps)
        if self.latency_bound_ms is not None:
            _positive("latency_bound_ms", self.latency_bound_ms)
        if self.endpoint is not None:
            _endpoint(self.endpoint)
            if not self.uses_loadgen:
                raise SpecError("an --endpoint is driven by LoadGen: give a LoadGen --scenario")
        if not self.uses_loadgen:
            return
        if self.mode != "infer":
            raise SpecError(
                f"the {self.scenario} scenario issues inference queries: training has "
                "no LoadGen scenario (use the loop)"
            )
        if self.scenario == "server" and (self.target_qps is None or self.latency_bound_ms is None):
            raise SpecError("the server scenario needs a target QPS and a latency bound")

    def _check_execution(self) -> None:
        _choice("compile", self.compile, COMPILE_MODES)
        _choice("timing", self.timing, (*TIMINGS, AUTO_TIMING))
        if not isinstance(self.cuda_graphs, bool):
            raise SpecError("cuda_graphs must be true or false")
        if self.timing == AUTO_TIMING:
            pipelined = self.mode == "train" and self.scenario == "loop"
            default = "pipelined" if pipelined else "synchronized"
            object.__setattr__(self, "timing", default)
        first_step_matters = self.timing == "pipelined" or self.compile != "off"
        if self.warmup == 0 and self.scenario == "loop" and first_step_matters:
            why = "pipelined timing" if self.timing == "pipelined" else "a compiled step"
            raise SpecError(
                f"--warmup 0 with {why} puts the first steps (compilation, autotuning, "
                "lazy allocation) inside the measured window: give --warmup 1 or more"
            )
        if self.uses_loadgen:
            if self.timing == "pipelined":
                raise SpecError(
                    f"the {self.scenario} scenario times every query itself: pipelined timing "
                    "applies to the loop"
                )
            if self.compile != "off" or self.cuda_graphs:
                raise SpecError(
                    f"the {self.scenario} scenario forms batches of varying size: compiled "
                    "and graph-captured steps run in the loop, on one input shape"
                )
        if not self.cuda_graphs:
            return
        if self.device == "cpu":
            raise SpecError("CUDA graphs need a GPU: drop --cuda-graphs or use --device cuda")
        if self.compile in COMPILE_CUDA_GRAPH_MODES:
            raise SpecError(
                f"compile mode {self.compile} captures CUDA graphs itself: drop --cuda-graphs "
                "or compile with default or max-autotune-no-cudagraphs"
            )
        if self.include_h2d:
            raise SpecError(
                "a CUDA graph replays on static device inputs: it cannot time the "
                "host-to-device copy (drop --include-h2d)"
            )

    def _check_ranks(self) -> None:
        if self.gpus is None:
            return
        if self.gpus == ALL_GPUS:
            if self.device == "cpu":
                raise SpecError("--gpus all needs GPUs: on the CPU give a number of ranks")
        else:
            _int_range("gpus", self.gpus, 1, MAX_RANKS)
        if self.uses_loadgen:
            raise SpecError(
                f"the {self.scenario} scenario drives one process: run replicas in the loop"
            )
        if self.cuda_graphs:
            raise SpecError("CUDA graphs are not captured across data-parallel ranks yet")

    def _check_data(self) -> None:
        _int_range("loader_workers", self.loader_workers, 0, 256)
        if self.data is None:
            if self.vocab is not None:
                raise SpecError("vocab applies to runs on a dataset (--data)")
            return
        if not isinstance(self.data, str) or not self.data:
            raise SpecError("data must be a dataset path")
        if self.uses_loadgen:
            raise SpecError(f"the {self.scenario} scenario issues staged samples: no --data")
        if self.cuda_graphs:
            raise SpecError("a CUDA graph replays on static inputs: no --data with --cuda-graphs")

    def _check_accuracy(self) -> None:
        _int_range("eval_every", self.eval_every, 1, 10_000_000)
        if self.eval_samples is not None:
            _int_range("eval_samples", self.eval_samples, 1, 100_000_000)
        if self.target_metric is not None and not (
            _number(self.target_metric) and 0 < self.target_metric <= 1
        ):
            raise SpecError(f"target_metric must be in (0, 1], not {self.target_metric!r}")
        if self.scenario not in ACCURACY_SCENARIOS:
            if self.target_metric is not None:
                raise SpecError("target_metric applies to the to-accuracy scenario")
            return
        if self.data is None:
            raise SpecError(f"the {self.scenario} scenario needs a dataset (--data)")
        if self.gpus is not None:
            raise SpecError(f"the {self.scenario} scenario runs on one device: drop --gpus")
        if self.scenario == "evaluate" and self.mode != "infer":
            raise SpecError("evaluate is an inference scenario (mode infer)")
        if self.scenario == "to-accuracy":
            if self.mode != "train":
                raise SpecError("to-accuracy trains: use mode train")
            if self.target_metric is None:
                raise SpecError("to-accuracy needs a target metric (--target)")
            if self.timing != "synchronized":
                raise SpecError("to-accuracy times synchronized steps: --timing synchronized")

    @property
    def ranks(self) -> int:
        """Processes (or MXNet contexts) the run uses; 1 without ``gpus``."""
        return self.gpus if isinstance(self.gpus, int) else 1

    @property
    def execution_label(self) -> str:
        """How the step was executed, for tables: empty for eager with the mode's default
        timing, else e.g. ``compile, graphs`` or ``synchronized``."""
        parts = []
        if self.endpoint is not None:
            parts.append("served")
        if self.gpus is not None:
            unit = "GPU" if self.device.startswith("cuda") else "rank"
            parts.append(f"{self.gpus} {unit}{'s' if self.gpus != 1 else ''}")
        if self.compile != "off":
            parts.append("compile" if self.compile == "default" else f"compile:{self.compile}")
        if self.cuda_graphs:
            parts.append("graphs")
        default = (
            "pipelined" if self.mode == "train" and self.scenario == "loop" else "synchronized"
        )
        if self.timing != default:
            parts.append(self.timing)
        return ", ".join(parts)

    @property
    def backend_label(self) -> str:
        """The backend with its execution mode where it is not the default, for tables."""
        mode = self.execution_label
        return f"{self.backend} ({mode})" if mode else self.backend

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown spec field(s): {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> RunSpec:
        return dataclasses.replace(self, **changes)

    def label_for(self, shape_tag: str) -> str:
        """A short name for file names and progress lines, given the workload's tag for the
        input size (:func:`bench.run.registry.run_label` looks it up).
        """
        dev = self.device.replace(":", "")
        backend = self.backend
        if self.ort_provider != "auto":
            backend += f"-{self.ort_provider}"
        parts = [
            self.workload,
            backend,
            self.mode,
            f"b{self.batch}",
            shape_tag,
            self.precision,
            dev,
            self._scenario_tag(),
            self._execution_tag(),
            f"g{self.gpus}" if self.gpus is not None else "",
        ]
        return "_".join(p for p in parts if p)

    def _scenario_tag(self) -> str:
        if self.scenario == "loop":
            return ""
        tag = self.scenario
        if self.target_qps is not None and self.scenario == "server":
            tag += f"-q{_format_number(self.target_qps)}"
        if self.endpoint is not None:
            tag += "-served"
        return tag

    def _execution_tag(self) -> str:
        parts = []
        if self.compile != "off":
            parts.append(f"compile-{self.compile}")
        if self.cuda_graphs:
            parts.append("graphs")
        return "-".join(parts)


#: Endpoint URLs: scheme, host, port and the model's name.
_ENDPOINT_RE = re.compile(
    r"^(grpc|http)://([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\]):(\d{1,5})/([\w.\-]+)$"
)


def _endpoint(url: object) -> tuple[str, str, int, str]:
    """``scheme://host:port/model`` parsed, or a SpecError saying what a URL looks like."""
    match = _ENDPOINT_RE.match(url) if isinstance(url, str) else None
    if match is None or not 0 < int(match[3]) < 65536:
        raise SpecError(
            f"endpoint must look like grpc://host:port/model or http://host:port/model, not {url!r}"
        )
    return match[1], match[2].strip("[]"), int(match[3]), match[4]


def parse_endpoint(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, model) of an endpoint URL."""
    return _endpoint(url)


def _format_number(value: float) -> str:
    return f"{value:g}"


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _positive(name: str, value: object, *, allow_zero: bool = False) -> None:
    ok = _number(value) and (value >= 0 if allow_zero else value > 0)  # type: ignore[operator]
    if not ok:
        raise SpecError(
            f"{name} must be {'0 or more' if allow_zero else 'positive'}, not {value!r}"
        )


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SpecError(f"unknown {name} {value!r}: choose from {', '.join(allowed)}")


def _int_range(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{name} must be an integer, not {value!r}")
    if not low <= value <= high:
        raise SpecError(f"{name} must be between {low} and {high}, not {value}")
