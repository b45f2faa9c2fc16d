import pytest

from bench.analysis.table import HEADERS, row
from bench.run.store import new_record
from bench.run.validity import validity_flags
from bench.schema.record import Environment, Latency, Throughput, Timing
from bench.schema.spec import RunSpec
from bench.schema.telemetry import HostSummary, Mfu, TelemetrySummary
from bench.telemetry.devices import parse_gpu_query
from bench.telemetry.sampling import GpuSample, HostSample, parse_smi_line, throttle_names
from bench.telemetry.session import (
    Telemetry,
    match_gpu,
    phase_of,
    summarize_gpu,
    summarize_host,
    write_csv,
)

GPUS = parse_gpu_query(
    "0, NVIDIA H100 80GB HBM3, GPU-aaaa1111-0000, 00000000:19:00.0, 81559, 580.1, 9.0\n"
    "1, NVIDIA H100 80GB HBM3, GPU-bbbb2222-0000, 00000000:3B:00.0, 81559, 580.1, 9.0\n"
)


def gs(t, **kw):
    return GpuSample(t_unix=t, gpu=0, **kw)


def test_summarize_gpu_exact_values_with_energy_counter():
    samples = [
        gs(
            10.0,
            util_gpu_pct=90,
            util_mem_pct=40,
            mem_used_mib=1000,
            mem_total_mib=81559,
            power_w=300.0,
            power_limit_w=700.0,
            sm_clock_mhz=1980,
            mem_clock_mhz=2619,
            temp_c=50,
            pstate=0,
            throttle_mask=0,
        ),
        gs(
            10.1,
            util_gpu_pct=100,
            util_mem_pct=60,
            mem_used_mib=3000,
            mem_total_mib=81559,
            power_w=500.0,
            power_limit_w=700.0,
            sm_clock_mhz=1960,
            mem_clock_mhz=2619,
            temp_c=55,
            pstate=0,
            throttle_mask=0x4,
        ),
    ]
    s = summarize_gpu(samples, window_s=2.0, measured_samples=100, energy_counter_j=900.0)
    assert s["util_gpu_mean_pct"] == 95.0 and s["util_gpu_max_pct"] == 100
    assert s["util_mem_mean_pct"] == 50.0
    assert s["mem_used_peak_mib"] == 3000 and s["mem_total_mib"] == 81559
    # mean power from the counter (900 J in 2 s); the samples' mean is the second figure
    assert s["power_mean_w"] == 450.0 and s["power_method"] == "nvml_energy_counter"
    assert s["power_sampled_mean_w"] == 400.0 and s["power_max_w"] == 500.0
    assert s["sm_clock_mean_mhz"] == 1970.0 and s["temp_max_c"] == 55
    assert s["throttle_reasons_seen"] == ["sw_power_cap"] and s["throttled"] is True
    assert s["energy_j"] == 900.0 and s["energy_method"] == "nvml_energy_counter"
    assert s["energy_per_sample_j"] == 9.0
    assert s["pstates_seen"] == [0] and s["samples_in_window"] == 2


def test_summarize_gpu_integrates_power_without_a_counter():
    samples = [gs(0.0, power_w=100.0), gs(0.5, power_w=200.0), gs(1.0, power_w=None)]
    s = summarize_gpu(samples, window_s=3.0, measured_samples=30)
    assert s["energy_method"] == "mean_power_x_window"
    assert s["energy_j"] == 450.0 and s["energy_per_sample_j"] == 15.0
    assert s["power_mean_w"] == s["power_sampled_mean_w"] == 150.0
    assert s["power_method"] == "sampled_mean"
    assert s["throttled"] is False and s["throttle_reasons_seen"] == []
    empty = summarize_gpu([], window_s=1.0, measured_samples=1)
    assert empty["energy_j"] is None and empty["util_gpu_mean_pct"] is None


def test_summarize_host():
    s = summarize_host([HostSample(0, 50.0, 100.0), HostSample(1, 100.0, 300.0)])
    assert s == HostSummary(
        samples_in_window=2, cpu_mean_pct=75.0, cpu_max_pct=100.0, process_rss_peak_mib=300.0
    )


def test_throttle_names():
    assert throttle_names(0) == [] and throttle_names(None) == []
    assert throttle_names(0x1 | 0x40) == ["gpu_idle", "hw_thermal_slowdown"]
    assert throttle_names(0x10000) == ["unknown_0x10000"]


def test_parse_smi_lines():
    line = (
        "2026/11/26 06:30:01.250, 0, 98, 41, 30512, 81559, 652.31, 700.00, 1980, 2619, "
        "61, P0, 0x0000000000000004"
    )
    s = parse_smi_line(line)
    assert s == GpuSample(
        t_unix=s.t_unix,
        gpu=0,
        util_gpu_pct=98.0,
        util_mem_pct=41.0,
        mem_used_mib=30512.0,
        mem_total_mib=81559.0,
        power_w=652.31,
        power_limit_w=700.0,
        sm_clock_mhz=1980.0,
        mem_clock_mhz=2619.0,
        temp_c=61.0,
        pstate=0,
        throttle_mask=4,
    )
    na = parse_smi_line(
        "2026/11/26 06:30:01.350, 1, 0, 0, 0, 15360, [N/A], [N/A], 300, "
        "5000, 35, P8, [Not Supported]"
    )
    assert na.power_w is None and na.throttle_mask is None and na.pstate == 8
    assert parse_smi_line("") is None
    assert parse_smi_line("timestamp, index, utilization.gpu [%]") is None


