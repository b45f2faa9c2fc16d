"""Framework builds against GPUs, as data: which architectures run on which compute
capability, the PyTorch build the set-up installs for a machine's GPUs, the one-line refusal
when the installed build cannot run, and ONNX Runtime's and MXNet's GPU builds checked before
a run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.run.builds import (
    TORCH_BUILDS,
    NoBuild,
    arch_refusal,
    choose_torch_build,
    main,
    parse_arch,
    parse_capability,
    runs_on,
    torch_remedy,
)
from bench.run.runner import prepare
from bench.schema.spec import RunSpec, SpecError
from bench.telemetry.devices import parse_gpu_query

ROOT = Path(__file__).resolve().parent.parent
#: ``torch.cuda.get_arch_list()`` of the two PyTorch 2.14.1 CUDA builds.
CU130 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
CU126 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
#: Compute capabilities of the GPUs of the EC2 instances the harness targets, and others.
V100, T4, A100, A10G, L4, H100, B200, RTX5090 = (
    (7, 0),
    (7, 5),
    (8, 0),
    (8, 6),
    (8, 9),
    (9, 0),
    (10, 0),
    (12, 0),
)
K80, M60, P100 = (3, 7), (5, 2), (6, 0)


def everything_installed(_distribution: str) -> bool:
    return True


def test_architecture_names_as_torch_writes_them():
    assert parse_arch("sm_86") == ("sm", (8, 6), "")
    assert parse_arch("sm_120") == ("sm", (12, 0), "")
    assert parse_arch("compute_90") == ("compute", (9, 0), "")
    assert parse_arch("sm_90a") == ("sm", (9, 0), "a")
    with pytest.raises(ValueError, match="not a CUDA architecture name: 'gfx90a'"):
        parse_arch("gfx90a")
    assert parse_capability("7.0") == (7, 0) and parse_capability(" 12.0\n") == (12, 0)
    with pytest.raises(ValueError, match="not a compute capability"):
        parse_capability("sm_70")


@pytest.mark.parametrize(
    "archs, capability, runs",
    [
        (CU130, V100, False),  # no Volta kernels in CUDA 13 builds
        (CU126, V100, True),
        (CU130, T4, True),
        (CU130, L4, True),  # sm_86 binaries run on 8.9 (same major, newer minor)
        (["sm_86"], A100, False),  # ... but not on an older minor
        (CU126, B200, False),  # no Blackwell kernels and no PTX
        (["sm_80", "compute_90"], B200, True),  # PTX compiles for any newer GPU
        (["compute_90"], A100, False),  # ... never for an older one
        (["sm_90a"], H100, True),  # architecture-specific: 9.0 only
        (["sm_90a"], B200, False),
        (CU130, RTX5090, True),
        ([], H100, False),
    ],
)
def test_which_kernels_run_on_which_gpu(archs, capability, runs):
    assert runs_on(archs, capability) is runs


@pytest.mark.parametrize(
    "capabilities, tag",
    [
        ([V100], "cu126"),  # P3: the only 2.14 build with sm_70
        ([V100] * 8, "cu126"),  # p3.16xlarge
        ([P100], "cu126"),
        ([T4], "cu130"),
        ([A10G], "cu130"),
        ([L4], "cu130"),
        ([A100] * 8, "cu130"),
        ([H100], "cu130"),
        ([B200], "cu130"),
        ([RTX5090], "cu130"),
        ([V100, H100], "cu126"),  # one build for both: cu126 has sm_70 and sm_90
    ],
)
def test_the_set_up_picks_the_build_whose_kernels_cover_the_gpus(capabilities, tag):
    build = choose_torch_build(capabilities)
    assert build.cuda_tag == tag
    assert build.pip_args() == [
        f"torch==2.14.1+{tag}",
        f"torchvision==0.29.1+{tag}",
        "--index-url",
        f"https://download.pytorch.org/whl/{tag}",
    ]


@pytest.mark.parametrize(
    "capabilities, message",
    [
        ([K80], "compute capability 3.7"),
        ([V100, B200], "compute capability 10.0, 7.0"),
        ([], "no GPU capability given"),
    ],
)
def test_no_build_for_the_gpus_is_an_error(capabilities, message):
    with pytest.raises(NoBuild, match=message):
        choose_torch_build(capabilities)


def test_the_build_list_prefers_the_newest_cuda():
    assert [b.cuda_tag for b in TORCH_BUILDS] == ["cu130", "cu126"]
    assert {b.torch for b in TORCH_BUILDS} == {"2.14.1"}


def test_the_installed_build_is_refused_in_one_line_on_a_gpu_it_has_no_kernels_for():
    message = arch_refusal(
        "PyTorch 2.14.1+cu130", CU130, V100, "Tesla V100-SXM2-16GB", torch_remedy(V100)
    )
    assert message == (
        "PyTorch 2.14.1+cu130 cannot run on Tesla V100-SXM2-16GB (compute capability 7.0): "
        "its build has kernels for sm_75, sm_80, sm_86, sm_90, sm_100, sm_120; install the "
        "cu126 build (`make setup` picks it from nvidia-smi)"
    )
    assert "\n" not in message
    assert arch_refusal("PyTorch 2.14.1+cu126", CU126, V100, "Tesla V100", None) is None
    assert arch_refusal("PyTorch 2.14.1+cu126", CU126, B200, "NVIDIA B200", None) == (
        "PyTorch 2.14.1+cu126 cannot run on NVIDIA B200 (compute capability 10.0): its build "
        "has kernels for sm_50, sm_60, sm_70, sm_75, sm_80, sm_86, sm_90"
    )
    assert torch_remedy(K80) == "no PyTorch 2.14.1 build has kernels for it"


def test_the_pip_arguments_for_nvidia_smis_output(capsys):
    assert main(["torch-pip", "7.0"]) == 0
    assert capsys.readouterr().out == (
        "torch==2.14.1+cu126 torchvision==0.29.1+cu126 "
        "--index-url https://download.pytorch.org/whl/cu126\n"
    )
    assert main(["torch-pip", "3.7"]) == 2
    assert capsys.readouterr().err.startswith("builds.py: no PyTorch 2.14.1 build runs")
    assert main([]) == 2


def test_the_script_runs_without_the_project_installed():
    # the set-up runs it with the system Python before any dependency is installed, fed by
    # nvidia-smi --query-gpu=compute_cap --format=csv,noheader (one line a GPU)
    proc = subprocess.run(
        [sys.executable, "-I", str(ROOT / "bench" / "run" / "builds.py"), "torch-pip"],
        input="9.0\n9.0\n",
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:2] == ["torch==2.14.1+cu130", "torchvision==0.29.1+cu130"]


# -- builds declared as data, checked before a run -----------------------------------------

K80_GPU = parse_gpu_query("0, Tesla K80, GPU-k, 00000000:00:1E.0, 11441, 470.1, 3.7\n")
V100_GPU = parse_gpu_query("0, Tesla V100-SXM2-16GB, GPU-v, 00000000:1B:00.0, 16384, 535.1, 7.0\n")
B200_GPU = parse_gpu_query("0, NVIDIA B200, GPU-b, 00000000:1B:00.0, 183359, 580.1, 10.0\n")
H100_GPU = parse_gpu_query("0, NVIDIA H100 80GB HBM3, GPU-h, 00000000:19:00.0, 81559, 580.1, 9.0\n")


def test_onnxruntime_gpu_is_refused_where_its_build_has_no_kernels():
    spec = RunSpec(workload="bert", backend="onnxruntime", device="cuda")
    with pytest.raises(SpecError) as refused:
        prepare(spec, gpus=K80_GPU, installed=everything_installed)
    assert str(refused.value) == (
        "onnxruntime-gpu cannot run on Tesla K80 (compute capability 3.7): its build has "
        "kernels for sm_60, sm_70, sm_75, sm_80, sm_86, sm_90, compute_90"
    )
    for gpus in (V100_GPU, H100_GPU, B200_GPU):  # B200 through the PTX
        assert prepare(spec, gpus=gpus, installed=everything_installed).device == "cuda:0"


def test_mxnet_cu117_is_refused_past_ampere():
    spec = RunSpec(workload="ssd", backend="mxnet", device="cuda")
    with pytest.raises(SpecError, match="has kernels up to compute capability 8.6"):
        prepare(spec, gpus=H100_GPU, installed=everything_installed)
    assert prepare(spec, gpus=V100_GPU, installed=everything_installed).device == "cuda:0"


def test_a_torch_run_stops_before_set_up_on_a_gpu_its_build_cannot_run(monkeypatch):
    """The worker-side check with the GPU's facts and the build's arch list given as data
    (no GPU needed): the run stops before the device is selected, in one line."""
    import torch

    from models import torch_common
    from models.ssd.torch import SsdTorch

    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch, "__version__", "2.14.1+cu130")
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: CU130)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: V100)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "Tesla V100-SXM2-16GB")

    def no_device(device):
        raise AssertionError("the device was selected")

    monkeypatch.setattr(torch.cuda, "set_device", no_device)
    with pytest.raises(torch_common.BuildError) as refused:
        SsdTorch(RunSpec(workload="ssd", device="cuda:0", image_size=128))
    assert str(refused.value) == (
        "PyTorch 2.14.1+cu130 cannot run on Tesla V100-SXM2-16GB (compute capability 7.0): "
        "its build has kernels for sm_75, sm_80, sm_86, sm_90, sm_100, sm_120; install the "
        "cu126 build (`make setup` picks it from nvidia-smi)"
    )
    # the cu126 build runs there: the check passes and the run selects its device
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: CU126)
    assert torch_common.build_refusal(torch.device("cuda:0")) is None
