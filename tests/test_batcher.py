"""The batching system-under-test core (bench.run.batcher): batch forming, timeouts, flush,
padding, stop and errors, with fake models, events and a controllable clock."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

import pytest

from bench.run.batcher import Batcher, BatcherStats, Query, pad, padded_size

WAIT_S = 5.0  # upper bound for anything the tests wait on; never reached when all is well


class FakeClock:
    """A clock that moves only when told. It remembers the latest time the batcher thread
    read, so a test can wait until that thread has seen a time (and acted on it)."""

    def __init__(self, t: float = 0.0) -> None:
        self._t = t
        self._cond = threading.Condition()
        self._seen = float("-inf")

    def __call__(self) -> float:
        with self._cond:
            if threading.current_thread().name == "batcher":
                self._seen = max(self._seen, self._t)
                self._cond.notify_all()
            return self._t

    def set(self, t: float, batcher: Batcher | None = None) -> None:
        with self._cond:
            self._t = t
        if batcher is not None:
            batcher.wake()

    def advance(self, dt: float) -> None:
        with self._cond:
            self._t += dt

    def wait_seen(self, t: float) -> None:
        """Wait until the batcher thread has read the clock at ``t`` or later. It holds its
        lock from reading the clock to waiting, so it has then decided what to do at ``t``."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._seen >= t, WAIT_S)
        assert ok, f"the batcher thread never read the clock at {t}"


class Recorder:
    """A fake model and completion sink. ``hold`` (when given) blocks run_batch until set;
    run_batch raises for a batch holding an index in ``fail_on``."""

    def __init__(
        self,
        hold: threading.Event | None = None,
        fail_on: Sequence[int] = (),
        on_run: Callable[[Sequence[int]], None] | None = None,
    ) -> None:
        self.hold = hold
        self.fail_on = set(fail_on)
        self.on_run = on_run
        self.cond = threading.Condition()
        self.runs: list[list[int]] = []
        self.completions: list[tuple[list[Query], float, str]] = []
        self.run_threads: set[str] = set()
        self.entered = threading.Event()

    def run_batch(self, indices: Sequence[int]) -> None:
        with self.cond:
            self.runs.append(list(indices))
            self.run_threads.add(threading.current_thread().name)
            self.cond.notify_all()
        self.entered.set()
        if self.hold is not None:
            assert self.hold.wait(WAIT_S)
        if self.on_run is not None:
            self.on_run(indices)
        if self.fail_on & set(indices):
            raise RuntimeError("model exploded\ntraceback noise")

    def complete(self, queries: Sequence[Query], t_done: float) -> None:
        with self.cond:
            self.completions.append((list(queries), t_done, threading.current_thread().name))
            self.cond.notify_all()

    @property
    def completed(self) -> list[Query]:
        with self.cond:
            return [q for batch, _, _ in self.completions for q in batch]

    @property
    def ids(self) -> list[int]:
        return [q.id for q in self.completed]

    def wait_completed(self, n: int) -> None:
        with self.cond:
            ok = self.cond.wait_for(
                lambda: sum(len(b) for b, _, _ in self.completions) >= n, WAIT_S
            )
        assert ok, f"only {len(self.completed)} of {n} queries completed"

    def run_count(self) -> int:
        with self.cond:
            return len(self.runs)


def serve(batcher: Batcher) -> threading.Thread:
    """Serve ``batcher`` on a thread of its own, named ``batcher`` (as FakeClock expects),
    once it is bound to that thread."""
    ready = threading.Event()
    thread = threading.Thread(target=batcher.serve, args=(ready.set,), name="batcher")
    thread.daemon = True
    thread.start()
    assert ready.wait(WAIT_S)
    return thread


def ended(thread: threading.Thread) -> bool:
    thread.join(WAIT_S)
    return not thread.is_alive()


