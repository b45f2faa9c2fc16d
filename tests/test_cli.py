"""The command line end to end: real worker processes, real result files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run.options import RunOptions
from bench.run.runner import _crash_message, _run_worker, collect
from bench.run.store import load_record
from bench.schema.record import SCHEMA_VERSION
from bench.schema.spec import RunSpec

ROOT = Path(__file__).resolve().parent.parent


def bench(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--workload", "resnet"], "invalid choice: 'resnet'"),
        (["run", "--workload", "ssd", "--backend", "tf"], "invalid choice: 'tf'"),
        (["run", "--workload", "ssd", "--batch", "0"], "batch must be between 1"),
        (["run", "--workload", "ssd", "--device", "cpu", "--precision", "fp16"], "fp16"),
        (["run", "--workload", "ssd", "--iters", "3", "--duration", "2"], "not allowed with"),
        (["run", "--workload", "bert", "--pretrained", "no/such/dir"], "does not exist"),
        (["run", "--workload", "bert", "--pretrained", "tests"], "holds no bert checkpoint"),
        (["suite", "nightly"], "invalid choice: 'nightly'"),
        (["show", "no/such/file.json"], "no such file"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "runs"
    extra = ["--out", str(out)] if args[0] == "run" else []
    proc = bench(*args, *extra)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()


def test_help_everywhere():
    for args in ([], ["run"], ["suite"], ["env"], ["show"]):
        proc = bench(*args, "--help")
        assert proc.returncode == 0 and "usage: bench" in proc.stdout


def test_run_null_writes_a_valid_result_and_show_reads_it(tmp_path):
    proc = bench(
        "run",
        "--workload",
        "null",
        "--device",
        "cpu",
        "--iters",
        "50",
        "--warmup",
        "2",
        "--out",
        str(tmp_path),
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and str(files[0]) in proc.stdout
    assert json.loads(files[0].read_text())["schema_version"] == SCHEMA_VERSION == 3
    record = load_record(files[0])
    assert record.outcome.status == "ok"
    assert record.spec.device == "cpu" and record.spec.iters == 50
    assert len(record.latencies_ms) == 50
    assert record.latency is not None and record.latency.count == 50
    assert record.latency.min_ms <= record.latency.p50_ms <= record.latency.max_ms
    assert record.scenario is not None and record.scenario.name == "loop"
    assert record.scenario.settings == {"warmup": 2, "iters": 50, "duration_s": None}
    commit = record.environment.project.commit
    assert commit is None or len(commit) == 40
    shown = bench("show", str(tmp_path))
    assert shown.returncode == 0 and "| null" in shown.stdout


@pytest.mark.slow
def test_run_bert_end_to_end_on_cpu(tmp_path):
    """Full-size BERT-base through the CLI and a worker, at a tiny batch and sequence."""
    proc = bench(
        "run",
        "--workload",
        "bert",
        "--mode",
        "train",
        "--device",
        "cpu",
        "--batch",
        "1",
        "--seq-len",
        "16",
        "--warmup",
        "1",
        "--iters",
        "2",
        "--out",
        str(tmp_path),
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    record = load_record(next(tmp_path.glob("*.json")))
    assert record.outcome.status == "ok"
    assert record.workload is not None and record.workload.details is not None
    assert record.workload.details["parameters"] == 109_483_778
    assert record.workload.epoch_samples == 25_000
    assert record.throughput is not None and record.throughput.tflops_per_s > 0
    assert record.environment.framework["torch_version"]


def test_failed_run_is_recorded_with_exit_1(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "config.json").write_text("{not json")  # a checkpoint that cannot load
    (weights / "model.safetensors").write_bytes(b"")
    proc = bench(
        "run",
        "--workload",
        "bert",
        "--device",
        "cpu",
        "--pretrained",
        str(weights),
        "--iters",
        "1",
        "--out",
        str(tmp_path / "runs"),
        "--no-progress",
    )
    assert proc.returncode == 1, proc.stderr
    record = load_record(next((tmp_path / "runs").glob("*.json")))
    assert record.outcome.status == "error"
    assert record.outcome.message


def test_suite_dry_run_resolves_auto_precision_on_the_cpu():
    proc = bench(
        "suite",
        "quick",
        "--device",
        "cpu",
        "--backend",
        "torch",
        "--precision",
        "auto",
        "--dry-run",
    )
    assert proc.returncode == 0, proc.stderr
    labels = proc.stdout.split()
    assert len(labels) == 5 and all("_fp32_cpu" in label for label in labels)


def test_suite_dry_run_lists_runs():
    proc = bench("suite", "workshop", "--device", "cpu", "--backend", "torch", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "ssd_torch_train_b16_i512_fp32_cpu",
        "ssd_torch_infer_b16_i512_fp32_cpu",
        "bert_torch_train_b32_s128_fp32_cpu",
        "bert_torch_infer_b32_s128_fp32_cpu",
        "bert-qa_torch_train_b16_s384_fp32_cpu",
        "bert-qa_torch_infer_b16_s384_fp32_cpu",
    ]


def test_a_killed_worker_becomes_an_error_message():
    code, tail = _run_worker(
        [
            sys.executable,
            "-c",
            "import os,sys; print('dying', file=sys.stderr); os.kill(os.getpid(), 9)",
        ],
        timeout_s=30,
    )
    assert code == -9
    assert _crash_message(code, tail) == (
        "the worker was killed by signal SIGKILL (out of host memory?): dying"
    )
    code, tail = _run_worker([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=0.5)
    assert code is None
    assert _crash_message(code, tail).startswith("the worker ran past its time limit")


def test_env_prints_a_record():
    proc = bench("env")
    assert proc.returncode == 0, proc.stderr
    env = json.loads(proc.stdout)
    assert env["python"] and env["cpu_count_logical"] >= 1
    assert env["frameworks"]["torch"]["torch_version"]


_DYING_WORKER = """
import sys
from bench.run import registry, worker
registry.REGISTRY[("null", "torch")] = registry.Entry("tests.fakes:DyingWorkload")
worker.main(["run", *sys.argv[1:]])
"""


def test_a_worker_killed_mid_run_leaves_a_record_of_what_it_had_collected(tmp_path):
    spec = RunSpec(workload="null", device="cpu", warmup=1, iters=10)
    options = RunOptions(out_dir=tmp_path, progress=False)
    spec_file, result_file = tmp_path / "spec.json", tmp_path / "result.json"
    options_file = tmp_path / "options.json"
    spec_file.write_text(json.dumps(spec.to_dict()))
    options_file.write_text(json.dumps(options.to_dict()))
    code, tail = _run_worker(
        [sys.executable, "-c", _DYING_WORKER, *map(str, (spec_file, options_file, result_file))],
        timeout_s=60,
    )
    assert code == -9
    record = collect(result_file, spec, code, tail)
    assert record.outcome.status == "error"
    assert record.outcome.message == "the worker was killed by signal SIGKILL (out of host memory?)"
    # collected before the worker died: the environment, the workload's facts, the scenario
    assert record.environment.python and record.environment.cpu_count_logical
    assert record.workload is not None
    assert record.workload.implementation == "tests.fakes:DyingWorkload"
    assert record.scenario is not None and record.scenario.name == "loop"
    assert record.timing is None and record.latencies_ms == []


def test_a_worker_that_wrote_nothing_gets_a_fresh_error_record(tmp_path):
    spec = RunSpec(workload="null", device="cpu")
    record = collect(tmp_path / "missing.json", spec, 3, "Traceback\nImportError: no torch\n")
    assert record.outcome.status == "error"
    assert record.outcome.message == (
        "the worker exited with code 3 without writing a result: ImportError: no torch"
    )
    assert record.spec == spec and record.workload is None


def test_unreadable_result_files_are_skipped_with_a_warning_or_fatal_with_strict(tmp_path):
    good = next((ROOT / "results" / "reference" / "nvidia-h200").glob("*bert*infer*bf16*.json"))
    (tmp_path / good.name).write_text(good.read_text())
    (tmp_path / "20261126T000000Z_truncated_abc123.json").write_text(good.read_text()[:500])
    no_workload = json.loads(good.read_text())
    del no_workload["spec"]["workload"]
    (tmp_path / "20261126T000001Z_noworkload_abc123.json").write_text(json.dumps(no_workload))
    for command in ("show", "compare", "report"):
        extra = ["--out", str(tmp_path / "report")] if command == "report" else []
        proc = bench(command, str(tmp_path), *extra)
        assert proc.returncode == 0, proc.stderr
        warnings = proc.stderr.strip().splitlines()
        assert len(warnings) == 3, proc.stderr
        assert "truncated_abc123.json: not a readable JSON file" in warnings[0]
        assert "noworkload_abc123.json: malformed result record" in warnings[1]
        assert warnings[2] == (
            "bench: 2 unreadable result file(s) skipped (--strict makes them fatal)"
        )
        assert "Traceback" not in proc.stderr
        strict = bench(command, str(tmp_path), "--strict", *extra)
        assert strict.returncode == 2 and len(strict.stderr.strip().splitlines()) == 1
    assert "NVIDIA H200" in bench("show", str(tmp_path)).stdout
