"""bench.run.loadgen_log: LoadGen's logs read into a typed result.

Two kinds of test. Stored real logs (tests/fixtures/loadgen, see its README) pin exact
values and run without LoadGen. Live tests run LoadGen in-process with a trivial SUT that
completes each query a fixed delay after it was issued, and check the verdicts and figures
that follow from the settings and the delay; each run is at most about a second.
"""

from __future__ import annotations

import contextlib
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
    SUMMARY_LOG,
    LoadgenLogError,
    LoadgenResult,
    parse_detail,
    parse_logs,
    parse_summary,
    read_detail_records,
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
    return parse_detail(loadgen_run(name) / DETAIL_LOG)


# -- live: LoadGen's files and verdicts ------------------------------------------------------


def test_loadgen_writes_its_four_files(loadgen_run):
    out = loadgen_run("server_valid")
    names = {p.name for p in out.iterdir()}
    assert {DETAIL_LOG, SUMMARY_LOG, "mlperf_log_accuracy.json", "mlperf_log_trace.json"} <= names
    lines = (out / DETAIL_LOG).read_text().splitlines()
    assert lines and all(line.startswith(":::MLLOG {") for line in lines)
    assert json.loads((out / "mlperf_log_accuracy.json").read_text()) == []  # performance mode
    assert "MLPerf Results Summary" in (out / SUMMARY_LOG).read_text()


def test_server_at_low_qps_with_an_instant_sut_is_valid(loadgen_run):
    r = _detail(loadgen_run, "server_valid")
    assert (r.log, r.scenario, r.mode) == ("detail", "Server", "PerformanceOnly")
    assert (r.validity, r.valid, r.invalid_reasons) == ("VALID", True, ()), r.to_dict()
    assert r.perf_constraints_met is True
    assert r.min_duration_met is True
    assert r.min_queries_met is True
    assert r.early_stopping_met is True
    assert r.early_stopping_result == "Run successful."
    assert r.loadgen_invalid_reason is None
    s = r.settings
    assert (s.target_qps, s.target_latency_ns, s.target_latency_percentile) == (
        200.0,
        LOOSE_BOUND_NS,
        0.9,
    )
    assert (s.min_duration_ms, s.min_query_count, s.samples_per_query) == (1000, 100, 1)
    assert (s.schedule_rng_seed, s.performance_sample_count) == (0, 64)
    # the seeded Poisson schedule runs near the target (187.9/s for seed 0 here); an instant
    # SUT completes about as scheduled
    assert r.scheduled_samples_per_s == pytest.approx(200, rel=0.1)
    assert r.completed_samples_per_s == pytest.approx(200, rel=0.2)
    assert r.completed_samples_per_s == pytest.approx(r.scheduled_samples_per_s, rel=0.15)
    assert r.query_count is not None and r.query_count >= 100
    lat = r.latency_ms
    assert lat.min is not None and lat.p50 is not None and lat.p90 is not None
    assert lat.max is not None and lat.p99_9 is not None
    assert 0 < lat.min <= lat.p50 <= lat.p90 <= lat.p99_9 <= lat.max
    assert r.target_percentile_latency_ms == lat.p90 < LOOSE_BOUND_NS / 1e6
    assert r.query_latency_ms is None
    assert r.samples_per_s is None and r.early_stopping_latency_ms is None
    assert r.errors == () and r.num_errors == 0
    assert r.complete and r.malformed_lines == 0
    assert r.loadgen_version is not None and r.loadgen_version.startswith("6.")
    assert r.sut_name == "PySUT"


def test_server_too_short_for_early_stopping_at_p99(loadgen_run):
    r = _detail(loadgen_run, "server_early_stopping")
    assert r.valid is False and r.validity == "INVALID"
    assert (r.min_duration_met, r.min_queries_met, r.early_stopping_met) == (True, True, False)
    assert r.invalid_reasons[-1].startswith("early stopping not met: Run unsuccessful.")
    # LoadGen's own reason leaves early stopping out
    assert r.loadgen_invalid_reason in (None, "Reduce target QPS to improve latency.")
    assert r.query_count is not None and r.query_count < 459
    if r.overlatency_query_count == 0:  # then early stopping at p99 needs 459 queries in all
        assert r.early_stopping_result == (
            f"Run unsuccessful. Processed {r.query_count} queries. Would need to run at least "
            f"{459 - r.query_count} more queries, with the run being successful if every "
            "additional query were under latency."
        )