@pytest.fixture
def make() -> Iterator[Callable[..., tuple[Batcher, Recorder]]]:
    """Builds served batchers around recorders; releases and stops them all at the end."""
    made: list[tuple[Batcher, Recorder, threading.Thread | None]] = []

    def build(
        rec: Recorder | None = None, *, start: bool = True, **kwargs: object
    ) -> tuple[Batcher, Recorder]:
        rec = rec or Recorder()
        kwargs.setdefault("timeout_s", 1000.0)
        batcher = Batcher(rec.run_batch, rec.complete, **kwargs)  # type: ignore[arg-type]
        made.append((batcher, rec, serve(batcher) if start else None))
        return batcher, rec

    yield build
    for batcher, rec, thread in made:
        if rec.hold is not None:
            rec.hold.set()
        batcher.stop(timeout_s=2)
        assert thread is None or ended(thread)


def pairs(ids: range, offset: int = 1000) -> list[tuple[int, int]]:
    return [(i, offset + i) for i in ids]


# -- batch forming --------------------------------------------------------------------------


def test_burst_runs_full_batches_at_once_and_the_remainder_waits(make):
    clock = FakeClock()
    batcher, rec = make(max_batch=8, timeout_s=1.0, clock=clock)
    batcher.issue(pairs(range(101)))
    rec.wait_completed(96)
    clock.set(0.75, batcher)
    clock.wait_seen(0.75)
    assert rec.run_count() == 12  # before its deadline (1.0), the remainder of 5 waits

    batcher.flush()
    rec.wait_completed(101)
    batcher.stop()
    assert [len(r) for r in rec.runs] == [8] * 13  # shapes=fixed: the model sees one shape
    assert [len(b) for b, _, _ in rec.completions] == [8] * 12 + [5]
    assert rec.ids == list(range(101))  # arrival order
    assert [q.index for q in rec.completed] == [1000 + i for i in range(101)]
    stats = batcher.stats
    assert stats.batch_sizes == {8: 12, 5: 1}
    assert stats.run_sizes == {8: 13}
    assert stats.padded_samples == 3
    assert (stats.full_batches, stats.flush_batches, stats.timeout_batches) == (12, 1, 0)
    assert stats.drain_batches == 0
    assert stats.max_queue_depth == 101
    assert stats.queries_issued == stats.queries_completed == 101
    assert stats.errors == () and not stats.failed


def test_offline_burst_then_flush_never_waits_for_the_timeout(make):
    # A timeout of a minute: if any batch waited for it, wait_completed would fail.
    batcher, rec = make(max_batch=64, timeout_s=60.0, shapes="exact")
    batcher.issue(pairs(range(1000)))
    batcher.flush()
    rec.wait_completed(1000)
    batcher.stop()
    assert batcher.stats.batch_sizes == {64: 15, 40: 1}
    assert batcher.stats.timeout_batches == 0
    assert rec.ids == list(range(1000))


def test_lone_query_runs_at_the_timeout_counted_from_the_first_query(make):
    clock = FakeClock()
    batcher, rec = make(max_batch=4, timeout_s=0.5, clock=clock)
    batcher.issue([(1, 10)])  # at t=0
    clock.set(0.25, batcher)
    clock.wait_seen(0.25)
    assert rec.run_count() == 0

    batcher.issue([(2, 11)])  # within the first query's timeout: joins its batch
    clock.set(0.4375, batcher)
    clock.wait_seen(0.4375)
    assert rec.run_count() == 0  # 0.4375 s after the first query: still waiting

    clock.set(0.5, batcher)  # the first query's deadline (the second's would be 0.75)
    rec.wait_completed(2)
    assert rec.runs == [[10, 11, 11, 11]]
    (queries, t_done, _), *_ = rec.completions
    assert [(q.id, q.issued_at) for q in queries] == [(1, 0.0), (2, 0.25)]
    assert t_done == 0.5
    assert [t_done - q.issued_at for q in queries] == [0.5, 0.25]  # per-query latency
    assert batcher.stats.timeout_batches == 1
    assert batcher.stats.batch_sizes == {2: 1}


def test_lone_query_runs_after_the_timeout_on_the_real_clock(make):
    batcher, rec = make(max_batch=8, timeout_s=0.02)
    batcher.issue([(7, 3)])
    rec.wait_completed(1)
    (queries, t_done, _), *_ = rec.completions
    latency = t_done - queries[0].issued_at
    assert 0.02 <= latency < WAIT_S  # never before the timeout; a generous upper bound
    assert batcher.stats.timeout_batches == 1


