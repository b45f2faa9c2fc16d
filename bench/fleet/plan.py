"""A fleet plan: one SkyPilot task per EC2 instance type, what each would cost at most, and
the budget check. Pure: no SkyPilot here (``sky_backend`` turns a task into SkyPilot's)."""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from bench.analysis.prices import InstancePrice, lookup
from bench.run.ec2 import validate_instance_type
from bench.run.suites import SUITES
from bench.schema.spec import AUTO_PRECISION, PRECISIONS, SpecError


class FleetError(SpecError):
    """Bad fleet input, a missing extra or credentials, a budget exceeded: exit 2 before
    anything starts."""


#: Every cluster the tool starts is named with this prefix, so ``bench fleet down`` finds them.
CLUSTER_PREFIX = "bench-fleet-"
#: Where a run writes its results on the instance, under the project (the SkyPilot workdir).
#: Git ignores results/runs/, so the workdir sync never uploads local runs into it.
REMOTE_RESULTS = "results/runs/fleet"
#: Where the results come back on this machine: ``<out>/<instance type>/``.
DEFAULT_OUT = Path("results/fleet")
#: The region of the catalogue's prices.
DEFAULT_REGION = "us-east-1"

DEFAULT_SUITE = "workshop"
#: Minutes the suite may run before ``timeout`` stops it (SIGTERM, SIGKILL a minute later).
DEFAULT_TIME_LIMIT_MIN = 45
#: Minutes ``make setup`` (two environments, GPU builds) may take on the instance.
DEFAULT_SETUP_LIMIT_MIN = 30
#: Minutes after the run's time limit before SkyPilot tears the cluster down whatever it is
#: doing: time enough to bring the results back (the tool tears it down as soon as they are).
DEFAULT_GRACE_MIN = 10
#: Minutes billed before set-up starts: the instance booting and SkyPilot's runtime set-up.
PROVISION_ALLOWANCE_MIN = 10
#: Root disk: both environments, the ONNX exports and the results, with room to spare.
DEFAULT_DISK_GB = 100
#: The budget cap without ``--max-cost``: the default plan of the four instance types of the
#: README costs under 9 dollars.
DEFAULT_MAX_COST_USD = 25.0

#: SkyPilot's AWS GPU images (tags it resolves to an AMI per region). Pinned per GPU so the
#: driver a result was measured with is known: NVIDIA's open kernel module with CUDA 13 for
#: Turing and newer, the proprietary 535 driver with CUDA 12 for the GPUs the open module
#: does not support (SkyPilot's own default choice, checked by the fleet tests).
GPU_IMAGE = "skypilot:custom-gpu-ubuntu-cuda13"
LEGACY_GPU_IMAGE = "skypilot:custom-gpu-ubuntu"
LEGACY_DRIVER_GPUS = frozenset({"M60", "P100", "P4", "V100"})


@dataclass(frozen=True)
class FleetOptions:
    """What ``bench fleet plan`` and ``launch`` were asked for."""

    instances: tuple[str, ...]
    suite: str = DEFAULT_SUITE
    precision: str | None = None
    use_spot: bool = False
    #: Hourly spot prices given by hand (instance type -> USD/h); only with ``use_spot``.
    spot_prices: Mapping[str, float] | None = None
    time_limit_min: int = DEFAULT_TIME_LIMIT_MIN
    setup_limit_min: int = DEFAULT_SETUP_LIMIT_MIN
    grace_min: int = DEFAULT_GRACE_MIN
    region: str = DEFAULT_REGION
    disk_gb: int = DEFAULT_DISK_GB
    image_id: str | None = None
    max_cost_usd: float = DEFAULT_MAX_COST_USD


@dataclass(frozen=True)
class InstanceTask:
    """One instance type's SkyPilot task and its cost bound."""

    instance_type: str
    cluster_name: str
    gpus: str
    region: str
    image_id: str
    disk_gb: int
    use_spot: bool
    setup: str
    run: str
    #: Results on the instance, relative to the workdir.
    remote_results: str
    hourly_usd: float
    #: Which hourly price: ``on-demand``, ``spot (given)`` or ``on-demand (spot at most)``.
    price_basis: str
    time_limit_min: int
    setup_limit_min: int
    grace_min: int

    @property
    def autodown_min(self) -> int:
        """Minutes after its job is submitted at which SkyPilot tears the cluster down,
        whatever it is doing: the set-up limit, the time limit, then the grace minutes."""
        return self.setup_limit_min + self.time_limit_min + self.grace_min

    @property
    def billed_min(self) -> int:
        """The most minutes the instance can run: provisioning, then :attr:`autodown_min`."""
        return PROVISION_ALLOWANCE_MIN + self.autodown_min

    @property
    def cost_usd(self) -> float:
        """The estimated cost at most: the hourly price over :attr:`billed_min`."""
        return self.hourly_usd * self.billed_min / 60.0


