"""Checks on the committed reference runs (measured on real GPUs): they load, render, and
their telemetry is self-consistent. Also the real nvidia-smi lines captured beside them."""

import json
import statistics
from pathlib import Path

import pytest

from bench.analysis.table import render
from bench.run.store import load_record, result_files
from bench.telemetry.devices import parse_gpu_query
from bench.telemetry.sampling import parse_smi_line, throttle_names

REFERENCE = Path(__file__).resolve().parent.parent / "results" / "reference"
H200 = REFERENCE / "nvidia-h200"
RECORDS = [(path, load_record(path)) for path in result_files([REFERENCE])]
GPU_RECORDS = [(p, r) for p, r in RECORDS if r.spec.device.startswith("cuda")]
CPU_RECORDS = [(p, r) for p, r in RECORDS if r.spec.device == "cpu"]


def test_reference_runs_exist_and_render():
    assert len(GPU_RECORDS) >= 8 and len(CPU_RECORDS) >= 11
    text = render([r for _, r in RECORDS])
    assert "NVIDIA H200" in text and "AMD EPYC" in text
    assert {r.spec.backend for _, r in CPU_RECORDS} == {"torch", "mxnet", "onnxruntime"}


def test_version_1_files_read_as_loop_runs():
    assert {json.loads(p.read_text())["schema_version"] for p, _ in RECORDS} == {1}
    for _, record in RECORDS:
        assert record.schema_version == 1
        assert record.scenario is not None and record.scenario.name == "loop"
        assert record.workload is not None and record.workload.epoch_samples is None


@pytest.mark.parametrize("path, record", RECORDS, ids=[p.stem[:40] for p, _ in RECORDS])
def test_throughput_agrees_with_the_raw_latencies(path, record):
    """Samples/s, from the window's wall time, against the mean of the raw per-iteration
    latencies kept beside it: two records of the same run that must agree."""
    assert record.throughput is not None and record.timing is not None
    assert len(record.latencies_ms) == record.timing.measured_iters
    per_step = record.spec.batch * 1000.0 / statistics.fmean(record.latencies_ms)
    assert record.throughput.samples_per_s == pytest.approx(per_step, rel=1e-9)


@pytest.mark.parametrize("path, record", CPU_RECORDS, ids=[p.stem[:40] for p, _ in CPU_RECORDS])
def test_reference_cpu_runs_record_host_telemetry(path, record):
    assert record.ok
    tele = record.telemetry
    assert tele.available is False and tele.reason == "CPU run: no GPU to sample"
    assert record.timing is not None
    if record.timing.window_s > 1.0:
        assert tele.host is not None and tele.host.samples_in_window >= 5
        assert tele.host.cpu_mean_pct is not None and 0 < tele.host.cpu_mean_pct <= 100


@pytest.mark.parametrize("path, record", GPU_RECORDS, ids=[p.stem[:40] for p, _ in GPU_RECORDS])
def test_reference_telemetry_is_consistent(path, record):
    assert record.ok
    tele, timing = record.telemetry, record.timing
    assert timing is not None
    assert tele.available and tele.source == "nvml"
    assert tele.gpu is not None and tele.gpu.matched_by == "pci_bus_id"
    assert tele.timeseries_csv and (path.parent / tele.timeseries_csv).is_file()
    # the window's sample count matches its length at the sampling interval
    assert tele.samples_in_window is not None and tele.interval_s is not None
    assert abs(tele.samples_in_window - timing.window_s / tele.interval_s) <= 2
    # NVML's energy counter agrees with mean sampled power x time within 25 %
    # (sampled power is a ~1 s average that lags load changes; the counter does not)
    assert tele.energy_method == "nvml_energy_counter"
    assert tele.power_mean_w is not None and tele.energy_j is not None
    from_power = tele.power_mean_w * timing.window_s
    assert 0.75 < tele.energy_j / from_power < 1.25
    # busy: well above the idle draw captured in smi.txt (about 83 W on the H200)
    assert tele.power_mean_w > 2 * 83
    if record.spec.precision == "fp32":  # large batches, GPU-bound
        assert tele.util_gpu_mean_pct is not None and tele.util_gpu_mean_pct > 85
    assert not tele.throttled and tele.other_processes == []


def test_real_nvidia_smi_lines_parse():
    lines = (H200 / "smi.txt").read_text().splitlines()
    gpu = parse_gpu_query(lines[0] + "\n")[0]
    assert gpu.name == "NVIDIA H200" and gpu.compute_capability == (9, 0)
    assert gpu.pci_bus_id == "00000000:00:06.0" and gpu.memory_total_mib == 143771
    sample = parse_smi_line(lines[1])
    assert (sample.gpu, sample.util_gpu_pct, sample.mem_total_mib, sample.power_w) == (
        0,
        0.0,
        143771.0,
        119.82,
    )
    assert (sample.power_limit_w, sample.sm_clock_mhz, sample.mem_clock_mhz) == (
        700.0,
        465.0,
        3201.0,
    )
    assert (sample.temp_c, sample.pstate, throttle_names(sample.throttle_mask)) == (
        41.0,
        0,
        ["gpu_idle"],
    )
    assert all(parse_smi_line(line) is not None for line in lines[1:])
