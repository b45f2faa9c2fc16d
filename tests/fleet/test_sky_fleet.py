"""The fleet through SkyPilot itself (the pinned release, the fixture catalogue): task and
resource validation, the optimizer's choice, the launch's dry run and its provisioning
description, the credentials check, and how SkyPilot's answers become fleet outcomes."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
import sky
import yaml
from sky import exceptions, execution
from sky.skylet import constants
from sky.utils import dag_utils

from bench.analysis.prices import load_catalogue
from bench.cli import main
from bench.fleet import sky_backend
from bench.fleet.plan import (
    GPU_IMAGE,
    LEGACY_GPU_IMAGE,
    FleetOptions,
    InstanceTask,
    image_for,
    plan_fleet,
)
from bench.fleet.run import Unavailable
from tests.fleet.conftest import CATALOGUE_DIR, FIXTURE_CATALOGUE, GENERATED_DIR

PROJECT = Path(__file__).resolve().parents[2]
README_FLEET = ("g4dn.xlarge", "p3.2xlarge", "g5.xlarge", "g6.xlarge")
GPUS = {"g4dn.xlarge": "T4", "p3.2xlarge": "V100", "g5.xlarge": "A10G", "g6.xlarge": "L4"}


def _tasks(**options: Any) -> dict[str, InstanceTask]:
    plan = plan_fleet(
        FleetOptions(instances=README_FLEET, precision="auto", **options), load_catalogue()
    )
    return {t.instance_type: t for t in plan.tasks}


def test_fixture_catalogue_has_the_project_prices() -> None:
    assert CATALOGUE_DIR.name == "v8"  # the layout of the pinned SkyPilot
    with (FIXTURE_CATALOGUE / "aws" / "vms.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    ours = load_catalogue()
    assert {r["InstanceType"] for r in rows} == set(ours)
    assert set(README_FLEET) <= set(ours)
    for row in rows:
        entry = ours[row["InstanceType"]]
        assert float(row["Price"]) == entry.price_per_hour_usd
        assert float(row["SpotPrice"]) == entry.price_per_hour_usd
        assert row["AcceleratorName"] == entry.gpu_model
        assert float(row["AcceleratorCount"]) == entry.gpu_count
        assert (row["Region"], row["Arch"]) == ("us-east-1", "x86_64")


def test_skypilot_prices_and_picks_from_the_fixture(aws_enabled: None) -> None:
    """SkyPilot's optimizer, on the fixture, picks the instance type asked for in us-east-1
    at the project's hourly price, the price the plan's cost estimate uses."""
    tasks = _tasks()
    for name in README_FLEET:
        with sky.Dag() as dag:
            sky_backend.make_task(sky, tasks[name], PROJECT)
        sky.Optimizer.optimize(dag, quiet=True)
        best = dag.tasks[0].best_resources
        assert best.instance_type == name
        assert best.region == "us-east-1"
        assert best.get_cost(3600) == pytest.approx(tasks[name].hourly_usd, rel=1e-12)
        assert best.accelerators == {GPUS[name]: 1}
    assert {n: tasks[n].hourly_usd for n in README_FLEET} == {
        "g4dn.xlarge": 0.526,
        "p3.2xlarge": 3.06,
        "g5.xlarge": 1.006,
        "g6.xlarge": 0.8048,
    }


def test_the_pinned_images_are_skypilots_own_choice(aws_enabled: None) -> None:
    from sky import catalog
    from sky.clouds import aws

    for entry in load_catalogue().values():
        pinned = catalog.get_image_id_from_tag(image_for(entry.gpu_model), "us-east-1", "aws")
        default = aws.AWS._get_default_ami("us-east-1", entry.instance_type)
        assert pinned == default, entry.instance_type
    assert image_for("V100") == LEGACY_GPU_IMAGE
    assert image_for("T4") == GPU_IMAGE


def test_skypilot_rejects_an_instance_type_it_does_not_offer(aws_enabled: None) -> None:
    task = _tasks()["g5.xlarge"]
    bad = InstanceTask(**{**task.__dict__, "instance_type": "g5.huge"})
    sky_task = sky_backend.make_task(sky, bad, PROJECT)
    with pytest.raises(ValueError, match="Invalid instance type 'g5.huge' for cloud AWS"):
        execution.launch(sky_task, dryrun=True, **sky_backend.launch_kwargs(bad))


def test_the_task_as_the_api_server_receives_it() -> None:
    """The client sends the task as YAML: what arrives is the plan's set-up and run, the
    project as workdir and the plan's resources."""
    task = _tasks()["g4dn.xlarge"]
    with sky.Dag() as dag:
        sky_backend.make_task(sky, task, PROJECT)
    sent = dag_utils.load_chain_dag_from_yaml_str(dag_utils.dump_chain_dag_to_yaml_str(dag))
    received = sent.tasks[0]
    assert received.name == "bench-fleet-g4dn-xlarge"
    assert received.setup == task.setup
    assert received.run == task.run
    assert received.workdir == str(PROJECT)
    assert received.envs == {"PYTHONUNBUFFERED": "1"}
    (res,) = received.resources
    assert (res.instance_type, res.disk_size, res.use_spot, res.region) == (
        "g4dn.xlarge",
        100,
        False,
        "us-east-1",
    )
    assert res.image_id == {"us-east-1": GPU_IMAGE}
    # autodown as a deadline: 30 + 45 + 10 minutes after the job starts, whatever it does
    assert res.autostop_config.to_yaml_config() == {
        "idle_minutes": 85,
        "down": True,
        "wait_for": "none",
    }


