"""``bench fleet`` without SkyPilot: the plan and its cost cap, the launch orchestration over a
stand-in backend (unavailable instance types, failed runs, interrupts), the collection and
report of fleet-shaped results, and the clear refusals. SkyPilot itself: tests/fleet/."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import threading
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import pytest

from bench.analysis.prices import load_catalogue
from bench.analysis.pricing import build_pricing
from bench.cli import main
from bench.fleet import collect, plan
from bench.fleet.plan import FleetError, FleetOptions, InstanceTask, plan_fleet
from bench.fleet.run import Unavailable, fleet_ok, run_fleet
from bench.run.store import load_record, write_record
from bench.schema.record import InstanceFacts

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "reference" / "nvidia-h200"
SSD_TRAIN = REFERENCE / "20261126T061316Z_ssd_torch_train_b16_i512_fp32_cuda0_bbbc99.json"
BERT_INFER = REFERENCE / "20261126T061534Z_bert_torch_infer_b32_s128_bf16_cuda0_bbf575.json"
FLEET = ("g4dn.xlarge", "p3.2xlarge", "g5.xlarge", "g6.xlarge")
FLEET_ARG = ",".join(FLEET)


def _plan(**options: object) -> plan.FleetPlan:
    fields: dict[str, object] = {"instances": FLEET, "precision": "auto", **options}
    return plan_fleet(FleetOptions(**fields), load_catalogue())  # type: ignore[arg-type]


# -- the plan -----------------------------------------------------------------------------


def test_plan_of_four_instance_types() -> None:
    fleet = _plan()
    cuda13, cuda12 = "skypilot:custom-gpu-ubuntu-cuda13", "skypilot:custom-gpu-ubuntu"
    assert [
        (t.instance_type, t.cluster_name, t.gpus, t.image_id, t.hourly_usd, t.price_basis)
        for t in fleet.tasks
    ] == [
        ("g4dn.xlarge", "bench-fleet-g4dn-xlarge", "1x T4", cuda13, 0.526, "on-demand"),
        ("p3.2xlarge", "bench-fleet-p3-2xlarge", "1x V100", cuda12, 3.06, "on-demand"),
        ("g5.xlarge", "bench-fleet-g5-xlarge", "1x A10G", cuda13, 1.006, "on-demand"),
        ("g6.xlarge", "bench-fleet-g6-xlarge", "1x L4", cuda13, 0.8048, "on-demand"),
    ]
    task = fleet.tasks[0]
    # provisioning 10, then autodown at set-up 30 + run 45 + grace 10 minutes
    assert task.autodown_min == 85
    assert (task.billed_min, task.disk_gb, task.region, task.use_spot) == (
        95,
        100,
        "us-east-1",
        False,
    )
    assert task.cost_usd == pytest.approx(0.526 * 95 / 60)
    assert fleet.total_usd == pytest.approx((0.526 + 3.06 + 1.006 + 0.8048) * 95 / 60)
    assert round(fleet.total_usd, 2) == 8.54
    assert fleet.cluster_names == [
        "bench-fleet-g4dn-xlarge",
        "bench-fleet-p3-2xlarge",
        "bench-fleet-g5-xlarge",
        "bench-fleet-g6-xlarge",
    ]


def test_set_up_and_run_commands() -> None:
    task = _plan(time_limit_min=20, setup_limit_min=25).tasks[2]
    assert task.setup == (
        "timeout --kill-after=60 25m bash -c 'sudo apt-get update -qq && "
        "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv "
        "python3.11-dev make g++ >/dev/null && make setup PYTHON=python3.11'"
    )
    assert task.run.splitlines() == [
        "mkdir -p results/runs/fleet/g5.xlarge",
        "code=0",
        "timeout --signal=TERM --kill-after=60 20m .venv/bin/bench suite workshop --precision "
        "auto --instance g5.xlarge --out results/runs/fleet/g5.xlarge --no-progress || code=$?",
        "echo $code > results/runs/fleet/g5.xlarge/exit_code",
        "exit $code",
    ]
    assert task.remote_results == "results/runs/fleet/g5.xlarge"
    assert (task.billed_min, task.time_limit_min, task.setup_limit_min) == (65, 20, 25)
    no_precision = plan_fleet(
        FleetOptions(instances=("g5.xlarge",), suite="quick"), load_catalogue()
    )
    assert ".venv/bin/bench suite quick --instance g5.xlarge --out" in no_precision.tasks[0].run


def test_spot_prices() -> None:
    bound = _plan(use_spot=True).tasks[2]
    assert (bound.use_spot, bound.hourly_usd, bound.price_basis) == (
        True,
        1.006,
        "on-demand (spot at most)",
    )
    given = _plan(use_spot=True, spot_prices={"g5.xlarge": 0.45}).tasks[2]
    assert (given.hourly_usd, given.price_basis) == (0.45, "spot (given)")
    with pytest.raises(FleetError, match="--spot-price prices spot instances: add --use-spot"):
        _plan(spot_prices={"g5.xlarge": 0.45})
    with pytest.raises(FleetError, match="--spot-price p5.48xlarge: not one of --instances"):
        _plan(use_spot=True, spot_prices={"p5.48xlarge": 20.0})
    assert plan.parse_spot_prices(["g5.xlarge=0.45", "g6.xlarge=0.3"]) == {
        "g5.xlarge": 0.45,
        "g6.xlarge": 0.3,
    }
    for bad in ("g5.xlarge", "g5.xlarge=free", "g5.xlarge=-1", "=0.4"):
        with pytest.raises(FleetError, match="use TYPE=PRICE"):
            plan.parse_spot_prices([bad])


def test_budget_cap() -> None:
    plan.check_budget(_plan(max_cost_usd=8.55))
    with pytest.raises(FleetError) as caught:
        plan.check_budget(_plan(max_cost_usd=8.5))
    assert str(caught.value) == (
        "the estimated cost $8.54 exceeds --max-cost $8.50; lower --time-limit or "
        "--setup-limit, drop instance types, or raise --max-cost"
    )


def test_instances_and_options_are_checked() -> None:
    assert plan.parse_instances(" g5.xlarge,,g4dn.xlarge,g5.xlarge ") == (
        "g5.xlarge",
        "g4dn.xlarge",
    )
    with pytest.raises(FleetError, match="not an EC2 instance type: 'G5'"):
        plan.parse_instances("G5")
    with pytest.raises(FleetError, match="names no instance type"):
        plan.parse_instances(" , ")
    with pytest.raises(FleetError, match="g7.xlarge is not in the price catalogue"):
        _plan(instances=("g7.xlarge",))
    with pytest.raises(FleetError, match="--time-limit must be at least 1, got 0"):
        _plan(time_limit_min=0)
    with pytest.raises(FleetError, match="--disk-size must be at least 50, got 20"):
        _plan(disk_gb=20)
    with pytest.raises(FleetError, match="unknown suite 'nightly'"):
        _plan(suite="nightly")
    with pytest.raises(FleetError, match="--max-cost must be a positive number"):
        _plan(max_cost_usd=0.0)


def test_render() -> None:
    lines = plan.render(_plan()).splitlines()
    assert lines[0] == (
        "Fleet: suite workshop, precision auto, on-demand instances in us-east-1 (AWS, SkyPilot)"
    )
    assert lines[1] == (
        "time limit 45 min per run, set-up limit 30 min; SkyPilot tears each cluster down 85 "
        "min after its job starts whatever it is doing (set-up, run, 10 min to bring the "
        "results back); 10 min for provisioning"
    )
    assert lines[5] == (
        "| g4dn.xlarge | 1x T4   | bench-fleet-g4dn-xlarge | skypilot:custom-gpu-ubuntu-cuda13 "
        "|       100 | 0.526  | on-demand |        95 | 0.83 |"
    )
    assert "estimated cost at most: $8.54 (cap: --max-cost $25.00)" in lines


# -- the command line: refusals before anything starts --------------------------------------


@pytest.fixture
def no_skypilot(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import sky`` fails, as where the fleet extra is not installed."""
    monkeypatch.setitem(sys.modules, "sky", None)