def test_timeout_zero_runs_what_is_there_without_waiting(make):
    batcher, rec = make(max_batch=8, timeout_s=0.0, shapes="exact")
    batcher.issue(pairs(range(3)))
    rec.wait_completed(3)
    assert rec.runs == [[1000, 1001, 1002]]


def test_flush_forms_a_batch_now(make):
    clock = FakeClock()
    batcher, rec = make(max_batch=8, timeout_s=1.0, clock=clock, shapes="exact")
    batcher.flush()  # empty queue: nothing happens
    batcher.issue(pairs(range(3)))
    batcher.flush()
    rec.wait_completed(3)
    assert rec.runs == [[1000, 1001, 1002]]

    batcher.issue([(3, 1003)])  # issued after the flush: waits as usual
    clock.set(0.5, batcher)
    clock.wait_seen(0.5)
    assert rec.run_count() == 1
    batcher.flush()
    rec.wait_completed(4)
    assert rec.runs[1] == [1003]
    assert batcher.stats.flush_batches == 2
    assert batcher.stats.timeout_batches == 0


def test_queries_issued_before_serve_are_served_after(make):
    batcher, rec = make(max_batch=4, start=False, shapes="exact")
    batcher.issue(pairs(range(8)))
    thread = serve(batcher)
    rec.wait_completed(8)
    assert rec.runs == [[1000, 1001, 1002, 1003], [1004, 1005, 1006, 1007]]
    with pytest.raises(RuntimeError, match="serves once"):
        batcher.serve()
    batcher.stop()
    assert ended(thread)


def test_issue_returns_at_once_while_run_batch_is_blocked(make):
    hold = threading.Event()
    batcher, rec = make(Recorder(hold=hold), max_batch=16)
    batcher.issue([(0, 0)])
    batcher.flush()
    assert rec.entered.wait(WAIT_S)  # the model is now busy, held

    def issue_lots() -> None:
        for k in range(50):
            batcher.issue(pairs(range(1 + 20 * k, 21 + 20 * k)))
            batcher.flush()

    issuer = threading.Thread(target=issue_lots, name="loadgen-issue")
    issuer.start()
    issuer.join(WAIT_S)
    assert not issuer.is_alive()  # 50 issue() and flush() calls returned, model still held
    assert not hold.is_set()
    assert rec.run_count() == 1
    assert batcher.stats.max_queue_depth == 1000

    hold.set()
    rec.wait_completed(1001)
    assert rec.run_threads == {"batcher"}  # the issuing threads never ran the model
    assert {name for _, _, name in rec.completions} == {"batcher"}
    assert sorted(rec.ids) == list(range(1001))


# -- padding --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shapes", "max_batch", "n", "size"),
    [
        ("fixed", 8, 1, 8),
        ("fixed", 8, 3, 8),
        ("fixed", 8, 8, 8),
        ("bucketed", 8, 1, 1),
        ("bucketed", 8, 2, 2),
        ("bucketed", 8, 3, 4),
        ("bucketed", 8, 5, 8),
        ("bucketed", 8, 8, 8),
        ("bucketed", 6, 3, 4),
        ("bucketed", 6, 5, 6),  # the next power of two (8) is over max_batch
        ("exact", 8, 3, 3),
    ],
)
def test_padding_run_batch_sees_the_shape_complete_sees_real_queries(
    make, shapes, max_batch, n, size
):
    assert padded_size(n, max_batch, shapes) == size
    batcher, rec = make(max_batch=max_batch, shapes=shapes)
    batcher.issue(pairs(range(n), offset=100))
    batcher.flush()
    rec.wait_completed(n)
    real = [100 + i for i in range(n)]
    assert rec.runs == [real + [real[-1]] * (size - n)]
    assert [q.id for q in rec.completions[0][0]] == list(range(n))
    stats = batcher.stats
    assert stats.batch_sizes == {n: 1}
    assert stats.run_sizes == {size: 1}
    assert stats.padded_samples == size - n
    assert stats.shapes == shapes
    assert batcher.settings() == {"max_batch": max_batch, "timeout_s": 1000.0, "shapes": shapes}


