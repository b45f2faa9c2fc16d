"""``bench serve``: start Triton Inference Server (through PyTriton, in the serve
environment) with the workload's model, wait until the model is ready, print its endpoints,
and stop everything it started on SIGINT or SIGTERM.

The server process leads its own process group (Triton and its Python backend stub are in
it); stopping sends the group SIGTERM (a server in the background ignores SIGINT), then
SIGKILL after a grace period, so no process is left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.run import envinfo, registry
from bench.run.capabilities import words
from bench.run.processes import stop_group
from bench.schema.spec import RunSpec, SpecError
from bench.serve.endpoint import project_env, serve_python
from bench.serve.server import ServeConfig

#: Triton's default ports: HTTP, then gRPC and metrics on the next two.
DEFAULT_PORT = 8000
LOOPBACK = "127.0.0.1"
#: How long the model may take to load (SSD or BERT on a busy CPU, an ONNX export).
READY_TIMEOUT_S = 600.0
#: After SIGTERM, how long Triton gets to unload the model and exit.
STOP_GRACE_S = 20.0


class ServeError(RuntimeError):
    """The server exited or never became ready."""


def ports(port: int) -> tuple[int, int, int]:
    """HTTP, gRPC and metrics ports from the first."""
    if not 0 < port < 65534:
        raise SpecError(f"--port must be between 1 and 65533, not {port}")
    return port, port + 1, port + 2


def check_ports_free(host: str, wanted: tuple[int, ...]) -> None:
    """Refuse a port something else holds (one line, before anything starts)."""
    for port in wanted:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise SpecError(
                        f"port {port} on {host} is in use (bench serve takes --port P and the "
                        "next two, for HTTP, gRPC and metrics): choose another --port"
                    ) from None
                raise SpecError(f"cannot bind {host}:{port}: {exc.strerror}") from None


def check_spec(spec: RunSpec) -> None:
    """What can be served: a workload that declares its served form, on a backend whose path
    the serve environment holds (:data:`bench.run.registry.SERVED_BACKENDS`)."""
    registry.lookup(spec.workload, spec.backend, "infer")
    if spec.backend not in registry.SERVED_BACKENDS:
        raise SpecError(
            f"bench serve serves the {words(registry.SERVED_BACKENDS)} paths, not {spec.backend}"
        )
    if registry.workload_info(spec.workload).served is None:
        raise SpecError(
            f"bench serve serves the {words(registry.served_workload_names())} workloads, "
            f"not {spec.workload}"
        )


@dataclass
class Server:
    """A started server: its process and where it answers."""

    proc: subprocess.Popen[bytes]
    config: ServeConfig
    log: Path

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.config.host}:{self.config.grpc_port}/{self.config.model}"

    @property
    def http_url(self) -> str:
        return f"http://{self.config.host}:{self.config.http_port}/{self.config.model}"

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        kept = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return " | ".join(kept[-lines:])

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S, poll_s: float = 0.5) -> None:
        """Until the model answers ready over HTTP; ServeError when the process exits or
        the time runs out."""
        url = (
            f"http://{self.config.host}:{self.config.http_port}/v2/models/{self.config.model}/ready"
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise ServeError(f"the server exited with code {code}: {self.log_tail()}")
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(url, timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(poll_s)
        raise ServeError(f"the model was not ready after {timeout_s:g} s: {self.log_tail()}")

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after ``grace_s``."""
        if self.proc.returncode is None:
            stop_group(self.proc, grace_s)


def start(config: ServeConfig, log: Path) -> Server:
    """Start the server process of ``config`` (returns at once; see
    :meth:`Server.wait_ready`)."""
    python = serve_python()
    config_file = log.with_suffix(".json")
    if config.workspace is None:  # beside the log, removed with it
        config = dataclasses.replace(config, workspace=str(log.parent / "pytriton"))
    config_file.write_text(config.to_json())
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(python), "-m", "bench.serve.server", str(config_file)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=envinfo.PROJECT_ROOT,
            env=project_env(),
            start_new_session=True,
        )
    return Server(proc=proc, config=config, log=log)


def make_config(
    spec: RunSpec,
    *,
    host: str = LOOPBACK,
    port: int = DEFAULT_PORT,
    max_batch: int = 8,
    queue_delay_ms: float = 2.0,
    instances: int = 1,
    model: str | None = None,
    service_ms: float = 0.0,
) -> ServeConfig:
    """Checked settings of a server for ``spec`` (device and precision resolved)."""
    check_spec(spec)
    if not 1 <= max_batch <= 4096:
        raise SpecError(f"--max-batch must be between 1 and 4096, not {max_batch}")
    if not 0 <= queue_delay_ms <= 10_000:
        raise SpecError(f"--queue-delay must be between 0 and 10 s, not {queue_delay_ms:g} ms")
    if not 1 <= instances <= 64:
        raise SpecError(f"--instances must be between 1 and 64, not {instances}")
    if service_ms and not registry.workload_info(spec.workload).harness_overhead:
        raise SpecError("a fixed service time applies to the null workload only")
    http, grpc, metrics = ports(port)
    check_ports_free(host, (http, grpc, metrics))
    serve_python()
    return ServeConfig(
        spec=spec.to_dict(),
        model=model or spec.workload,
        host=host,
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        max_batch=max_batch,
        queue_delay_us=round(queue_delay_ms * 1000),
        instances=instances,
        service_s=service_ms / 1000,
    )


@contextlib.contextmanager
def running(config: ServeConfig, timeout_s: float = READY_TIMEOUT_S) -> Iterator[Server]:
    """A ready server for the ``with`` block; stopped (its whole group) after it."""
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        server = start(config, Path(tmp, "server.log"))
        try:
            server.wait_ready(timeout_s)
            yield server
        finally:
            server.stop()
