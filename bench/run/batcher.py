"""A batching system-under-test core for LoadGen-style serving, free of any framework and of
LoadGen itself.

The caller (the LoadGen glue) hands queries to :meth:`Batcher.issue`, which only stamps and
enqueues them and returns: LoadGen's issue thread must never stall. The batcher thread (the one
in :meth:`Batcher.serve`) takes queries off the queue in arrival order and forms batches:

- a batch runs as soon as it holds ``max_batch`` queries, so a burst of thousands of queries
  (the Offline scenario) is cut into ``max_batch`` chunks back to back, with no waiting;
- otherwise it runs ``timeout_s`` after its *first* query arrived (not its last), with
  whatever has arrived by then;
- :meth:`Batcher.flush` (LoadGen's ``flush_queries``) makes every query issued before it run
  without waiting for the timeout, in ``max_batch`` chunks;
- while :meth:`Batcher.stop` drains the queue, batches run without waiting.

For each batch the thread calls ``run_batch(indices)`` (the sample indices, padded to the
batch shape, see ``shapes``; it runs the model and synchronizes the device), reads the clock,
and calls ``complete(queries, t_done)`` with the real queries only, in arrival order. The
glue turns that into ``QuerySamplesComplete``; a query's latency is ``t_done - issued_at``,
both read from the same ``clock``.

Every query is completed exactly once, whatever happens, because LoadGen waits for every
query it issued and a lost one hangs the test:

- if ``run_batch`` raises, the error is recorded (:attr:`BatcherStats.errors`,
  :attr:`BatcherStats.queries_failed`) and the batch's queries are completed anyway; the
  run must then be marked failed (:attr:`BatcherStats.failed`). The batcher keeps serving.
- if ``complete`` raises, that is recorded too, and the batcher keeps serving;
- :meth:`Batcher.stop` lets the batch in flight finish and drains the queue for up to its
  timeout; queries still queued then are completed without running (from the thread that
  called ``stop``) and recorded as failed;
- queries issued once ``stop`` has closed the queue (after the drain) are completed at once,
  from the issuing thread, and recorded as failed.

``complete`` is therefore called from the batcher thread, and in those last two cases from
the thread calling ``stop`` or ``issue``; LoadGen's ``QuerySamplesComplete`` is thread-safe.

Waiting is blocking (a condition variable with timeouts). The timeout arithmetic uses the
injected ``clock``; a test driving a clock that does not follow wall time calls
:meth:`Batcher.wake` after moving it, so the thread reads it again.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: ``fixed``: every batch padded to ``max_batch`` (the model sees one shape); ``bucketed``:
#: padded to the next power of two, at most ``max_batch``; ``exact``: no padding.
SHAPES = ("fixed", "bucketed", "exact")

#: Why a batch was formed.
REASONS = ("full", "timeout", "flush", "drain")

#: Errors kept with their message; later ones are only counted (``error_count``).
MAX_ERRORS_KEPT = 100

RunBatch = Callable[[Sequence[int]], None]
Complete = Callable[[Sequence["Query"], float], None]


@dataclass(frozen=True)
class Query:
    #: LoadGen's query sample id (opaque).
    id: int
    #: Sample index in the staged library.
    index: int
    #: ``clock()`` when :meth:`Batcher.issue` received it.
    issued_at: float


@dataclass(frozen=True)
class BatcherError:
    #: ``run_batch``, ``complete``, ``stop`` or ``issue``.
    where: str
    message: str
    #: Queries of the batch (or group) concerned.
    queries: int


@dataclass(frozen=True)
class BatcherStats:
    """A snapshot of what the batcher has done so far."""

    shapes: str
    max_batch: int
    #: Batches formed and handed to ``run_batch``.
    batches: int = 0
    #: Batches by real size (queries in the batch) -> count.
    batch_sizes: dict[int, int] = field(default_factory=dict)
    #: Batches by the size ``run_batch`` saw (after padding) -> count.
    run_sizes: dict[int, int] = field(default_factory=dict)
    #: Padding indices added to reach the batch shape, in all.
    padded_samples: int = 0
    #: Batches by why they were formed: full, timeout, flush, drain (during ``stop``).
    full_batches: int = 0
    timeout_batches: int = 0
    flush_batches: int = 0
    drain_batches: int = 0
    queries_issued: int = 0
    #: Queries handed to ``complete`` (failed ones included).
    queries_completed: int = 0
    #: Queries completed without a successful ``run_batch`` (it raised, or stop or a late
    #: issue completed them without running).
    queries_failed: int = 0
    #: Most queries waiting in the queue at once.
    max_queue_depth: int = 0
    #: Time spent inside ``run_batch``, by ``clock``.
    busy_s: float = 0.0
    #: The first ``MAX_ERRORS_KEPT`` errors; ``error_count`` counts them all.
    errors: tuple[BatcherError, ...] = ()
    error_count: int = 0

    @property
    def failed(self) -> bool:
        """True when any error was recorded: the run must be marked failed."""
        return self.error_count > 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (histogram keys as strings, sorted by size)."""
        return {
            "shapes": self.shapes,
            "max_batch": self.max_batch,
            "batches": self.batches,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "run_sizes": {str(k): v for k, v in sorted(self.run_sizes.items())},
            "padded_samples": self.padded_samples,
            "full_batches": self.full_batches,
            "timeout_batches": self.timeout_batches,
            "flush_batches": self.flush_batches,
            "drain_batches": self.drain_batches,
            "queries_issued": self.queries_issued,
            "queries_completed": self.queries_completed,
            "queries_failed": self.queries_failed,
            "max_queue_depth": self.max_queue_depth,
            "busy_s": self.busy_s,
            "errors": [
                {"where": e.where, "message": e.message, "queries": e.queries} for e in self.errors
            ],
            "error_count": self.error_count,
        }


