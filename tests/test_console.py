"""Console output that fits: narrow tables by default, progress bars only on a terminal."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bench import cli
from bench.analysis.compare import compare, render
from bench.analysis.pricing import build_pricing
from bench.analysis.table import render as show
from bench.analysis.table import short_device
from bench.commands.run_options import run_options
from bench.run.store import load_records

REF = Path(__file__).resolve().parent.parent / "results" / "reference"
#: The narrow tables' budget ("about 120 characters"); the wide ones hold every column.
NARROW = 125


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    "tty, no_progress, shown", [(True, False, True), (False, False, False), (True, True, False)]
)
def test_progress_bars_only_on_a_terminal(monkeypatch, tty, no_progress, shown):
    monkeypatch.setattr(cli.sys, "stderr", _Stream(tty))
    argv = ["run", "--workload", "null", "--device", "cpu"]
    args = cli.build_parser().parse_args(argv + (["--no-progress"] if no_progress else []))
    assert run_options(args).progress is shown


def _table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def test_show_and_compare_fit_in_narrow_tables_and_wide_has_everything():
    records = load_records([REF])
    pricing = build_pricing(instances=["NVIDIA H200=p5en.48xlarge"], basis="used")
    c = compare(records, pricing)
    for narrow, wide in (
        (show(r for _, r in records), show((r for _, r in records), wide=True)),
        (render(c), render(c, wide=True)),
    ):
        assert len(_table_lines(narrow)) > 20
        assert max(map(len, narrow.splitlines())) <= NARROW  # prose wrapped, too
        assert max(map(len, _table_lines(wide))) > 200
        assert "| J/sample " in wide and "J/sample" not in narrow


@pytest.mark.parametrize(
    "name, short",
    [
        ("Intel(R) Xeon(R) Processor (2 cores)", "Intel Xeon (2 cores)"),
        (
            "Intel(R) Core(TM) i7-9750H CPU @ 2.60GHz (12 cores)",
            "Intel Core i7-9750H @ 2.60GHz (12 cores)",
        ),
        ("NVIDIA H200", "NVIDIA H200"),
    ],
)
def test_narrow_tables_drop_trademark_marks_from_device_names(name, short):
    assert short_device(name) == short
