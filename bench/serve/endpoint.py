"""The endpoint system under test: LoadGen's queries sent to an Open Inference Protocol
(KServe v2) server over gRPC or HTTP, any v2 server (Triton, MLServer, KServe).

Each sample LoadGen issues becomes one request of one sample; the server batches. The
client runs on asyncio (``tritonclient.grpc.aio`` or ``tritonclient.http.aio``) on the
worker's main thread, so many requests are in flight at once (up to ``MAX_IN_FLIGHT``)
while LoadGen issues from its own thread; a query completes when its response arrives,
so LoadGen times the whole path. A failed request is completed too (LoadGen waits for every
query) and counted; any failure ends the run as failed, naming the first cause. Against a
Triton server the model's statistics are read before and after the window
(:mod:`bench.serve.stats`).

The checks before a run (:func:`preflight`) run in the serve environment, where the client
library lives, and turn a refused connection, an unknown model or a model whose inputs are
not the workload's into one line and exit code 2 before anything runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.run import envinfo, registry
from bench.run.batcher import BatcherError, Query
from bench.run.loadgen import Complete, LoadgenError
from bench.run.workload import Workload
from bench.schema.spec import RunSpec, SpecError, parse_endpoint
from bench.serve import stats as server_stats

#: Requests in flight at once, at most (the Offline scenario issues every query at once).
MAX_IN_FLIGHT = 128
#: A request that has no answer after this long fails (a hung server ends the run in
#: bounded time).
REQUEST_TIMEOUT_S = 30.0
#: Connecting and the checks before a run.
CONNECT_TIMEOUT_S = 5.0
#: Errors kept with their message; later ones are only counted.
MAX_ERRORS_KEPT = 20


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    model: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        return cls(*parse_endpoint(url))

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}/{self.model}"


# -- before the run (main environment) ------------------------------------------------------


def preflight(spec: RunSpec) -> None:
    """Refuse, before anything runs, an endpoint that nothing answers at, a model the server
    does not serve (or not ready), or one whose inputs are not the workload's. The protocol
    checks run in the serve environment (its client library)."""
    assert spec.endpoint is not None
    endpoint = Endpoint.parse(spec.endpoint)
    check_connect(endpoint)
    python = serve_python()
    out = subprocess.run(
        [str(python), "-m", "bench.serve.endpoint", "check", json.dumps(spec.to_dict())],
        capture_output=True,
        text=True,
        cwd=envinfo.PROJECT_ROOT,
        env=project_env(),
        timeout=120,
    )
    if out.returncode != 0:
        lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
        raise SpecError(lines[-1] if lines else f"the endpoint check failed ({out.returncode})")


def serve_python() -> Path:
    """The serve environment's interpreter, or a SpecError saying how to set it up."""
    from bench.run.processes import python_for

    try:
        return python_for(registry.SERVE_ENV)
    except SpecError:
        raise SpecError(
            "served runs need the serve environment (.venv-serve): run `make setup-serve`"
        ) from None


