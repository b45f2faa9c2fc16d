"""The GPU check script's CPU-side parts: argument handling, files written, packing."""

import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def test_unknown_option_exits_2(tmp_path):
    proc = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path), "--bogus"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "unknown option --bogus" in proc.stderr


@pytest.mark.slow
def test_script_runs_a_suite_on_the_cpu_and_packs_its_results(tmp_path):
    out = tmp_path / "check"
    proc = subprocess.run(
        [
            "bash",
            str(SCRIPT),
            str(out),
            "--suite",
            "quick",
            "--device",
            "cpu",
            "--duration",
            "0.2",
            "--precisions",
            "fp32",
            "--backend",
            "torch",
            "--skip-overhead",
            "--skip-tests",
            "--skip-fast",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "env.json",
        "log.txt",
        "runs.tar.gz",
        "table.md",
    ]
    with tarfile.open(out / "runs.tar.gz") as tar:
        names = tar.getnames()
    records = [n for n in names if n.endswith(".json")]
    assert len(records) == 5  # null, ssd x2, bert x2
    assert len([n for n in names if n.endswith(".telemetry.csv")]) >= 4
    table = (out / "table.md").read_text()
    assert table.count("| ok ") == 5
    assert "=== done, status 0" in (out / "log.txt").read_text()
