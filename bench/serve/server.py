"""The server process of ``bench serve``, run in the serve environment (``.venv-serve``):
the in-process workload, set up from a spec through the registry, bound to Triton
Inference Server through PyTriton with Triton's dynamic batcher in front of it.

Started as ``python -m bench.serve.server CONFIG.json`` by :mod:`bench.serve.launcher`,
which owns the process group and stops it with SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.run import registry
from bench.schema.spec import RunSpec

#: Triton's endpoints that stay behind PyTriton's access token: the statistics endpoint is
#: opened (read-only; the endpoint SUT reads it around the window), the model repository,
#: shared memory and tracing stay protected.
PROTECTED_ENDPOINTS = ["shared-memory", "model-repository", "trace", "logging"]


@dataclass(frozen=True)
class ServeConfig:
    """What ``bench serve`` asks of the server process."""

    spec: dict[str, Any]
    model: str
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    max_batch: int
    queue_delay_us: int
    instances: int = 1
    #: The null workload's time per batch (a sleeper for tests), seconds.
    service_s: float = 0.0
    #: Where PyTriton puts its copy of the server and the model store (must not exist yet;
    #: None: PyTriton's own, under its home directory). The launcher gives one inside its
    #: temporary directory, so a killed server leaves nothing behind either.
    workspace: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        return cls(**json.loads(text))


def stub_library_path(environ: dict[str, str] | None = None) -> str:
    """``LD_LIBRARY_PATH`` with this interpreter's own libpython directory first: Triton's
    Python backend stub links libpython and must load the running interpreter's."""
    environ = dict(os.environ) if environ is None else environ
    libdir = str(sysconfig.get_config_var("LIBDIR") or "")
    current = environ.get("LD_LIBRARY_PATH", "")
    return os.pathsep.join(p for p in (libdir, current) if p)


def serve(config: ServeConfig) -> None:
    """Set the model up, bind it and serve until SIGTERM (or SIGINT in the foreground)."""
    import numpy as np
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    os.environ["LD_LIBRARY_PATH"] = stub_library_path()
    # SIGTERM (and SIGINT, which a shell's background job ignores by default) end serve()
    # through PyTriton's KeyboardInterrupt path, which stops Triton and its stubs
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    spec = RunSpec.from_dict(config.spec)
    entry = registry.lookup(spec.workload, spec.backend, spec.mode)
    form = registry.served_form(spec.workload)
    signature = form.signature(spec)
    functions = []
    for _ in range(config.instances):
        workload = registry.workload_class(entry)(spec)
        workload.setup()
        fn = form.infer_fn(workload, config.service_s)
        functions.append(batch(_named(fn)))

    triton_config = TritonConfig(
        http_address=config.host,
        http_port=config.http_port,
        grpc_address=config.host,
        grpc_port=config.grpc_port,
        metrics_address=config.host,
        metrics_port=config.metrics_port,
        exit_on_error=True,
    )
    security = TritonSecurityConfig(restricted_endpoints=PROTECTED_ENDPOINTS)
    with Triton(
        config=triton_config, security_config=security, workspace=config.workspace
    ) as triton:
        triton.bind(
            model_name=config.model,
            infer_func=functions if len(functions) > 1 else functions[0],
            inputs=[
                Tensor(name=t.name, dtype=np.dtype(t.dtype), shape=t.shape)
                for t in signature.inputs
            ],
            outputs=[
                Tensor(name=t.name, dtype=np.dtype(t.dtype), shape=t.shape)
                for t in signature.outputs
            ],
            config=ModelConfig(
                max_batch_size=config.max_batch,
                batcher=DynamicBatcher(max_queue_delay_microseconds=config.queue_delay_us),
            ),
            strict=True,
        )
        triton.serve()


def _named(fn: Any) -> Any:
    """PyTriton's ``@batch`` passes the inputs as keyword arguments."""

    def infer(**inputs: Any) -> Any:
        return fn(inputs)

    return infer


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.serve.server CONFIG.json", file=sys.stderr)
        return 2
    try:
        serve(ServeConfig.from_json(Path(args[0]).read_text()))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
