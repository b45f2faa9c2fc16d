"""The ONNX Runtime path on the CPU: export, verification against the PyTorch source,
runs through the harness, and a tampered model refused before timing."""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from bench.run.runner import prepare
from bench.run.worker import execute
from bench.schema.spec import RunSpec, SpecError
from models.bert import config as bert
from models.bert.onnx import BertOnnx
from models.onnx_common import VerificationError, cache_path
from models.onnx_providers import PROVIDERS, ProviderError, choose_providers
from models.ssd.onnx import SsdOnnx

SMALL = bert.BertShape(hidden=64, layers=2, heads=2, intermediate=128, max_positions=64)
SMALL_SETTINGS = bert.BertSettings(shape=SMALL)


def ssd_spec(**kw):
    return RunSpec(
        **{
            "workload": "ssd",
            "backend": "onnxruntime",
            "device": "cpu",
            "batch": 2,
            "image_size": 128,
            **kw,
        }
    )


def bert_spec(**kw):
    return RunSpec(
        **{
            "workload": "bert",
            "backend": "onnxruntime",
            "device": "cpu",
            "batch": 4,
            "seq_len": 32,
            **kw,
        }
    )


def test_choose_providers():
    """The chain in brief (the full table of cases is in test_ort_providers.py)."""
    gpu_build = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    cpu_only = ["CPUExecutionProvider"]
    trt, cuda, cpu = PROVIDERS["tensorrt"], PROVIDERS["cuda"], PROVIDERS["cpu"]
    assert choose_providers("auto", "cuda:0", gpu_build).chain == (cuda, cpu)  # not probed
    assert choose_providers("cuda", "cuda:0", gpu_build).chain == (cuda, cpu)
    assert choose_providers("auto", "cpu", gpu_build).chain == (cpu,)
    with pytest.raises(ProviderError, match="no tensorrt or cuda provider"):
        choose_providers("auto", "cuda:0", cpu_only)
    with pytest.raises(ProviderError, match="needs a GPU device"):
        choose_providers("cuda", "cpu", gpu_build)
    assert trt not in choose_providers("auto", "cuda:0", gpu_build).chain


def test_cache_path_is_keyed_by_what_defines_the_model(tmp_path):
    a = cache_path(tmp_path, "ssd", "fp32", seed=0, image_size=512)
    assert a == cache_path(tmp_path, "ssd", "fp32", image_size=512, seed=0)
    assert a.name.startswith("ssd-torch-opset17-fp32-")
    assert a != cache_path(tmp_path, "ssd", "fp32", seed=1, image_size=512)
    assert a != cache_path(tmp_path, "ssd", "fp32", seed=0, image_size=256)


def test_training_and_bf16_are_refused_before_anything_runs():
    with pytest.raises(SpecError, match="supports infer only"):
        prepare(RunSpec(workload="ssd", backend="onnxruntime", mode="train"), gpus=[])
    with pytest.raises(SpecError, match="does not support bf16"):
        prepare(RunSpec(workload="bert", backend="onnxruntime", precision="bf16"), gpus=[])
    with pytest.raises(SpecError, match="onnxruntime backend only"):
        RunSpec(workload="bert", ort_provider="cuda")


def test_ssd_export_verify_and_step(tmp_path):
    wl = SsdOnnx(ssd_spec(), cache_dir=tmp_path)
    wl.setup()
    report = wl.verification["outputs"]
    assert set(report) == {"cls_preds", "box_preds"}
    assert all(r["relative_l2_error"] < 1e-4 for r in report.values())
    ids, scores, boxes = wl.step()
    assert ids.shape == (2, 100) and scores.shape == (2, 100) and boxes.shape == (2, 100, 4)
    kept = scores >= 0
    assert ((boxes[kept] >= 0) & (boxes[kept] <= 128)).all()
    again = SsdOnnx(ssd_spec(), cache_dir=tmp_path)
    again.setup()
    details = again.details()
    assert again.exported_from_cache and details["provider"] == PROVIDERS["cpu"]
    assert details["providers"] == [PROVIDERS["cpu"]] and details["fp32_math"] == "fp32"
    ops = details["placement"]["ops_by_provider"][PROVIDERS["cpu"]]
    assert details["nodes_by_provider"] == {PROVIDERS["cpu"]: sum(ops.values())}
    assert ops.get("Conv", 0) + ops.get("FusedConv", 0) > 50  # ResNet-50 and the heads