def test_match_gpu_prefers_bus_id_then_uuid_then_ordinal(monkeypatch):
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    # CUDA_VISIBLE_DEVICES=1 makes GPU 1 the program's cuda:0; the bus id says so too
    gpu, how = match_gpu("cuda:0", {"device_pci_bus_id": "00000000:3B:00.0"}, GPUS, "1")
    assert gpu.index == 1 and how == "pci_bus_id"
    gpu, how = match_gpu("cuda:0", {"device_uuid": "bbbb2222-0000"}, GPUS, None)
    assert gpu.index == 1 and how == "uuid"
    gpu, how = match_gpu("cuda:0", {}, GPUS, "1")
    assert gpu.index == 1 and how == "ordinal (CUDA_DEVICE_ORDER=PCI_BUS_ID)"
    assert match_gpu("cuda:2", {}, GPUS, None)[0] is None
    assert match_gpu("cpu", {}, GPUS, None) == (None, "not a GPU run")


def test_phase_of():
    marks = {"warmup_start": 10.0, "measure_start": 20.0, "measure_end": 30.0}
    assert [phase_of(t, marks) for t in (5, 10, 15, 20, 30, 31)] == [
        "setup",
        "warmup",
        "warmup",
        "measure",
        "measure",
        "teardown",
    ]


def test_cpu_telemetry_session_and_csv(tmp_path):
    with Telemetry.open("cpu", {}, [], interval_s=0.01) as tele:
        import time

        tele.mark("warmup_start", time.time())
        tele.mark("measure_start", time.time())
        time.sleep(0.1)
        tele.mark("measure_end", time.time())
    summary = tele.summary(measured_samples=10)
    assert summary.available is False and summary.reason == "CPU run: no GPU to sample"
    assert summary.host is not None and summary.host.samples_in_window >= 3
    assert summary.energy_j is None and summary.energy_method is None
    rows = tele.rows()
    write_csv(rows, tmp_path / "t.csv")
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0] == "phase,t_unix,cpu_pct,process_rss_mib"
    assert any(line.startswith("measure,") for line in lines[1:])


def test_gpu_run_without_a_matching_gpu_says_why():
    tele = Telemetry.open("cuda:0", {}, [], interval_s=0.1)
    assert tele.absent_reason.startswith("GPU not identified")


def record(telemetry=None, window_s=5.0, cv=0.01, count=200, unreliable=()):
    r = new_record(RunSpec(workload="null", device="cpu"), Environment())
    r.telemetry = TelemetrySummary(**(telemetry or {}))
    r.timing = Timing(
        warmup_iters=0,
        warmup_s=0.0,
        measured_iters=count,
        measured_samples=count,
        window_s=window_s,
    )
    r.latency = Latency(count, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, cv, list(unreliable))
    return r


def test_validity_flags():
    assert validity_flags(record()) == []
    flags = validity_flags(
        record(
            telemetry={
                "throttled": True,
                "throttle_reasons_seen": ["hw_slowdown"],
                "other_processes": [4242],
                "energy_j": 10.0,
                "energy_method": "nvml_energy_counter",
            },
            window_s=0.5,
            cv=0.2,
            count=10,
            unreliable=["p95", "p99"],
        )
    )
    codes = [f.code for f in flags]
    assert codes == [
        "throttled",
        "other_processes",
        "short_energy_window",
        "high_cv",
        "few_iterations",
    ]
    assert flags[0].message == (
        "the GPU limited its clocks during the measured window (hw_slowdown)"
    )
    assert flags[-1].message == "10 iterations are too few for p95, p99"
    # no energy measured: a short window is not flagged for energy
    assert validity_flags(record(window_s=0.1)) == []


@pytest.mark.parametrize(
    "method, window_s, flagged",
    [
        ("nvml_energy_counter", 1.99, True),  # counter steps <= 0.1 s at both edges
        ("nvml_energy_counter", 2.0, False),
        ("mean_power_x_window", 9.9, True),  # NVML's ~1 s power average lags the ramp
        ("mean_power_x_window", 10.0, False),
    ],
)
def test_short_window_threshold_depends_on_how_energy_was_measured(method, window_s, flagged):
    tele = {"energy_j": 100.0, "energy_method": method}
    codes = [f.code for f in validity_flags(record(telemetry=tele, window_s=window_s))]
    assert ("short_energy_window" in codes) is flagged


def test_mfu_above_the_peak_is_flagged_and_not_shown():
    r = record()
    r.spec = RunSpec(workload="null", device="cuda:0")
    r.throughput = Throughput(100.0, 1.0, 1200.0, Mfu(1200.0 / 989.5, 989.5, "bf16 dense"))
    flags = validity_flags(r)
    assert [f.code for f in flags] == ["mfu_above_peak"]
    assert flags[0].message.startswith("model-FLOPs utilization 121% exceeds the 989.5")
    r.validity.flags = flags
    cells = dict(zip(HEADERS, row(r), strict=True))
    assert cells["MFU %"] == "" and cells["flags"] == "mfu"
    r.throughput.mfu = Mfu(0.5, 989.5, "bf16 dense")
    assert dict(zip(HEADERS, row(r), strict=True))["MFU %"] == "50.0"


@pytest.mark.parametrize("cv, flagged", [(0.05, False), (0.0501, True)])
def test_cv_threshold(cv, flagged):
    assert bool(validity_flags(record(cv=cv))) is flagged