def test_server_sut_slower_than_the_bound_fails_the_latency_constraint(loadgen_run):
    r = _detail(loadgen_run, "server_over_latency")
    assert r.valid is False
    assert r.perf_constraints_met is False
    assert r.loadgen_invalid_reason == "Reduce target QPS to improve latency."
    assert r.invalid_reasons[0].startswith("latency constraint not met: p99 latency ")
    assert r.invalid_reasons[0].endswith(" ms > 10 ms bound")
    assert r.early_stopping_met is False
    assert r.overlatency_query_count == r.query_count  # every query took 50 ms
    assert r.latency_ms.min is not None and r.latency_ms.min >= 50.0
    assert r.target_percentile_latency_ms == r.latency_ms.p99
    assert r.completed_samples_per_s is not None and r.scheduled_samples_per_s is not None


def test_server_stopped_by_max_query_count_logs_an_error(loadgen_run):
    r = _detail(loadgen_run, "server_max_query_count")
    assert r.valid is False
    assert r.query_count == 20
    assert r.min_queries_met is False and r.min_duration_met is False
    assert "min queries not met (20 of 100)" in r.invalid_reasons
    assert "min duration not met (1000 ms)" in r.invalid_reasons
    assert r.loadgen_invalid_reason is not None
    assert "before enough queries were issued" in r.loadgen_invalid_reason
    assert r.num_errors == len(r.errors) >= 1
    error = next(e for e in r.errors if "Max query count reached" in e.message)
    assert error.key == "error_runtime"
    assert (
        error.message == "IssueQueryThread 0 Ending early: Max query count reached. query_count 20"
    )
    assert error.file == "issue_query_controller.cc" and error.line_no is not None
    assert r.settings.max_query_count == 20


def test_offline_is_valid_with_samples_per_second(loadgen_run):
    r = _detail(loadgen_run, "offline")
    assert (r.scenario, r.validity, r.valid) == ("Offline", "VALID", True), r.to_dict()
    assert r.invalid_reasons == ()
    assert r.settings.samples_per_query == 550  # max(100, 1.1 * 0.5 s * 1000/s)
    assert r.settings.min_query_count == 1  # LoadGen: one coalesced query
    assert r.settings.min_sample_count == 550
    assert r.query_count == 1
    assert r.samples_per_s is not None
    # every sample done 0.6 s after issue (and a little more): at most 550 / 0.6
    assert 550 / 1.0 < r.samples_per_s <= 550 / 0.6
    assert r.latency_ms.max is not None and r.latency_ms.max >= 600.0
    assert r.early_stopping_met is True and r.early_stopping_result is None
    assert r.perf_constraints_met is None  # Server only
    assert r.target_percentile_latency_ms is None  # no latency target in Offline
    assert r.completed_samples_per_s is None


def test_offline_shorter_than_min_duration_is_invalid(loadgen_run):
    r = _detail(loadgen_run, "offline_too_short")
    assert r.valid is False
    assert r.invalid_reasons == ("min duration not met (500 ms)",)
    assert r.loadgen_invalid_reason == (
        "Increase expected QPS so the loadgen pre-generates a larger (coalesced) query."
    )
    assert (r.min_duration_met, r.min_queries_met, r.early_stopping_met) == (False, True, True)


