"""The served path's logic without a server: endpoint URLs in the spec, Triton's statistics
turned into window figures, the checks that refuse a busy port or a silent endpoint before
anything runs, the served sample library, and the in-process/served table."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from bench.cli import build_parser, main
from bench.run import envinfo, registry
from bench.run.registry import run_label
from bench.run.sla import SlaPoint, SlaResult
from bench.run.store import new_record
from bench.run.workload import WorkloadInfo
from bench.schema.record import Outcome, RunRecord, ScenarioFacts
from bench.schema.spec import RunSpec, SpecError
from bench.serve import compare, launcher, stats
from bench.serve.endpoint import Endpoint, check_connect
from bench.serve.server import stub_library_path
from models.bert.served import FEATURES

# -- the spec -------------------------------------------------------------------------------


def test_endpoint_urls_parse_and_label_the_run() -> None:
    spec = RunSpec(
        workload="bert",
        scenario="offline",
        endpoint="grpc://10.0.0.5:8001/bert",
        iters=None,
        duration_s=5.0,
    )
    assert Endpoint.parse(spec.endpoint or "") == Endpoint("grpc", "10.0.0.5", 8001, "bert")
    assert run_label(spec).endswith("_offline-served")
    assert Endpoint.parse("http://[::1]:8000/m").address == "[::1]:8000"


@pytest.mark.parametrize(
    "url",
    ["grpc://host/bert", "https://h:1/bert", "grpc://h:0/bert", "grpc://h:70000/b", "h:1/b"],
)
def test_malformed_endpoints_are_refused(url: str) -> None:
    with pytest.raises(SpecError, match="grpc://host:port/model"):
        RunSpec(workload="bert", scenario="offline", endpoint=url)


def test_an_endpoint_needs_a_loadgen_scenario() -> None:
    with pytest.raises(SpecError, match="LoadGen"):
        RunSpec(workload="bert", endpoint="grpc://h:1/bert")


# -- Triton's statistics -----------------------------------------------------------------------


def _stats(inferences: int, executions: int, **phases: tuple[int, int]) -> dict[str, object]:
    return {
        "model_stats": [
            {"name": "other", "inference_count": 99, "execution_count": 99},
            {
                "name": "bert",
                "version": "1",
                "inference_count": inferences,
                "execution_count": executions,
                "inference_stats": {k: {"count": c, "ns": n} for k, (c, n) in phases.items()},
            },
        ]
    }


def test_window_figures_are_the_difference_of_two_readings() -> None:
    before = stats.counters(_stats(10, 5, success=(10, 10_000_000), queue=(10, 2_000_000)), "bert")
    # 40 requests in 10 executions: queue 40 ms in all, compute 20+50+10 ms in all
    after_raw = _stats(
        50,
        15,
        success=(50, 150_000_000),
        queue=(50, 42_000_000),
        compute_input=(40, 20_000_000),
        compute_infer=(40, 50_000_000),
        compute_output=(40, 10_000_000),
        fail=(2, 1_000),
    )
    figures = stats.window(before, stats.counters(after_raw, "bert"))
    assert figures.requests == 40
    assert figures.failed_requests == 2
    assert figures.inferences == 40
    assert figures.executions == 10
    assert figures.average_batch == 4.0
    assert figures.request_ms == pytest.approx(3.5)
    assert figures.queue_ms == pytest.approx(1.0)
    assert figures.compute_infer_ms == pytest.approx(1.25)
    assert figures.queue_share == pytest.approx(40 / 120)
    assert figures.compute_share == pytest.approx(80 / 120)
    assert stats.overhead_ms(5.0, figures) == pytest.approx(1.5)
    assert stats.overhead_ms(None, figures) is None


def test_grpc_json_strings_and_left_out_zeros_read_as_numbers() -> None:
    raw = {
        "model_stats": [
            {
                "name": "bert",
                "inference_count": "8",
                "execution_count": "2",
                "inference_stats": {"success": {"count": "8", "ns": "8000000"}, "fail": {}},
            }
        ]
    }
    got = stats.counters(raw, "bert")
    assert (got.inferences, got.executions) == (8, 2)
    assert got.phases["success"] == (8, 8_000_000)
    assert got.phases["queue"] == (0, 0)
    nothing = stats.window(got, got)
    assert nothing.average_batch is None and nothing.queue_share is None


def test_statistics_of_an_unknown_model_are_an_error() -> None:
    with pytest.raises(ValueError, match="no model named 'ssd'"):
        stats.counters(_stats(1, 1), "ssd")


# -- checks before anything runs ----------------------------------------------------------------


def test_a_port_in_use_is_refused_in_one_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(SpecError, match=f"port {port} on 127.0.0.1 is in use"):
            launcher.check_ports_free("127.0.0.1", (port,))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_refused_connection_is_refused_in_one_line() -> None:
    port = _closed_port()
    with pytest.raises(SpecError, match=f"nothing answers at grpc://127.0.0.1:{port}/bert"):
        check_connect(Endpoint("grpc", "127.0.0.1", port, "bert"))


def test_bench_run_against_a_silent_endpoint_exits_2_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _closed_port()
    out = str(tmp_path)
    code = main(
        [
            "run",
            "--workload",
            "null",
            "--device",
            "cpu",
            "--scenario",
            "single-stream",
            "--endpoint",
            f"http://127.0.0.1:{port}/null",
            "--out",
            out,
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "nothing answers at" in err[0]
    assert not list(tmp_path.iterdir())


def test_serving_the_network_needs_an_explicit_flag(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", "--workload", "null", "--host", "0.0.0.0"])
    assert code == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_mxnet_is_not_served() -> None:
    with pytest.raises(SpecError, match="serves the torch and onnxruntime paths, not mxnet$"):
        launcher.check_spec(RunSpec(workload="bert", backend="mxnet"))
    with pytest.raises(SpecError, match="no onnxruntime implementation of workload 'null'"):
        launcher.check_spec(RunSpec(workload="null", backend="onnxruntime"))


def test_what_is_served_is_what_the_workloads_declare() -> None:
    assert registry.served_workload_names() == ("ssd", "bert", "null")
    with pytest.raises(SpecError, match="serves the ssd, bert and null workloads, not bert-qa$"):
        launcher.check_spec(RunSpec(workload="bert-qa"))
    with pytest.raises(SpecError, match="'bert-qa' is not served"):
        registry.served_form("bert-qa")


#: A workload added by its registry entries alone, served in the null workload's form.
ECHO = WorkloadInfo(name="echo", flops=lambda _: (0.0, ""), served="models.null_served:SERVED")


def test_a_new_workload_is_served_by_its_declaration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.WORKLOAD_INFO, "echo", f"{__name__}:ECHO")
    monkeypatch.setitem(
        registry.REGISTRY, ("echo", "torch"), registry.Entry("models.null:NullWorkload")
    )
    parser = build_parser()
    assert parser.parse_args(["serve", "--workload", "echo"]).workload == "echo"
    launcher.check_spec(RunSpec(workload="echo"))
    form = registry.served_form("echo")
    assert form.sample_arrays(RunSpec(workload="echo"), 2)["x"].shape == (2, 1)


def test_the_stub_finds_this_interpreters_libpython_first() -> None:
    import sysconfig

    path = stub_library_path({"LD_LIBRARY_PATH": "/opt/x"}).split(":")
    assert path == [sysconfig.get_config_var("LIBDIR"), "/opt/x"]


# -- the served model's side ------------------------------------------------------------------


def test_the_client_sends_the_samples_the_in_process_path_stages() -> None:
    from data.synthetic import detection_batch, text_batch

    spec = RunSpec(workload="bert", seq_len=16, seed=3)
    bert = registry.served_form("bert")
    arrays = bert.sample_arrays(spec, 5)
    text = text_batch(5, 16, seed=3)
    for name in FEATURES:
        np.testing.assert_array_equal(arrays[name], getattr(text, name))
    sig = bert.signature(spec)
    assert [t.name for t in sig.inputs] == list(FEATURES)
    assert all(arrays[t.name].shape[1:] == t.shape for t in sig.inputs)

    ssd = RunSpec(workload="ssd", image_size=64, seed=1)
    form = registry.served_form("ssd")
    images = form.sample_arrays(ssd, 2)["images"]
    np.testing.assert_array_equal(images, detection_batch(2, 64, seed=1).images)
    assert images.shape[1:] == form.signature(ssd).inputs[0].shape
    assert [t.name for t in form.signature(ssd).outputs] == ["ids", "scores", "boxes"]


def test_the_null_sleeper_echoes_its_input() -> None:
    from models.null import NullWorkload

    workload = NullWorkload(RunSpec(workload="null", device="cpu"))
    workload.setup()
    fn = registry.served_form("null").infer_fn(workload)
    x = np.arange(3, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(fn({"x": x})["y"], x)


# -- the table ---------------------------------------------------------------------------------


def _best(spec: RunSpec, sut: dict[str, object], latencies_ms: list[float]) -> RunRecord:
    record = new_record(spec, envinfo.collect([]))
    record.outcome = Outcome(status="ok", message=None)
    mean_ns = sum(latencies_ms) / len(latencies_ms) * 1e6
    values = {  # LoadGen's own keys, as a LoadGen run keeps them: p90 30 ms
        "effective_scenario": "Server",
        "effective_target_latency_percentile": 0.9,
        "result_validity": "VALID",
        "result_90.00_percentile_latency_ns": 30e6,
        "result_mean_latency_ns": mean_ns,
    }
    record.scenario = ScenarioFacts(
        name="server", timing="loadgen", result={"loadgen": {"values": values}, "sut": sut}
    )
    return record


def _search(best: float) -> SlaResult:
    result = SlaResult(
        spec={},
        latency_bound_ms=50.0,
        latency_percentile=90.0,
        tolerance=0.1,
        start_qps=best,
        floor_qps=1.0,
    )
    result.best_qps, result.lowest_invalid_qps = best, best * 1.1
    result.points.append(SlaPoint(best, True, None, best, best, 30.0, "r1"))
    return result


def test_in_process_and_served_rows() -> None:
    spec = RunSpec(workload="bert", scenario="server", target_qps=10.0, latency_bound_ms=50.0)
    local = _best(spec, {"batch_sizes": {"1": 2, "4": 2}}, [10.0, 20.0])
    server = {"average_batch": 3.0, "request_ms": 12.0, "queue_share": 0.25, "compute_share": 0.75}
    remote = _best(
        spec.replace(endpoint="grpc://h:1/bert"),
        {"endpoint": "grpc://h:1/bert", "queries_failed": 0, "server": server},
        [14.0, 16.0],
    )
    rows = [
        compare.figures("in-process", _search(40.0), local),
        compare.figures("served", _search(20.0), remote),
    ]
    assert rows[0].average_batch == pytest.approx(2.5)
    assert rows[0].overhead_ms is None and rows[0].failed_requests is None
    assert rows[1].average_batch == 3.0
    assert rows[1].overhead_ms == pytest.approx(15.0 - 12.0)
    assert rows[1].latency_at_best_ms == 30.0
    table = compare.render(rows, "p90 <= 50 ms")
    assert "| served " in table and "25%" in table and "| 40 " in table


def test_compare_keeps_served_and_in_process_paths_apart() -> None:
    from bench.analysis.compare import compare
    from bench.analysis.prices import load_catalogue
    from bench.analysis.pricing import Pricing
    from tests.test_serving import served

    records = [
        served("g4dn.xlarge", "Tesla T4", 200, True, 9.0),
        served("g4dn.xlarge", "Tesla T4", 120, True, 9.0, endpoint="grpc://h:1/bert"),
    ]
    runs = [(Path(f"{r.run_id}.json"), r) for r in records]
    ((_, rows),) = compare(runs, Pricing(load_catalogue())).serving.items()
    by = {r.backend: r.best_qps for r in rows}
    assert by == {"torch": 200, "torch (served)": 120}
    assert runs[1][1].spec.backend_label == "torch (served)"


def test_sla_in_process_needs_an_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sla", "--workload", "null", "--latency-bound", "5ms", "--in-process"])
    assert code == 2
    assert "give --endpoint" in capsys.readouterr().err