def test_pad_repeats_the_last_index():
    assert pad([5, 9, 2], 8, "fixed") == [5, 9, 2, 2, 2, 2, 2, 2]
    assert pad([5, 9, 2], 8, "bucketed") == [5, 9, 2, 2]
    assert pad([5, 9, 2], 8, "exact") == [5, 9, 2]


# -- stop -----------------------------------------------------------------------------------


def test_stop_finishes_the_batch_in_flight_and_drains_the_queue(make):
    hold = threading.Event()
    batcher, rec = make(Recorder(hold=hold), max_batch=4, shapes="exact", start=False)
    thread = serve(batcher)
    batcher.issue(pairs(range(18)))
    assert rec.entered.wait(WAIT_S)  # batch 1 in flight, 14 queued

    stopper = threading.Thread(target=batcher.stop, kwargs={"timeout_s": WAIT_S})
    stopper.start()
    hold.set()
    stopper.join(WAIT_S)
    assert not stopper.is_alive()
    assert ended(thread)
    assert sorted(rec.ids) == list(range(18))
    assert len(rec.ids) == 18  # exactly once
    stats = batcher.stats
    assert stats.batch_sizes == {4: 4, 2: 1}
    assert (stats.full_batches, stats.drain_batches) == (4, 1)
    assert not stats.failed and stats.queries_failed == 0
    batcher.stop()  # twice is fine
    batcher.stop(timeout_s=0)
    assert len(rec.ids) == 18


def test_stop_timeout_completes_what_is_still_queued_as_failed(make):
    hold = threading.Event()
    rec = Recorder(hold=hold)

    def complete(queries: Sequence[Query], t_done: float) -> None:
        rec.complete(queries, t_done)
        if threading.current_thread().name != "batcher":
            hold.set()  # stop() has failed the queue: let the batch in flight finish

    batcher = Batcher(rec.run_batch, complete, max_batch=2, timeout_s=1000.0)
    thread = serve(batcher)
    batcher.issue(pairs(range(7)))
    assert rec.entered.wait(WAIT_S)  # [0, 1] in flight, 5 queued

    batcher.stop(timeout_s=0.25)
    assert ended(thread)
    assert sorted(rec.ids) == list(range(7)) and len(rec.ids) == 7
    assert rec.runs == [[1000, 1001]]
    stats = batcher.stats
    assert stats.queries_failed == 5
    assert stats.queries_completed == 7
    assert stats.failed
    assert [(e.where, e.queries) for e in stats.errors] == [("stop", 5)]
    assert "not run" in stats.errors[0].message
    failed = [batch for batch, _, name in rec.completions if name != "batcher"]
    assert [[q.id for q in b] for b in failed] == [[2, 3, 4, 5, 6]]


def test_stop_gives_up_on_a_hung_run_batch_and_it_completes_later(make):
    hold = threading.Event()
    batcher, rec = make(Recorder(hold=hold), max_batch=2, start=False)
    thread = serve(batcher)
    batcher.issue(pairs(range(3)))
    assert rec.entered.wait(WAIT_S)

    started = time.monotonic()
    batcher.stop(timeout_s=0.05)
    assert time.monotonic() - started < WAIT_S  # returned although run_batch hangs
    assert thread.is_alive()  # a Python thread cannot be killed
    assert [q.id for q in rec.completed] == [2]  # the queued one, failed by stop()
    assert [e.where for e in batcher.stats.errors] == ["stop", "stop"]
    assert "still running" in batcher.stats.errors[1].message

    hold.set()  # the model returns: its batch is completed and serve() returns
    rec.wait_completed(3)
    assert ended(thread)
    assert sorted(rec.ids) == [0, 1, 2]


def test_stop_before_serve_and_issue_after_stop_complete_everything(make):
    batcher, rec = make(max_batch=4, start=False)
    batcher.issue(pairs(range(3)))
    batcher.stop()
    batcher.stop()
    assert rec.ids == [0, 1, 2]
    assert rec.runs == []
    batcher.issue([(3, 1003)])  # too late: completed at once, recorded as failed
    assert rec.ids == [0, 1, 2, 3]
    stats = batcher.stats
    assert [(e.where, e.queries) for e in stats.errors] == [("stop", 3), ("issue", 1)]
    assert stats.queries_issued == stats.queries_completed == stats.queries_failed == 4
    assert "before serve()" in stats.errors[0].message
    with pytest.raises(RuntimeError, match="serves once"):
        batcher.serve()