def project_env() -> dict[str, str]:
    """This environment with the project root first on PYTHONPATH (as workers get it)."""
    env = dict(os.environ)
    root = str(envinfo.PROJECT_ROOT)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def check_connect(endpoint: Endpoint, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """A TCP connection to the endpoint's port, or a SpecError saying why not."""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise SpecError(f"nothing answers at {endpoint.url}: {why.lower()}") from None


# -- the client (serve environment) -----------------------------------------------------------


class Client:
    """One asyncio client of either protocol, with the calls the SUT makes."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        if endpoint.scheme == "grpc":
            import tritonclient.grpc as proto
            import tritonclient.grpc.aio as aio

            self._client: Any = aio.InferenceServerClient(url=endpoint.address)
        else:
            import tritonclient.http as proto
            import tritonclient.http.aio as aio

            self._client = aio.InferenceServerClient(
                url=endpoint.address, conn_limit=MAX_IN_FLIGHT, conn_timeout=REQUEST_TIMEOUT_S
            )
        self._proto: Any = proto

    def inputs(self, arrays: dict[str, Any]) -> list[Any]:
        """Request inputs of the given arrays (batch dimension first)."""
        from tritonclient.utils import np_to_triton_dtype

        made = []
        for name, array in arrays.items():
            tensor = self._proto.InferInput(
                name, list(array.shape), np_to_triton_dtype(array.dtype)
            )
            tensor.set_data_from_numpy(array)
            made.append(tensor)
        return made

    async def infer(self, inputs: list[Any]) -> Any:
        model = self.endpoint.model
        if self.endpoint.scheme == "grpc":
            return await self._client.infer(model, inputs, client_timeout=REQUEST_TIMEOUT_S)
        return await self._client.infer(model, inputs)

    async def statistics(self) -> dict[str, Any]:
        model = self.endpoint.model
        if self.endpoint.scheme == "grpc":
            result = await self._client.get_inference_statistics(
                model, as_json=True, client_timeout=CONNECT_TIMEOUT_S
            )
        else:
            result = await self._client.get_inference_statistics(model)
        return dict(result)

    async def metadata(self) -> dict[str, Any]:
        model = self.endpoint.model
        if self.endpoint.scheme == "grpc":
            return dict(
                await self._client.get_model_metadata(
                    model, as_json=True, client_timeout=CONNECT_TIMEOUT_S
                )
            )
        return dict(await self._client.get_model_metadata(model))

    async def ready(self) -> bool:
        if self.endpoint.scheme == "grpc":
            return bool(
                await self._client.is_model_ready(
                    self.endpoint.model, client_timeout=CONNECT_TIMEOUT_S
                )
            )
        return bool(await self._client.is_model_ready(self.endpoint.model))

    async def close(self) -> None:
        await self._client.close()


def describe(exc: BaseException) -> str:
    """An error's first line, without the client library's decoration."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


async def check(spec: RunSpec) -> None:
    """The protocol checks of :func:`preflight`: the model is served and ready, and its
    inputs are the workload's."""
    assert spec.endpoint is not None
    endpoint = Endpoint.parse(spec.endpoint)
    client = Client(endpoint)
    try:
        try:
            ready = await client.ready()
        except Exception as exc:  # noqa: BLE001 - reported as one line
            raise SpecError(
                f"no Open Inference Protocol server at {endpoint.url}: {describe(exc)}"
            ) from None
        if not ready:
            raise SpecError(
                f"the server at {endpoint.address} serves no ready model named {endpoint.model!r}"
            )
        metadata = await client.metadata()
        signature = registry.served_form(spec.workload).signature(spec)
        served = {t["name"] for t in metadata.get("inputs", [])}
        wanted = {t.name for t in signature.inputs}
        if served != wanted:
            raise SpecError(
                f"model {endpoint.model!r} at {endpoint.address} takes inputs "
                f"{', '.join(sorted(served)) or 'none'}, not {spec.workload}'s "
                f"{', '.join(sorted(wanted))}"
            )
    finally:
        await client.close()


@dataclass
class EndpointStats:
    """What the endpoint SUT did (client side), and the server's figures when it has
    statistics; the batching SUT's stats' interface (``failed``, ``errors``)."""

    endpoint: str
    queries_issued: int = 0
    queries_completed: int = 0
    queries_failed: int = 0
    max_in_flight_seen: int = 0
    errors: list[BatcherError] = field(default_factory=list)
    error_count: int = 0
    #: The server's own figures over the window (None: see ``server_reason``).
    server: server_stats.ServerFigures | None = None
    server_reason: str | None = None

    @property
    def failed(self) -> bool:
        return self.error_count > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "queries_issued": self.queries_issued,
            "queries_completed": self.queries_completed,
            "queries_failed": self.queries_failed,
            "max_in_flight_seen": self.max_in_flight_seen,
            "errors": [
                {"where": e.where, "message": e.message, "queries": e.queries} for e in self.errors
            ],
            "error_count": self.error_count,
            "server": self.server.to_dict() if self.server is not None else None,
            "server_reason": self.server_reason,
        }


