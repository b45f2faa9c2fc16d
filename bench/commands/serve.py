"""``bench serve``: its options and command. The served model's options are the spec's own
(:mod:`bench.commands.spec_flags`); the server's are declared here."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from bench.commands.spec_flags import add_spec_flags, latency_ms, spec_fields
from bench.run import runner
from bench.run.registry import run_label
from bench.schema.spec import RunSpec, SpecError
from bench.serve import launcher

#: Addresses that reach only this machine.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``serve``."""
    p = sub.add_parser(
        "serve",
        help="serve a workload's model from Triton Inference Server (PyTriton)",
        description="Start NVIDIA Triton Inference Server (through PyTriton) with the model "
        "the in-process runs use (same seeded weights, or --pretrained), with Triton's dynamic "
        "batcher; print its gRPC and HTTP endpoints once the model is ready and serve until "
        "SIGINT or SIGTERM. Benchmark it with bench run/sla --endpoint.",
    )
    add_spec_flags(p, "serve")
    p.add_argument(
        "--queue-delay",
        type=latency_ms,
        default=2.0,
        help="how long Triton's batcher may hold a request to fill a batch (default 2ms)",
    )
    p.add_argument("--instances", type=int, default=1, help="model instances (default 1)")
    p.add_argument(
        "--port",
        type=int,
        default=launcher.DEFAULT_PORT,
        help=f"HTTP port; gRPC and metrics take the next two (default {launcher.DEFAULT_PORT})",
    )
    p.add_argument("--host", default=launcher.LOOPBACK, help="address to bind (default loopback)")
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host other than loopback (the server then answers the network)",
    )
    p.add_argument("--model-name", help="the served model's name (default: the workload)")
    p.add_argument(
        "--service-time",
        type=latency_ms,
        default=0.0,
        help="null workload only: a fixed time per batch (a sleeper, for tests)",
    )


def cmd_serve(args: argparse.Namespace) -> int:
    if args.host not in LOOPBACK_HOSTS and not args.allow_remote:
        raise SpecError(
            f"--host {args.host} would serve the network: add --allow-remote to mean it"
        )
    spec = RunSpec(**spec_fields(args, "serve"))
    launcher.check_spec(spec)
    spec = runner.prepare(spec)
    config = launcher.make_config(
        spec,
        host=args.host,
        port=args.port,
        max_batch=spec.batch,
        queue_delay_ms=args.queue_delay,
        instances=args.instances,
        model=args.model_name,
        service_ms=args.service_time,
    )
    # a shell starts a background job with SIGINT ignored; bench serve stops on it anyway
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(f"starting Triton for {run_label(spec)} ...", file=sys.stderr, flush=True)
    try:
        with launcher.running(config) as server:
            print(f"serving {config.model}: {server.grpc_url}  {server.http_url}", flush=True)
            code = server.proc.wait()
            print(
                f"bench: the server exited with code {code}: {server.log_tail()}", file=sys.stderr
            )
            return 1
    except launcher.ServeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
