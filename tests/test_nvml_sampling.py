"""NvmlSampler, SmiSampler and the NVML branch of the telemetry session, without a GPU.

NVML is replaced by ``create_autospec(pynvml)`` (the real ``nvidia-ml-py`` module imports
without a driver; only ``nvmlInit`` would fail), so a call with a wrong name or signature
fails the test instead of passing silently. The readings are data: ctypes structs as
pynvml returns them, milliwatts, bytes, millijoules, and ``NVMLError`` where the GPU
does not support a query. ``nvidia-smi`` is replaced by a small script in ``tmp_path``.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

import pynvml
import pytest

import bench.telemetry.session as session
from bench.schema.gpu import GpuInfo
from bench.schema.telemetry import TelemetryGpu, TelemetrySummary
from bench.telemetry.sampling import (
    SMI_FIELDS,
    GpuSample,
    HostSampler,
    NvmlSampler,
    SmiSampler,
)
from bench.telemetry.session import Telemetry

MIB = 2**20
H0, H1 = "handle-0", "handle-1"  # opaque NVML device handles


def not_supported() -> pynvml.NVMLError:
    return pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)


def proc(pid: int) -> Any:
    """One entry of nvmlDeviceGetComputeRunningProcesses, as pynvml builds it."""
    return pynvml.nvmlFriendlyObject({"pid": pid, "usedGpuMemory": 512 * MIB})


def by_handle(values: dict[str, Any]) -> Callable[[Any], Any]:
    """A side effect returning a per-handle value (raising it if it is an exception)."""

    def effect(handle: Any) -> Any:
        value = values[handle]
        if isinstance(value, BaseException):
            raise value
        return value

    return effect


def make_nvml() -> Any:
    """An autospec'd pynvml whose one GPU reads the values in ``EXPECTED``."""
    nv = mock.create_autospec(pynvml, spec_set=True, instance=False)
    # Autospec turns the exception class and the constants into mocks: put the real ones back.
    nv.NVMLError = pynvml.NVMLError
    for name, value in vars(pynvml).items():
        if name.startswith("NVML_") and type(value) is int:
            setattr(nv, name, value)
    nv.nvmlDeviceGetUtilizationRates.return_value = pynvml.c_nvmlUtilization_t(gpu=87, memory=41)
    nv.nvmlDeviceGetMemoryInfo.return_value = pynvml.c_nvmlMemory_t(
        total=80 * 1024 * MIB, used=3584 * MIB, free=(80 * 1024 - 3584) * MIB
    )
    nv.nvmlDeviceGetPowerUsage.return_value = 312_500  # mW
    nv.nvmlDeviceGetEnforcedPowerLimit.return_value = 700_000  # mW
    clocks = {pynvml.NVML_CLOCK_SM: 1980, pynvml.NVML_CLOCK_MEM: 2619}
    nv.nvmlDeviceGetClockInfo.side_effect = lambda handle, kind: clocks[kind]
    temps = {pynvml.NVML_TEMPERATURE_GPU: 64}
    nv.nvmlDeviceGetTemperature.side_effect = lambda handle, sensor: temps[sensor]
    nv.nvmlDeviceGetPerformanceState.return_value = 0  # P0: falsy, must not become None
    nv.nvmlDeviceGetCurrentClocksEventReasons.return_value = 0x24  # sw power cap, sw thermal
    nv.nvmlDeviceGetCurrentClocksThrottleReasons.return_value = 0x1  # must not be used
    nv.nvmlDeviceGetTotalEnergyConsumption.return_value = 123_456_789  # mJ
    nv.nvmlDeviceGetComputeRunningProcesses.return_value = [proc(os.getpid()), proc(4242)]
    nv.nvmlDeviceGetHandleByPciBusId.return_value = H0
    return nv


EXPECTED = {
    "gpu": 0,
    "util_gpu_pct": 87,
    "util_mem_pct": 41,
    "mem_used_mib": 3584.0,
    "mem_total_mib": 81920.0,
    "power_w": 312.5,
    "power_limit_w": 700.0,
    "sm_clock_mhz": 1980,
    "mem_clock_mhz": 2619,
    "temp_c": 64,
    "pstate": 0,
    "throttle_mask": 0x24,
    "energy_mj": 123_456_789,
}


def fields(sample: GpuSample) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(sample).items() if k != "t_unix"}


@pytest.fixture
def nvml() -> Any:
    return make_nvml()


