"""``bench env`` and ``bench monitor``: this machine's environment and a live view of its
GPUs."""

from __future__ import annotations

import argparse
import json
from typing import Any

from bench.commands.exits import EXIT_OK
from bench.run import runner
from bench.schema.spec import SpecError
from bench.telemetry.devices import default_gpus


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``env`` and ``monitor``."""
    sub.add_parser(
        "env",
        help="print the environment record as JSON",
        description="Print the environment record stored with each result.",
    )
    p = sub.add_parser(
        "monitor",
        help="live view of the GPUs (like watch nvidia-smi)",
        description="Show GPU utilization, memory, power, clocks, temperature and throttle "
        "reasons, refreshed in place, until Ctrl-C.",
    )
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument("--count", type=int, help="stop after this many refreshes")


def cmd_env(args: argparse.Namespace) -> int:
    print(json.dumps(runner.environment_report(default_gpus()), indent=2))
    return EXIT_OK


def cmd_monitor(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise SpecError("--interval must be positive")
    if args.count is not None and args.count < 1:
        raise SpecError("--count must be at least 1")
    from bench.telemetry.monitor import run_monitor

    return run_monitor(args.interval, args.count)
