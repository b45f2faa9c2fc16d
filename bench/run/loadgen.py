"""MLPerf LoadGen scenarios: LoadGen decides when queries arrive, measures them and judges
the run; the harness provides the system under test and the query sample library.

LoadGen drives a :class:`SystemUnderTest`: it hands it queries (``issue``), asks it to
flush, and is told when each query completes. :class:`BatchingSut` is the one here, a
batching SUT over the workload's staged samples; another SUT (a serving endpoint) plugs in
beside it through the same methods. The SUT's ``issue`` only enqueues and LoadGen runs in its
own thread, while the batches run on the thread that set the model up, so LoadGen's clock is
never stalled by inference.

LoadGen is the source of every figure of these scenarios: the record's latency percentiles,
its samples per second (completed in Server, LoadGen's "Samples per second" in Offline) and
the verdict with its reasons all come from LoadGen's detail log, kept in the run's artifacts
directory. The SUT's own timings (queue wait, batch compute) are a named breakdown beside
them (``scenario.result.sut``).
"""

from __future__ import annotations

import contextlib
import math
import statistics
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar, Protocol

from bench.run.batcher import Batcher, Query
from bench.run.loadgen_log import LoadgenLogError, LoadgenResult, read_detail
from bench.run.loop import Measurement, PhaseMarks
from bench.run.scenarios import RunContext, Scenario
from bench.run.workload import Workload
from bench.schema.record import Latency, RunRecord, ScenarioFacts
from bench.schema.spec import RunSpec, SpecError

#: LoadGen reads this file from the working directory and lets it override the settings.
AUDIT_CONFIG = "audit.config"
#: A LoadGen scenario's minimum duration when the spec gives a minimum query count instead
#: (and the query count when it gives a duration): LoadGen needs both.
MIN_QUERIES_WITH_DURATION = 1
MIN_DURATION_WITH_QUERIES_S = 0.0
#: Offline without a target QPS: LoadGen's expected QPS is the probed throughput times this,
#: so that the samples it issues last at least the minimum duration even where the probe
#: was optimistic by this much (LoadGen issues min duration x expected QPS x 1.1 samples).
OFFLINE_PROBE_MARGIN = 1.5
#: The probe: a burst of queries through the SUT lasting at least this long.
PROBE_S = 0.5
PROBE_MIN_SAMPLES = 8
PROBE_MAX_SAMPLES = 1 << 22
PROBE_TIMEOUT_S = 600.0
#: LoadGen's Offline query holds min duration x expected QPS x this many samples.
OFFLINE_SAMPLES_FACTOR = 1.1

Complete = Callable[[Sequence[int]], None]


class LoadgenError(RuntimeError):
    """The LoadGen test could not run or left no readable result."""


class SystemUnderTest(Protocol):
    """What LoadGen drives. ``issue`` and ``flush`` are called from LoadGen's thread and must
    not block; ``serve`` runs on the calling thread until ``stop``; every issued query id is
    passed to the ``complete`` callback the SUT was built with exactly once."""

    def issue(self, queries: Sequence[tuple[int, int]]) -> None:
        """Queries as (LoadGen's query id, sample index)."""

    def flush(self) -> None: ...

    def serve(self, on_ready: Callable[[], None]) -> None: ...

    def stop(self) -> None: ...

    def breakdown(self) -> dict[str, Any]:
        """The SUT's own settings and timings, kept beside LoadGen's figures."""

    def check(self) -> None:
        """Raise LoadgenError where the SUT failed during the test."""