def test_single_stream_p90_is_the_sut_delay(loadgen_run):
    r = _detail(loadgen_run, "single_stream")
    assert (r.scenario, r.valid, r.invalid_reasons) == ("SingleStream", True, ()), r.to_dict()
    assert r.query_count == 100  # stops at min_query_count: the 500 ms came first
    assert r.settings.target_qps == 100.0  # 1 s / expected latency 10 ms
    assert r.settings.target_latency_percentile == 0.9
    # never under the delay; about 10.2 ms on an idle machine (the stored log's exact value
    # is tested below) but tens of ms on a loaded one, where the SUT's thread must wake and
    # take the GIL: a loose upper bound, still far from any unit error
    p90 = r.latency_ms.p90
    assert p90 is not None and 10.0 <= p90 < 100.0
    assert r.latency_ms.min is not None and r.latency_ms.min >= 10.0
    assert r.target_percentile_latency_ms == p90
    # early stopping's p90 estimate: a rank at or above p90's; none for p99 from 100 queries
    assert r.early_stopping_latency_ms is not None and r.early_stopping_latency_ms >= p90
    assert r.early_stopping_p99_latency_ms is None
    assert r.early_stopping_result is not None
    assert r.early_stopping_result.startswith("Processed at least 64 queries (100).")
    assert r.early_stopping_result.endswith("(would need to process at least 662 total queries).")
    assert r.qps_with_loadgen_overhead is not None and r.qps_with_loadgen_overhead < 100.0
    assert r.qps_without_loadgen_overhead is not None
    assert r.qps_without_loadgen_overhead == pytest.approx(1000 / r.latency_ms.mean, rel=1e-3)


def test_multi_stream_needs_662_queries_for_early_stopping_at_p99(loadgen_run):
    r = _detail(loadgen_run, "multi_stream")
    assert (r.scenario, r.valid, r.query_count) == ("MultiStream", False, 50)
    assert (r.min_duration_met, r.min_queries_met, r.early_stopping_met) == (True, True, False)
    assert r.early_stopping_result == (
        "Only processed 50 queries. Need to process at least 662 queries for early stopping."
    )
    assert r.invalid_reasons == (f"early stopping not met: {r.early_stopping_result}",)
    assert r.loadgen_invalid_reason is None  # LoadGen logs "" when only early stopping fails
    assert r.early_stopping_latency_ms is None  # LoadGen logs 0: no estimate
    assert (r.settings.samples_per_query, r.settings.min_sample_count) == (8, 400)
    q = r.query_latency_ms
    assert q is not None and q.p99 is not None and q.min is not None
    assert q.min >= 10.0
    assert r.target_percentile_latency_ms == q.p99


@pytest.mark.parametrize(
    "name", ["server_over_latency", "offline", "single_stream", "multi_stream"]
)
def test_summary_agrees_with_the_detail_log(loadgen_run, name):
    out = loadgen_run(name)
    _assert_summary_agrees(parse_detail(out / DETAIL_LOG), parse_summary(out / SUMMARY_LOG))


def _assert_summary_agrees(d: LoadgenResult, s: LoadgenResult) -> None:
    assert s.log == "summary"
    for name in (
        "scenario",
        "mode",
        "validity",
        "valid",
        "perf_constraints_met",
        "min_duration_met",
        "min_queries_met",
        "early_stopping_met",
        "early_stopping_result",
        "loadgen_invalid_reason",
        "early_stopping_latency_ms",
        "early_stopping_p99_latency_ms",
        "sut_name",
        "num_errors",
    ):
        assert getattr(s, name) == getattr(d, name), name
    if d.scenario == "MultiStream":  # the summary gives per-query latencies only
        assert s.query_latency_ms == d.query_latency_ms
    else:
        assert s.latency_ms == d.latency_ms  # whole nanoseconds in both
    if d.scenario in ("SingleStream", "MultiStream"):
        assert s.target_percentile_latency_ms == d.target_percentile_latency_ms
    for name in ("completed_samples_per_s", "scheduled_samples_per_s", "samples_per_s"):
        dv, sv = getattr(d, name), getattr(s, name)
        assert (dv is None) == (sv is None), name
        if dv is not None:
            assert sv == pytest.approx(dv, rel=1e-3, abs=0.01), name
    for name in ("samples_per_query", "target_qps", "target_latency_ns", "min_duration_ms"):
        assert getattr(s.settings, name) == getattr(d.settings, name), name
    assert s.complete and d.complete