def _dry_run(task: InstanceTask) -> dict[str, Any]:
    """Launch ``task`` through SkyPilot's in-process API with ``dryrun=True`` and the real
    launch's arguments; the cluster description it wrote."""
    written = GENERATED_DIR / f"{task.cluster_name}.yml.tmp"
    written.unlink(missing_ok=True)
    with sky.Dag() as dag:
        sky_backend.make_task(sky, task, PROJECT)
    job_id, handle = execution.launch(dag, dryrun=True, **sky_backend.launch_kwargs(task))
    assert (job_id, handle) == (None, None)
    description: dict[str, Any] = yaml.safe_load(written.read_text())
    return description


@pytest.mark.parametrize(
    ("instance_type", "ami"),
    [("g4dn.xlarge", "ami-fixture-gpu-cuda13"), ("p3.2xlarge", "ami-fixture-gpu-cuda12")],
)
def test_dry_run_provisioning_description(aws_enabled: None, instance_type: str, ami: str) -> None:
    task = _tasks()[instance_type]
    description = _dry_run(task)
    node = description["available_node_types"]["ray.head.default"]["node_config"]
    assert node["InstanceType"] == instance_type
    assert node["ImageId"] == ami
    assert node["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 100
    assert "InstanceMarketOptions" not in node  # on-demand
    assert description["provider"]["region"] == "us-east-1"
    assert description["provider"]["module"] == "sky.provision.aws"
    assert description["cluster_name"].startswith(task.cluster_name)
    assert description["max_workers"] == 0


def test_dry_run_of_a_spot_instance(aws_enabled: None) -> None:
    task = _tasks(use_spot=True)["g5.xlarge"]
    description = _dry_run(task)
    node = description["available_node_types"]["ray.head.default"]["node_config"]
    assert node["InstanceType"] == "g5.xlarge"
    assert node["ImageId"] == "ami-fixture-gpu-cuda13"
    assert node["InstanceMarketOptions"]["MarketType"] == "spot"


def test_the_remote_workdir_is_skypilots() -> None:
    assert f"~/{sky_backend.REMOTE_WORKDIR}" == constants.SKY_REMOTE_WORKDIR


def test_missing_credentials_exit_2_before_anything_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """SkyPilot's own AWS check, with no credentials anywhere: exit 2, nothing launched."""
    code = main(["fleet", "launch", "--instances", "g4dn.xlarge", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("bench: error: SkyPilot cannot use AWS from here: ")
    assert "`sky check aws`" in err
    assert list(tmp_path.iterdir()) == []


class _Client:
    """SkyPilot's client calls, answering as the API server would."""

    Task, Resources = sky.Task, sky.Resources

    def __init__(self, launch_error: Exception | None = None, logs_code: int = 0) -> None:
        self.launch_error, self.logs_code = launch_error, logs_code
        self.calls: list[tuple[str, Any]] = []
        self.clusters = ["bench-fleet-g5-xlarge", "someone-elses"]

    def launch(self, task: Any, **kwargs: Any) -> str:
        self.calls.append(("launch", kwargs))
        return f"req-launch-{kwargs['cluster_name']}"

    def stream_and_get(self, request: str, output_stream: io.StringIO) -> tuple[int, None]:
        output_stream.write(f"streamed {request}\n")
        if self.launch_error is not None:
            raise self.launch_error
        return 7, None

    def tail_logs(self, cluster: str, job_id: int, follow: bool, output_stream: Any) -> int:
        self.calls.append(("tail_logs", (cluster, job_id, follow)))
        return self.logs_code

    def status(self, cluster_names: list[str] | None) -> str:
        self.calls.append(("status", cluster_names))
        return "req-status"

    def down(self, name: str) -> str:
        self.calls.append(("down", name))
        return f"req-down-{name}"

    def api_cancel(self, requests: list[str], silent: bool) -> str:
        self.calls.append(("api_cancel", requests))
        return "req-cancel"

    def get(self, request: str) -> Any:
        if request == "req-status":
            return [{"name": n} for n in self.clusters]
        return None


def test_backend_reports_an_unavailable_instance_type() -> None:
    error = exceptions.ResourcesUnavailableError(
        "Failed to provision all possible launchable resources. Relax the task's resource "
        "requirements:\n 1x AWS(g5.xlarge)"
    )
    client = _Client(launch_error=error)
    backend = sky_backend.SkyBackend(client, PROJECT)
    log = io.StringIO()
    with pytest.raises(Unavailable) as caught:
        backend.launch(_tasks()["g5.xlarge"], log)
    assert str(caught.value) == (
        "Failed to provision all possible launchable resources. Relax the task's resource "
        "requirements:"
    )
    assert log.getvalue() == f"streamed req-launch-bench-fleet-g5-xlarge\n{error}\n"
    assert client.calls == [
        (
            "launch",
            {"cluster_name": "bench-fleet-g5-xlarge", "retry_until_up": False},
        )
    ]
    backend.cancel()  # nothing in flight any more: nothing to cancel
    assert [c for c in client.calls if c[0] == "api_cancel"] == []


def test_backend_job_outcome_down_and_clusters() -> None:
    ok = sky_backend.SkyBackend(_Client(logs_code=0), PROJECT)
    task = _tasks()["g5.xlarge"]
    assert ok.launch(task, io.StringIO()) == 7
    assert ok.wait(task, 7, io.StringIO()) is True
    failed = _Client(logs_code=int(exceptions.JobExitCode.FAILED))
    assert sky_backend.SkyBackend(failed, PROJECT).wait(task, 7, io.StringIO()) is False
    client = _Client()
    backend = sky_backend.SkyBackend(client, PROJECT)
    assert backend.clusters() == ["bench-fleet-g5-xlarge"]
    assert backend.down(["bench-fleet-g5-xlarge", "bench-fleet-g6-xlarge"]) == [
        "bench-fleet-g5-xlarge"
    ]
    assert ("down", "bench-fleet-g5-xlarge") in client.calls
    assert ("down", "someone-elses") not in client.calls
