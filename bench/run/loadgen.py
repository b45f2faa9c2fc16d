"""MLPerf LoadGen scenarios: LoadGen decides when queries arrive and measures them; the
harness provides the system under test (a batching SUT over the workload's staged
samples) and the query sample library.

The SUT's ``issue_queries`` only enqueues and LoadGen runs in its own thread, while the
batches run on the thread that set the model up, so LoadGen's clock is never stalled by
inference. Samples are staged on the device before the test
(``Workload.stage_samples``), so loading the library costs nothing during it. LoadGen's own
logs are kept in the run's artifacts directory; its verdict (valid or not, and why) and
percentiles go into the record's scenario result.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from bench.run.batcher import Batcher, Query
from bench.run.loadgen_log import LoadgenLogError, parse_logs
from bench.run.loop import Measurement, PhaseMarks
from bench.run.record import ScenarioFacts
from bench.run.scenarios import Mark, Scenario
from bench.run.spec import RunSpec
from bench.run.workload import Workload

#: LoadGen reads this file from the working directory and lets it override the settings.
AUDIT_CONFIG = "audit.config"
#: A LoadGen scenario's minimum duration when the spec gives a minimum query count instead
#: (and the query count when it gives a duration): LoadGen needs both.
MIN_QUERIES_WITH_DURATION = 1
MIN_DURATION_WITH_QUERIES_S = 0.0


class LoadgenError(RuntimeError):
    """The LoadGen test could not run or left no readable result."""


class LoadgenScenario(Scenario):
    """One LoadGen test over a batching SUT; subclasses name LoadGen's scenario and add its
    settings."""

    timing = "loadgen"
    lg_scenario: ClassVar[str]

    def __init__(self, spec: RunSpec) -> None:
        super().__init__(spec)
        self.artifacts: Path | None = None

    def min_duration_s(self) -> float:
        return self.spec.duration_s or MIN_DURATION_WITH_QUERIES_S

    def min_query_count(self) -> int:
        return self.spec.iters or MIN_QUERIES_WITH_DURATION

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

    def run(
        self,
        workload: Workload,
        *,
        progress: bool = True,
        on_mark: Mark | None = None,
        clock: Callable[[], float] = time.perf_counter,
        artifacts: Path | None = None,
    ) -> Measurement:
        import mlperf_loadgen as lg

        spec = self.spec
        mark = PhaseMarks(on_mark)
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

        latencies: list[float] = []
        lock = threading.Lock()

        def run_batch(indices: Sequence[int]) -> None:
            workload.infer_samples(indices)
            workload.sync()

        def complete(queries: Sequence[Query], t_done: float) -> None:
            lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, 0, 0) for q in queries])
            with lock:
                latencies.extend(t_done - q.issued_at for q in queries)

        batcher = workload.loadgen_sut(complete, clock) or Batcher(
            run_batch,
            complete,
            max_batch=max_batch,
            timeout_s=spec.batch_timeout_ms / 1000,
            shapes=spec.batch_shapes,
            clock=clock,
        )

        if Path(AUDIT_CONFIG).exists():
            raise LoadgenError(
                f"an {AUDIT_CONFIG} in the working directory would silently override "
                "LoadGen's settings (LoadGen reads it there): move it away"
            )
        with contextlib.ExitStack() as stack:
            if artifacts is None:  # nowhere to keep them: read the logs, then drop them
                out = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            else:
                out = self.artifacts = artifacts
            out.mkdir(parents=True, exist_ok=True)
            window = self._loadgen_test(lg, batcher, out, mark, clock)
            try:
                result = parse_logs(out).to_dict()
            except LoadgenLogError as exc:
                raise LoadgenError(f"LoadGen left no readable result: {exc}") from exc
        stats = batcher.stats
        result["sut"] = {**batcher.settings(), **stats.to_dict()}
        if stats.failed:
            first = stats.errors[0]
            raise LoadgenError(
                f"the SUT failed during the LoadGen test ({stats.error_count} error(s)); "
                f"first, in {first.where}: {first.message}"
            )
        self.result = result
        return Measurement(
            latencies_s=latencies,
            window_s=window,
            warmup_s=warmup_s,
            marks=marks,
            samples=len(latencies),
        )

    def _loadgen_test(
        self,
        lg: Any,
        batcher: Batcher,
        out: Path,
        mark: Callable[[str], None],
        clock: Callable[[], float],
    ) -> float:
        """Run LoadGen's test in its own thread while the batches run in this one; return
        the test's wall time."""

        def issue(samples: Sequence[Any]) -> None:
            batcher.issue([(s.id, s.index) for s in samples])

        log = lg.LogSettings()
        log.log_output.outdir = str(out)
        log.log_output.copy_summary_to_stdout = False
        log.enable_trace = False
        count = self.spec.sample_count
        sut = lg.ConstructSUT(issue, batcher.flush)
        qsl = lg.ConstructQSL(count, count, _noop, _noop)
        settings = self.test_settings(lg)
        failures: list[BaseException] = []

        def test() -> None:
            try:
                lg.StartTestWithLogSettings(sut, qsl, settings, log)
            except BaseException as exc:  # noqa: BLE001 - reported from the main thread
                failures.append(exc)
            finally:
                batcher.stop()  # ends serve() below once the queue has drained

        # LoadGen runs in its own thread; the batches run here, on the thread that set the
        # model up and warmed it (a second OpenMP team would slow CPU batches)
        loadgen = threading.Thread(target=test, name="loadgen", daemon=True)
        try:
            mark("measure_start")
            start = clock()
            batcher.serve(on_ready=loadgen.start)
            loadgen.join()
            window = clock() - start
            mark("measure_end")
        finally:
            batcher.stop()
            loadgen.join(timeout=10)
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
        if failures:
            raise LoadgenError(f"LoadGen failed: {failures[0]}") from failures[0]
        return window


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

    def configure(self, lg: Any, settings: Any) -> None:
        if self.spec.latency_bound_ms is not None:
            settings.single_stream_expected_latency_ns = int(self.spec.latency_bound_ms * 1e6)
        settings.single_stream_target_latency_percentile = self.spec.latency_percentile / 100


class MultiStream(LoadgenScenario):
    """Queries of ``max_batch`` samples, one at a time."""

    name = "multi-stream"
    lg_scenario = "MultiStream"

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

    def configure(self, lg: Any, settings: Any) -> None:
        if self.spec.target_qps is not None:
            settings.offline_expected_qps = float(self.spec.target_qps)


LOADGEN_SCENARIOS: dict[str, type[LoadgenScenario]] = {
    cls.name: cls for cls in (SingleStream, MultiStream, Server, Offline)
}
