"""Interrupts and time limits with real processes: the worker's whole process group stops,
temporary files go, nothing half-done is written, and the exit code says which signal."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bench.run.runner import _run_worker

ROOT = Path(__file__).resolve().parent.parent


def _wait_for(predicate, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell does for a background job


@pytest.mark.parametrize(
    "sig, code, started_ignoring_sigint",
    [(signal.SIGTERM, 143, False), (signal.SIGINT, 130, False), (signal.SIGINT, 130, True)],
)
def test_a_signal_stops_the_worker_and_leaves_nothing(tmp_path, sig, code, started_ignoring_sigint):
    """Also when the shell started `bench` in the background, with SIGINT ignored."""
    tmp, out = tmp_path / "tmp", tmp_path / "runs"
    tmp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "--workload", "null", "--device", "cpu"]
        + ["--warmup", "0", "--duration", "300", "--out", str(out), "--no-progress"],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ignore_sigint if started_ignoring_sigint else None,
    )
    try:
        parent = psutil.Process(proc.pid)
        worker = _wait_for(lambda: next(iter(parent.children()), None))
        # the worker is measuring once its first checkpoint holds the workload's facts
        _wait_for(lambda: any(tmp.rglob("result.json")))
        time.sleep(1.0)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr
    assert stderr.strip().splitlines()[-1] in ("bench: terminated", "bench: interrupted")
    _wait_for(lambda: _gone(worker.pid), timeout_s=10)
    assert list(tmp.iterdir()) == []  # the worker's temporary directory is gone
    assert not out.exists() or list(out.iterdir()) == []  # no record, no orphan series


def test_a_time_limit_stops_the_worker_and_what_it_started(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(300)\n"
    )
    started = time.monotonic()
    code, _ = _run_worker([sys.executable, "-c", script], timeout_s=3)
    assert code is None and time.monotonic() - started < 30
    grandchild = int(_wait_for(lambda: pid_file.exists() and pid_file.read_text()))
    _wait_for(lambda: _gone(grandchild), timeout_s=10)


def test_a_worker_output_ending_in_a_carriage_return_is_ended_with_a_newline(capfd):
    write_bar = "import sys; sys.stderr.write('measure 50%|#####     |\\r')"
    code, tail = _run_worker([sys.executable, "-c", write_bar], timeout_s=30)
    assert code == 0 and tail.endswith("\r")
    assert capfd.readouterr().err.endswith("|\r\n")