# -- stored real logs: exact values, no LoadGen needed ---------------------------------------


def test_stored_server_log_exact_values():
    r = parse_detail(FIXTURES / "server_over_latency" / DETAIL_LOG)
    assert r.to_dict() | {"test_datetime": None} == {
        "log": "detail",
        "scenario": "Server",
        "mode": "PerformanceOnly",
        "validity": "INVALID",
        "valid": False,
        "invalid_reasons": [
            "latency constraint not met: p99 latency 50.33 ms > 10 ms bound",
            "early stopping not met: Run unsuccessful. Processed 93 queries. Would need to run "
            "at least 11696 more queries, with the run being successful if every additional "
            "query were under latency.",
        ],
        "loadgen_invalid_reason": "Reduce target QPS to improve latency.",
        "perf_constraints_met": False,
        "min_duration_met": True,
        "min_queries_met": True,
        "early_stopping_met": False,
        "early_stopping_result": "Run unsuccessful. Processed 93 queries. Would need to run at "
        "least 11696 more queries, with the run being successful if every additional query "
        "were under latency.",
        "early_stopping_latency_ms": None,
        "early_stopping_p99_latency_ms": None,
        "query_count": 93,
        "overlatency_query_count": 93,
        "completed_samples_per_s": 164.503,
        "scheduled_samples_per_s": 180.739,
        "samples_per_s": None,
        "qps_with_loadgen_overhead": None,
        "qps_without_loadgen_overhead": None,
        "target_percentile_latency_ms": 50.333856,
        "latency_ms": {
            "min": 50.115909,
            "max": 50.333856,
            "mean": 50.190212,
            "p50": 50.184689,
            "p90": 50.227628,
            "p95": 50.25065,
            "p97": 50.270006,
            "p99": 50.333856,
            "p99_9": 50.333856,
        },
        "query_latency_ms": None,
        "settings": {
            "samples_per_query": 1,
            "target_qps": 200.0,
            "target_latency_ns": 10000000,
            "target_latency_percentile": 0.99,
            "max_async_queries": 0,
            "target_duration_ms": 500,
            "min_duration_ms": 500,
            "max_duration_ms": 0,
            "min_query_count": 50,
            "max_query_count": 0,
            "min_sample_count": 50,
            "performance_sample_count": 64,
            "accuracy_sample_count": 64,
            "qsl_rng_seed": 0,
            "sample_index_rng_seed": 0,
            "schedule_rng_seed": 0,
        },
        "sut_name": "PySUT",
        "loadgen_version": "6.0.17 @ d6147c7eb7",
        "test_datetime": None,
        "errors": [],
        "warnings": [],
        "num_errors": 0,
        "num_warnings": 0,
        "complete": True,
        "malformed_lines": 0,
    }
    assert r.test_datetime == "2026-11-26T15:21:12Z"


def test_stored_single_stream_log_exact_values():
    r = parse_detail(FIXTURES / "single_stream" / DETAIL_LOG)
    assert (r.valid, r.query_count, r.settings.target_qps) == (True, 100, 100.0)
    assert r.latency_ms.p90 == 10.205181
    assert r.target_percentile_latency_ms == 10.205181
    assert r.early_stopping_latency_ms == 10.374483
    assert r.early_stopping_p99_latency_ms is None
    assert (r.qps_with_loadgen_overhead, r.qps_without_loadgen_overhead) == (98.0802, 98.2807)


def test_stored_multi_stream_log_exact_values():
    r = parse_detail(FIXTURES / "multi_stream" / DETAIL_LOG)
    assert r.query_latency_ms is not None
    assert (r.query_latency_ms.p99, r.query_latency_ms.mean) == (10.342195, 10.143122)
    assert r.target_percentile_latency_ms == 10.342195
    assert r.early_stopping_latency_ms is None


@pytest.mark.parametrize("name", ["server_over_latency", "single_stream", "multi_stream"])
def test_stored_summary_agrees_with_the_detail_log(name):
    d = FIXTURES / name
    _assert_summary_agrees(parse_detail(d / DETAIL_LOG), parse_summary(d / SUMMARY_LOG))


