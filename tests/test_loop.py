import io

import pytest

from bench.run.loop import measure, measure_pipelined


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


class FakeDevice:
    """A host that spends ``launch_s`` queuing each step and a device that runs each step's
    ``work_s`` in order once it is queued. Event markers complete when the device reaches
    them; ``sync`` waits for the device."""

    def __init__(self, launch_s, work_s):
        self.now = 100.0
        self.free_at = 100.0
        self.launch_s, self.work_s = launch_s, work_s
        self.events = []
        self.kind = "fake_events"

    def clock(self):
        return self.now

    def step(self):
        self.events.append("step")
        self.now += self.launch_s
        self.free_at = max(self.now, self.free_at) + self.work_s

    def sync(self):
        self.events.append("sync")
        self.now = max(self.now, self.free_at)

    def mark(self):
        return max(self.now, self.free_at)

    def elapsed_s(self, start, end):
        return end - start


def pipelined(device, **kwargs):
    kwargs.setdefault("warmup", 0)
    kwargs.setdefault("duration_s", None)
    return measure_pipelined(
        device.step,
        device.sync,
        kwargs.pop("timer", device),
        progress=False,
        clock=device.clock,
        stream=io.StringIO(),
        **kwargs,
    )


def test_pipelined_timing_overlaps_launches_with_device_work():
    # device-bound: 1 ms to launch, 3 ms on the device
    device = FakeDevice(0.001, 0.003)
    m = pipelined(device, iters=4)
    assert m.window_s == pytest.approx(0.013)  # 1 ms launch latency + 4 x 3 ms on the device
    assert m.latencies_s == pytest.approx([0.004, 0.003, 0.003, 0.003])
    assert m.iterations == 4 and m.step_timer == "fake_events"
    # one sync before the warm-up, none inside the window, one at its end
    assert device.events == ["sync"] + ["step"] * 4 + ["sync"]
    # the synchronized loop pays launch + work for every step
    device = FakeDevice(0.001, 0.003)
    s = measure(
        device.step,
        device.sync,
        warmup=0,
        iters=4,
        duration_s=None,
        progress=False,
        clock=device.clock,
        stream=io.StringIO(),
    )
    assert s.window_s == pytest.approx(0.016)


def test_pipelined_timing_of_a_host_bound_step():
    # host-bound: 3 ms to launch, 1 ms on the device: the window is the host's launch time
    device = FakeDevice(0.003, 0.001)
    m = pipelined(device, iters=4)
    assert m.window_s == pytest.approx(0.013)
    # markers complete when the device reaches them: the gaps it waited for the host
    # are inside the steps' times, as on a real stream
    assert m.latencies_s == pytest.approx([0.004, 0.003, 0.003, 0.003])


def test_pipelined_duration_stops_queuing_then_waits_for_the_device():
    device = FakeDevice(0.001, 0.003)
    m = pipelined(device, iters=None, duration_s=0.0035)
    # the host queues until it has spent 3.5 ms (4 launches), then the window runs to the
    # end of the queued work
    assert m.iterations == 4
    assert m.window_s == pytest.approx(0.013)


def test_pipelined_without_a_timer_measures_only_the_window():
    device = FakeDevice(0.001, 0.003)
    m = pipelined(device, iters=3, timer=None, warmup=2)
    assert m.latencies_s == [] and m.step_timer is None
    assert m.iterations == 3
    assert m.window_s == pytest.approx(0.010)
    assert m.warmup_s == pytest.approx(0.008) and m.first_step_s == pytest.approx(0.004)


def test_the_first_warm_up_step_is_timed_alone():
    fc = FakeClock([5.0, 1.0, 1.0, 0.5])
    m = measure(
        fc.step,
        fc.sync,
        warmup=3,
        iters=1,
        duration_s=None,
        progress=False,
        clock=fc.clock,
        stream=io.StringIO(),
    )
    assert m.first_step_s == 5.0 and m.warmup_s == 7.0 and m.latencies_s == [0.5]
    fc = FakeClock([5.0, 0.5])
    m = measure(
        fc.step,
        fc.sync,
        warmup=1,
        iters=1,
        duration_s=None,
        progress=False,
        clock=fc.clock,
        stream=io.StringIO(),
    )
    assert m.first_step_s == 5.0 and m.warmup_s == 5.0
    fc = FakeClock([0.5])
    m = measure(
        fc.step,
        fc.sync,
        warmup=0,
        iters=1,
        duration_s=None,
        progress=False,
        clock=fc.clock,
        stream=io.StringIO(),
    )
    assert m.first_step_s is None and m.warmup_s == 0.0


@pytest.mark.parametrize("loop", ["synchronized", "pipelined"])
def test_a_duration_ends_when_rank_0_says_so(loop):
    """This rank's clock passes the 1 s window after 3 steps of 0.4 s, but rank 0's (the
    answers ``agree`` gives) only after 5: the window ends with rank 0's."""
    fc = FakeClock([0.4] * 10)
    asked = []
    rank_0 = iter([False, False, False, False, True])

    def agree(mine):
        asked.append(mine)
        return next(rank_0)

    common = dict(warmup=0, iters=None, duration_s=1.0, progress=False, clock=fc.clock)
    if loop == "synchronized":
        m = measure(fc.step, fc.sync, stream=io.StringIO(), agree=agree, **common)
    else:
        m = measure_pipelined(fc.step, fc.sync, None, stream=io.StringIO(), agree=agree, **common)
    assert m.iterations == 5
    assert asked == [False, False, True, True, True]


def test_a_step_count_asks_no_rank():
    fc = FakeClock([0.4] * 10)

    def agree(mine):
        raise AssertionError("a fixed step count is the same on every rank: nothing to agree")

    m = measure(
        fc.step,
        fc.sync,
        warmup=0,
        iters=4,
        duration_s=None,
        progress=False,
        clock=fc.clock,
        stream=io.StringIO(),
        agree=agree,
    )
    assert m.iterations == 4
