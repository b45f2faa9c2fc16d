"""Launch a fleet plan through a backend (SkyPilot in use, a fake in tests): every instance
type at once, each one's results brought back and its cluster torn down however its run
ended; an instance type that cannot be had is reported and the others go on; on Ctrl-C or
SIGTERM every launch in flight is cancelled and every cluster of the plan torn down."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, TextIO

from bench.fleet.collect import (
    COLLECTED,
    EXIT_CODE_FILE,
    FAILED,
    FINAL,
    INTERRUPTED,
    JOB_LOG,
    LAUNCH_LOG,
    LAUNCHING,
    RUNNING,
    UNAVAILABLE,
    Manifest,
    write_manifest,
)
from bench.fleet.plan import FleetPlan, InstanceTask

#: The exit status ``timeout`` gives a command it stopped.
TIMEOUT_EXIT = 124


class Unavailable(Exception):
    """The instance type cannot be had: no capacity, no quota, not offered in the region."""


class FleetBackend(Protocol):
    """What the fleet needs of a cluster engine."""

    def launch(self, task: InstanceTask, log: TextIO) -> int:
        """Provision the cluster, sync the workdir, submit set-up and run; the job id.
        Raises :class:`Unavailable` when the instance type cannot be had."""
        ...

    def wait(self, task: InstanceTask, job_id: int, log: TextIO) -> bool:
        """Follow the job to its end, its log into ``log``; whether it succeeded."""
        ...

    def pull(self, task: InstanceTask, local_dir: Path) -> None:
        """Copy the run's results from the cluster into ``local_dir``."""
        ...

    def down(self, cluster_names: Sequence[str]) -> list[str]:
        """Tear down those of ``cluster_names`` that exist; the names torn down."""
        ...

    def cancel(self) -> None:
        """Cancel the launches in flight."""
        ...


def _job_message(directory: Path, ok: bool) -> str | None:
    try:
        code: int | None = int((directory / EXIT_CODE_FILE).read_text().strip())
    except (OSError, ValueError):
        code = None
    if code == TIMEOUT_EXIT:
        return "the run reached its time limit and was stopped"
    if code not in (None, 0):
        return f"the suite exited with status {code} (see {JOB_LOG})"
    if not ok:
        return f"the job failed (see {JOB_LOG})"
    return None


class _Fleet:
    def __init__(
        self, plan: FleetPlan, backend: FleetBackend, out: Path, say: Callable[[str], None]
    ) -> None:
        self.plan, self.backend, self.out, self.say = plan, backend, out, say
        self.manifest = Manifest.for_plan(plan)
        self.lock = threading.Lock()
        self.stopped = False

    def update(self, task: InstanceTask, status: str, message: str | None = None) -> None:
        with self.lock:
            if self.stopped:
                return
            entry = self.manifest.instances[task.instance_type]
            entry.status, entry.message = status, message
            write_manifest(self.out, self.manifest)
            self.say(f"{task.instance_type}: {status}" + (f": {message}" if message else ""))

    def down(self, task: InstanceTask) -> str | None:
        try:
            self.backend.down([task.cluster_name])
        except Exception as exc:
            return f"tearing down {task.cluster_name} failed ({exc}): run `bench fleet down`"
        return None

    def one(self, task: InstanceTask) -> None:
        directory = self.out / task.instance_type
        directory.mkdir(parents=True, exist_ok=True)
        self.update(task, LAUNCHING)
        try:
            with (directory / LAUNCH_LOG).open("w") as log:
                job_id = self.backend.launch(task, log)
        except Unavailable as exc:
            problems = [str(exc), self.down(task)]
            self.update(task, UNAVAILABLE, "; ".join(p for p in problems if p))
            return
        except Exception as exc:
            problems = [f"the launch failed: {exc} (see {LAUNCH_LOG})", self.down(task)]
            self.update(task, FAILED, "; ".join(p for p in problems if p))
            return
        self.update(task, RUNNING)
        problems, ok = [], False
        try:
            with (directory / JOB_LOG).open("w") as log:
                ok = self.backend.wait(task, job_id, log)
        except Exception as exc:
            problems.append(f"following the job failed: {exc}")
        pulled = False
        try:
            self.backend.pull(task, directory)
            pulled = True
        except Exception as exc:
            problems.append(f"bringing the results back failed: {exc}")
        finally:
            problems.append(self.down(task))
        problems.insert(0, _job_message(directory, ok))
        found = [p for p in problems if p]
        self.update(task, COLLECTED if pulled else FAILED, "; ".join(found) or None)

    def guarded(self, task: InstanceTask) -> None:
        try:
            self.one(task)
        except Exception as exc:  # a bug must not leave the others unwatched
            self.update(task, FAILED, f"{type(exc).__name__}: {exc}")
            self.down(task)

    def interrupted(self) -> None:
        with self.lock:
            self.stopped = True  # the threads' later updates are not recorded
            for entry in self.manifest.instances.values():
                if entry.status not in FINAL:
                    entry.status, entry.message = INTERRUPTED, "stopped by an interrupt"
            write_manifest(self.out, self.manifest)
        self.say(
            "interrupted: cancelling the launches and tearing down every cluster of the fleet "
            "(further Ctrl-C is ignored until that is done)"
        )
        try:
            self.backend.cancel()
        except Exception as exc:
            self.say(f"cancelling the launches failed: {exc}")
        try:
            gone = self.backend.down(self.plan.cluster_names)
            self.say(f"torn down: {', '.join(gone) or 'none were up'}")
        except Exception as exc:
            self.say(f"tearing down failed ({exc}): run `bench fleet down`")


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM ignored inside (in the main thread), so a second Ctrl-C cannot cut
    the tear-down short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_fleet(
    plan: FleetPlan, backend: FleetBackend, out: Path, say: Callable[[str], None] = print
) -> Manifest:
    """Launch every task of ``plan`` at once, wait for all, and return the manifest (also
    written to ``out/fleet.json`` at every change). Interrupts are re-raised after the
    clean-up."""
    out.mkdir(parents=True, exist_ok=True)
    fleet = _Fleet(plan, backend, out, say)
    write_manifest(out, fleet.manifest)
    threads = [
        threading.Thread(target=fleet.guarded, args=(t,), name=t.cluster_name, daemon=True)
        for t in plan.tasks
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except BaseException:
        with _signals_held():
            fleet.interrupted()
        raise
    return fleet.manifest


def fleet_ok(manifest: Manifest, out: Path) -> bool:
    """Whether every instance type's run came back and its suite exited 0."""
    return all(
        e.status == COLLECTED and _job_message(out / name, True) is None
        for name, e in manifest.instances.items()
    )
