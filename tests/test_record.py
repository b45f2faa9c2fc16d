"""The typed result record: one (de)serialisation place, version-1 files still read."""

import json
from pathlib import Path

import pytest

from bench.run.store import load_record, load_records, new_record, write_record
from bench.schema.gpu import GpuInfo
from bench.schema.record import (
    SCHEMA_VERSION,
    Environment,
    Latency,
    Outcome,
    ResultError,
    RunRecord,
    Throughput,
    Timing,
)
from bench.schema.spec import RunSpec

REFERENCE = Path(__file__).resolve().parent.parent / "results" / "reference"
V1_FILE = next((REFERENCE / "nvidia-h200").glob("*bert_torch_infer_b32_s128_bf16*.json"))


def full_record() -> RunRecord:
    gpu = GpuInfo(0, "NVIDIA H200", "GPU-1", "00000000:00:06.0", 143771, "580.1", (9, 0))
    record = new_record(
        RunSpec(workload="bert", batch=4, device="cuda:0", iters=2),
        Environment(gpus=[gpu], gpu_count=1, framework={"device_name": "NVIDIA H200"}),
    )
    record.outcome = Outcome(status="ok", message=None)
    record.timing = Timing(1, 0.5, 2, 8, 1.0, {"measure_start": 1.0, "measure_end": 2.0})
    record.throughput = Throughput(samples_per_s=8.0, iters_per_s=2.0, tflops_per_s=0.2)
    record.latency = Latency(2, 500.0, 500.0, 500.0, 500.0, 500.0, 500.0, 500.0, 0.0, 0.0, 0.0)
    record.latencies_ms = [500.0, 500.0]
    return record


def test_round_trip_through_json_is_exact(tmp_path):
    record = full_record()
    path = write_record(record, tmp_path)
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION == 3
    assert data["environment"]["gpus"][0]["compute_capability"] == [9, 0]
    loaded = load_record(path)
    assert loaded == record
    assert loaded.environment.gpus[0].compute_capability == (9, 0)
    assert loaded.device_name == "NVIDIA H200"


def test_version_1_file_reads_with_its_numbers():
    raw = json.loads(V1_FILE.read_text())
    record = load_record(V1_FILE)
    assert raw["schema_version"] == record.schema_version == 1
    assert record.throughput is not None and record.latency is not None
    assert record.throughput.samples_per_s == raw["throughput"]["samples_per_s"]
    assert record.throughput.mfu is not None
    assert record.throughput.mfu.mfu == raw["throughput"]["mfu"]["mfu"]
    assert record.latency.p99_ms == raw["latency"]["p99_ms"]
    assert record.telemetry.energy_j == raw["telemetry"]["energy_j"]
    assert record.latencies_ms == raw["latencies_ms"]
    assert record.spec.ort_provider == "auto"  # a field version 1 did not have yet
    assert record.scenario is not None and record.scenario.name == "loop"
    assert [f.code for f in record.validity.flags] == ["high_cv"]
    # runs before version 3 were eager, timed with a synchronize after every step
    assert record.spec.timing == "synchronized" and record.spec.compile == "off"
    assert record.spec.cuda_graphs is False


def test_version_2_training_reads_as_synchronized_not_the_new_default():
    data = full_record().to_dict()
    data["schema_version"] = 2
    data["spec"] = {**data["spec"], "mode": "train"}
    del data["spec"]["timing"], data["spec"]["compile"], data["spec"]["cuda_graphs"]
    del data["execution"]
    record = RunRecord.from_dict(data)
    assert record.spec.timing == "synchronized" and record.spec.execution_label == "synchronized"
    assert record.execution.one_off_s == {} and record.execution.step_timer is None


def test_version_1_power_becomes_energy_over_the_window():
    """Version 1 stored NVML's sampled mean as the mean power; version 2 reads the energy
    counter over the window, and keeps the sampled mean as a second figure."""
    raw = json.loads(V1_FILE.read_text())
    tele = load_record(V1_FILE).telemetry
    assert tele.power_method == "nvml_energy_counter"
    assert tele.power_mean_w == raw["telemetry"]["energy_j"] / raw["timing"]["window_s"]
    assert tele.power_mean_w == pytest.approx(338.8, abs=0.05)  # 1018.3 J in 3.006 s
    assert tele.power_sampled_mean_w == raw["telemetry"]["power_mean_w"]  # 303.05 W


def test_unknown_keys_are_ignored_and_missing_optional_sections_default():
    data = full_record().to_dict()
    data["future_section"] = {"x": 1}
    data["latency"]["p999_ms"] = 1.0
    del data["validity"], data["cost"]
    record = RunRecord.from_dict(data)
    assert record.validity.flags == [] and record.cost.available is False


def test_whole_numbers_read_as_the_floats_they_were():
    data = full_record().to_dict()
    data["throughput"]["samples_per_s"] = 8
    data["latencies_ms"] = [500, 500.0]
    data["execution"]["one_off_s"] = {"setup_s": 2}
    record = RunRecord.from_dict(data)
    values = [record.samples_per_s, *record.latencies_ms, record.execution.one_off_s["setup_s"]]
    assert values == [8.0, 500.0, 500.0, 2.0]
    assert all(type(v) is float for v in values)
    assert json.dumps(record.to_dict()["latencies_ms"]) == "[500.0, 500.0]"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("run_id"), "missing"),
        (lambda d: d["throughput"].update(samples_per_s="fast"), "samples_per_s: expected float"),
        (lambda d: d["throughput"].update(samples_per_s=True), "samples_per_s: expected float"),
        (lambda d: d["environment"]["gpus"][0].pop("name"), "gpus.name: missing"),
        (lambda d: d["latency"].update(count=None), "null where a value is required"),
        (lambda d: d["spec"].update(batch=0), "batch must be between 1"),
        (lambda d: d["spec"].update(colour="red"), "unknown spec field"),
        (lambda d: d.update(timing=[1, 2]), "expected a mapping"),
        (lambda d: d.update(schema_version=4), "newer than this harness reads"),
        (lambda d: d.pop("spec"), "not a benchmark result"),
    ],
)
def test_malformed_records_raise_result_error(mutate, message):
    data = full_record().to_dict()
    mutate(data)
    with pytest.raises(ResultError, match=message):
        RunRecord.from_dict(data)


def test_unreadable_files_name_the_file(tmp_path):
    bad = tmp_path / "20260101T000000Z_x.json"
    bad.write_text("{truncated")
    with pytest.raises(ResultError, match=str(bad)):
        load_record(bad)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("workload", "resnet", "unknown workload 'resnet': choose from ssd, bert, bert-qa, null"),
        ("backend", "tensorflow", "unknown backend 'tensorflow': choose from torch, mxnet, "),
    ],
)
def test_a_record_of_a_workload_or_backend_this_harness_lacks_is_skipped(
    tmp_path, field, value, message
):
    """The spec leaves names to the registry; a stored run it does not know is malformed
    here (a table could not show it), and the others still load."""
    good = write_record(full_record(), tmp_path)
    data = full_record().to_dict()
    data["spec"][field] = value
    bad = tmp_path / f"{data['run_id']}.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ResultError, match=f"{bad}: malformed result record: {message}"):
        load_record(bad)
    skipped: list[str] = []
    assert [p for p, _ in load_records([tmp_path], strict=False, skipped=skipped)] == [good]
    assert len(skipped) == 1 and message in skipped[0]
