"""What `prepare` refuses or resolves before a run starts, with the machine's facts (GPUs,
installed distributions) given as data: the same answers on any machine."""

from pathlib import Path

import pytest

from bench.run import registry
from bench.run.registry import run_label
from bench.run.runner import prepare
from bench.run.workload import WorkloadInfo
from bench.schema.spec import RunSpec, SpecError
from bench.telemetry.devices import parse_gpu_query, resolve_precision
from data.selection import DataError

V100 = parse_gpu_query("0, Tesla V100-SXM2-16GB, GPU-v, 00000000:1B:00.0, 16384, 535.1, 7.0\n")
T4 = parse_gpu_query("0, Tesla T4, GPU-t, 00000000:1E:00.0, 15360, 535.1, 7.5\n")
A10G = parse_gpu_query("0, NVIDIA A10G, GPU-a, 00000000:00:1E.0, 23028, 535.1, 8.6\n")
H100 = parse_gpu_query("0, NVIDIA H100 80GB HBM3, GPU-h, 00000000:19:00.0, 81559, 580.1, 9.0\n")
ALL = {"torch", "mxnet", "onnxruntime"}


def everything_installed(_distribution: str) -> bool:
    return True


@pytest.mark.parametrize(
    "gpus, backend, expected",
    [
        (V100, "torch", "fp16"),  # no bf16 before compute capability 8.0
        (T4, "torch", "fp16"),
        (A10G, "torch", "bf16"),
        (H100, "torch", "bf16"),
        (A10G, "mxnet", "fp16"),  # MXNet has no bf16
        (A10G, "onnxruntime", "fp16"),
        ([], "torch", "fp32"),  # the CPU
    ],
)
def test_auto_precision_is_resolved_and_stored(gpus, backend, expected):
    device = "cuda" if gpus else "cpu"
    spec = RunSpec(workload="bert", backend=backend, precision="auto", device=device)
    resolved = prepare(spec, gpus=gpus, installed=everything_installed)
    assert resolved.precision == expected
    assert f"_{expected}_" in run_label(resolved)


def test_resolve_precision_without_a_known_capability_takes_fp16():
    assert resolve_precision("auto", "cuda:0", None, ALL | {"fp16", "bf16"}) == "fp16"
    assert resolve_precision("bf16", "cpu", None, {"bf16"}) == "bf16"  # only auto resolves
    assert resolve_precision("auto", "cuda:0", None, {"fp32"}) == "fp32"


def test_bf16_is_refused_on_gpus_without_it():
    with pytest.raises(SpecError, match="bf16 needs compute capability 8.0"):
        prepare(RunSpec(workload="bert", precision="bf16", device="cuda"), gpus=T4)


def test_a_gpu_that_is_not_there_is_refused():
    with pytest.raises(SpecError, match="cuda:3 asked for, but only 1 GPU"):
        prepare(RunSpec(workload="ssd", device="cuda:3"), gpus=H100)
    with pytest.raises(SpecError, match="no NVIDIA GPU was found"):
        prepare(RunSpec(workload="ssd", device="cuda"), gpus=[])


def test_onnxruntime_gpu_runs_need_the_gpu_build():
    spec = RunSpec(workload="bert", backend="onnxruntime", device="cuda")
    with pytest.raises(SpecError, match="needs onnxruntime-gpu, which is not installed"):
        prepare(spec, gpus=H100, installed=lambda name: name != "onnxruntime-gpu")
    assert prepare(spec, gpus=H100, installed=everything_installed).device == "cuda:0"


def test_mxnet_is_refused_on_gpus_newer_than_its_build():
    spec = RunSpec(workload="ssd", backend="mxnet", device="cuda")
    with pytest.raises(SpecError, match="compute capability 9.0"):
        prepare(spec, gpus=H100, installed=everything_installed)
    assert prepare(spec, gpus=A10G, installed=everything_installed).device == "cuda:0"


