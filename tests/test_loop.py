import io

import pytest

from bench.run.loop import measure


class FakeClock:
    """Advances by the next step duration each time a step runs."""

    def __init__(self, durations):
        self.now = 100.0
        self.durations = list(durations)
        self.events = []

    def clock(self):
        return self.now

    def step(self):
        self.events.append("step")
        self.now += self.durations.pop(0)

    def sync(self):
        self.events.append("sync")


def test_measure_fixed_iterations_exact_latencies():
    fc = FakeClock([1.0, 1.0, 0.5, 0.25, 0.125])
    m = measure(
        fc.step,
        fc.sync,
        warmup=2,
        iters=3,
        duration_s=None,
        progress=False,
        clock=fc.clock,
        stream=io.StringIO(),
    )
    assert m.latencies_s == [0.5, 0.25, 0.125]
    assert m.window_s == pytest.approx(0.875)
    assert m.warmup_s == pytest.approx(2.0)
    assert m.iterations == 3
    # a sync before warm-up, then every step is followed by a sync
    assert fc.events == ["sync"] + ["step", "sync"] * 5
    assert m.marks["warmup_start"] <= m.marks["measure_start"] <= m.marks["measure_end"]


def test_measure_duration_stops_once_the_window_is_reached():
    fc = FakeClock([0.4] * 10)
    m = measure(
        fc.step,
        fc.sync,
        warmup=0,
        iters=None,
        duration_s=1.0,
        progress=False,
        clock=fc.clock,
        stream=io.StringIO(),
    )
    assert m.iterations == 3  # 0.4, 0.8, 1.2 >= 1.0
    assert m.window_s == pytest.approx(1.2)


def test_measure_needs_exactly_one_bound():
    fc = FakeClock([])
    with pytest.raises(ValueError):
        measure(fc.step, fc.sync, warmup=0, iters=None, duration_s=None, progress=False)
    with pytest.raises(ValueError):
        measure(fc.step, fc.sync, warmup=0, iters=1, duration_s=1.0, progress=False)