class BatchingSut:
    """Batches of queries over a workload's staged samples (:class:`Batcher`)."""

    def __init__(
        self, workload: Workload, spec: RunSpec, complete: Complete, clock: Callable[[], float]
    ) -> None:
        #: From the SUT receiving a query to its batch starting, and each batch's compute.
        self.queue_wait_s: list[float] = []
        self.compute_s: list[float] = []
        #: When the batch now completing started (None: its queries never ran).
        self._started: float | None = None
        self._lock = threading.Lock()
        self._complete = complete
        self._clock = clock
        self._workload = workload
        self.batcher = Batcher(
            self._run_batch,
            self._done,
            max_batch=spec.effective_max_batch,
            timeout_s=spec.batch_timeout_ms / 1000,
            shapes=spec.batch_shapes,
            clock=clock,
        )

    def _run_batch(self, indices: Sequence[int]) -> None:
        # batches run one at a time on the batcher thread, each completed before the next
        start = self._started = self._clock()
        self._workload.infer_samples(indices)
        self._workload.sync()
        with self._lock:
            self.compute_s.append(self._clock() - start)

    def _done(self, queries: Sequence[Query], t_done: float) -> None:
        self._complete([q.id for q in queries])
        with self._lock:
            start, self._started = self._started, None
            if start is not None:
                self.queue_wait_s.extend(max(0.0, start - q.issued_at) for q in queries)

    def issue(self, queries: Sequence[tuple[int, int]]) -> None:
        self.batcher.issue(queries)

    def flush(self) -> None:
        self.batcher.flush()

    def serve(self, on_ready: Callable[[], None]) -> None:
        self.batcher.serve(on_ready=on_ready)

    def stop(self) -> None:
        self.batcher.stop()

    def breakdown(self) -> dict[str, Any]:
        return {
            **self.batcher.settings(),
            **self.batcher.stats.to_dict(),
            "queue_wait_ms": _summary_ms(self.queue_wait_s),
            "batch_compute_ms": _summary_ms(self.compute_s),
        }

    def check(self) -> None:
        stats = self.batcher.stats
        if stats.failed:
            first = stats.errors[0]
            raise LoadgenError(
                f"the SUT failed during the LoadGen test ({stats.error_count} error(s)); "
                f"first, in {first.where}: {first.message}"
            )