@dataclass(frozen=True)
class FleetPlan:
    options: FleetOptions
    tasks: tuple[InstanceTask, ...]

    @property
    def total_usd(self) -> float:
        return sum(t.cost_usd for t in self.tasks)

    @property
    def cluster_names(self) -> list[str]:
        return [t.cluster_name for t in self.tasks]


def parse_instances(text: str) -> tuple[str, ...]:
    """``g4dn.xlarge,p3.2xlarge`` as instance types, in order, each once."""
    names: list[str] = []
    for item in text.split(","):
        if not item.strip():
            continue
        try:
            name = validate_instance_type(item)
        except ValueError as exc:
            raise FleetError(str(exc)) from None
        if name not in names:
            names.append(name)
    if not names:
        raise FleetError("--instances names no instance type (e.g. g4dn.xlarge,g5.xlarge)")
    return tuple(names)


def parse_spot_prices(items: Sequence[str]) -> dict[str, float]:
    """``TYPE=PRICE`` items as instance type -> hourly USD."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            price = float(value)
        except ValueError:
            price = math.nan
        if not sep or not name.strip() or not math.isfinite(price) or price <= 0:
            raise FleetError(f"--spot-price {item}: use TYPE=PRICE, e.g. g5.xlarge=0.45")
        out[name.strip()] = price
    return out


def cluster_name(instance_type: str) -> str:
    """``bench-fleet-g4dn-xlarge``: the prefix, then the instance type with dots as dashes."""
    return CLUSTER_PREFIX + instance_type.replace(".", "-")


def image_for(gpu_model: str) -> str:
    """The SkyPilot image tag for a GPU (see :data:`GPU_IMAGE`)."""
    return LEGACY_GPU_IMAGE if gpu_model in LEGACY_DRIVER_GPUS else GPU_IMAGE


def setup_command(setup_limit_min: int) -> str:
    """Python 3.11 and a compiler (the instance image has neither for sure), then
    ``make setup``, all stopped by ``timeout`` at the set-up limit."""
    script = (
        "sudo apt-get update -qq && "
        "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
        "python3.11 python3.11-venv python3.11-dev make g++ >/dev/null && "
        "make setup PYTHON=python3.11"
    )
    return f"timeout --kill-after=60 {setup_limit_min}m bash -c {shlex.quote(script)}"


def run_command(instance_type: str, suite: str, precision: str | None, time_limit_min: int) -> str:
    """The suite under ``timeout`` (SIGTERM at the limit: the suite stops its worker and
    exits 143), its exit status kept beside the results."""
    out = f"{REMOTE_RESULTS}/{instance_type}"
    bench = [".venv/bin/bench", "suite", suite]
    if precision is not None:
        bench += ["--precision", precision]
    bench += ["--instance", instance_type, "--out", out, "--no-progress"]
    return "\n".join(
        (
            f"mkdir -p {out}",
            "code=0",
            f"timeout --signal=TERM --kill-after=60 {time_limit_min}m {shlex.join(bench)} "
            "|| code=$?",
            f"echo $code > {out}/exit_code",
            "exit $code",
        )
    )


def _check_options(options: FleetOptions) -> None:
    if options.suite not in SUITES:
        raise FleetError(f"unknown suite {options.suite!r}: choose from {', '.join(SUITES)}")
    if options.precision is not None and options.precision not in (*PRECISIONS, AUTO_PRECISION):
        raise FleetError(f"unknown precision {options.precision!r}")
    for flag, value, least in (
        ("--time-limit", options.time_limit_min, 1),
        ("--setup-limit", options.setup_limit_min, 1),
        ("--grace-minutes", options.grace_min, 1),
        ("--disk-size", options.disk_gb, 50),
    ):
        if value < least:
            raise FleetError(f"{flag} must be at least {least}, got {value}")
    if not math.isfinite(options.max_cost_usd) or options.max_cost_usd <= 0:
        raise FleetError(f"--max-cost must be a positive number, got {options.max_cost_usd}")
    if options.spot_prices and not options.use_spot:
        raise FleetError("--spot-price prices spot instances: add --use-spot")
    for name in options.spot_prices or {}:
        if name not in options.instances:
            raise FleetError(f"--spot-price {name}: not one of --instances")


def _hourly(entry: InstancePrice, options: FleetOptions) -> tuple[float, str]:
    spot = (options.spot_prices or {}).get(entry.instance_type)
    if spot is not None:
        return spot, "spot (given)"
    if entry.price_per_hour_usd is None:
        raise FleetError(
            f"{entry.instance_type} has no trusted price in the catalogue ({entry.source}), so "
            "its cost cannot be capped: give one with --prices FILE"
        )
    if options.use_spot:
        # a spot price never exceeds the on-demand price
        return entry.price_per_hour_usd, "on-demand (spot at most)"
    return entry.price_per_hour_usd, "on-demand"


def plan_fleet(options: FleetOptions, catalogue: Mapping[str, InstancePrice]) -> FleetPlan:
    """One task per instance type of ``options``, priced from ``catalogue``."""
    _check_options(options)
    tasks = []
    for name in options.instances:
        entry = lookup(catalogue, name)
        if entry is None:
            raise FleetError(
                f"{name} is not in the price catalogue, so its cost cannot be capped: add it "
                "with --prices FILE (see results/prices/README.md)"
            )
        hourly, basis = _hourly(entry, options)
        tasks.append(
            InstanceTask(
                instance_type=entry.instance_type,
                cluster_name=cluster_name(entry.instance_type),
                gpus=f"{entry.gpu_count}x {entry.gpu_model}",
                region=options.region,
                image_id=options.image_id or image_for(entry.gpu_model),
                disk_gb=options.disk_gb,
                use_spot=options.use_spot,
                setup=setup_command(options.setup_limit_min),
                run=run_command(
                    entry.instance_type, options.suite, options.precision, options.time_limit_min
                ),
                remote_results=f"{REMOTE_RESULTS}/{entry.instance_type}",
                hourly_usd=hourly,
                price_basis=basis,
                time_limit_min=options.time_limit_min,
                setup_limit_min=options.setup_limit_min,
                grace_min=options.grace_min,
            )
        )
    return FleetPlan(options, tuple(tasks))


def check_budget(plan: FleetPlan) -> None:
    """Refuse a plan whose estimated cost exceeds its cap."""
    cap = plan.options.max_cost_usd
    if plan.total_usd > cap:
        raise FleetError(
            f"the estimated cost ${plan.total_usd:.2f} exceeds --max-cost ${cap:.2f}; "
            "lower --time-limit or --setup-limit, drop instance types, or raise --max-cost"
        )


def render(plan: FleetPlan) -> str:
    """The plan as ``bench fleet plan`` prints it."""
    o = plan.options
    first = plan.tasks[0]
    rows = [
        [
            t.instance_type,
            t.gpus,
            t.cluster_name,
            t.image_id,
            t.disk_gb,
            f"{t.hourly_usd:g}",
            t.price_basis,
            t.billed_min,
            f"{t.cost_usd:.2f}",
        ]
        for t in plan.tasks
    ]
    headers = ["instance", "GPUs", "cluster", "image", "disk GB", "$/h", "price", "max min", "$"]
    lines = [
        f"Fleet: suite {o.suite}, precision {o.precision or 'the suite default'}, "
        f"{'spot' if o.use_spot else 'on-demand'} instances in {o.region} (AWS, SkyPilot)",
        f"time limit {o.time_limit_min} min per run, set-up limit {o.setup_limit_min} min; "
        f"SkyPilot tears each cluster down {first.autodown_min} min after its job starts "
        f"whatever it is doing (set-up, run, {o.grace_min} min to bring the results back); "
        f"{PROVISION_ALLOWANCE_MIN} min for provisioning",
        "",
        tabulate(rows, headers=headers, tablefmt="github"),
        "",
        f"estimated cost at most: ${plan.total_usd:.2f} (cap: --max-cost ${o.max_cost_usd:.2f})",
        f"set-up: {first.setup}",
        "run (per instance type):",
        *("  " + line for line in first.run.splitlines()),
    ]
    return "\n".join(lines)
