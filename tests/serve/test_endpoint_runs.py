"""LoadGen against a real Triton server: the endpoint SUT keeps requests in flight (the
server batches them), the server's statistics land beside LoadGen's latencies, bad
endpoints are refused before anything runs, and a server that dies mid-run ends the run
with an error naming the cause, leaving no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main
from bench.run.store import load_record
from bench.serve import launcher
from tests.serve.conftest import MAX_BATCH, SERVICE_MS, group_gone, sleeper_config

ARGS = ["--workload", "null", "--device", "cpu", "--no-progress", "--no-telemetry"]


def _record(out: Path) -> Any:
    (path,) = [p for p in out.glob("*.json") if not p.name.startswith("sla-")]
    return load_record(path)


def test_offline_over_grpc_is_batched_by_the_server(
    sleeper: launcher.Server, tmp_path: Path
) -> None:
    code = main(
        ["run", *ARGS, "--scenario", "offline", "--target-qps", "200", "--duration", "1"]
        + ["--endpoint", sleeper.grpc_url, "--out", str(tmp_path)]
    )
    assert code == 0
    record = _record(tmp_path)
    sut = record.scenario.result["sut"]
    assert sut["sut"] == "endpoint" and sut["queries_failed"] == 0
    server = sut["server"]
    # every query LoadGen issued reached the server as one request of one sample
    assert server["requests"] == server["inferences"] == sut["queries_issued"]
    assert sut["queries_issued"] == record.timing.measured_samples
    # issued all at once, they wait in Triton's queue and run in batches of up to MAX_BATCH
    assert sut["max_in_flight_seen"] > MAX_BATCH
    assert 2 < server["average_batch"] <= MAX_BATCH
    assert server["queue_share"] + server["compute_share"] == pytest.approx(1.0)
    assert record.workload.details["served_model"] == "null"


def test_single_stream_over_http_runs_one_sample_per_execution(
    sleeper: launcher.Server, tmp_path: Path
) -> None:
    code = main(
        ["run", *ARGS, "--scenario", "single-stream", "--duration", "1"]
        + ["--endpoint", sleeper.http_url, "--out", str(tmp_path)]
    )
    assert code == 0
    record = _record(tmp_path)
    server = record.scenario.result["sut"]["server"]
    assert server["average_batch"] == 1.0
    # the sleeper's service time is inside every request, on the server and the client
    assert server["compute_infer_ms"] >= SERVICE_MS
    assert record.latency.min_ms >= SERVICE_MS
    assert record.latency.mean_ms >= server["request_ms"]


@pytest.mark.parametrize(
    ("workload", "model", "message"),
    [
        ("null", "nosuch", "serves no ready model named 'nosuch'"),
        ("bert", "null", "takes inputs x, not bert's attention_mask, input_ids, token_type_ids"),
    ],
)
def test_a_wrong_model_exits_2_in_one_line_before_running(
    sleeper: launcher.Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    workload: str,
    model: str,
    message: str,
) -> None:
    url = sleeper.grpc_url.rsplit("/", 1)[0] + f"/{model}"
    args = ["run", *ARGS, "--scenario", "single-stream", "--endpoint", url]
    args[2] = workload
    code = main([*args, "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and message in err[0]
    assert not list(tmp_path.iterdir())


def test_serving_on_a_port_in_use_exits_2_in_one_line(
    sleeper: launcher.Server, capsys: pytest.CaptureFixture[str]
) -> None:
    port = sleeper.config.http_port
    code = main(["serve", "--workload", "null", "--device", "cpu", "--port", str(port)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and f"port {port} on 127.0.0.1 is in use" in err[0]


def _inferences(server: launcher.Server) -> int:
    url = f"http://127.0.0.1:{server.config.http_port}/v2/models/null/stats"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            data = json.load(response)
    except OSError:
        return 0
    return int(data["model_stats"][0].get("inference_count", 0))


def test_a_server_dying_mid_run_ends_it_with_an_error_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    config = sleeper_config()
    with launcher.running(config, timeout_s=180) as server:
        cmd = [sys.executable, "-m", "bench", "run", *ARGS, "--scenario", "server"]
        cmd += ["--target-qps", "20", "--latency-bound", "1s", "--duration", "4"]
        cmd += ["--endpoint", server.grpc_url, "--out", str(tmp_path)]
        run = subprocess.Popen(cmd, start_new_session=True, stderr=subprocess.PIPE, text=True)
        try:
            # the window has begun once the server counts more than the warm-up's requests
            # (one query of one sample, then five)
            warmup = 6 + 4
            for _ in range(600):
                if _inferences(server) > warmup or run.poll() is not None:
                    break
                time.sleep(0.1)
            os.killpg(server.proc.pid, signal.SIGKILL)  # the whole server, at once
            server.proc.wait(timeout=30)
            # bounded: the rest of the test's duration, then failing requests end at once
            _, err = run.communicate(timeout=180)
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()
    assert run.returncode == 1
    record = _record(tmp_path)
    assert record.outcome.status == "error"
    assert "the SUT failed during the LoadGen test" in record.outcome.message
    assert "in request: " in record.outcome.message
    assert "UNAVAILABLE" in record.outcome.message
    assert group_gone(server.proc.pid)
    assert group_gone(run.pid)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_bench_serve_stops_everything_it_started_on_a_signal(sig: signal.Signals) -> None:
    import psutil

    from tests.serve.conftest import free_ports

    cmd = [sys.executable, "-m", "bench", "serve", "--workload", "null", "--device", "cpu"]
    cmd += ["--port", str(free_ports())]
    # started as a shell starts a background job: SIGINT ignored
    ignore = signal.SIGINT if sig == signal.SIGINT else None
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=(lambda: signal.signal(ignore, signal.SIG_IGN)) if ignore else None,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the model is ready
        assert line.startswith("serving null: grpc://127.0.0.1:")
        started = psutil.Process(proc.pid).children(recursive=True)
        names = {p.name() for p in started}
        assert "tritonserver" in names and "triton_python_backend_stub" in names
        proc.send_signal(sig)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert code == 128 + sig
    _, alive = psutil.wait_procs(started, timeout=30)
    assert alive == []


def test_sla_search_over_an_endpoint_finds_a_confirmed_bracket(
    sleeper: launcher.Server, tmp_path: Path
) -> None:
    """`bench sla --endpoint`: a short offline probe through the endpoint sets the start,
    the search confirms both ends, and at the best load the server batched requests."""
    code = main(
        ["sla", *ARGS, "--endpoint", sleeper.grpc_url, "--latency-bound", "500ms"]
        + ["--percentile", "90", "--duration", "1", "--tolerance", "0.25"]
        + ["--max-time", "300", "--out", str(tmp_path)]
    )
    assert code == 0
    (summary,) = tmp_path.glob("sla-*.json")
    result = json.loads(summary.read_text())
    assert result["best_qps"] > 0 and result["lowest_invalid_qps"] > result["best_qps"]
    best = [p for p in result["points"] if p["valid"] and p["target_qps"] == result["best_qps"]]
    record = load_record(tmp_path / f"{best[-1]['run_id']}.json")
    server = record.scenario.result["sut"]["server"]
    # the sleeper holds each batch SERVICE_MS: above 1000 / SERVICE_MS QPS requests queue
    assert result["best_qps"] < 1000 / SERVICE_MS or server["average_batch"] > 1