def test_stored_summary_exact_values():
    s = parse_summary(FIXTURES / "server_over_latency" / SUMMARY_LOG)
    assert (s.completed_samples_per_s, s.scheduled_samples_per_s) == (164.5, 180.74)  # rounded
    assert s.invalid_reasons[0] == "latency constraint not met"  # no percentile in the summary
    assert s.settings.target_latency_ns == 10_000_000
    assert s.settings.target_latency_percentile is None
    assert (s.num_errors, s.num_warnings) == (0, 0)
    ss = parse_summary(FIXTURES / "single_stream" / SUMMARY_LOG)
    assert (ss.settings.target_latency_percentile, ss.target_percentile_latency_ms) == (
        0.9,
        10.205181,
    )


def test_to_dict_is_fresh_and_strict_json():
    r = parse_detail(FIXTURES / "single_stream" / DETAIL_LOG)
    d = r.to_dict()
    json.dumps(d, allow_nan=False)
    d["sut"] = {"batches": 3}  # the harness adds its SUT's statistics
    d["latency_ms"]["p90"] = 0.0
    assert "sut" not in r.to_dict() and r.to_dict()["latency_ms"]["p90"] == 10.205181
    with pytest.raises(AttributeError):
        r.valid = False  # type: ignore[misc]


# -- damaged and incomplete logs ------------------------------------------------------------


def _stored_lines(name: str = "server_over_latency") -> list[str]:
    return (FIXTURES / name / DETAIL_LOG).read_text().splitlines(keepends=True)


def _cut_after(lines: list[str], key: str, keep_chars: int) -> str:
    """The log up to the line of ``key``, then ``keep_chars`` of the line after it."""
    i = next(n for n, line in enumerate(lines) if f'"key": "{key}"' in line)
    return "".join(lines[: i + 1]) + lines[i + 1][:keep_chars]


def test_truncated_detail_log_keeps_what_it_has(tmp_path):
    # cut in the middle of the p95 line: the verdict is there, p95 and after are not
    path = tmp_path / DETAIL_LOG
    path.write_text(_cut_after(_stored_lines(), "result_90.00_percentile_latency_ns", 60))
    r = parse_detail(path)
    assert r.malformed_lines == 1 and r.complete is False
    assert r.validity == "INVALID" and r.perf_constraints_met is False
    assert r.latency_ms.p90 == 50.227628
    assert (r.latency_ms.p95, r.latency_ms.p99, r.latency_ms.p99_9) == (None, None, None)
    assert r.target_percentile_latency_ms is None
    assert r.invalid_reasons[0] == "latency constraint not met"  # no p99 to quote
    assert r.query_count == 93 and r.completed_samples_per_s == 164.503


def test_detail_log_cut_before_the_verdict_is_not_valid(tmp_path):
    path = tmp_path / DETAIL_LOG
    path.write_text(_cut_after(_stored_lines("single_stream"), "generated_query_duration", 30))
    r = parse_detail(path)
    assert (r.validity, r.valid, r.complete) == (None, False, False)
    assert r.invalid_reasons == (
        "LoadGen logged no verdict (the test did not finish or its log was cut short)",
    )
    assert r.settings.target_qps == 100.0 and r.scenario == "SingleStream"
    assert r.latency_ms.p90 is None and r.query_count is None
    assert r.early_stopping_met is None and r.min_duration_met is None


def test_missing_keys_give_none(tmp_path):
    path = tmp_path / DETAIL_LOG
    path.write_text(
        ':::MLLOG {"key": "effective_scenario", "value": "Server", "time_ms": 0.01, '
        '"namespace": "mlperf::logging", "event_type": "POINT_IN_TIME", "metadata": '
        '{"is_error": false, "is_warning": false, "file": "t.cc", "line_no": 1, "pid": 1, '
        '"tid": 1}}\n'
        ':::MLLOG {"key": "result_validity", "value": "VALID"}\n'  # no metadata at all
        ':::MLLOG {"key": "result_query_count", "value": "many"}\n'  # a wrong type
        "some line that is not LoadGen's\n"
    )
    r = parse_detail(path)
    assert (r.scenario, r.validity, r.valid, r.invalid_reasons) == ("Server", "VALID", True, ())
    assert r.query_count is None and r.mode is None and r.completed_samples_per_s is None
    assert r.settings.target_qps is None and r.latency_ms.p99 is None
    assert r.malformed_lines == 1 and r.complete is False
    json.dumps(r.to_dict(), allow_nan=False)


