"""The ``bench`` command line: the parser of every command (each declared in its module
under :mod:`bench.commands`), and the one place that turns errors and signals into exit
codes."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from bench.analysis import table
from bench.analysis.compare import CompareError
from bench.analysis.pricing import PricingError
from bench.commands import data, machine, results, runs, serve, sla_search
from bench.commands.exits import EXIT_FAILED_RUN, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE
from bench.datasets import DataError
from bench.fleet import cli as fleet_cli
from bench.run import runner
from bench.run.store import OutputError, describe
from bench.schema.record import ResultError, RunRecord
from bench.schema.spec import SpecError

#: What argparse takes for a negative number (a value, not an option) when an option is
#: followed by it: its own patterns, and durations with a unit such as ``-1ms``.
_NEGATIVE_VALUE = re.compile(r"^-\d+$|^-\d*\.\d+$|^-(\d+\.?\d*|\.\d+)(ms|us|s)$")


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input on one line, with exit code 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # `--batch-timeout -1ms` reaches the option's check instead of "expected one argument"
        self._negative_number_matcher = _NEGATIVE_VALUE

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bench",
        description="Benchmark SSD-ResNet50 and BERT-base training and inference on a GPU or CPU.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    runs.register(sub)
    sla_search.register(sub)
    runs.register_suite(sub)
    serve.register(sub)
    machine.register(sub)
    results.register(sub)
    fleet_cli.register(sub)
    data.register(sub)
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": runs.cmd_run,
    "eval": runs.cmd_run,
    "sla": sla_search.cmd_sla,
    "suite": runs.cmd_suite,
    "serve": serve.cmd_serve,
    "env": machine.cmd_env,
    "monitor": machine.cmd_monitor,
    "compare": results.cmd_compare,
    "report": results.cmd_report,
    "show": results.cmd_show,
    "fleet": fleet_cli.cmd_fleet,
    "data": data.cmd_data,
}
#: Commands that start runs (an I/O error after their checks fails a run: exit 1).
RUN_COMMANDS = frozenset({"run", "eval", "sla", "suite"})
#: Errors in what the user gave (options, files, prices): one line, exit 2.
USAGE_ERRORS = (SpecError, ResultError, PricingError, CompareError, OutputError, DataError)


class Terminated(BaseException):
    """SIGTERM, raised where the process is so that cleanup runs as for Ctrl-C."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    # Python leaves SIGINT ignored when it started ignored (a shell's background job):
    # Ctrl-C, or kill -INT, must still stop a run and clean up
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code: int = COMMANDS[args.command](args)
    except USAGE_ERRORS as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except runner.RecordNotSaved as exc:
        _show_unsaved(exc.record)
        print(f"bench: error: {exc}; its figures are printed above", file=sys.stderr)
        return EXIT_FAILED_RUN
    except OSError as exc:  # a file the command reads or writes (after the checks up front)
        print(f"bench: error: {describe(exc)}", file=sys.stderr)
        # past their checks, the run commands have started runs: those failed
        return EXIT_FAILED_RUN if args.command in RUN_COMMANDS else EXIT_USAGE
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return EXIT_SIGINT
    except Terminated:
        print("bench: terminated", file=sys.stderr)
        return EXIT_SIGTERM
    except BrokenPipeError:
        # the reader of our output (head, less) left: not an error; keep exit from failing
        # on the flush of a closed pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    return code


def _show_unsaved(record: RunRecord) -> None:
    """A run's figures on stdout when its record could not be stored: its table row, and
    the whole record as JSON (what the file would have held) to keep by redirection."""
    print(table.render([record]))
    print(json.dumps(record.to_dict(), allow_nan=False))