@pytest.mark.parametrize(
    "workload, backend, files, expected",
    [
        ("bert", "torch", [], "config.json"),
        ("bert", "torch", ["config.json"], "model.safetensors or pytorch_model.bin"),
        ("bert", "onnxruntime", ["model.safetensors"], "config.json"),
        ("bert", "mxnet", ["config.json"], "*.params"),
        ("ssd", "torch", ["weights.pt"], "ssd_512_resnet50_v1_voc.pt"),
        ("ssd", "mxnet", ["ssd_512_resnet50_v1_voc.pt"], "ssd_512_resnet50_v1_voc*.params"),
    ],
)
def test_a_pretrained_directory_without_a_checkpoint_is_refused(
    tmp_path: Path, workload, backend, files, expected
):
    for name in files:
        (tmp_path / name).write_text("{}")
    spec = RunSpec(workload=workload, backend=backend, device="cpu", pretrained=str(tmp_path))
    with pytest.raises(SpecError, match="holds no .* checkpoint") as info:
        prepare(spec, gpus=[])
    assert f"expected {expected}" in str(info.value)


@pytest.mark.parametrize(
    "workload, backend, files",
    [
        ("bert", "torch", ["config.json", "model.safetensors"]),
        ("bert", "torch", ["config.json", "pytorch_model.bin.index.json"]),
        ("bert", "mxnet", ["bert_imdb.params"]),
        ("ssd", "onnxruntime", ["ssd_512_resnet50_v1_voc.pt"]),
        ("ssd", "mxnet", ["ssd_512_resnet50_v1_voc-9c8b225a.params"]),
    ],
)
def test_a_pretrained_directory_with_a_checkpoint_is_accepted(
    tmp_path: Path, workload, backend, files
):
    for name in files:
        (tmp_path / name).write_text("{}")
    spec = RunSpec(workload=workload, backend=backend, device="cpu", pretrained=str(tmp_path))
    assert prepare(spec, gpus=[]).pretrained == str(tmp_path)


@pytest.mark.parametrize("gpus", [V100, T4], ids=["V100", "T4"])
@pytest.mark.parametrize("precision", ["fp16", "auto"])
@pytest.mark.parametrize("workload", ["ssd", "bert"])
def test_fp16_training_is_captured_on_torch(workload, precision, gpus):
    # GradScaler with the fused optimizer: the inf check and the scale stay on the device
    spec = RunSpec(
        workload=workload, mode="train", precision=precision, device="cuda", cuda_graphs=True
    )
    resolved = prepare(spec, gpus=gpus, installed=everything_installed)
    assert (resolved.precision, resolved.cuda_graphs) == ("fp16", True)


@pytest.mark.parametrize("precision", ["fp16", "auto"])  # auto is fp16 on MXNet
def test_fp16_training_is_not_captured_where_the_loss_scaler_reads_the_host(precision):
    spec = RunSpec(
        workload="ssd",
        backend="mxnet",
        mode="train",
        precision=precision,
        device="cuda",
        cuda_graphs=True,
    )
    with pytest.raises(SpecError) as refused:
        prepare(spec, gpus=A10G, installed=everything_installed)
    assert str(refused.value) == (
        "fp16 training on mxnet cannot be captured in a CUDA graph: MXNet AMP's dynamic loss "
        "scaler reads its overflow check on the host (asnumpy) every step; use bf16 or fp32, "
        "or drop --cuda-graphs"
    )
    # the same run in fp32, or fp16 inference, is captured
    assert prepare(spec.replace(precision="fp32"), gpus=A10G, installed=everything_installed)
    infer = spec.replace(mode="infer", precision="fp16")
    assert prepare(infer, gpus=A10G, installed=everything_installed).cuda_graphs


