"""The options of the commands that start runs which are not spec fields: how runs are
carried out (:class:`bench.run.options.RunOptions`), declared once."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.run.ec2 import instance_facts
from bench.run.options import DEFAULT_OUT, RunOptions
from bench.run.store import check_writable
from bench.schema.spec import SpecError
from bench.telemetry.sampling import DEFAULT_INTERVAL_S


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"directory for result files (default: {DEFAULT_OUT})",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--timeout", type=float, default=None, help="kill a run's worker after this many seconds"
    )
    p.add_argument(
        "--telemetry-interval",
        type=float,
        default=DEFAULT_INTERVAL_S,
        help=f"seconds between GPU telemetry samples (default {DEFAULT_INTERVAL_S})",
    )
    p.add_argument("--no-telemetry", action="store_true", help="do not sample the GPU or host")
    p.add_argument("--instance", help="EC2 instance type to record (default: asked of IMDS on EC2)")
    p.add_argument(
        "--profile-steps",
        type=int,
        default=0,
        metavar="N",
        help="after the window, profile N steps and keep the top kernels in the record",
    )


def add_save_weights(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--save-weights",
        action="store_true",
        help="after a training run, save the weights where --pretrained can load them "
        "(<run id>.weights/ beside the record)",
    )


def run_options(args: argparse.Namespace) -> RunOptions:
    """The options checked (a SpecError or an OutputError says what is wrong) and gathered."""
    if args.telemetry_interval <= 0:
        raise SpecError("--telemetry-interval must be positive (use --no-telemetry to turn off)")
    if args.timeout is not None and args.timeout <= 0:
        raise SpecError("--timeout must be positive")
    if args.profile_steps < 0:
        raise SpecError("--profile-steps must be 0 or more")
    if args.instance is not None:
        try:
            instance_facts(override=args.instance)
        except ValueError as exc:
            raise SpecError(str(exc)) from exc
    check_writable(args.out, "--out")
    return RunOptions(
        out_dir=args.out,
        # bars redraw a line with carriage returns: in a piped log they would be noise
        progress=not args.no_progress and sys.stderr.isatty(),
        timeout_s=args.timeout,
        telemetry_interval_s=None if args.no_telemetry else args.telemetry_interval,
        instance=args.instance,
        profile_steps=args.profile_steps,
        save_weights=getattr(args, "save_weights", False),
    )