# -- errors ---------------------------------------------------------------------------------


def test_run_batch_error_is_recorded_queries_completed_and_serving_goes_on(make):
    batcher, rec = make(Recorder(fail_on=[1003]), max_batch=4, shapes="exact")
    batcher.issue(pairs(range(8)))
    rec.wait_completed(8)
    batcher.issue([(8, 1020)])
    batcher.flush()
    rec.wait_completed(9)
    batcher.stop()
    assert rec.ids == list(range(9))
    stats = batcher.stats
    assert stats.failed
    assert stats.queries_failed == 4
    assert stats.queries_completed == 9
    assert stats.batches == 3
    assert [(e.where, e.message, e.queries) for e in stats.errors] == [
        ("run_batch", "RuntimeError: model exploded", 4)
    ]


def test_complete_error_is_recorded_and_serving_goes_on(make):
    rec = Recorder()
    calls = []

    def complete(queries: Sequence[Query], t_done: float) -> None:
        calls.append(len(queries))
        if len(calls) == 1:
            raise ValueError("glue bug")
        rec.complete(queries, t_done)

    batcher = Batcher(rec.run_batch, complete, max_batch=2, timeout_s=1000.0)
    thread = serve(batcher)
    batcher.issue(pairs(range(4)))
    batcher.stop(timeout_s=WAIT_S)
    assert ended(thread)
    assert calls == [2, 2]
    assert rec.ids == [2, 3]
    assert [(e.where, e.queries) for e in batcher.stats.errors] == [("complete", 2)]
    assert batcher.stats.queries_failed == 0  # the model ran; the sink failed


# -- stats, settings, arguments -------------------------------------------------------------


def test_busy_time_is_the_time_inside_run_batch_and_stats_serialize(make):
    clock = FakeClock()
    rec = Recorder(on_run=lambda indices: clock.advance(0.125))
    batcher, _ = make(rec, max_batch=2, timeout_s=0.5, clock=clock, shapes="bucketed")
    batcher.issue(pairs(range(5)))
    rec.wait_completed(4)
    batcher.flush()
    rec.wait_completed(5)
    batcher.stop()
    stats = batcher.stats
    assert stats.busy_s == 0.375
    record = json.loads(json.dumps(stats.to_dict()))
    assert record["batch_sizes"] == {"2": 2, "1": 1}
    assert record["run_sizes"] == {"1": 1, "2": 2}
    assert record["shapes"] == "bucketed"
    assert record["errors"] == [] and record["error_count"] == 0
    assert batcher.settings() == {"max_batch": 2, "timeout_s": 0.5, "shapes": "bucketed"}
    assert isinstance(stats, BatcherStats)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_batch": 0, "timeout_s": 0.1},
        {"max_batch": True, "timeout_s": 0.1},
        {"max_batch": 2.0, "timeout_s": 0.1},
        {"max_batch": 2, "timeout_s": -0.1},
        {"max_batch": 2, "timeout_s": float("nan")},
        {"max_batch": 2, "timeout_s": float("inf")},
        {"max_batch": 2, "timeout_s": 0.1, "shapes": "dynamic"},
    ],
)
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        Batcher(lambda indices: None, lambda queries, t: None, **kwargs)


# -- concurrency ----------------------------------------------------------------------------