def _summary_ms(values_s: Sequence[float]) -> dict[str, float] | None:
    """Mean, median and 99th percentile in milliseconds (the SUT's own timings)."""
    if not values_s:
        return None
    ms = sorted(v * 1000 for v in values_s)
    return {
        "mean": statistics.fmean(ms),
        "p50": ms[len(ms) // 2],
        "p99": ms[min(len(ms) - 1, math.ceil(0.99 * len(ms)) - 1)],
        "count": float(len(ms)),
    }


def verdict_line(result: LoadgenResult) -> str:
    """LoadGen's verdict and its reasons, one line."""
    if result.valid:
        return "LoadGen: VALID"
    return "LoadGen: INVALID: " + "; ".join(result.invalid_reasons)


class LoadgenScenario(Scenario):
    """One LoadGen test over a system under test; subclasses name LoadGen's scenario and add
    its settings."""

    timing = "loadgen"
    lg_scenario: ClassVar[str]

    def __init__(self, spec: RunSpec) -> None:
        super().__init__(spec)
        self.artifacts: Path | None = None
        #: Offline without a target QPS: LoadGen's expected QPS, from the probe.
        self.probed_qps: float | None = None
        self.loadgen: LoadgenResult | None = None

    def min_duration_s(self) -> float:
        return self.spec.duration_s or MIN_DURATION_WITH_QUERIES_S

    def min_query_count(self) -> int:
        return self.spec.iters or MIN_QUERIES_WITH_DURATION

    def expected_qps(self) -> float | None:
        """The query rate LoadGen is told to expect (None: LoadGen's default)."""
        return self.spec.target_qps

    def expected_time(self) -> tuple[float, str]:
        """How long the test will take at least, and why."""
        duration, queries = self.min_duration_s(), self.min_query_count()
        qps = self.expected_qps()
        if qps is None:
            return duration, f"min duration {_num(duration)} s"
        by_queries = queries / qps
        why = (
            f"max(min duration {_num(duration)} s, min queries {queries} / "
            f"{_num(qps)} QPS = {_num(by_queries)} s)"
        )
        return max(duration, by_queries), why

    def settings(self) -> dict[str, object]:
        """What LoadGen is asked for (its effective settings are in the result)."""
        spec = self.spec
        return {
            "loadgen_scenario": self.lg_scenario,
            "min_duration_s": self.min_duration_s(),
            "min_query_count": self.min_query_count(),
            "sample_count": spec.sample_count,
            "max_batch": spec.effective_max_batch,
            "batch_timeout_ms": spec.batch_timeout_ms,
            "batch_shapes": spec.batch_shapes,
            "target_qps": spec.target_qps,
            "probed_target_qps": self.probed_qps,
            "latency_bound_ms": spec.latency_bound_ms,
            "latency_percentile": spec.latency_percentile,
        }

    def configure(self, lg: Any, settings: Any) -> None:
        """Set the scenario's own fields of LoadGen's TestSettings."""

    def facts(self) -> ScenarioFacts:
        facts = super().facts()
        facts.artifacts = self.artifacts.name if self.artifacts is not None else None
        return facts

    def test_settings(self, lg: Any) -> Any:
        spec = self.spec
        settings = lg.TestSettings()
        settings.scenario = getattr(lg.TestScenario, self.lg_scenario)
        settings.mode = lg.TestMode.PerformanceOnly
        settings.min_duration_ms = int(self.min_duration_s() * 1000)
        settings.min_query_count = self.min_query_count()
        # a seeded schedule: the same spec issues the same arrival times and sample order
        settings.schedule_rng_seed = spec.seed
        settings.sample_index_rng_seed = spec.seed
        settings.qsl_rng_seed = spec.seed
        self.configure(lg, settings)
        return settings

    def make_sut(
        self, workload: Workload, complete: Complete, clock: Callable[[], float]
    ) -> SystemUnderTest:
        """The system under test LoadGen drives: the workload's own where it brings one (an
        endpoint client), else batches over the workload."""
        own: SystemUnderTest | None = workload.loadgen_sut(complete, clock)
        return own or BatchingSut(workload, self.spec, complete, clock)

    def probe(self, workload: Workload, clock: Callable[[], float], respond: Complete) -> None:
        """Before the test, after the warm-up: what the scenario needs to know of the SUT
        (``respond`` builds LoadGen's responses without sending them, as a probe's cost)."""

    def run(self, ctx: RunContext) -> Measurement:
        import mlperf_loadgen as lg

        spec, workload, clock = self.spec, ctx.workload, ctx.clock
        mark = PhaseMarks(ctx.on_mark)
        marks = mark.marks
        count = spec.sample_count
        workload.stage_samples(count)
        max_batch = spec.effective_max_batch
        workload.sync()
        mark("warmup_start")
        t_warm = clock()
        # every batch shape the SUT will run once (first runs at a shape pay for autotuning
        # and memory planning), then ``warmup`` full batches
        for size in [*warmup_shapes(max_batch, spec.batch_shapes), *[max_batch] * spec.warmup]:
            workload.infer_samples([i % count for i in range(size)])
        workload.sync()
        warmup_s = clock() - t_warm

        def complete(ids: Sequence[int]) -> None:
            lg.QuerySamplesComplete([lg.QuerySampleResponse(i, 0, 0) for i in ids])

        def respond(ids: Sequence[int]) -> None:  # the probe's share of complete()'s cost
            [lg.QuerySampleResponse(i, 0, 0) for i in ids]

        self.probe(workload, clock, respond)

        sut = self.make_sut(workload, complete, clock)
        if Path(AUDIT_CONFIG).exists():
            raise LoadgenError(
                f"an {AUDIT_CONFIG} in the working directory would silently override "
                "LoadGen's settings (LoadGen reads it there): move it away"
            )
        if ctx.progress:
            seconds, why = self.expected_time()
            _say(f"LoadGen {self.lg_scenario}: expect at least {_num(seconds)} s: {why}")
        with contextlib.ExitStack() as stack:
            if ctx.artifacts is None:  # nowhere to keep them: read the logs, then drop them
                out = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            else:
                out = self.artifacts = ctx.artifacts
            out.mkdir(parents=True, exist_ok=True)
            window = self._loadgen_test(lg, sut, out, mark, clock)
            try:
                result = read_detail(out)
            except LoadgenLogError as exc:
                raise LoadgenError(f"LoadGen left no readable result: {exc}") from exc
        sut.check()
        self.loadgen = result
        self.result = {
            "valid": result.valid,
            "invalid_reasons": list(result.invalid_reasons),
            "loadgen": asdict(result),
            "sut": sut.breakdown(),
        }
        if ctx.progress:
            _say(verdict_line(result))
        queries = result.query_count or 0
        per_query = result.values.get("effective_samples_per_query") or 1
        return Measurement(
            latencies_s=[],
            window_s=window,
            warmup_s=warmup_s,
            marks=marks,
            samples=int(queries * per_query),
            steps=queries,
        )

    def fill_record(self, record: RunRecord) -> None:
        """LoadGen's figures in the record: its latency percentiles and its samples per
        second replace the harness's (which saw queries only from the SUT's side)."""
        result = self.loadgen
        if result is None:
            return
        record.latencies_ms = []
        record.latency = loadgen_latency(result)
        sps = result.samples_per_s or result.completed_samples_per_s
        tput = record.throughput
        if sps is not None and tput is not None:
            if tput.tflops_per_s is not None and tput.samples_per_s > 0:
                tput.tflops_per_s *= sps / tput.samples_per_s
            tput.iters_per_s *= sps / tput.samples_per_s if tput.samples_per_s > 0 else 0.0
            tput.samples_per_s = sps

    def _loadgen_test(
        self,
        lg: Any,
        sut: SystemUnderTest,
        out: Path,
        mark: Callable[[str], None],
        clock: Callable[[], float],
    ) -> float:
        """Run LoadGen's test in its own thread while the SUT serves in this one; return
        the test's wall time."""

        def issue(samples: Sequence[Any]) -> None:
            sut.issue([(s.id, s.index) for s in samples])

        log = lg.LogSettings()
        log.log_output.outdir = str(out)
        log.log_output.copy_summary_to_stdout = False
        log.enable_trace = False
        count = self.spec.sample_count
        lg_sut = lg.ConstructSUT(issue, sut.flush)
        qsl = lg.ConstructQSL(count, count, _noop, _noop)
        settings = self.test_settings(lg)
        failures: list[BaseException] = []

        def test() -> None:
            try:
                lg.StartTestWithLogSettings(lg_sut, qsl, settings, log)
            except BaseException as exc:  # noqa: BLE001 - reported from the main thread
                failures.append(exc)
            finally:
                sut.stop()  # ends serve() below once the queue has drained

        # LoadGen runs in its own thread; the batches run here, on the thread that set the
        # model up and warmed it (a second OpenMP team would slow CPU batches)
        loadgen = threading.Thread(target=test, name="loadgen", daemon=True)
        try:
            mark("measure_start")
            start = clock()
            sut.serve(loadgen.start)
            loadgen.join()
            window = clock() - start
            mark("measure_end")
        finally:
            sut.stop()
            loadgen.join(timeout=10)
            lg.DestroyQSL(qsl)
            lg.DestroySUT(lg_sut)
        if failures:
            raise LoadgenError(f"LoadGen failed: {failures[0]}") from failures[0]
        return window


def loadgen_latency(result: LoadgenResult) -> Latency | None:
    """LoadGen's per-sample latencies (per query in MultiStream) as the record's latency;
    the spread figures LoadGen does not give are None."""
    per_query = result.scenario == "MultiStream"
    p = {q: result.latency_ms(q, per_query) for q in (50, 90, 95, 99)}
    mean = result.latency_ms("mean", per_query)
    lo, hi = result.latency_ms("min", per_query), result.latency_ms("max", per_query)
    if mean is None or lo is None or hi is None or any(v is None for v in p.values()):
        return None
    return Latency(
        count=result.query_count or 0,
        mean_ms=mean,
        p50_ms=p[50] or 0.0,
        p90_ms=p[90] or 0.0,
        p95_ms=p[95] or 0.0,
        p99_ms=p[99] or 0.0,
        min_ms=lo,
        max_ms=hi,
        stdev_ms=None,
        iqr_ms=None,
        cv=None,
    )


def probe_sut_samples_per_s(
    make_sut: Callable[[Complete], SystemUnderTest],
    count: int,
    clock: Callable[[], float],
    respond: Complete = lambda ids: None,
) -> float:
    """Samples per second through the SUT (its batching and hand-offs included, and
    ``respond``, the cost of answering LoadGen), issued as Offline issues them: a burst of
    queries, grown until it lasts at least PROBE_S."""
    n = PROBE_MIN_SAMPLES
    while True:
        elapsed = _burst(make_sut, n, count, clock, respond)
        if elapsed >= PROBE_S or n >= PROBE_MAX_SAMPLES:
            return n / max(elapsed, 1e-9)
        n = min(PROBE_MAX_SAMPLES, n * min(64, math.ceil(2 * PROBE_S / max(elapsed, 1e-3))))


def _burst(
    make_sut: Callable[[Complete], SystemUnderTest],
    n: int,
    count: int,
    clock: Callable[[], float],
    respond: Complete,
) -> float:
    """Seconds ``n`` queries issued at once take through a fresh SUT."""
    done = threading.Event()
    left = [n]

    def complete(ids: Sequence[int]) -> None:
        respond(ids)
        left[0] -= len(ids)
        if left[0] <= 0:
            done.set()

    sut = make_sut(complete)

    def feed() -> None:
        sut.issue([(i, i % count) for i in range(n)])
        sut.flush()
        done.wait(PROBE_TIMEOUT_S)
        sut.stop()

    feeder = threading.Thread(target=feed, name="probe", daemon=True)
    start = clock()
    sut.serve(feeder.start)
    feeder.join()
    elapsed = clock() - start
    sut.check()
    return elapsed


def _num(value: float) -> str:
    """A plain number: no scientific notation, three significant figures or whole."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value >= 0.001 else f"{value:.6f}".rstrip("0")


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


#: LoadGen's early-stopping confidence (loadgen/results.cc).
EARLY_STOPPING_CONFIDENCE = 0.99


def early_stopping_min_queries(percentile: float) -> int:
    """The fewest queries with which LoadGen's early stopping can accept a latency
    percentile in the server scenario, even with no query over the bound: n such that
    (percentile / 100) ** n <= 1 - confidence (44 at p90, 459 at p99). Fewer, and the run is
    INVALID whatever its latencies, so the server scenario asks for at least this many."""
    p = percentile / 100
    return math.ceil(math.log(1 - EARLY_STOPPING_CONFIDENCE) / math.log(p))


def warmup_shapes(max_batch: int, shapes: str) -> list[int]:
    """The batch sizes the SUT runs: always ``max_batch`` when padding to a fixed shape,
    else the powers of two below it and itself."""
    if shapes == "fixed":
        return [max_batch]
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch]


def _noop(_indices: Any) -> None:
    """The library is staged on the device before the test: nothing to load or unload."""


class SingleStream(LoadgenScenario):
    """One query of one sample at a time, the next issued when the last completes."""

    name = "single-stream"
    lg_scenario = "SingleStream"

    def expected_qps(self) -> float | None:
        bound = self.spec.latency_bound_ms
        return 1000 / bound if bound else None

    def configure(self, lg: Any, settings: Any) -> None:
        if self.spec.latency_bound_ms is not None:
            settings.single_stream_expected_latency_ns = int(self.spec.latency_bound_ms * 1e6)
        settings.single_stream_target_latency_percentile = self.spec.latency_percentile / 100


class MultiStream(LoadgenScenario):
    """Queries of ``max_batch`` samples, one at a time."""

    name = "multi-stream"
    lg_scenario = "MultiStream"

    def expected_qps(self) -> float | None:
        bound = self.spec.latency_bound_ms
        return 1000 / bound if bound else None

    def configure(self, lg: Any, settings: Any) -> None:
        settings.multi_stream_samples_per_query = self.spec.effective_max_batch
        if self.spec.latency_bound_ms is not None:
            settings.multi_stream_expected_latency_ns = int(self.spec.latency_bound_ms * 1e6)
        settings.multi_stream_target_latency_percentile = self.spec.latency_percentile / 100


class Server(LoadgenScenario):
    """Single-sample queries arriving as a Poisson process at ``target_qps``; valid when the
    latency percentile stays within the bound."""

    name = "server"
    lg_scenario = "Server"

    def min_query_count(self) -> int:
        """At least the queries LoadGen's early stopping needs to accept the percentile."""
        return max(
            super().min_query_count(), early_stopping_min_queries(self.spec.latency_percentile)
        )

    def configure(self, lg: Any, settings: Any) -> None:
        spec = self.spec
        assert spec.target_qps is not None and spec.latency_bound_ms is not None
        settings.server_target_qps = float(spec.target_qps)
        settings.server_target_latency_ns = int(spec.latency_bound_ms * 1e6)
        settings.server_target_latency_percentile = spec.latency_percentile / 100


class Offline(LoadgenScenario):
    """All queries at once: throughput."""

    name = "offline"
    lg_scenario = "Offline"

    def expected_qps(self) -> float | None:
        return self.spec.target_qps or self.probed_qps

    def expected_time(self) -> tuple[float, str]:
        duration, qps = self.min_duration_s(), self.expected_qps()
        if qps is None:
            return duration, f"min duration {_num(duration)} s"
        samples = math.ceil(duration * qps * OFFLINE_SAMPLES_FACTOR)
        return duration, (
            f"min duration {_num(duration)} s: one query of about {samples:,} samples "
            f"(min duration x {_num(qps)} expected samples/s x {OFFLINE_SAMPLES_FACTOR:g})"
        )

    def probe(self, workload: Workload, clock: Callable[[], float], respond: Complete) -> None:
        """Measure the throughput LoadGen should expect: the test's one query then lasts
        the minimum duration, and LoadGen can call it VALID."""
        spec = self.spec
        measured = probe_sut_samples_per_s(
            lambda complete: self.make_sut(workload, complete, clock),
            spec.sample_count,
            clock,
            respond,
        )
        if spec.target_qps is None:
            self.probed_qps = measured * OFFLINE_PROBE_MARGIN
        elif spec.target_qps * OFFLINE_SAMPLES_FACTOR < measured:
            _say(
                f"warning: --target-qps {_num(spec.target_qps)} is below the "
                f"{_num(measured)} samples/s a probe measured: the query will end before "
                "LoadGen's minimum duration and the run will be INVALID (leave --target-qps "
                "out to size it from the probe)"
            )

    def configure(self, lg: Any, settings: Any) -> None:
        qps = self.expected_qps()
        if qps is not None:
            settings.offline_expected_qps = float(qps)


def check_spec(spec: RunSpec) -> None:
    """Settings that cannot give a VALID LoadGen run, refused before anything runs."""
    if spec.scenario == "offline" and spec.duration_s is None:
        raise SpecError(
            "the offline scenario is sized by its minimum duration (LoadGen issues duration x "
            "expected samples/s): give --duration, not --iters"
        )
