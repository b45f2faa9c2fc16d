"""`bench report` from real result files made by CPU runs in this test, and the HTML page
opened in headless Chromium (screenshot checked)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.analysis.report import pareto_frontier

ROOT = Path(__file__).resolve().parent.parent


def bench(*args):
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )


def test_pareto_frontier_exact():
    # (cost, latency): (1, 10) and (2, 5) and (4, 1) trade off; (3, 6) is beaten by (2, 5);
    # (2, 7) by (2, 5) (same cost, slower)
    points = [(3.0, 6.0), (1.0, 10.0), (2.0, 5.0), (4.0, 1.0), (2.0, 7.0)]
    assert pareto_frontier(points) == [1, 2, 3]
    assert pareto_frontier([(1.0, 1.0), (1.0, 1.0)]) == [0, 1]  # ties beat nobody


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    for precision in ("fp32", "bf16"):
        proc = bench(
            "run",
            "--workload",
            "bert",
            "--batch",
            "1",
            "--seq-len",
            "16",
            "--precision",
            precision,
            "--device",
            "cpu",
            "--warmup",
            "1",
            "--duration",
            "0.5",
            "--out",
            str(out),
            "--no-progress",
        )
        assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    proc = bench(
        "report",
        str(runs),
        "--out",
        str(out),
        "--price-per-hour",
        "0.10",
        "--title",
        "CPU test report",
    )
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.slow
def test_report_files(report):
    names = sorted(p.name for p in report.iterdir())
    assert names == [
        "cost_0.png",
        "frontier_0.png",
        "report.html",
        "report.md",
        "runs.csv",
        "telemetry.png",
        "throughput_0.png",
    ]
    md = (report / "report.md").read_text()
    assert md.startswith("# CPU test report")
    assert md.index("## Which instance and path, per job") < md.index("## bert infer seq 16")
    assert "| bert infer seq 16 | $ per 1M inferences" in md
    assert "![frontier_0](frontier_0.png)" in md
    rows = (report / "runs.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("run_id,workload,mode")
    html = (report / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4  # self-contained
    assert 'src="' not in html.replace('src="data:', "")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    not _chromium() and not os.environ.get("CI"),
    reason="Chromium is not installed (.ci/run installs it)",
)
@pytest.mark.slow
def test_report_opens_in_headless_chromium(report, tmp_path):
    exe = _chromium()
    assert exe, "CI must have Chromium: .ci/run installs it"
    shot = tmp_path / "shot.png"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    url = (report / "report.html").as_uri()
    proc = subprocess.run(
        [exe, *flags, f"--screenshot={shot}", "--window-size=1200,1600", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.is_file(), proc.stderr[-2000:]
    assert "Uncaught" not in proc.stderr and "Failed to load resource" not in proc.stderr
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    dark = (pixels[..., :3].mean(axis=2) < 0.5).mean()
    assert 0.005 < dark < 0.5, dark  # text and plots drawn, not a blank or black page
    dom = subprocess.run(
        [exe, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
    )
    assert "<h1>CPU test report</h1>" in dom.stdout


@pytest.mark.skipif(
    not _chromium() and not os.environ.get("CI"),
    reason="Chromium is not installed (.ci/run installs it)",
)
@pytest.mark.slow
def test_the_decision_table_is_on_the_first_screen(report, tmp_path):
    """Laid out by Chromium at 1400 px wide, the decision table ends within the first
    1,000 px: a copy of the page writes the table's bottom edge into the DOM it dumps."""
    exe = _chromium()
    assert exe, "CI must have Chromium: .ci/run installs it"
    probe = tmp_path / "probe.html"
    script = (
        "<script>window.addEventListener('load',()=>{const t=document.querySelector("
        "'table.decision');document.body.setAttribute('data-bottom',"
        "t?Math.ceil(t.getBoundingClientRect().bottom):-1)});</script>"
    )
    probe.write_text((report / "report.html").read_text().replace("</body>", script + "</body>"))
    proc = subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1400,1000",
            "--virtual-time-budget=5000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r'data-bottom="(-?\d+)"', proc.stdout)
    assert match, proc.stderr[-2000:]
    assert 0 < int(match.group(1)) <= 1000