def test_plan_command_launches_nothing(
    capsys: pytest.CaptureFixture[str], no_skypilot: None
) -> None:
    code = main(["fleet", "plan", "--instances", FLEET_ARG, "--precision", "auto"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert "estimated cost at most: $8.54 (cap: --max-cost $25.00)" in out
    assert out[-1] == "nothing launched (plan only)"


def test_plan_over_the_cap_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["fleet", "plan", "--instances", FLEET_ARG, "--max-cost", "5"])
    captured = capsys.readouterr()
    assert code == 2
    assert "estimated cost at most: $8.54 (cap: --max-cost $5.00)" in captured.out
    assert captured.err.startswith("bench: error: the estimated cost $8.54 exceeds --max-cost")


def test_launch_over_the_cap_exits_2_before_skypilot(
    capsys: pytest.CaptureFixture[str], no_skypilot: None, tmp_path: Path
) -> None:
    out = tmp_path / "fleet"
    code = main(["fleet", "launch", "--instances", "p5.48xlarge", "--out", str(out)])
    assert code == 2
    assert capsys.readouterr().err == (
        "bench: error: the estimated cost $87.15 exceeds --max-cost $25.00; lower --time-limit "
        "or --setup-limit, drop instance types, or raise --max-cost\n"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["fleet", "launch", "--instances", "g4dn.xlarge"],
        ["fleet", "down"],
        ["fleet", "collect", "--pull"],
    ],
)
def test_missing_extra_exits_2(
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    no_skypilot: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    if argv[1] == "collect":
        collect.write_manifest(tmp_path / "results" / "fleet", collect.Manifest.for_plan(_plan()))
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("bench: error: SkyPilot is not installed (")
    assert "`make setup-fleet`, then use .venv-fleet/bin/bench" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == (
        ["fleet", "fleet.json", "results"] if argv[1] == "collect" else []
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--instances", "g7.xlarge"], "g7.xlarge is not in the price catalogue"),
        (["--instances", "G4DN.XLARGE"], "not an EC2 instance type"),
        (["--instances", "g5.xlarge", "--time-limit", "0"], "--time-limit must be at least 1"),
        (["--instances", "g5.xlarge", "--spot-price", "g5.xlarge=0.4"], "add --use-spot"),
    ],
)
def test_bad_input_exits_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], no_skypilot: None
) -> None:
    assert main(["fleet", "launch", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error: ") and message in err


def test_the_harness_imports_without_skypilot() -> None:
    code = (
        "import sys, bench.cli, bench.fleet.cli, bench.fleet.sky_backend; "
        "print('sky' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout == "False\n"


def test_skypilot_is_a_pinned_extra_out_of_the_default_set_up() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["fleet"] == ["skypilot[aws]==0.14.1"]
    makefile = (ROOT / "Makefile").read_text()
    default_extras = next(line for line in makefile.splitlines() if line.startswith("EXTRAS"))
    assert "fleet" not in default_extras
    assert '$(FLEET_BIN)/python -m pip install -q --no-compile -e ".[fleet,report,dev]"' in makefile
    assert "$(FLEET_BIN)/python -m pytest tests/fleet" in makefile


# -- the launch, over a stand-in backend ------------------------------------------------------


def _fleet_record(source: Path, instance: str, directory: Path) -> Path:
    """A record as a fleet run writes it on ``instance`` (the reference run's figures, the
    instance facts the metadata service gives there)."""
    record = load_record(source)
    record.environment.instance = InstanceFacts(
        instance_type=instance,
        region="us-east-1",
        availability_zone="us-east-1a",
        lifecycle="on-demand",
        source="imds",
    )
    return write_record(record, directory)


class FakeBackend:
    """A cluster engine by script: per instance type, what its launch, job and pull do."""

    def __init__(
        self,
        unavailable: Sequence[str] = (),
        launch_fails: Sequence[str] = (),
        job_fails: Sequence[str] = (),
        on_launch: dict[str, signal.Signals] | None = None,
    ) -> None:
        self.unavailable, self.launch_fails, self.job_fails = unavailable, launch_fails, job_fails
        self.on_launch = on_launch or {}
        self.up: set[str] = set()
        self.downed: list[str] = []
        self.cancelled = 0
        self.lock = threading.Lock()
        self.hold = threading.Event()  # never set: a launch that hangs until interrupted

    def launch(self, task: InstanceTask, log: TextIO) -> int:
        log.write(f"launching {task.cluster_name}\n")
        if task.instance_type in self.on_launch:
            signal.pthread_kill(
                threading.main_thread().ident or 0, self.on_launch[task.instance_type]
            )
            self.hold.wait()
        if task.instance_type in self.unavailable:
            raise Unavailable(f"no capacity for {task.instance_type} in us-east-1")
        with self.lock:
            self.up.add(task.cluster_name)
        if task.instance_type in self.launch_fails:
            raise RuntimeError("the set-up script could not be uploaded")
        return 1

    def wait(self, task: InstanceTask, job_id: int, log: TextIO) -> bool:
        log.write(f"job {job_id} on {task.cluster_name}\n")
        return task.instance_type not in self.job_fails

    def pull(self, task: InstanceTask, local_dir: Path) -> None:
        failed = task.instance_type in self.job_fails
        (local_dir / "exit_code").write_text("1\n" if failed else "0\n")
        _fleet_record(BERT_INFER, task.instance_type, local_dir)

    def down(self, cluster_names: Sequence[str]) -> list[str]:
        with self.lock:
            gone = [n for n in cluster_names if n in self.up]
            self.up -= set(gone)
            self.downed += gone
        return gone

    def cancel(self) -> None:
        self.cancelled += 1


def test_launch_goes_on_past_unavailable_and_failed_instance_types(tmp_path: Path) -> None:
    backend = FakeBackend(
        unavailable=["p3.2xlarge"], launch_fails=["g6.xlarge"], job_fails=["g5.xlarge"]
    )
    said: list[str] = []
    manifest = run_fleet(_plan(), backend, tmp_path, said.append)
    states = {n: (e.status, e.message) for n, e in manifest.instances.items()}
    assert states == {
        "g4dn.xlarge": ("collected", None),
        "p3.2xlarge": ("unavailable", "no capacity for p3.2xlarge in us-east-1"),
        "g5.xlarge": ("collected", "the suite exited with status 1 (see job.log)"),
        "g6.xlarge": (
            "failed",
            "the launch failed: the set-up script could not be uploaded (see launch.log)",
        ),
    }
    # every cluster that came up was torn down, each once; nothing is left up
    assert sorted(backend.downed) == [
        "bench-fleet-g4dn-xlarge",
        "bench-fleet-g5-xlarge",
        "bench-fleet-g6-xlarge",
    ]
    assert backend.up == set()
    assert collect.read_manifest(tmp_path) == manifest
    assert (tmp_path / "g4dn.xlarge" / "launch.log").read_text() == (
        "launching bench-fleet-g4dn-xlarge\n"
    )
    assert (
        tmp_path / "g4dn.xlarge" / "job.log"
    ).read_text() == "job 1 on bench-fleet-g4dn-xlarge\n"
    assert not (tmp_path / "p3.2xlarge" / "job.log").exists()
    assert "p3.2xlarge: unavailable: no capacity for p3.2xlarge in us-east-1" in said
    assert not fleet_ok(manifest, tmp_path)
    ok = run_fleet(_plan(instances=("g4dn.xlarge",)), FakeBackend(), tmp_path / "ok", said.append)
    assert fleet_ok(ok, tmp_path / "ok")


def test_interrupt_cancels_and_tears_everything_down(tmp_path: Path) -> None:
    backend = FakeBackend(on_launch={"g6.xlarge": signal.SIGINT})
    said: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_fleet(_plan(), backend, tmp_path, said.append)
    assert backend.cancelled == 1
    assert backend.up == set()
    manifest = collect.read_manifest(tmp_path)
    assert manifest is not None
    assert manifest.instances["g6.xlarge"].status == "interrupted"
    assert {e.status for e in manifest.instances.values()} <= {"interrupted", "collected"}
    assert said[-2] == (
        "interrupted: cancelling the launches and tearing down every cluster of the fleet "
        "(further Ctrl-C is ignored until that is done)"
    )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    assert said[-1].startswith("torn down: ")


@pytest.fixture
def fake_sky(monkeypatch: pytest.MonkeyPatch) -> FakeBackend:
    """``bench fleet launch`` with SkyPilot present, credentials valid, and a stand-in
    backend in place of its client."""
    from bench.fleet import sky_backend

    backend = FakeBackend()
    monkeypatch.setattr(sky_backend, "load_sky", lambda: object())
    monkeypatch.setattr(sky_backend, "check_credentials", lambda: None)
    monkeypatch.setattr(sky_backend, "SkyBackend", lambda sky, root: backend)
    return backend


def test_launch_command_brings_results_back_and_reports(
    fake_sky: FakeBackend, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "fleet"
    code = main(["fleet", "launch", "--instances", "g4dn.xlarge,g5.xlarge", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "g5.xlarge: collected" in text.splitlines()
    assert f"md: {out / 'report' / 'report.md'}" in text.splitlines()
    with (out / "report" / "runs.csv").open() as fh:
        rows = {r["instance"]: r for r in csv.DictReader(fh)}
    assert sorted(rows) == ["g4dn.xlarge", "g5.xlarge"]
    assert float(rows["g5.xlarge"]["usd_per_million"]) == pytest.approx(
        1.006e6 / (3600 * 5216.51467183444)
    )
    assert fake_sky.up == set()


def test_sigterm_during_launch_tears_down_and_exits_143(
    fake_sky: FakeBackend, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fake_sky.on_launch = {"g5.xlarge": signal.SIGTERM}
    code = main(["fleet", "launch", "--instances", FLEET_ARG, "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 143
    assert captured.err.endswith("bench: terminated\n")
    assert fake_sky.cancelled == 1
    assert fake_sky.up == set()


# -- collection and report ----------------------------------------------------------------------


def _fleet_results(root: Path) -> None:
    """results/fleet as a launch of three instance types leaves it: one collected, one whose
    suite failed a run, one unavailable."""
    manifest = collect.Manifest.for_plan(
        _plan(instances=("g4dn.xlarge", "g5.xlarge", "p3.2xlarge"))
    )
    manifest.instances["g4dn.xlarge"].status = "collected"
    manifest.instances["g5.xlarge"].status = "collected"
    manifest.instances["g5.xlarge"].message = "the suite exited with status 1 (see job.log)"
    manifest.instances["p3.2xlarge"].status = "unavailable"
    manifest.instances["p3.2xlarge"].message = "no capacity"
    collect.write_manifest(root, manifest)
    for instance, code in (("g4dn.xlarge", "0"), ("g5.xlarge", "1")):
        directory = root / instance
        for source in (SSD_TRAIN, BERT_INFER):
            _fleet_record(source, instance, directory)
        (directory / "exit_code").write_text(code + "\n")
    broken = load_record(SSD_TRAIN).to_dict()
    broken["run_id"] = "20261127T000000Z_ssd_torch_train_broken_000000"
    broken["outcome"] = {"status": "error", "message": "CUDA error", "traceback": None}
    (root / "g5.xlarge" / f"{broken['run_id']}.json").write_text(json.dumps(broken))
    (root / "g5.xlarge" / "20261127T000001Z_truncated_000000.json").write_text('{"schema')


def test_summary_of_fleet_results(tmp_path: Path) -> None:
    _fleet_results(tmp_path)
    summaries = collect.summarize(tmp_path)
    assert [(s.instance_type, s.status, s.runs, s.ok, s.exit_code) for s in summaries] == [
        ("g4dn.xlarge", "collected", 2, 2, 0),
        ("g5.xlarge", "collected", 3, 2, 1),
        ("p3.2xlarge", "unavailable", 0, 0, None),
    ]
    g5 = summaries[1].problems
    assert len(g5) == 2
    assert g5[0].startswith("skipped ") and "20261127T000001Z_truncated_000000.json" in g5[0]
    assert g5[1] == (
        "20261127T000000Z_ssd_torch_train_broken_000000.json was recorded on no instance type"
    )
    lines = collect.render_summary(summaries).splitlines()
    assert lines[:5] == [
        "| instance    | status      |   runs |   ok |   suite exit |",
        "|-------------|-------------|--------|------|--------------|",
        "| g4dn.xlarge | collected   |      2 |    2 |            0 |",
        "| g5.xlarge   | collected   |      3 |    2 |            1 |",
        "| p3.2xlarge  | unavailable |      0 |    0 |              |",
    ]
    assert lines[5] == "g5.xlarge: the suite exited with status 1 (see job.log)"
    assert lines[-1] == "p3.2xlarge: no capacity"


def test_report_over_fleet_results(tmp_path: Path) -> None:
    _fleet_results(tmp_path)
    pricing = build_pricing(basis="used")
    paths = collect.report(tmp_path, tmp_path / "report", pricing, "Fleet")
    assert sorted(paths) == ["csv", "html", "md"]
    with paths["csv"].open() as fh:
        rows = list(csv.DictReader(fh))
    cost = {(r["instance"], r["workload"], r["mode"]): float(r["usd_per_million"]) for r in rows}
    assert cost == pytest.approx(
        {
            ("g4dn.xlarge", "bert", "infer"): 0.526e6 / (3600 * 5216.51467183444),
            ("g5.xlarge", "bert", "infer"): 1.006e6 / (3600 * 5216.51467183444),
            ("g4dn.xlarge", "ssd", "train"): 0.526e6 / (3600 * 442.46719006830233),
            ("g5.xlarge", "ssd", "train"): 1.006e6 / (3600 * 442.46719006830233),
        }
    )
    assert "g5.xlarge" in paths["md"].read_text()


def test_collect_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _fleet_results(tmp_path)
    code = main(["fleet", "collect", "--out", str(tmp_path), "--report", str(tmp_path / "r")])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert "| g4dn.xlarge | collected   |      2 |    2 |            0 |" in out
    assert f"csv: {tmp_path / 'r' / 'runs.csv'}" in out
    assert main(["fleet", "collect", "--out", str(tmp_path / "nothing")]) == 2
    nothing = tmp_path / "nothing"
    assert capsys.readouterr().err == f"bench: error: no fleet results under {nothing}\n"


def test_manifest_round_trip_and_bad_manifest(tmp_path: Path) -> None:
    manifest = collect.Manifest.for_plan(_plan(use_spot=True))
    collect.write_manifest(tmp_path, manifest)
    assert collect.read_manifest(tmp_path) == manifest
    entry = manifest.instances["p3.2xlarge"]
    assert (entry.cluster_name, entry.hourly_usd, entry.cost_usd_max, entry.status) == (
        "bench-fleet-p3-2xlarge",
        3.06,
        4.845,
        "planned",
    )
    (tmp_path / "fleet.json").write_text(json.dumps({"version": 1}))
    with pytest.raises(Exception, match="fleet.json: not a fleet manifest"):
        collect.read_manifest(tmp_path)
    assert collect.read_manifest(tmp_path / "none") is None


def test_summary_without_manifest_and_stray_dirs(tmp_path: Path) -> None:
    _fleet_record(BERT_INFER, "g6.xlarge", tmp_path / "g6.xlarge")
    _fleet_record(BERT_INFER, "g6.xlarge", tmp_path / "g5.xlarge")
    (tmp_path / "report").mkdir()
    summaries = collect.summarize(tmp_path)
    assert [(s.instance_type, s.status, s.runs) for s in summaries] == [
        ("g5.xlarge", None, 1),
        ("g6.xlarge", None, 1),
    ]
    assert summaries[0].problems[0].endswith("was recorded on g6.xlarge")
    buf = io.StringIO(collect.render_summary(summaries))
    assert "| g5.xlarge  | (not in the manifest) |" in buf.getvalue()
