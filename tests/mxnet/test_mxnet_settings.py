"""What the MXNet workloads set up around the model, on the CPU: the timed host-to-device
copy (staged, converted and, on GPU runs, pinned in setup), the fp32 math mode they declare,
and the one MXNet warning they silence. Runs in the MXNet environment (.venv-mxnet)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any

import mxnet as mx
import numpy as np
import pytest

import models.mxnet_common as mxnet_common
from bench.run import registry
from bench.schema.spec import RunSpec
from models.bert import config as bert
from models.bert.gluon import BertGluon
from models.mxnet_common import (
    TF32_OVERRIDE,
    UNDECIDED_TYPE_WARNING,
    MxnetWorkload,
    quiet_undecided_type,
)
from models.ssd.gluon import SsdGluon

SMALL = bert.BertSettings(
    shape=bert.BertShape(hidden=64, layers=2, heads=2, intermediate=128, max_positions=64)
)


def make(workload: str, **kw: Any) -> MxnetWorkload:
    if workload == "ssd":
        spec = RunSpec(workload="ssd", backend="mxnet", device="cpu", batch=2, image_size=128)
        return SsdGluon(spec.replace(**kw))
    spec = RunSpec(workload="bert", backend="mxnet", device="cpu", batch=4, seq_len=16)
    return BertGluon(spec.replace(**kw), SMALL)


def _outputs(out: Any) -> list[np.ndarray]:
    return [a.asnumpy() for a in (out if isinstance(out, list | tuple) else [out])]


# --- B: timed host-to-device copies ------------------------------------------------------

#: The arrays each workload copies in a timed step with include_h2d (PyTorch's path copies
#: the same: images and, when training, the targets; token ids, types, lengths, labels).
COPIED = {
    ("ssd", "infer"): 1,
    ("ssd", "train"): 3,
    ("bert", "infer"): 3,
    ("bert", "train"): 4,
}


@pytest.mark.parametrize(("workload", "mode"), sorted(COPIED))
def test_include_h2d_step_only_copies_arrays_staged_in_setup(
    workload: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Setup stages the batch on the host already in float32 (pinned on GPU runs); the step
    converts nothing (no numpy -> NDArray, no dtype change) and only copies."""
    wl = make(workload, mode=mode, include_h2d=True)
    wl.setup()
    staged = [v for k, v in vars(wl).items() if k.startswith("host_")]
    flat = [a for v in staged for a in (v if isinstance(v, tuple) else (v,))]
    assert len(flat) == COPIED[(workload, mode)]
    for array in flat:
        assert isinstance(array, mx.nd.NDArray)
        assert array.dtype == np.float32 and array.context == wl.host_context() == mx.cpu()

    def no_conversion(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the timed step converted host data")

    copies: list[mx.nd.NDArray] = []
    copy = wl.copy_to_device

    def counting_copy(host: mx.nd.NDArray) -> mx.nd.NDArray:
        copies.append(host)
        return copy(host)

    with monkeypatch.context() as patch:
        patch.setattr(mx.nd, "array", no_conversion)
        patch.setattr(mx.nd.NDArray, "astype", no_conversion)
        patch.setattr(wl, "to_device", no_conversion)
        patch.setattr(wl, "copy_to_device", counting_copy)
        out = wl.step()
        wl.sync()
    assert len(copies) == COPIED[(workload, mode)]
    assert all(any(c is a for a in flat) for c in copies)
    if mode == "infer":  # the same result as the batch staged on the device
        plain = make(workload, mode=mode)
        plain.setup()
        for got, want in zip(_outputs(out), _outputs(plain.step()), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_gpu_run_stages_in_pinned_memory_for_its_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU needed: only the GPU count is faked (nothing runs on the GPU)."""
    monkeypatch.setattr(mx.context, "num_gpus", lambda: 2)
    monkeypatch.setattr(mxnet_common, "_process_fp32_math", {})
    wl = make("bert", device="cuda:1")
    assert wl.ctx == mx.gpu(1) and wl.host_context() == mx.cpu_pinned(1)
    host = wl.stage_on_host(np.arange(6, dtype=np.int64).reshape(2, 3))
    assert host.context == mx.cpu_pinned(1) and host.dtype == np.float32
    assert make("bert").host_context() == mx.cpu()


# --- C: fp32 math mode -------------------------------------------------------------------


def test_declared_modes_are_tf32_for_ssd_and_fp32_for_bert() -> None:
    """SSD keeps MXNet's default (TF32 convolutions, as PyTorch's SSD); BERT runs full fp32
    (as PyTorch's BERT). With two modes declared, nothing is set at import: each GPU
    workload sets its own before MXNet makes its cuBLAS and cuDNN handles."""
    assert mxnet_common.declared_fp32_math("ssd") == "tf32"
    assert mxnet_common.declared_fp32_math("bert") == "fp32"


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Two GPUs as far as the workloads' constructors can tell; a fresh process state and
    NVIDIA_TF32_OVERRIDE restored afterwards."""
    monkeypatch.setattr(mx.context, "num_gpus", lambda: 2)
    monkeypatch.setattr(mxnet_common, "_process_fp32_math", {})
    monkeypatch.setenv(TF32_OVERRIDE, os.environ.get(TF32_OVERRIDE, "unset"))
    yield monkeypatch


@pytest.mark.parametrize("workload", ["ssd", "bert"])
def test_gpu_runs_set_the_declared_fp32_math(workload: str, fake_gpus: Any) -> None:
    cpu = make(workload)
    assert cpu.fp32_math == "fp32"  # no TF32 on the CPU
    os.environ[TF32_OVERRIDE] = "1"  # whatever was there before
    gpu = make(workload, device="cuda:0")
    declared = registry.workload_info(workload).fp32_math["mxnet"]
    assert gpu.fp32_math == declared
    # fp32: the override turns TF32 off; tf32: MXNet's default, the override is lifted
    assert os.environ.get(TF32_OVERRIDE) == ("0" if declared == "fp32" else None)


def test_a_tf32_declaration_lifts_the_override_and_a_process_keeps_one_mode(
    fake_gpus: pytest.MonkeyPatch,
) -> None:
    fake_gpus.setattr(mxnet_common, "declared_fp32_math", {"ssd": "tf32", "bert": "fp32"}.get)
    os.environ[TF32_OVERRIDE] = "0"
    assert make("ssd", device="cuda:0").fp32_math == "tf32"
    assert TF32_OVERRIDE not in os.environ  # MXNet's default: TF32 on Ampere and later
    assert make("ssd", device="cuda:1").fp32_math == "tf32"
    with pytest.raises(RuntimeError, match="already ran MXNet on the GPU in tf32 math"):
        make("bert", device="cuda:0")
    with pytest.raises(ValueError, match="fp32 math mode 'fp16'"):
        mxnet_common.set_fp32_math("fp16")


def test_details_record_the_fp32_math() -> None:
    wl = make("bert", mode="infer")
    wl.setup()
    wl.step()
    assert wl.details()["fp32_math"] == "fp32"
    info = mxnet_common.mxnet_info("cpu")
    assert info["nvidia_tf32_override"] == os.environ.get(TF32_OVERRIDE)


# --- D: MXNet's "Cannot decide type" warning ------------------------------------------------


@pytest.mark.parametrize(
    ("workload", "mode"), [("ssd", "infer"), ("ssd", "train"), ("bert", "train")]
)
def test_setup_and_step_do_not_warn_cannot_decide_type(workload: str, mode: str) -> None:
    """GluonCV's SSD used to warn at every network build (its FeatureExpander SymbolBlock)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wl = make(workload, mode=mode)
        wl.setup()
        wl.step()
        wl.sync()
    assert not [w for w in caught if "Cannot decide type" in str(w.message)]


def test_only_that_warning_is_silenced() -> None:
    text = "Cannot decide type for the following arguments. Consider providing them as input"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_undecided_type():
            warnings.warn(text, UserWarning, stacklevel=1)
            warnings.warn(text, DeprecationWarning, stacklevel=1)  # another category
            warnings.warn("Cannot infer shape", UserWarning, stacklevel=1)  # another message
        warnings.warn(text, UserWarning, stacklevel=1)  # outside the block
    assert [(w.category, str(w.message)[:16]) for w in caught] == [
        (DeprecationWarning, text[:16]),
        (UserWarning, "Cannot infer sha"),
        (UserWarning, text[:16]),
    ]
    assert UNDECIDED_TYPE_WARNING in text
