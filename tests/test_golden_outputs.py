"""The tables of `bench show`, `bench compare` and `bench report` on the committed reference
runs, pinned: a refactoring that changes a figure or a rendering fails here.

The golden files were first written by the version-1 harness and held through the move
to typed records unchanged; they changed on purpose since, with the git history as the
record: W became energy over the window (NVML's energy counter) and runs are priced by the
share of the instance's GPUs they used, with a 'charged' column; then the tables became
narrow by default (the ``*_wide.md`` files hold every column) and the report a page for a
buyer, its decision table first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main

ROOT = Path(__file__).resolve().parent.parent
REF = ROOT / "results" / "reference"
H200 = REF / "nvidia-h200"
CPU = REF / "cpu-amd-epyc-2core"
GOLDEN = Path(__file__).resolve().parent / "golden"
H200_PRICE = ["--instance", "NVIDIA H200=p5en.48xlarge"]


def _baselines() -> list[str]:
    args = []
    for path in sorted(H200.glob("*fp32*.json")):
        args += ["--baseline", str(path)]
    return args


NARROW_CASES = {
    "show.md": (["show", str(H200), str(CPU)], 0),
    "compare_used.md": (["compare", str(H200), str(CPU), *H200_PRICE, "--price-basis", "used"], 0),
    "compare_instance.md": (
        ["compare", str(H200), str(CPU), *H200_PRICE, "--price-per-hour", "0.5"],
        0,
    ),
    "compare_gate.md": (
        ["compare", str(H200), "--baseline", str(H200), "--fail-on", "throughput:-5%"],
        1,
    ),
    "compare_baseline.md": (
        ["compare", *map(str, sorted(H200.glob("*bf16*.json"))), *_baselines(), *H200_PRICE],
        0,
    ),
}
#: The narrow tables are the default; --wide shows every column, as the tables were before.
CASES = {
    **NARROW_CASES,
    **{
        name.replace(".md", "_wide.md"): ([*argv, "--wide"], code)
        for name, (argv, code) in NARROW_CASES.items()
    },
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_tables_match_the_golden_output(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    argv, code = CASES[name]
    assert main(argv) == code
    assert capsys.readouterr().out == (GOLDEN / name).read_text()


def test_report_matches_the_golden_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["report", str(REF), "--out", str(tmp_path), *H200_PRICE, "--price-basis", "used"]
    assert main(argv) == 0
    for name in ("report.md", "runs.csv"):
        assert (tmp_path / name).read_text() == (GOLDEN / name).read_text(), name