def _tamper(path: Path) -> None:
    model = onnx.load(str(path))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weights = numpy_helper.to_array(init).copy()
    # noise on a random tenth of the elements: not a constant shift, which a following
    # layer norm would cancel
    rng = np.random.default_rng(0)
    picked = rng.random(weights.shape) < 0.1
    weights[picked] += rng.normal(0, 0.5, int(picked.sum())).astype(weights.dtype)
    init.CopyFrom(numpy_helper.from_array(weights, init.name))
    onnx.save(model, str(path))


def test_a_tampered_ssd_model_fails_verification(tmp_path):
    wl = SsdOnnx(ssd_spec(), cache_dir=tmp_path)
    wl.setup()
    _tamper(wl.model_path)
    with pytest.raises(VerificationError, match="differs from its source"):
        SsdOnnx(ssd_spec(), cache_dir=tmp_path).setup()


def test_bert_export_fuses_and_verifies(tmp_path):
    wl = BertOnnx(bert_spec(include_h2d=True), cache_dir=tmp_path, settings=SMALL_SETTINGS)
    wl.setup()
    assert wl.verification["outputs"]["logits"]["relative_l2_error"] < 1e-4
    assert wl.fusion.get("Attention") == 2 and wl.fusion.get("SkipLayerNormalization")
    logits = wl.step()
    assert logits.shape == (4, 2) and torch.isfinite(logits).all()
    _tamper(wl.model_path)  # the optimized model the session loads
    with pytest.raises(VerificationError):
        BertOnnx(bert_spec(), cache_dir=tmp_path, settings=SMALL_SETTINGS).setup()


def test_onnxruntime_runs_through_the_harness():
    record = execute(ssd_spec(batch=1, warmup=1, iters=3), progress=False)
    assert record.outcome.status == "ok", record.outcome
    assert record.workload is not None
    details = record.workload.details
    assert details["provider"] == "CPUExecutionProvider"
    assert details["providers"] == ["CPUExecutionProvider"]
    assert list(details["nodes_by_provider"]) == ["CPUExecutionProvider"]
    assert details["session_options"]["intra_op_num_threads"] >= 1
    assert record.environment.framework["onnxruntime_version"]
    assert "post-processing" in record.workload.step_description
    execution = record.execution
    assert set(execution.one_off_s) == {"setup_s", "engine_build_s", "first_step_s"}
    assert 0 < execution.one_off_s["engine_build_s"] < execution.one_off_s["setup_s"]
    assert execution.details["cuda_graph"] is False and execution.details["io_binding"] is True
    assert execution.step_timer is None  # synchronized timing: no per-step timer asked for


def test_a_pipelined_cpu_run_times_each_step_on_the_host_clock():
    record = execute(ssd_spec(batch=1, warmup=1, iters=3, timing="pipelined"), progress=False)
    assert record.outcome.status == "ok", record.outcome
    assert record.execution.step_timer == "host_clock"
    assert len(record.latencies_ms) == 3


def test_a_gpu_run_waits_for_torch_to_fill_its_inputs(monkeypatch):
    """ONNX Runtime runs on its own CUDA stream: the host-to-device copy (or gather) that
    torch queued into the bound inputs must be finished before the session reads them."""
    from models.onnx_common import Binding

    order: list[str] = []

    class Stream:
        def synchronize(self) -> None:
            order.append("torch stream synchronized")

    class Session:
        def run_with_iobinding(self, binding: object) -> None:
            order.append("session run")

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
    binding = object.__new__(Binding)
    binding.session, binding.binding = Session(), object()
    binding.device = torch.device("cuda:0")
    binding.run(inputs_written=True)
    assert order == ["torch stream synchronized", "session run"]
    order.clear()
    binding.run()  # inputs staged before timing: no synchronize in the timed step
    assert order == ["session run"]
    order.clear()
    binding.device = torch.device("cpu")  # nothing to order on the CPU
    binding.run(inputs_written=True)
    assert order == ["session run"]