def _issuers(batcher: Batcher, seed: int, threads: int, per_thread: int) -> list[threading.Thread]:
    barrier = threading.Barrier(threads)

    def issue(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        ids = range(k * per_thread, (k + 1) * per_thread)
        barrier.wait()
        i = 0
        while i < per_thread:
            n = rng.randint(1, 40)
            batcher.issue([(q, q % 97) for q in ids[i : i + n]])
            i += n
            if rng.random() < 0.1:
                batcher.flush()
            if rng.random() < 0.3:
                time.sleep(rng.random() * 2e-4)

    return [threading.Thread(target=issue, args=(k,), name=f"issuer-{k}") for k in range(threads)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_concurrent_issuers_every_query_completed_exactly_once(make, seed):
    rng = random.Random(seed)  # used by run_batch only (the batcher thread)
    rec = Recorder(on_run=lambda indices: time.sleep(rng.random() * 3e-4))
    batcher, _ = make(rec, max_batch=16, timeout_s=0.001, shapes="bucketed")
    threads, per_thread = 8, 300
    issuers = _issuers(batcher, seed, threads, per_thread)
    for t in issuers:
        t.start()
    for t in issuers:
        t.join(WAIT_S)
    batcher.flush()
    total = threads * per_thread
    rec.wait_completed(total)
    batcher.stop()

    counts = Counter(rec.ids)
    assert set(counts) == set(range(total))
    assert set(counts.values()) == {1}
    for k in range(threads):  # one issuer's queries complete in the order it issued them
        mine = [i for i in rec.ids if i // per_thread == k]
        assert mine == sorted(mine)
    for run, (queries, _, _) in zip(rec.runs, rec.completions, strict=True):
        assert 1 <= len(queries) <= 16
        assert len(run) == padded_size(len(queries), 16, "bucketed")
        assert run[: len(queries)] == [q.id % 97 for q in queries]
    stats = batcher.stats
    assert stats.queries_issued == stats.queries_completed == total
    assert sum(size * n for size, n in stats.batch_sizes.items()) == total
    assert stats.batches == len(rec.runs)
    assert not stats.failed


@pytest.mark.parametrize("seed", [4, 5])
def test_stop_racing_with_issuers_still_completes_each_query_once(make, seed):
    batcher, rec = make(max_batch=8, timeout_s=0.001, start=False)
    thread = serve(batcher)
    threads, per_thread = 4, 200
    issuers = _issuers(batcher, seed, threads, per_thread)
    for t in issuers:
        t.start()
    rec.wait_completed(50)
    batcher.stop(timeout_s=WAIT_S)  # some issuers are still issuing
    for t in issuers:
        t.join(WAIT_S)
    total = threads * per_thread
    assert ended(thread)
    assert sorted(rec.ids) == list(range(total))  # run, drained or failed: each once
    stats = batcher.stats
    assert stats.queries_issued == stats.queries_completed == total
    assert stats.queries_failed == sum(e.queries for e in stats.errors if e.where == "issue")


def test_stop_from_a_callback_does_not_deadlock(make):
    rec = Recorder()
    box: list[Batcher] = []

    def complete(queries: Sequence[Query], t_done: float) -> None:
        rec.complete(queries, t_done)
        if len(rec.completions) == 1:
            box[0].stop(timeout_s=WAIT_S)  # from the batcher thread itself

    batcher = Batcher(rec.run_batch, complete, max_batch=2, timeout_s=1000.0)
    box.append(batcher)
    batcher.issue(pairs(range(5)))
    thread = serve(batcher)
    rec.wait_completed(5)
    assert ended(thread)
    assert sorted(rec.ids) == list(range(5)) and len(rec.ids) == 5
    assert [(e.where, e.queries) for e in batcher.stats.errors] == [("stop", 3)]


def test_serve_runs_the_batches_in_the_calling_thread_until_stop() -> None:
    threads: set[str] = set()
    done: list[int] = []

    def run_batch(indices: Sequence[int]) -> None:
        threads.add(threading.current_thread().name)

    batcher = Batcher(
        run_batch,
        lambda queries, t: done.extend(q.id for q in queries),
        max_batch=4,
        timeout_s=0.001,
    )

    def client() -> None:
        batcher.issue([(i, i) for i in range(10)])
        batcher.flush()
        batcher.stop()  # drains, then ends serve()

    thread = threading.Thread(target=client, name="client")
    batcher.serve(on_ready=thread.start)  # returns once stop() has drained the queue
    thread.join(5)
    assert threads == {threading.current_thread().name}
    assert sorted(done) == list(range(10))
    assert batcher.stats.queries_completed == 10 and not batcher.stats.failed