def test_lines_that_are_not_json_as_loadgen_writes_them(tmp_path):
    # LoadGen does not escape strings and writes doubles with operator<< (inf, nan)
    meta = (
        '"time_ms": 5.000001, "namespace": "mlperf::logging", "event_type": "POINT_IN_TIME", '
        '"metadata": {{"is_error": {err}, "is_warning": false, "file": "loadgen.cc", '
        '"line_no": 7, "pid": 1, "tid": 2}}}}'
    )
    path = tmp_path / DETAIL_LOG
    path.write_text(
        ':::MLLOG {"key": "error_invalid_config", "value": "bad "value" in C:\\conf", '
        + meta.format(err="true")
        + "\n"
        + ':::MLLOG {"key": "result_qps_without_loadgen_overhead", "value": inf, '
        + meta.format(err="false")
        + "\n"
        + ':::MLLOG {"key": "result_scheduled_samples_per_sec", "value": 1.5e+06, '
        + meta.format(err="false")
        + "\n"
    )
    records, malformed = read_detail_records(path)
    assert malformed == 0
    assert records[0].value == 'bad "value" in C:\\conf' and records[0].is_error
    assert records[0].time_ms == 5.000001 and records[0].line_no == 7
    assert records[1].value == float("inf")
    r = parse_detail(path)
    assert r.errors[0].message == 'bad "value" in C:\\conf'
    assert r.errors[0].key == "error_invalid_config" and r.num_errors == 1
    assert r.qps_without_loadgen_overhead is None  # not finite: no number for JSON
    assert r.scheduled_samples_per_s == 1.5e6


@pytest.mark.parametrize(
    "content", [None, "", "\n\n", "not a LoadGen log\n", ':::MLLOG {"key": "x", "val']
)
def test_unusable_detail_log_raises(tmp_path, content):
    path = tmp_path / DETAIL_LOG
    if content is not None:
        path.write_text(content)
    with pytest.raises(LoadgenLogError):
        parse_detail(path)


def test_directory_or_summary_is_not_a_detail_log(tmp_path):
    with pytest.raises(LoadgenLogError):
        parse_detail(tmp_path)
    with pytest.raises(LoadgenLogError):
        parse_detail(FIXTURES / "single_stream" / SUMMARY_LOG)
    with pytest.raises(LoadgenLogError):
        parse_summary(FIXTURES / "single_stream" / DETAIL_LOG)
    with pytest.raises(LoadgenLogError):
        parse_summary(tmp_path / SUMMARY_LOG)


def test_parse_logs_prefers_the_detail_log_and_falls_back_to_the_summary(tmp_path):
    assert parse_logs(FIXTURES / "single_stream").log == "detail"
    # detail cut before the verdict: the summary has it
    (tmp_path / DETAIL_LOG).write_text(
        _cut_after(_stored_lines("single_stream"), "generated_query_duration", 0)
    )
    (tmp_path / SUMMARY_LOG).write_text((FIXTURES / "single_stream" / SUMMARY_LOG).read_text())
    r = parse_logs(tmp_path)
    assert (r.log, r.valid, r.latency_ms.p90) == ("summary", True, 10.205181)
    # no summary either: the detail log's partial result
    (tmp_path / SUMMARY_LOG).unlink()
    r = parse_logs(tmp_path)
    assert (r.log, r.validity) == ("detail", None)
    # nothing at all
    (tmp_path / DETAIL_LOG).unlink()
    with pytest.raises(LoadgenLogError, match="no readable LoadGen log"):
        parse_logs(tmp_path)