def padded_size(n: int, max_batch: int, shapes: str) -> int:
    """The batch size ``run_batch`` sees for ``n`` real queries (1 <= n <= max_batch)."""
    if shapes == "fixed":
        return max_batch
    if shapes == "bucketed":
        return min(1 << (n - 1).bit_length(), max_batch)
    return n


def pad(indices: Sequence[int], max_batch: int, shapes: str) -> list[int]:
    """``indices`` padded to the batch shape by repeating the last index."""
    out = list(indices)
    out.extend([out[-1]] * (padded_size(len(out), max_batch, shapes) - len(out)))
    return out


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class Batcher:
    """Forms batches of queries on the thread that serves it; see the module documentation."""

    def __init__(
        self,
        run_batch: RunBatch,
        complete: Complete,
        *,
        max_batch: int,
        timeout_s: float,
        clock: Callable[[], float] = time.perf_counter,
        shapes: str = "fixed",
    ) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer, not {max_batch!r}")
        if not (isinstance(timeout_s, int | float) and math.isfinite(timeout_s)) or timeout_s < 0:
            raise ValueError(f"timeout_s must be a finite number >= 0, not {timeout_s!r}")
        if shapes not in SHAPES:
            raise ValueError(f"unknown shapes {shapes!r}: choose from {', '.join(SHAPES)}")
        self._run_batch = run_batch
        self._complete = complete
        self.max_batch = max_batch
        self.timeout_s = float(timeout_s)
        self.shapes = shapes
        self._clock = clock

        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # the batcher thread waits on it
        self._idle = threading.Condition(lock)  # stop() waits on it for the drain
        self._queue: deque[Query] = deque()
        self._received = 0  # queries ever enqueued
        self._late = 0  # queries issued after stop() finished (completed at once, failed)
        self._taken = 0  # queries ever taken off the queue (batched or failed by stop)
        self._flush_upto = 0  # queries received before the last flush(): run them now
        self._thread: threading.Thread | None = None  # the one running serve()
        self._served = threading.Event()  # set when serve()'s loop has ended
        self._in_flight = False  # a batch is taken and not yet completed
        self._stopping = False  # stop() called: drain without waiting
        self._closed = False  # stop() has closed the queue: the thread ends, late queries fail
        self._stop_lock = threading.Lock()
        self._stopped = False

        # statistics, under self._cond
        self._batches = 0
        self._batch_sizes: dict[int, int] = {}
        self._run_sizes: dict[int, int] = {}
        self._padded = 0
        self._reasons = dict.fromkeys(REASONS, 0)
        self._completed = 0
        self._failed = 0
        self._max_depth = 0
        self._busy_s = 0.0
        self._errors: list[BatcherError] = []
        self._error_count = 0

    # -- the caller's side --------------------------------------------------------------

    def settings(self) -> dict[str, object]:
        """What the result record keeps about the batching."""
        return {"max_batch": self.max_batch, "timeout_s": self.timeout_s, "shapes": self.shapes}

    def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        """Run the batcher loop in the calling thread (the batcher thread) until ``stop()``
        is called from another (e.g. when LoadGen's test ends): models run on the thread
        that set them up (a CPU framework's OpenMP team is per calling thread; a second team
        on a 2-core machine slows every batch). Queries issued before are served from now
        on. ``on_ready`` is called once the batcher is bound to this thread, before its
        loop: start the thread that issues and stops there, so that no stop() can come
        first."""
        with self._cond:
            if self._thread is not None or self._stopping:
                raise RuntimeError("a Batcher serves once, before stop()")
            self._thread = threading.current_thread()
        try:
            if on_ready is not None:
                on_ready()
            self._loop()
        finally:
            self._served.set()

    def issue(self, queries: Sequence[tuple[int, int]]) -> None:
        """Enqueue ``(id, index)`` pairs, stamped with one clock reading, and return. Never
        runs the model and never waits for the batcher thread beyond a short lock."""
        if not queries:
            return
        late: list[Query] = []
        with self._cond:
            now = self._clock()
            batch = [Query(int(qid), int(index), now) for qid, index in queries]
            if self._closed:
                late = batch
            else:
                self._queue.extend(batch)
                self._received += len(batch)
                self._max_depth = max(self._max_depth, len(self._queue))
                self._cond.notify()
        if late:
            self._fail(late, "issue", f"{len(late)} queries issued after stop(); not run")

    def flush(self) -> None:
        """Run everything issued so far without waiting for the timeout (LoadGen's
        ``flush_queries``). Queries issued afterwards batch as usual."""
        with self._cond:
            if self._flush_upto < self._received:
                self._flush_upto = self._received
                self._cond.notify()

    def wake(self) -> None:
        """Make the batcher thread read the clock again: needed only when an injected clock
        has moved without wall time passing (tests)."""
        with self._cond:
            self._cond.notify_all()

    def stop(self, timeout_s: float = 10) -> None:
        """Let the batch in flight finish and drain the queue (queries issued meanwhile
        included; batches run without waiting for the timeout), for up to ``timeout_s``; then
        close the queue, complete what is still queued without running it (recorded as
        failed), wait up to ``timeout_s`` more for the batch in flight and ``serve()``'s loop
        to end, and return. Idempotent; later ``issue`` calls complete their queries at once
        as failed.

        If ``run_batch`` is still running after that, an error is recorded and ``serve()``
        is left to complete its batch and return when ``run_batch`` returns: a Python
        thread cannot be killed."""
        with self._stop_lock:
            if self._stopped:
                return
            with self._cond:
                self._stopping = True
                self._cond.notify_all()
                thread = self._thread
                own = thread is threading.current_thread()  # stop() from a callback
                if thread is not None and not own:
                    # Drain: wait until nothing is queued or in flight, then close in the
                    # same critical section, so that no query slips in between.
                    self._idle.wait_for(
                        lambda: not (self._queue or self._in_flight) or not thread.is_alive(),
                        timeout_s,
                    )
                self._closed = True
                leftover = list(self._queue)
                self._queue.clear()
                self._taken += len(leftover)
                self._cond.notify_all()
            if leftover:
                if thread is None:
                    when = "at stop() before serve()"
                elif own:
                    when = "at stop() from a callback"
                else:
                    when = f"after {timeout_s:g}s in stop()"
                self._fail(
                    leftover, "stop", f"{len(leftover)} queries still queued {when}; not run"
                )
            if thread is not None and not own and not self._served.wait(timeout_s):
                self._record(
                    "stop",
                    f"run_batch still running {2 * timeout_s:g}s after stop(); its batch "
                    "completes when it returns",
                    0,
                )
            self._stopped = True

    @property
    def stats(self) -> BatcherStats:
        with self._cond:
            return BatcherStats(
                shapes=self.shapes,
                max_batch=self.max_batch,
                batches=self._batches,
                batch_sizes=dict(self._batch_sizes),
                run_sizes=dict(self._run_sizes),
                padded_samples=self._padded,
                full_batches=self._reasons["full"],
                timeout_batches=self._reasons["timeout"],
                flush_batches=self._reasons["flush"],
                drain_batches=self._reasons["drain"],
                queries_issued=self._received + self._late,
                queries_completed=self._completed,
                queries_failed=self._failed,
                max_queue_depth=self._max_depth,
                busy_s=self._busy_s,
                errors=tuple(self._errors),
                error_count=self._error_count,
            )

    # -- the batcher thread -------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    taken = self._next_batch()
                if taken is None:
                    return
                self._run(*taken)
        finally:
            with self._cond:
                self._idle.notify_all()

    def _next_batch(self) -> tuple[list[Query], str] | None:
        """Under the lock: wait for the next batch and take it off the queue, or None when
        the thread should end."""
        queue = self._queue
        while True:
            if self._closed:
                return None
            n = len(queue)
            if n == 0:  # (while stopping too: stop() closes the queue once it is drained)
                self._cond.wait()
                continue
            if n >= self.max_batch:
                reason = "full"
            elif self._taken < self._flush_upto:
                reason = "flush"
            elif self._stopping:
                reason = "drain"
            else:
                remaining = queue[0].issued_at + self.timeout_s - self._clock()
                if remaining > 0:
                    self._cond.wait(min(remaining, threading.TIMEOUT_MAX))
                    continue
                reason = "timeout"
            size = min(n, self.max_batch)
            batch = [queue.popleft() for _ in range(size)]
            self._taken += size
            self._in_flight = True
            return batch, reason

    def _run(self, batch: list[Query], reason: str) -> None:
        indices = pad([q.index for q in batch], self.max_batch, self.shapes)
        error: BaseException | None = None
        started = self._clock()
        try:
            self._run_batch(indices)
        except BaseException as exc:  # a dead batcher thread would hang LoadGen
            error = exc
        done = self._clock()
        with self._cond:
            self._batches += 1
            self._batch_sizes[len(batch)] = self._batch_sizes.get(len(batch), 0) + 1
            self._run_sizes[len(indices)] = self._run_sizes.get(len(indices), 0) + 1
            self._padded += len(indices) - len(batch)
            self._reasons[reason] += 1
            self._busy_s += done - started
            if error is not None:
                self._failed += len(batch)
                self._record_locked("run_batch", _describe(error), len(batch))
        self._call_complete(batch, done)
        with self._cond:
            self._in_flight = False
            self._idle.notify_all()

    # -- shared helpers -----------------------------------------------------------------

    def _call_complete(self, queries: list[Query], t_done: float) -> None:
        try:
            self._complete(queries, t_done)
        except BaseException as exc:  # keep serving; the run is marked failed
            self._record("complete", _describe(exc), len(queries))
        with self._cond:
            self._completed += len(queries)

    def _fail(self, queries: list[Query], where: str, message: str) -> None:
        with self._cond:
            self._failed += len(queries)
            if where == "issue":
                self._late += len(queries)
            self._record_locked(where, message, len(queries))
        self._call_complete(queries, self._clock())

    def _record(self, where: str, message: str, queries: int) -> None:
        with self._cond:
            self._record_locked(where, message, queries)

    def _record_locked(self, where: str, message: str, queries: int) -> None:
        self._error_count += 1
        if len(self._errors) < MAX_ERRORS_KEPT:
            self._errors.append(BatcherError(where, message, queries))