class EndpointSut:
    """LoadGen's system under test over an endpoint (:class:`bench.run.loadgen.SystemUnderTest`):
    one request per sample, completed when its response arrives."""

    def __init__(
        self,
        endpoint: Endpoint,
        library: dict[str, Any],
        complete: Complete,
        clock: Callable[[], float] = time.perf_counter,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.endpoint = endpoint
        self.library = library
        self.complete = complete
        self.clock = clock
        self.max_in_flight = max_in_flight
        self._stats = EndpointStats(endpoint=endpoint.url)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._requests: dict[int, list[Any]] = {}

    def settings(self) -> dict[str, object]:
        return {
            "sut": "endpoint",
            "endpoint": self.endpoint.url,
            "protocol": self.endpoint.scheme,
            "max_in_flight": self.max_in_flight,
            "request_timeout_s": REQUEST_TIMEOUT_S,
            "samples_per_request": 1,
        }

    @property
    def stats(self) -> EndpointStats:
        return self._stats

    def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        """Run the client until :meth:`stop`; ``on_ready`` (LoadGen's start) once it is."""
        asyncio.run(self._main(on_ready))

    async def _main(self, on_ready: Callable[[], None] | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._slots = asyncio.Semaphore(self.max_in_flight)
        client = self._client = Client(self.endpoint)
        try:
            before = await self._counters(client)
            if on_ready is not None:
                on_ready()
            await self._stopped.wait()
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            if before is not None:
                after = await self._counters(client)
                if after is not None:
                    self._stats.server = server_stats.window(before, after)
        finally:
            await client.close()

    async def _counters(self, client: Client) -> server_stats.Counters | None:
        """The model's statistics now, or None with the reason kept (a server without the
        statistics extension, an unreadable answer)."""
        try:
            return server_stats.counters(await client.statistics(), self.endpoint.model)
        except Exception as exc:  # noqa: BLE001 - the figures are then absent, with why
            self._stats.server_reason = f"no server statistics: {describe(exc)}"
            return None

    def issue(self, queries: Sequence[tuple[int, int]]) -> None:
        """Called on LoadGen's thread: stamp the queries and hand them to the client."""
        now = self.clock()
        batch = [Query(id=qid, index=index, issued_at=now) for qid, index in queries]
        with self._lock:
            self._stats.queries_issued += len(batch)
        loop = self._loop
        assert loop is not None, "serve() first"
        loop.call_soon_threadsafe(self._spawn, batch)

    def _spawn(self, batch: list[Query]) -> None:
        for query in batch:
            task = asyncio.get_running_loop().create_task(self._send(query))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _request(self, index: int) -> list[Any]:
        """The request inputs of one sample, made once and reused."""
        made = self._requests.get(index)
        if made is None:
            made = self._client.inputs({k: v[index : index + 1] for k, v in self.library.items()})
            self._requests[index] = made
        return made

    async def _send(self, query: Query) -> None:
        async with self._slots:
            self._in_flight += 1
            self._stats.max_in_flight_seen = max(self._stats.max_in_flight_seen, self._in_flight)
            error = None
            try:
                await self._client.infer(self._request(query.index))
            except Exception as exc:  # noqa: BLE001 - counted, and the run fails
                error = describe(exc)
            finally:
                self._in_flight -= 1
        with self._lock:
            self._stats.queries_completed += 1
            if error is not None:
                self._record("request", error)
        try:
            self.complete([query.id])
        except Exception as exc:  # noqa: BLE001 - recorded; LoadGen's own failure shows too
            with self._lock:
                self._record("complete", describe(exc))

    def _record(self, where: str, message: str) -> None:
        stats = self._stats
        if where == "request":
            stats.queries_failed += 1
        stats.error_count += 1
        if len(stats.errors) < MAX_ERRORS_KEPT:
            stats.errors.append(BatcherError(where=where, message=message, queries=1))

    def flush(self) -> None:
        """Every query is sent as it arrives: nothing waits to be flushed."""

    def breakdown(self) -> dict[str, Any]:
        """The client's settings and counts, and the server's own statistics."""
        return {**self.settings(), **self._stats.to_dict()}

    def check(self) -> None:
        stats = self._stats
        if stats.failed:
            first = stats.errors[0]
            raise LoadgenError(
                f"the SUT failed during the LoadGen test ({stats.error_count} error(s)); "
                f"first, in {first.where}: {first.message}"
            )

    def stop(self, timeout_s: float = 10) -> None:
        """End :meth:`serve` once the requests in flight have completed."""
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopped.set)


class EndpointWorkload(Workload):
    """The workload of a run against an endpoint: the seeded sample library the in-process
    runs stage, sent to the server; the model itself is the server's."""

    step_description = (
        "one Open Inference Protocol request per LoadGen sample, sent to the endpoint and "
        "completed when its response arrives (the server batches)"
    )

    def __init__(self, spec: RunSpec) -> None:
        super().__init__(spec)
        assert spec.endpoint is not None
        self.endpoint = Endpoint.parse(spec.endpoint)
        self.library: dict[str, Any] | None = None
        self.metadata: dict[str, Any] | None = None

    def setup(self) -> None:
        self.metadata = asyncio.run(self._metadata())

    async def _metadata(self) -> dict[str, Any]:
        client = Client(self.endpoint)
        try:
            return await client.metadata()
        finally:
            await client.close()

    def step(self) -> Any:
        raise NotImplementedError("an endpoint run is driven by LoadGen")

    def stage_samples(self, count: int) -> None:
        self.library = registry.served_form(self.spec.workload).sample_arrays(self.spec, count)

    def infer_samples(self, indices: Sequence[int]) -> int:
        """The warm-up: the samples at ``indices`` sent one request each, all in flight."""
        library = self.library
        assert library is not None, "stage_samples() first"

        async def send() -> None:
            client = Client(self.endpoint)
            try:
                requests = [
                    client.inputs({k: v[i : i + 1] for k, v in library.items()}) for i in indices
                ]
                await asyncio.gather(*(client.infer(r) for r in requests))
            finally:
                await client.close()

        asyncio.run(send())
        return len(indices)

    def loadgen_sut(self, complete: Complete, clock: Callable[[], float]) -> EndpointSut:
        assert self.library is not None, "stage_samples() first"
        return EndpointSut(self.endpoint, self.library, complete, clock)

    def details(self) -> dict[str, Any]:
        meta = self.metadata or {}
        return {
            "endpoint": self.endpoint.url,
            "served_model": meta.get("name"),
            "served_platform": meta.get("platform"),
            "served_versions": meta.get("versions"),
        }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "check":
        print("usage: python -m bench.serve.endpoint check SPEC_JSON", file=sys.stderr)
        return 2
    try:
        asyncio.run(check(RunSpec.from_dict(json.loads(args[1]))))
    except SpecError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