# -- capabilities the registry declares (bench.run.capabilities) ----------------------------
@pytest.mark.parametrize(
    "fields, message",
    [
        ({"workload": "resnet"}, "unknown workload 'resnet': choose from ssd, bert, bert-qa, null"),
        (
            {"workload": "ssd", "backend": "tensorflow"},
            "unknown backend 'tensorflow': choose from torch, mxnet, onnxruntime",
        ),
        (
            {"workload": "ssd", "backend": "mxnet", "compile": "default"},
            "compile applies to the torch backend: mxnet builds its own graph (MXNet hybridizes "
            "with static allocation, ONNX Runtime optimizes the graph)",
        ),
        (
            {"workload": "bert", "backend": "onnxruntime", "compile": "max-autotune"},
            "compile applies to the torch backend: onnxruntime builds its own graph (MXNet "
            "hybridizes with static allocation, ONNX Runtime optimizes the graph)",
        ),
        (
            {"workload": "null", "data": "VOCdevkit"},
            "--data runs ssd, bert and bert-qa on torch and mxnet, not null on torch",
        ),
        (
            {"workload": "bert", "backend": "onnxruntime", "data": "aclImdb"},
            "--data runs ssd, bert and bert-qa on torch and mxnet, not bert on onnxruntime",
        ),
        (
            {"workload": "ssd", "data": "no/such/VOCdevkit"},
            "--data no/such/VOCdevkit does not exist",
        ),
    ],
)
def test_what_a_workload_or_backend_cannot_do_is_refused_by_the_registry(fields, message):
    spec = RunSpec(**{"device": "cpu", **fields})  # the spec itself holds nothing against it
    with pytest.raises(SpecError) as refused:
        prepare(spec, gpus=[])
    assert str(refused.value) == message


def test_a_dataset_in_the_wrong_format_is_refused_with_the_workloads_own_words(tmp_path: Path):
    (tmp_path / "train.rec").write_bytes(b"")
    cases = [
        ("ssd", tmp_path / "notes.txt", "SSD reads a VOC folder or a RecordIO .rec file"),
        ("ssd", tmp_path / "train.rec", f"the RecordIO index {tmp_path / 'train.idx'} is missing"),
        ("bert", tmp_path / "notes.txt", "BERT reads an aclImdb folder"),
    ]
    (tmp_path / "notes.txt").write_text("")
    for workload, path, why in cases:
        spec = RunSpec(workload=workload, device="cpu", data=str(path), vocab=str(path))
        with pytest.raises(SpecError) as refused:
            prepare(spec, gpus=[])
        assert str(refused.value) == f"--data {path}: {why}"


def test_a_new_workload_is_checked_by_what_it_declares(tmp_path: Path, monkeypatch):
    """A workload that only the registry and its WorkloadInfo know (nothing in bench/ names
    it) gets its data checked by its own function, and the refusals list it."""
    monkeypatch.setitem(
        registry.REGISTRY, ("toy", "torch"), registry.Entry("models.null:NullWorkload")
    )
    monkeypatch.setitem(registry.WORKLOAD_INFO, "toy", "tests.test_prepare:TOY_INFO")
    assert registry.workload_names() == ("ssd", "bert", "bert-qa", "toy", "null")
    (tmp_path / "toy.txt").write_text("")
    assert prepare(RunSpec(workload="toy", data=str(tmp_path / "toy.txt")), gpus=[]).data
    with pytest.raises(SpecError) as refused:
        prepare(RunSpec(workload="toy", data=str(tmp_path)), gpus=[])
    assert str(refused.value) == f"--data {tmp_path}: toy reads one .txt file"
    with pytest.raises(SpecError) as refused:
        prepare(RunSpec(workload="null", data=str(tmp_path)), gpus=[])
    assert "--data runs ssd, bert, bert-qa and toy on torch and mxnet" in str(refused.value)


def _check_toy(path: Path, mode: str, scenario: str) -> None:
    if path.suffix != ".txt":
        raise DataError(f"{path}: toy reads one .txt file")


TOY_INFO = WorkloadInfo(
    name="toy", flops=lambda spec: (None, "unknown"), data_check="tests.test_prepare:_check_toy"
)
