"""Ordinary I/O errors end in one line naming the path: exit 2 where nothing ran, exit 1
where a run ran but its record could not be stored (its figures then go to stdout and no
file of the run is left behind).

Tests run as root, where permission bits do not stop writes: a directory "under a file"
stands for one that cannot be written, and a fake write stands for a full disk.
"""

from __future__ import annotations

import errno
import json
import types
from pathlib import Path

import pytest

from bench.analysis.units import plain
from bench.cli import main
from bench.run import store
from bench.run.store import OutputError, check_writable, new_record, write_json_atomic

ROOT = Path(__file__).resolve().parent.parent
CPU_REF = ROOT / "results" / "reference" / "cpu-amd-epyc-2core"


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_an_output_directory_under_a_file_is_refused_and_nothing_is_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match=r"--out .*file/runs: cannot write there \(Not a dir"):
        check_writable(blocker / "runs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_the_check_leaves_no_trace_of_the_folders_it_made(tmp_path):
    check_writable(tmp_path / "a" / "b" / "c")
    assert list(tmp_path.iterdir()) == []


def test_run_with_an_unwritable_out_exits_2_before_anything_runs(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "runs"
    assert main(["run", "--workload", "null", "--device", "cpu", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert one_line(captured.err).startswith(f"bench: error: --out {out}: cannot write there")
    assert captured.out == ""


def test_report_into_an_unwritable_folder_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "report"
    assert main(["report", str(CPU_REF), "--out", str(out)]) == 2
    line = one_line(capsys.readouterr().err)
    assert line == f"bench: error: --out {out}: cannot write there (Not a directory)"


def test_an_os_error_while_writing_the_report_names_the_file(tmp_path, capsys, monkeypatch):
    """A read-only file system refuses the write after the check passed (a fake here)."""
    import bench.analysis.report

    target = tmp_path / "report" / "report.html"

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(target))

    monkeypatch.setattr(bench.analysis.report, "build", read_only)
    assert main(["report", str(CPU_REF), "--out", str(tmp_path / "report")]) == 2
    assert one_line(capsys.readouterr().err) == (f"bench: error: {target}: Read-only file system")


def _full_disk_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """``store``'s JSON writer starts the file, then the disk is full."""

    def dump(data: object, fh: types.SimpleNamespace, **kwargs: object) -> None:
        fh.write('{"schema_version": ')
        raise OSError(errno.ENOSPC, "No space left on device")

    fake = types.SimpleNamespace(
        dump=dump, loads=json.loads, dumps=json.dumps, JSONDecodeError=json.JSONDecodeError
    )
    monkeypatch.setattr(store, "json", fake)


def test_write_json_atomic_on_a_full_disk_leaves_no_temporary_file(tmp_path, monkeypatch):
    _full_disk_json(monkeypatch)
    with pytest.raises(OSError) as info:
        write_json_atomic({"a": 1}, tmp_path / "x.json")
    assert info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_a_run_on_a_full_disk_prints_its_figures_exits_1_and_leaves_no_files(
    tmp_path, capsys, monkeypatch
):
    """The worker writes its telemetry series; then the record cannot be written (ENOSPC
    in the parent): the series goes too, and the figures are on stdout."""
    out = tmp_path / "runs"
    _full_disk_json(monkeypatch)
    argv = ["run", "--workload", "null", "--device", "cpu", "--warmup", "0", "--iters", "7"]
    assert main([*argv, "--batch", "3", "--out", str(out), "--no-progress"]) == 1
    captured = capsys.readouterr()
    error = captured.err.strip().splitlines()[-1]
    assert error.startswith(f"bench: error: the record of the run could not be written to {out}/")
    assert error.endswith(": No space left on device; its figures are printed above")
    record = json.loads(captured.out.strip().splitlines()[-1])
    assert record["outcome"]["status"] == "ok"
    assert record["timing"]["measured_samples"] == 21 and len(record["latencies_ms"]) == 7
    assert record["telemetry"]["timeseries_csv"] == f"{record['run_id']}.telemetry.csv"
    table = captured.out.split("\n{")[0]  # the table row before the record
    assert plain(record["throughput"]["samples_per_s"]) in table
    assert not out.exists() or list(out.iterdir()) == []  # no record, no orphan series


def test_a_time_series_the_disk_refuses_is_left_out_with_the_reason(tmp_path, monkeypatch):
    from bench.run import worker
    from bench.schema.record import Environment
    from bench.schema.spec import RunSpec

    record = new_record(RunSpec(workload="null", device="cpu"), Environment())
    csv_path = tmp_path / f"{record.run_id}.telemetry.csv"

    def full_disk(rows: object, path: Path) -> None:
        path.write_text("phase,t_unix\n")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(worker, "write_csv", full_disk)
    assert worker.save_timeseries([{"phase": "measure"}], tmp_path, record) is None
    assert record.telemetry.sampler_errors == [
        f"time series not written: {csv_path}: No space left on device"
    ]
    assert list(tmp_path.iterdir()) == []


def test_an_os_error_after_runs_started_fails_them_exit_1(tmp_path, capsys, monkeypatch):
    """Past the checks up front, an I/O error in a run command (here: the worker's spec file
    cannot be written, a fake) fails the run: exit 1, one line naming the file."""
    from bench.run import runner

    spec_file = tmp_path / "bench-x" / "spec.json"

    def no_space(*args: object, **kwargs: object) -> object:
        raise OSError(errno.ENOSPC, "No space left on device", str(spec_file))

    monkeypatch.setattr(runner, "run", no_space)
    argv = ["run", "--workload", "null", "--device", "cpu", "--out", str(tmp_path / "runs")]
    assert main(argv) == 1
    assert one_line(capsys.readouterr().err) == (
        f"bench: error: {spec_file}: No space left on device"
    )
