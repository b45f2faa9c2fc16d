"""bench.run.loadgen_log: LoadGen's detail log read into a typed result.

Two kinds of test. Stored real logs (tests/fixtures/loadgen, see its README) pin exact
values and run without LoadGen. Live tests run LoadGen in-process with a trivial SUT that
completes each query a fixed delay after it was issued, and check the verdicts and figures
that follow from the settings and the delay: bounds that hold however late a busy machine
completes the queries (the delay is a minimum, never a maximum).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.run.loadgen_log import (
    DETAIL_LOG,
    LoadgenLogError,
    LoadgenResult,
    from_scenario_result,
    read_detail,
)

FIXTURES = Path(__file__).parent / "fixtures" / "loadgen"


# -- a real LoadGen run ----------------------------------------------------------------------


class DelaySUT:
    """Completes every query ``delay_s`` after LoadGen issued it, on a worker thread (queries
    overlap: a slow query does not hold back the next one's clock)."""

    def __init__(self, lg: Any, delay_s: float) -> None:
        self.lg = lg
        self.delay_s = delay_s
        self.pending: queue.SimpleQueue[tuple[float, list[int]] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._work, daemon=True)
        self.thread.start()

    def issue(self, samples: Any) -> None:
        self.pending.put((time.monotonic() + self.delay_s, [s.id for s in samples]))

    def flush(self) -> None:
        pass

    def _work(self) -> None:
        lg = self.lg
        while (item := self.pending.get()) is not None:
            due, ids = item
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            lg.QuerySamplesComplete([lg.QuerySampleResponse(i, 0, 0) for i in ids])

    def close(self) -> None:
        self.pending.put(None)
        self.thread.join()


def run_loadgen(outdir: Path, scenario: str, delay_s: float = 0.0, **settings: Any) -> Path:
    """One LoadGen performance test over :class:`DelaySUT` and a 64-sample library; its logs
    go to ``outdir``, which is returned."""
    lg = pytest.importorskip("mlperf_loadgen")
    outdir.mkdir(parents=True, exist_ok=True)
    test = lg.TestSettings()
    test.scenario = getattr(lg.TestScenario, scenario)
    test.mode = lg.TestMode.PerformanceOnly
    for name, value in settings.items():
        setattr(test, name, value)
    log = lg.LogSettings()
    log.log_output.outdir = str(outdir)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = False
    impl = DelaySUT(lg, delay_s)
    sut = lg.ConstructSUT(impl.issue, impl.flush)
    qsl = lg.ConstructQSL(64, 64, lambda _: None, lambda _: None)
    try:
        # LoadGen reads an audit.config in the working directory over the settings
        with contextlib.chdir(outdir):
            lg.StartTestWithLogSettings(sut, qsl, test, log)
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
        impl.close()
    return outdir


BOUND_NS = 10_000_000  # the Server runs' latency bound: 10 ms
#: the bound of the run that must be valid: far above an instant SUT's latency even on a
#: loaded machine where other Python threads hold the GIL (each hand-over can take the 5 ms
#: switch interval; two spinning threads and four busy processes on two cores gave p99s
#: near 150 ms)
LOOSE_BOUND_NS = 250_000_000

RUNS: dict[str, tuple[str, float, dict[str, Any]]] = {
    # an instant SUT at 200 QPS, bound at p90 (early stopping needs 44 queries within it)
    "server_valid": (
        "Server",
        0.0,
        dict(
            server_target_qps=200,
            server_target_latency_ns=LOOSE_BOUND_NS,
            server_target_latency_percentile=0.9,
            min_duration_ms=1000,
            min_query_count=100,
        ),
    ),
    # at p99 early stopping needs at least 459 queries: ~60 cannot pass
    "server_early_stopping": (
        "Server",
        0.0,
        dict(
            server_target_qps=200,
            server_target_latency_ns=BOUND_NS,
            min_duration_ms=300,
            min_query_count=50,
        ),
    ),
    # every query 50 ms against a 10 ms bound
    "server_over_latency": (
        "Server",
        0.05,
        dict(
            server_target_qps=200,
            server_target_latency_ns=BOUND_NS,
            min_duration_ms=500,
            min_query_count=50,
        ),
    ),
    # stops after 20 of the 100 queries it needs: an error and min queries unmet
    "server_max_query_count": (
        "Server",
        0.0,
        dict(
            server_target_qps=200,
            server_target_latency_ns=BOUND_NS,
            min_duration_ms=1000,
            min_query_count=100,
            max_query_count=20,
        ),
    ),
    # one query of max(100, 1.1 * 0.5 s * 1000/s) = 550 samples, all done after 0.6 s
    "offline": (
        "Offline",
        0.6,
        dict(offline_expected_qps=1000, min_duration_ms=500, min_query_count=100),
    ),
    # the same query done at once: shorter than the minimum duration
    "offline_too_short": (
        "Offline",
        0.0,
        dict(offline_expected_qps=1000, min_duration_ms=500, min_query_count=100),
    ),
    # 10 ms per query, 100 queries (the 500 ms minimum is met after ~50)
    "single_stream": (
        "SingleStream",
        0.01,
        dict(single_stream_expected_latency_ns=BOUND_NS, min_duration_ms=500, min_query_count=100),
    ),
    # 8 samples a query, 10 ms each, 50 queries: p99 early stopping needs 662
    "multi_stream": (
        "MultiStream",
        0.01,
        dict(
            multi_stream_expected_latency_ns=BOUND_NS,
            multi_stream_samples_per_query=8,
            min_duration_ms=300,
            min_query_count=50,
        ),
    ),
}


@pytest.fixture(scope="module")
def loadgen_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    """The output directory of a run of :data:`RUNS`, run once per module when first asked."""
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            scenario, delay, settings = RUNS[name]
            done[name] = run_loadgen(tmp_path_factory.mktemp(name), scenario, delay, **settings)
        return done[name]

    yield get


def _detail(loadgen_run: Callable[[str], Path], name: str) -> LoadgenResult:
    return read_detail(loadgen_run(name))


# -- live: LoadGen's files and verdicts ------------------------------------------------------


def test_loadgen_writes_its_detail_log(loadgen_run):
    out = loadgen_run("server_valid")
    lines = (out / DETAIL_LOG).read_text().splitlines()
    assert lines and all(line.startswith(":::MLLOG {") for line in lines)
    assert json.loads((out / "mlperf_log_accuracy.json").read_text()) == []  # performance mode


def test_server_at_low_qps_with_an_instant_sut_is_valid(loadgen_run):
    r = _detail(loadgen_run, "server_valid")
    assert (r.scenario, r.valid, r.invalid_reasons) == ("Server", True, ()), r.values
    v = r.values
    assert v["result_validity"] == "VALID"
    assert v["effective_target_qps"] == 200
    assert v["effective_target_latency_ns"] == LOOSE_BOUND_NS
    assert r.target_percentile == 0.9
    assert (v["effective_min_duration_ms"], v["effective_min_query_count"]) == (1000, 100)
    # the seeded Poisson schedule runs near the target whatever the machine's load
    assert r.scheduled_samples_per_s == pytest.approx(200, rel=0.1)
    assert r.completed_samples_per_s is not None and r.completed_samples_per_s > 0
    assert r.query_count is not None and r.query_count >= 100
    lat = [r.latency_ms(a) for a in ("min", 50, 90, 99.9, "max")]
    assert all(x is not None for x in lat)
    assert 0 < lat[0] <= lat[1] <= lat[2] <= lat[3] <= lat[4]  # type: ignore[operator]
    assert r.target_latency_ms == lat[2]
    assert r.latency_ms(50, per_query=True) is None  # MultiStream only
    assert r.samples_per_s is None
    assert r.errors == () and r.malformed_lines == 0
    assert str(v["loadgen_version"]).startswith("6.")
    assert "requested_scenario" not in v and "loaded_qsl_set" not in v  # not kept


def test_server_too_short_for_early_stopping_at_p99(loadgen_run):
    r = _detail(loadgen_run, "server_early_stopping")
    assert r.valid is False
    assert r.values["early_stopping_met"] is False
    assert r.invalid_reasons[-1].startswith("early stopping not met: Run unsuccessful.")
    assert r.query_count is not None and r.query_count < 459


def test_server_sut_slower_than_the_bound_fails_the_latency_constraint(loadgen_run):
    r = _detail(loadgen_run, "server_over_latency")
    assert r.valid is False
    assert r.invalid_reasons[0].startswith("latency bound not met: p99 ")
    assert r.invalid_reasons[0].endswith(" ms > 10 ms")
    assert r.values["result_overlatency_query_count"] == r.query_count  # all took 50 ms
    assert (r.latency_ms("min") or 0) >= 50.0
    assert r.target_latency_ms == r.latency_ms(99)


def test_server_stopped_by_max_query_count_logs_an_error(loadgen_run):
    r = _detail(loadgen_run, "server_max_query_count")
    assert r.valid is False
    assert r.query_count == 20
    assert "min queries not met (20 of 100)" in r.invalid_reasons
    assert "min duration not met (1000 ms)" in r.invalid_reasons
    assert (
        "error_runtime: IssueQueryThread 0 Ending early: Max query count reached. query_count 20"
        in r.errors
    )
    assert f"LoadGen error: {r.errors[0]}" in r.invalid_reasons


def test_offline_is_valid_with_samples_per_second(loadgen_run):
    r = _detail(loadgen_run, "offline")
    assert (r.scenario, r.valid, r.invalid_reasons) == ("Offline", True, ()), r.values
    assert r.values["effective_samples_per_query"] == 550  # max(100, 1.1 * 0.5 s * 1000/s)
    assert r.query_count == 1
    # every sample done at least 0.6 s after issue: at most 550 / 0.6 per second
    assert r.samples_per_s is not None and 0 < r.samples_per_s <= 550 / 0.6
    assert (r.latency_ms("max") or 0) >= 600.0
    assert r.target_latency_ms is None  # no latency target in Offline
    assert r.completed_samples_per_s is None


def test_offline_shorter_than_min_duration_is_invalid(loadgen_run):
    r = _detail(loadgen_run, "offline_too_short")
    assert r.valid is False
    assert r.invalid_reasons == ("min duration not met (500 ms)",)


def test_single_stream_p90_is_at_least_the_sut_delay(loadgen_run):
    r = _detail(loadgen_run, "single_stream")
    assert (r.scenario, r.valid, r.invalid_reasons) == ("SingleStream", True, ()), r.values
    assert r.query_count == 100  # stops at min_query_count: the 500 ms came first
    assert r.target_percentile == 0.9
    p90 = r.latency_ms(90)
    assert p90 is not None and p90 >= 10.0
    assert r.target_latency_ms == p90
    # single-stream's samples per second: LoadGen's QPS with its overhead, below 1 / delay
    assert r.samples_per_s is not None and 0 < r.samples_per_s < 100.0


def test_multi_stream_needs_662_queries_for_early_stopping_at_p99(loadgen_run):
    r = _detail(loadgen_run, "multi_stream")
    assert (r.scenario, r.valid, r.query_count) == ("MultiStream", False, 50)
    assert r.invalid_reasons == (
        "early stopping not met: Only processed 50 queries. Need to process at least 662 "
        "queries for early stopping.",
    )
    q99 = r.latency_ms(99, per_query=True)
    assert q99 is not None and q99 >= 10.0
    assert r.target_latency_ms == q99


# -- stored real logs: exact values, no LoadGen needed ---------------------------------------


def test_stored_server_log_exact_values():
    r = read_detail(FIXTURES / "server_over_latency" / DETAIL_LOG)
    assert r.invalid_reasons == (
        "latency bound not met: p99 50.33 ms > 10 ms",
        "early stopping not met: Run unsuccessful. Processed 93 queries. Would need to run "
        "at least 11696 more queries, with the run being successful if every additional "
        "query were under latency.",
    )
    assert (r.completed_samples_per_s, r.scheduled_samples_per_s) == (164.503, 180.739)
    assert r.query_count == 93
    assert [r.latency_ms(a) for a in ("min", "mean", 50, 90, 95, 97, 99, 99.9, "max")] == [
        50.115909,
        50.190212,
        50.184689,
        50.227628,
        50.25065,
        50.270006,
        50.333856,
        50.333856,
        50.333856,
    ]
    assert r.target_latency_ms == 50.333856
    assert r.latency_ms(99.5) is None  # not one of LoadGen's percentiles
    assert r.values["result_invalid_reason"] == "Reduce target QPS to improve latency."
    assert r.values["loadgen_version"] == "6.0.17 @ d6147c7eb7"
    assert (r.errors, r.warnings, r.malformed_lines) == ((), (), 0)


def test_stored_single_stream_log_exact_values():
    r = read_detail(FIXTURES / "single_stream")  # the directory works too
    assert (r.valid, r.query_count, r.values["effective_target_qps"]) == (True, 100, 100)
    assert r.target_latency_ms == r.latency_ms(90) == 10.205181
    assert r.samples_per_s == 98.0802  # LoadGen's QPS with its overhead


def test_stored_multi_stream_log_exact_values():
    r = read_detail(FIXTURES / "multi_stream" / DETAIL_LOG)
    assert (r.latency_ms(99, per_query=True), r.latency_ms("mean", per_query=True)) == (
        10.342195,
        10.143122,
    )
    assert r.target_latency_ms == 10.342195


def test_the_result_round_trips_through_a_record_as_strict_json():
    r = read_detail(FIXTURES / "server_over_latency")
    stored = json.loads(json.dumps({"loadgen": dataclasses.asdict(r)}, allow_nan=False))
    back = from_scenario_result(stored)
    assert back == r
    assert from_scenario_result({"valid": True}) is None and from_scenario_result(None) is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.values = {}  # type: ignore[misc]


def test_a_partial_last_line_is_counted_and_skipped(tmp_path):
    text = (FIXTURES / "server_over_latency" / DETAIL_LOG).read_text()
    (tmp_path / DETAIL_LOG).write_text(text + ':::MLLOG {"key": "result_vali')
    r = read_detail(tmp_path)
    assert r.malformed_lines == 1
    assert r.values == read_detail(FIXTURES / "server_over_latency").values


def test_a_log_cut_before_the_verdict_is_not_valid(tmp_path):
    lines = (FIXTURES / "server_over_latency" / DETAIL_LOG).read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if '"result_validity"' in line)
    (tmp_path / DETAIL_LOG).write_text("\n".join(lines[:cut]))
    r = read_detail(tmp_path)
    assert r.valid is False
    assert r.invalid_reasons == ("LoadGen logged no verdict",)
    assert r.completed_samples_per_s is None and r.latency_ms(99) is None


@pytest.mark.parametrize("content", ["", "not a log\n", ":::MLLOG {broken\n"])
def test_unusable_detail_log_raises(tmp_path, content):
    (tmp_path / DETAIL_LOG).write_text(content)
    with pytest.raises(LoadgenLogError, match="not a LoadGen detail log"):
        read_detail(tmp_path)


def test_a_missing_log_raises(tmp_path):
    with pytest.raises(LoadgenLogError, match="cannot read the LoadGen detail log"):
        read_detail(tmp_path / "absent.txt")
