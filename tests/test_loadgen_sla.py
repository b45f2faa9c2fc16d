"""The SLA search's logic against a simulated server: LoadGen's verdicts given as data (a
capacity, and spurious verdicts injected at chosen runs), no LoadGen, no clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench.run import sla
from bench.run.store import new_record
from bench.schema.record import Outcome, RunRecord, ScenarioFacts
from bench.schema.spec import RunSpec, SpecError

SPEC = RunSpec(
    workload="null",
    device="cpu",
    scenario="server",
    iters=None,
    duration_s=1.0,
    target_qps=1.0,
    latency_bound_ms=10.0,
    latency_percentile=90.0,
)


class SimulatedServer:
    """VALID at or below ``capacity`` QPS; the runs numbered in ``flip`` (0-based) get the
    opposite verdict, as a noisy machine would give."""

    def __init__(self, capacity: float, flip: tuple[int, ...] = ()) -> None:
        self.capacity, self.flip = capacity, flip
        self.loads: list[float] = []

    def __call__(self, spec: RunSpec) -> RunRecord:
        qps = float(spec.target_qps or 0)
        valid = (qps <= self.capacity) != (len(self.loads) in self.flip)
        self.loads.append(qps)
        record = new_record(spec, new_record(SPEC, _env()).environment)
        record.outcome = Outcome(status="ok", message=None)
        values = {
            "effective_scenario": "Server",
            "effective_target_latency_percentile": 0.9,
            "effective_target_latency_ns": 10_000_000,
            "result_validity": "VALID" if valid else "INVALID",
            "result_perf_constraints_met": valid,
            "result_scheduled_samples_per_sec": qps * 0.98,
            "result_completed_samples_per_sec": min(qps, self.capacity),
            "result_90.00_percentile_latency_ns": 8e6 if valid else 30e6,
        }
        record.scenario = ScenarioFacts(
            name="server", timing="loadgen", result={"loadgen": {"values": values}}
        )
        return record


def _env():  # type: ignore[no-untyped-def]
    from bench.schema.record import Environment

    return Environment()


def run_search(server: Callable[[RunSpec], RunRecord], **kw: object) -> sla.SlaResult:
    options: dict[str, object] = {"start_qps": 50.0, "max_points": 30, **kw}
    return sla.search(SPEC, server, **options)  # type: ignore[arg-type]


def test_a_spurious_invalid_at_the_start_does_not_sink_the_answer():
    server = SimulatedServer(100.0, flip=(0,))
    result = run_search(server)
    assert server.loads[0] == 50.0
    assert result.best_qps is not None and result.best_qps >= 90.0
    assert result.lowest_invalid_qps is not None and result.lowest_invalid_qps > 100.0
    assert result.converged and result.found_bracket
    assert result.bracket_width == pytest.approx(
        (result.lowest_invalid_qps - result.best_qps) / result.lowest_invalid_qps
    )
    assert result.bracket_width <= 0.05
    # the spurious INVALID at 50 was re-tested (best 2 of 3) and every re-test is recorded
    at_50 = [(p.valid, p.retest) for p in result.points if p.target_qps == 50.0]
    assert at_50 == [(False, False), (True, True), (True, True)]
    # LoadGen's scheduled rate at the confirmed point is kept
    assert result.scheduled_qps_at_best == pytest.approx(result.best_qps * 0.98)


def test_both_ends_are_confirmed_by_a_second_run():
    server = SimulatedServer(100.0)
    result = run_search(server)
    assert 95.0 <= result.best_qps <= 100.0  # type: ignore[operator]
    for end in (result.best_qps, result.lowest_invalid_qps):
        runs = [p for p in result.points if p.target_qps == end]
        assert len(runs) == 2 and runs[1].retest
        assert runs[0].valid == runs[1].valid


def test_a_spurious_valid_above_capacity_is_re_tested():
    # run 1 (at 100) is a spurious VALID: confirmation overturns it
    server = SimulatedServer(60.0, flip=(1,))
    result = run_search(server)
    assert server.loads[:2] == [50.0, 100.0]
    assert result.best_qps is not None and 57.0 <= result.best_qps <= 60.0
    assert [p.valid for p in result.points if p.target_qps == 100.0][:1] == [True]


def test_a_tiny_tolerance_ends_without_repeating_a_point():
    server = SimulatedServer(100.0)
    result = run_search(server, tolerance=0.001, max_points=100)
    assert result.tolerance == sla.MIN_TOLERANCE
    first_runs = [p.target_qps for p in result.points if not p.retest]
    assert len(first_runs) == len(set(first_runs))
    assert result.converged and len(result.points) < 100
    assert result.best_qps == 100.0


def test_the_search_never_descends_below_its_floor():
    server = SimulatedServer(0.001)  # nothing is ever VALID
    result = run_search(server, max_point_s=10.0)
    # 44 queries (early stopping at p90) in at most 10 s: 4.4 QPS is the lowest load tried
    assert result.floor_qps == 4.4
    assert min(server.loads) == 4.4
    assert result.best_qps is None and not result.found_bracket
    assert result.stop_reason == "no valid load above 4.4 QPS (the lowest load tried)"


def test_the_time_cap_stops_the_search_before_a_run_that_would_pass_it():
    now = [0.0]
    server = SimulatedServer(100.0)

    def run_5_s(spec: RunSpec) -> RunRecord:  # each run takes 5 s of the fake clock
        now[0] += 5.0
        return server(spec)

    result = run_search(run_5_s, max_time_s=12.0, clock=lambda: now[0])
    # a run lasts at least its 1 s minimum duration: runs start at 0, 5 and 10 s (10 + 1
    # <= 12); a fourth would start at 15 s, past the cap
    assert len(result.points) == 3
    assert "--max-time 12 s" in result.stop_reason


@pytest.mark.parametrize("points", [0, 1])
def test_fewer_than_two_points_are_refused(points):
    with pytest.raises(SpecError, match="at least 2 points"):
        run_search(SimulatedServer(100.0), max_points=points)


@pytest.mark.parametrize(
    "qps, expected", [(48.45, 48.4), (48.46, 48.5), (12345.0, 12300.0), (0.73333, 0.733)]
)
def test_loads_round_to_three_significant_figures(qps, expected):
    assert sla.round_qps(qps) == expected


def test_rendering_uses_plain_numbers_and_wraps_reasons():
    server = SimulatedServer(20_000.0)
    result = run_search(server, start_qps=12_000.0)
    text = sla.render(result)
    assert "e+" not in text
    assert "12,000" in text
    assert "bracket" in text and "wide" in text
    long = sla.SlaPoint(10.0, False, "x " * 100, None, None, None, "r")
    result.points = [long]
    rows = [line for line in sla.render(result).splitlines() if "x x" in line]
    assert len(rows) == 4  # 200 characters wrapped to 60
    assert max(len(line) for line in rows) < 130


def test_the_search_starts_at_half_the_probed_capacity():
    from bench.schema.record import Latency

    probe = sla.probe_spec(SPEC.replace(max_batch=8))
    assert (probe.scenario, probe.batch, probe.iters) == ("loop", 8, sla.PROBE_ITERS)
    record = SimulatedServer(100.0)(probe)
    record.latency = Latency(5, 80.0, 80.0, 80.0, 80.0, 80.0, 80.0, 80.0, 0.0, 0.0, 0.0)
    # 8 samples per 80 ms batch: 100 per second, half of it to start
    assert sla.start_from_probe(record) == 50.0
    record.outcome = Outcome(status="error", message="boom")
    with pytest.raises(sla.SlaError, match="the probe run failed: boom"):
        sla.start_from_probe(record)


def test_point_time_and_floor_follow_loadgens_minimum_query_count():
    # p90: early stopping needs 44 queries; at 2 QPS that is 22 s, over the 1 s minimum
    assert sla.min_queries(SPEC) == 44
    assert sla.point_seconds(SPEC, 2.0) == 22.0
    assert sla.point_seconds(SPEC, 100.0) == 1.0
    assert sla.floor_qps(SPEC, 120.0) == 0.367  # 44 / 120, rounded up
