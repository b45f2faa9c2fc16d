"""The fleet on SkyPilot: the only module that imports it (the ``fleet`` extra), and only
when called, so ``bench`` works without it.

A task is the project as workdir, ``make setup`` as set-up and the suite as run, on one
instance type, with autodown as a deadline (``make_task``): SkyPilot tears the cluster down
itself the plan's ``autodown_min`` minutes after the job starts, whatever the cluster is
doing and even if this process is gone. The tool brings the results back over SSH (SkyPilot
names each cluster as an SSH host) and tears the cluster down as soon as it has them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from bench.fleet.plan import CLUSTER_PREFIX, FleetError, InstanceTask
from bench.fleet.run import Unavailable

INSTALL_HINT = (
    "install the fleet extra: `make setup-fleet`, then use .venv-fleet/bin/bench "
    "(or pip install -e '.[fleet,report]' into an environment of your own)"
)
#: SkyPilot's working directory on a cluster (its SKY_REMOTE_WORKDIR, ~/sky_workdir), as rsync
#: takes it: relative to the login directory.
REMOTE_WORKDIR = "sky_workdir"
#: Results are a few MB; the cluster's grace minutes bound this anyway.
PULL_TIMEOUT_S = 300


def load_sky() -> Any:
    """The ``sky`` package, or :class:`FleetError` (exit 2) saying how to install it."""
    try:
        import sky
    except ImportError as exc:
        raise FleetError(f"SkyPilot is not installed ({exc}); {INSTALL_HINT}") from None
    _env_bin_on_path()
    return sky


def _env_bin_on_path() -> None:
    """SkyPilot runs the ``aws`` command installed beside it: put this environment's bin
    directory on PATH when it is not there (``.venv-fleet/bin/bench`` run directly)."""
    bin_dir = Path(sys.executable).parent
    if shutil.which("aws") is None and (bin_dir / "aws").exists():
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


def check_credentials() -> None:
    """:class:`FleetError` (exit 2) unless SkyPilot can use AWS compute from here."""
    from sky import clouds
    from sky.clouds import cloud as cloud_lib

    ok, reason = clouds.AWS.check_credentials(cloud_lib.CloudCapability.COMPUTE)
    if not ok:
        detail = " ".join(str(reason or "no reason given").split())
        raise FleetError(
            f"SkyPilot cannot use AWS from here: {detail}. Set up AWS credentials "
            "(`aws configure`, or an AWS_PROFILE) and check them with `sky check aws`"
        )


def make_task(sky: Any, task: InstanceTask, workdir: Path) -> Any:
    """The SkyPilot task of one instance type."""
    sky_task = sky.Task(
        name=task.cluster_name,
        setup=task.setup,
        run=task.run,
        workdir=str(workdir),
        envs={"PYTHONUNBUFFERED": "1"},
    )
    sky_task.set_resources(
        sky.Resources(
            infra=f"aws/{task.region}",
            instance_type=task.instance_type,
            use_spot=task.use_spot,
            disk_size=task.disk_gb,
            image_id=task.image_id,
            # wait_for none: the minutes count from the job's start, not from idleness, so
            # neither a stuck set-up nor an open SSH session can keep the cluster up
            autostop={"idle_minutes": task.autodown_min, "down": True, "wait_for": "none"},
        )
    )
    return sky_task


def launch_kwargs(task: InstanceTask) -> dict[str, Any]:
    """How a task is launched: its own cluster (autodown comes with its resources), no
    retrying a capacity error (the instance type is reported unavailable instead)."""
    return {"cluster_name": task.cluster_name, "retry_until_up": False}


def _name(record: Any) -> str:
    name = getattr(record, "name", None)
    return str(name if name is not None else record["name"])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def pull_results(cluster_name: str, remote_results: str, local_dir: Path) -> None:
    """rsync a run's results (``remote_results`` under the workdir) from the cluster, which
    SkyPilot names as an SSH host, into ``local_dir``."""
    source = f"{cluster_name}:{REMOTE_WORKDIR}/{remote_results}/"
    local_dir.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            ["rsync", "-a", source, f"{local_dir}/"],
            check=True,
            capture_output=True,
            text=True,
            timeout=PULL_TIMEOUT_S,
        )
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr or "").strip().splitlines()
        raise RuntimeError(f"rsync exited {exc.returncode}: {last[-1] if last else ''}") from None


class SkyBackend:
    """:class:`bench.fleet.run.FleetBackend` on SkyPilot's client API (which starts a local
    SkyPilot API server on first use)."""

    def __init__(self, sky: Any, workdir: Path) -> None:
        self.sky = sky
        self.workdir = workdir
        self._requests: dict[str, Any] = {}
        self._lock = threading.Lock()

    def launch(self, task: InstanceTask, log: TextIO) -> int:
        from sky import exceptions

        request = self.sky.launch(make_task(self.sky, task, self.workdir), **launch_kwargs(task))
        with self._lock:
            self._requests[task.cluster_name] = request
        try:
            job_id, _handle = self.sky.stream_and_get(request, output_stream=log)
        except exceptions.ResourcesUnavailableError as exc:
            log.write(f"{exc}\n")
            raise Unavailable(_first_line(exc)) from None
        finally:
            with self._lock:
                self._requests.pop(task.cluster_name, None)
        if job_id is None:
            raise RuntimeError("SkyPilot submitted no job")
        return int(job_id)

    def wait(self, task: InstanceTask, job_id: int, log: TextIO) -> bool:
        code = self.sky.tail_logs(task.cluster_name, job_id, follow=True, output_stream=log)
        return bool(code == 0)

    def pull(self, task: InstanceTask, local_dir: Path) -> None:
        pull_results(task.cluster_name, task.remote_results, local_dir)

    def clusters(self, names: Sequence[str] | None = None) -> list[str]:
        """The fleet's clusters SkyPilot knows (all of them, or those of ``names``)."""
        wanted = list(names) if names is not None else None
        records = self.sky.get(self.sky.status(cluster_names=wanted))
        found = {_name(r) for r in records}
        return sorted(
            n for n in found if n.startswith(CLUSTER_PREFIX) and (wanted is None or n in wanted)
        )

    def down(self, cluster_names: Sequence[str]) -> list[str]:
        existing = self.clusters(cluster_names)
        requests = [self.sky.down(name) for name in existing]
        for request in requests:
            self.sky.get(request)
        return existing

    def cancel(self) -> None:
        with self._lock:
            pending = list(self._requests.values())
        if pending:
            self.sky.get(self.sky.api_cancel(pending, silent=True))