def wait_for(condition: Callable[[], bool], timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


# --- the fake itself ------------------------------------------------------------------


def test_fake_nvml_rejects_wrong_names_and_signatures(nvml):
    with pytest.raises(AttributeError):
        nvml.nvmlDeviceGetPowerDraw(H0)  # not a pynvml function
    with pytest.raises(TypeError):
        nvml.nvmlDeviceGetClockInfo(H0)  # missing the clock type
    with pytest.raises(pynvml.NVMLError):
        nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = not_supported()
        nvml.nvmlDeviceGetTotalEnergyConsumption(H0)


# --- NvmlSampler.read and the boundary readings ---------------------------------------


def test_read_converts_units_and_reads_every_field(nvml):
    sampler = NvmlSampler(nvml, {0: H0}, interval_s=0.1)
    before = time.time()
    (sample,) = sampler.read()
    assert before <= sample.t_unix <= time.time()
    assert fields(sample) == EXPECTED
    nvml.nvmlDeviceGetClockInfo.assert_has_calls(
        [mock.call(H0, pynvml.NVML_CLOCK_SM), mock.call(H0, pynvml.NVML_CLOCK_MEM)]
    )
    nvml.nvmlDeviceGetTemperature.assert_called_once_with(H0, pynvml.NVML_TEMPERATURE_GPU)
    nvml.nvmlDeviceGetCurrentClocksEventReasons.assert_called_once_with(H0)
    nvml.nvmlDeviceGetCurrentClocksThrottleReasons.assert_not_called()


def test_read_falls_back_to_the_older_throttle_reasons_name(nvml):
    del nvml.nvmlDeviceGetCurrentClocksEventReasons  # nvidia-ml-py before the rename
    nvml.nvmlDeviceGetCurrentClocksThrottleReasons.return_value = 0x8
    (sample,) = NvmlSampler(nvml, {0: H0}, interval_s=0.1).read()
    assert sample.throttle_mask == 0x8
    nvml.nvmlDeviceGetCurrentClocksThrottleReasons.assert_called_once_with(H0)


@pytest.mark.parametrize(
    ("function", "missing"),
    [
        ("nvmlDeviceGetUtilizationRates", ["util_gpu_pct", "util_mem_pct"]),
        ("nvmlDeviceGetMemoryInfo", ["mem_used_mib", "mem_total_mib"]),
        ("nvmlDeviceGetPowerUsage", ["power_w"]),
        ("nvmlDeviceGetEnforcedPowerLimit", ["power_limit_w"]),
        ("nvmlDeviceGetClockInfo", ["sm_clock_mhz", "mem_clock_mhz"]),
        ("nvmlDeviceGetTemperature", ["temp_c"]),
        ("nvmlDeviceGetPerformanceState", ["pstate"]),
        ("nvmlDeviceGetCurrentClocksEventReasons", ["throttle_mask"]),
        ("nvmlDeviceGetTotalEnergyConsumption", ["energy_mj"]),  # fails after construction
    ],
)
def test_a_failing_query_blanks_only_its_own_fields(nvml, function, missing):
    sampler = NvmlSampler(nvml, {0: H0}, interval_s=0.1)
    getattr(nvml, function).side_effect = pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
    (sample,) = sampler.read()
    assert fields(sample) == {**EXPECTED, **dict.fromkeys(missing)}


def test_unknown_performance_state_reads_as_none(nvml):
    nvml.nvmlDeviceGetPerformanceState.return_value = pynvml.NVML_PSTATE_UNKNOWN
    (sample,) = NvmlSampler(nvml, {0: H0}, interval_s=0.1).read()
    assert sample.pstate is None


def test_gpu_without_an_energy_counter(nvml):
    nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = not_supported()
    sampler = NvmlSampler(nvml, {0: H0}, interval_s=0.1)
    (sample,) = sampler.read()
    assert sample.energy_mj is None
    assert sampler.energy_mj() is None
    assert fields(sample) == {**EXPECTED, "energy_mj": None}
    # asked once, at construction; not again on every sample or boundary
    nvml.nvmlDeviceGetTotalEnergyConsumption.assert_called_once_with(H0)


def test_two_gpus_energy_is_summed_and_samples_are_labelled(nvml):
    energy = {H0: 1_000_000, H1: 2_500_000}
    nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = by_handle(energy)
    nvml.nvmlDeviceGetPowerUsage.side_effect = by_handle({H0: 100_000, H1: 250_250})
    sampler = NvmlSampler(nvml, {0: H0, 5: H1}, interval_s=0.1)
    assert sampler.energy_mj() == 3_500_000
    s0, s1 = sampler.read()
    assert (s0.gpu, s0.power_w, s0.energy_mj) == (0, 100.0, 1_000_000)
    assert (s1.gpu, s1.power_w, s1.energy_mj) == (5, 250.25, 2_500_000)
    energy[H1] = not_supported()  # one GPU's counter fails at a boundary: no partial sum
    assert sampler.energy_mj() is None


def test_one_gpu_without_a_counter_disables_energy_for_all(nvml):
    counters = {H0: 1_000_000, H1: not_supported()}
    nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = by_handle(counters)
    sampler = NvmlSampler(nvml, {0: H0, 1: H1}, interval_s=0.1)
    assert sampler.energy_mj() is None
    assert [s.energy_mj for s in sampler.read()] == [None, None]


def test_other_processes_excludes_this_process(nvml):
    me = os.getpid()
    nvml.nvmlDeviceGetComputeRunningProcesses.side_effect = by_handle(
        {H0: [proc(me), proc(9001), proc(4242)], H1: [proc(4242), proc(77)]}
    )
    sampler = NvmlSampler(nvml, {0: H0, 1: H1}, interval_s=0.1)
    assert sampler.other_processes() == [77, 4242, 9001]
    nvml.nvmlDeviceGetComputeRunningProcesses.side_effect = None
    nvml.nvmlDeviceGetComputeRunningProcesses.return_value = [proc(me)]
    assert sampler.other_processes() == []


def test_other_processes_is_none_when_unsupported(nvml):
    nvml.nvmlDeviceGetComputeRunningProcesses.side_effect = by_handle(
        {H0: [proc(4242)], H1: not_supported()}
    )
    assert NvmlSampler(nvml, {0: H0, 1: H1}, interval_s=0.1).other_processes() is None


def test_close_shuts_nvml_down_and_tolerates_errors(nvml):
    sampler = NvmlSampler(nvml, {0: H0}, interval_s=0.1)
    sampler.close()
    nvml.nvmlShutdown.assert_called_once_with()
    nvml.nvmlShutdown.side_effect = pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
    sampler.close()  # does not raise


# --- the sampling thread --------------------------------------------------------------


def test_thread_collects_samples_then_stops_and_shuts_down(nvml):
    sampler = NvmlSampler(nvml, {0: H0}, interval_s=0.02)
    sampler.start()
    wait_for(lambda: len(sampler.samples) >= 3)
    sampler.stop()
    assert not sampler._thread.is_alive()
    assert sampler.errors == []
    assert all(fields(s) == EXPECTED for s in sampler.samples)
    times = [s.t_unix for s in sampler.samples]
    assert times == sorted(times)
    nvml.nvmlShutdown.assert_called_once_with()
    count = len(sampler.samples)
    time.sleep(0.06)
    assert len(sampler.samples) == count  # nothing sampled after stop()


def test_thread_records_read_errors_and_keeps_sampling(nvml):
    failures = 7

    def utilization(handle):
        utilization.calls += 1
        if utilization.calls <= failures:
            raise RuntimeError("boom")  # not an NVMLError: the whole read fails
        return pynvml.c_nvmlUtilization_t(gpu=50, memory=10)

    utilization.calls = 0
    nvml.nvmlDeviceGetUtilizationRates.side_effect = utilization
    sampler = NvmlSampler(nvml, {0: H0}, interval_s=0.01)
    sampler.start()
    wait_for(lambda: len(sampler.samples) >= 2)
    sampler.stop()
    assert sampler.errors == ["RuntimeError: boom"] * 5  # kept to five
    assert utilization.calls > failures
    assert all(s.util_gpu_pct == 50 for s in sampler.samples)


@pytest.mark.parametrize("failing", [False, True], ids=["reads", "failing-reads"])
def test_thread_does_not_busy_loop(nvml, failing):
    if failing:
        nvml.nvmlDeviceGetUtilizationRates.side_effect = RuntimeError("boom")
    sampler = NvmlSampler(nvml, {0: H0}, interval_s=0.05)
    sampler.start()
    time.sleep(0.3)
    sampler.stop()
    reads = nvml.nvmlDeviceGetUtilizationRates.call_count
    # ~7 at 0.05 s over 0.3 s, plus the last one in stop(); a busy loop makes thousands
    assert 2 <= reads <= 15
    assert len(sampler.errors) == (5 if failing else 0)


# --- Telemetry.open with NVML ---------------------------------------------------------

GPUS = [
    GpuInfo(
        0, "NVIDIA H100 80GB HBM3", "GPU-aaaa1111", "00000000:19:00.0", 81559, "550.54", (9, 0)
    ),
    GpuInfo(
        1, "NVIDIA H100 80GB HBM3", "GPU-bbbb2222", "00000000:3B:00.0", 81559, "550.54", (9, 0)
    ),
]
#: torch reports the bus id with a 4-digit domain and lower case; it names GPU 1.
FRAMEWORK = {"device_pci_bus_id": "0000:3b:00.0"}


@pytest.fixture
def env(monkeypatch, nvml):
    """Telemetry.open sees ``nvml`` as the loaded NVML and no nvidia-smi."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(session, "load_nvml", lambda: (nvml, None))
    monkeypatch.setattr(session, "smi_executable", lambda: None)
    return monkeypatch


def test_open_matches_by_bus_id_and_samples_through_nvml(env, nvml):
    tele = Telemetry.open("cuda:0", FRAMEWORK, GPUS, interval_s=0.05)
    assert tele.gpu is GPUS[1] and tele.match == "pci_bus_id"  # not ordinal 0
    nvml.nvmlDeviceGetHandleByPciBusId.assert_called_once_with(b"00000000:3B:00.0")
    assert isinstance(tele.sampler, NvmlSampler)
    assert tele.sampler.nvml is nvml and tele.sampler.handles == {1: H0}
    assert tele.sampler.interval_s == 0.05
    assert tele.source == "nvml" and tele.absent_reason is None


def test_open_without_an_nvml_device_or_smi_falls_back_to_the_host(env, nvml):
    nvml.nvmlDeviceGetHandleByPciBusId.side_effect = pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
    tele = Telemetry.open("cuda:0", FRAMEWORK, GPUS, interval_s=0.05)
    assert isinstance(tele.sampler, HostSampler)
    assert tele.gpu is None
    assert (
        tele.absent_reason
        == "NVML has no device at 00000000:3B:00.0: Not Found; no nvidia-smi either"
    )
    nvml.nvmlShutdown.assert_called_once_with()  # the unused nvmlInit is balanced


def test_open_without_nvml_uses_nvidia_smi(env):
    env.setattr(session, "load_nvml", lambda: (None, "NVML could not be initialised: no driver"))
    env.setattr(session, "smi_executable", lambda: "/usr/bin/nvidia-smi")
    tele = Telemetry.open("cuda:0", FRAMEWORK, GPUS, interval_s=0.05)
    assert isinstance(tele.sampler, SmiSampler)
    assert tele.sampler.exe == "/usr/bin/nvidia-smi"
    assert tele.sampler.indices == {1: 1}
    assert tele.gpu is GPUS[1] and tele.match == "pci_bus_id"
    assert tele.source == "nvidia-smi" and tele.absent_reason is None


# --- Telemetry energy and summary -----------------------------------------------------


def sample(t: float, power_w: float, util: float = 90.0) -> GpuSample:
    return GpuSample(t_unix=t, gpu=1, util_gpu_pct=util, power_w=power_w, pstate=0)


def run_marks(tele: Telemetry) -> None:
    """The loop's marks, with samples before, inside (edges included) and after the window."""
    tele.sampler.samples += [
        sample(1005.0, 400.0, util=10.0),  # warmup
        sample(1010.0, 200.0),
        sample(1015.0, 220.0),
        sample(1020.0, 240.0, util=100.0),
        sample(1021.0, 50.0, util=0.0),  # teardown
    ]
    tele.mark("warmup_start", 1000.0)
    tele.mark("measure_start", 1010.0)
    tele.mark("measure_end", 1020.0)


def test_summary_energy_from_the_counter_between_the_marks(env, nvml):
    me = os.getpid()
    # construction, measure_start, measure_end
    nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = [900_000, 1_000_000, 1_250_000]
    nvml.nvmlDeviceGetComputeRunningProcesses.side_effect = [
        [proc(me), proc(4242)],
        [proc(me), proc(5151)],
    ]
    tele = Telemetry.open("cuda:0", FRAMEWORK, GPUS, interval_s=0.05)
    tele.mark("warmup_start", 1000.0)
    assert nvml.nvmlDeviceGetTotalEnergyConsumption.call_count == 1  # only at construction
    run_marks(tele)
    assert tele.energy_marks_mj == {"measure_start": 1_000_000, "measure_end": 1_250_000}

    s = tele.summary(measured_samples=100)
    assert isinstance(s, TelemetrySummary)
    assert s.available is True and s.reason is None
    assert s.source == "nvml" and s.interval_s == 0.05
    assert s.gpu == TelemetryGpu(1, GPUS[1].name, "GPU-bbbb2222", "00000000:3B:00.0", "pci_bus_id")
    assert s.energy_j == 250.0
    assert s.energy_method == "nvml_energy_counter"
    assert s.energy_per_sample_j == 2.5
    assert s.samples_in_window == 3
    # mean power from the counter (250 J over the 10 s window); the samples' mean is kept
    assert s.power_mean_w == 25.0 and s.power_method == "nvml_energy_counter"
    assert s.power_sampled_mean_w == 220.0 and s.power_max_w == 240.0
    assert s.util_gpu_mean_pct == pytest.approx(280 / 3) and s.util_gpu_max_pct == 100.0
    assert s.pstates_seen == [0]
    assert s.other_processes == [4242, 5151]
    assert s.host is None and s.sampler_errors == []


def test_summary_without_a_counter_integrates_power(env, nvml):
    nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = not_supported()
    nvml.nvmlDeviceGetComputeRunningProcesses.side_effect = not_supported()
    tele = Telemetry.open("cuda:0", FRAMEWORK, GPUS, interval_s=0.05)
    run_marks(tele)
    assert tele.energy_marks_mj == {"measure_start": None, "measure_end": None}
    s = tele.summary(measured_samples=100)
    assert s.energy_j == 2200.0  # 220 W mean over the 10 s window
    assert s.energy_method == "mean_power_x_window"
    assert s.energy_per_sample_j == 22.0
    assert s.other_processes is None


# --- SmiSampler against a fake nvidia-smi ---------------------------------------------

FAKE_SMI = """\
#!{python}
import sys, time
with open({argv_file!r}, "w") as fh:
    fh.write("\\n".join(sys.argv[1:]))
print("2024/05/06 07:08:09.250, 2, 87, 41, 3584, 81559, 312.50, 700.00, 1980, 2619, 64, P0, 0x0000000000000004", flush=True)
print("", flush=True)
print("2024/05/06 07:08:09.250, 7, 1, 1, 1, 1, 1, 1, 1, 1, 1, P8, 0x0000000000000001", flush=True)
print("2024/05/06 07:08:09.251, 3, 12, 5, 1024, 81559, [N/A], 700.00, 345, 2619, 40, P2, 0x0000000000000001", flush=True)
time.sleep(60)
"""  # noqa: E501 - nvidia-smi lines


def test_smi_sampler_end_to_end(tmp_path):
    argv_file = tmp_path / "argv.txt"
    exe = tmp_path / "nvidia-smi"
    exe.write_text(FAKE_SMI.format(python=sys.executable, argv_file=str(argv_file)))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)

    sampler = SmiSampler(str(exe), {0: 2, 1: 3}, interval_s=0.25)  # our label -> smi index
    sampler.start()
    try:
        wait_for(lambda: len(sampler.samples) >= 2, timeout_s=5.0)
    finally:
        started = time.monotonic()
        sampler.stop()
        elapsed = time.monotonic() - started
    assert elapsed < 2.0
    assert sampler._proc.returncode is not None  # terminated
    assert not sampler._thread.is_alive()

    assert argv_file.read_text().splitlines() == [
        f"--query-gpu={','.join(SMI_FIELDS)}",
        "--format=csv,noheader,nounits",
        "--loop-ms=250",
        "--id=2,3",
    ]
    a, b = sampler.samples  # index 7 is not ours, the blank line is not a sample
    assert (a.gpu, b.gpu) == (0, 1)
    assert fields(a) == {
        **EXPECTED,
        "mem_total_mib": 81559.0,
        "throttle_mask": 0x4,
        "energy_mj": None,
    }
    assert (b.util_gpu_pct, b.power_w, b.sm_clock_mhz, b.pstate, b.throttle_mask) == (
        12.0,
        None,
        345.0,
        2,
        0x1,
    )
    assert b.t_unix - a.t_unix == pytest.approx(0.001, abs=1e-4)
    assert sampler.errors == []
