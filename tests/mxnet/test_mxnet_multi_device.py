"""MXNet on several devices in one process (``spec.gpus``), on two CPU contexts: contexts from
the spec, the global batch split across them, gradients summed by the ``device`` kvstore so
that every context holds the same parameters, and the update that one context computes for
the same data. Runs in the MXNet environment (.venv-mxnet)."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from typing import Any

import gluonnlp as nlp
import mxnet as mx
import numpy as np
import pytest

import models.mxnet_common as mxnet_common
import models.ssd.gluon as ssd_gluon
from bench.run.worker import execute
from bench.schema.spec import RunSpec
from data.synthetic import DetectionBatch, detection_batch
from models.bert import config as bert
from models.bert.gluon import BertGluon
from models.mxnet_common import MxnetWorkload, run_contexts
from models.ssd.gluon import SsdGluon

SMALL = bert.BertShape(hidden=64, layers=2, heads=2, intermediate=128, max_positions=64)
#: lr 1e-3 with one warm-up step: the first step already moves every weight visibly.
SMALL_SETTINGS = bert.BertSettings(shape=SMALL, learning_rate=1e-3, warmup_steps=1)
TWO_CPUS = [mx.cpu(0), mx.cpu(1)]


def ssd_spec(**kw: Any) -> RunSpec:
    base = RunSpec(workload="ssd", backend="mxnet", device="cpu", batch=2, image_size=128)
    return base.replace(**kw)


def bert_spec(**kw: Any) -> RunSpec:
    base = RunSpec(workload="bert", backend="mxnet", device="cpu", batch=4, seq_len=32)
    return base.replace(**kw)


def trainable(block: mx.gluon.Block) -> list[mx.gluon.Parameter]:
    return [p for p in block.collect_params().values() if p.grad_req != "null"]


def first_copies(params: list[mx.gluon.Parameter]) -> list[np.ndarray]:
    return [p.list_data()[0].asnumpy() for p in params]


def assert_same_on_every_context(params: list[mx.gluon.Parameter]) -> None:
    for param in params:
        first, *others = (d.asnumpy() for d in param.list_data())
        assert len(others) == 1, param.name
        for other in others:
            np.testing.assert_array_equal(other, first, err_msg=param.name)


def largest_change(before: list[np.ndarray], after: list[np.ndarray]) -> float:
    return max(float(np.abs(a - b).max()) for a, b in zip(after, before, strict=True))


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Two GPUs as far as the constructors can tell (nothing runs on them), and a fresh
    process state for the fp32 math mode, restored afterwards."""
    monkeypatch.setattr(mx.context, "num_gpus", lambda: 2)
    monkeypatch.setattr(mxnet_common, "_process_fp32_math", {})
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", os.environ.get("NVIDIA_TF32_OVERRIDE", "1"))
    yield monkeypatch


@pytest.fixture
def no_dropout(monkeypatch: pytest.MonkeyPatch) -> None:
    """BERT built with dropout 0: dropout draws its masks per context, so only without it
    can one context and two compute the same step."""
    get_model, classifier = nlp.model.get_model, nlp.model.BERTClassifier
    monkeypatch.setattr(
        nlp.model, "get_model", lambda *a, **k: get_model(*a, **{**k, "dropout": 0.0})
    )
    monkeypatch.setattr(
        nlp.model, "BERTClassifier", lambda *a, **k: classifier(*a, **{**k, "dropout": 0.0})
    )


# -- contexts from the spec ---------------------------------------------------------------------
def test_a_cpu_run_with_gpus_has_one_cpu_context_each() -> None:
    one = BertGluon(bert_spec(), SMALL_SETTINGS)
    assert one.contexts == [mx.cpu(0)] and one.ctx == mx.cpu()
    assert one.samples_per_step == one.global_batch == 4
    two = BertGluon(bert_spec(gpus=2), SMALL_SETTINGS)
    assert two.contexts == TWO_CPUS and two.ctx == mx.cpu(0)
    assert two.samples_per_step == two.global_batch == 8  # --batch is per context
    assert [two.host_context(c) for c in two.contexts] == TWO_CPUS


def test_a_gpu_run_with_gpus_has_one_gpu_context_each(fake_gpus: pytest.MonkeyPatch) -> None:
    wl = BertGluon(bert_spec(device="cuda:0", gpus=2), SMALL_SETTINGS)
    assert wl.contexts == [mx.gpu(0), mx.gpu(1)]
    assert [wl.host_context(c) for c in wl.contexts] == [mx.cpu_pinned(0), mx.cpu_pinned(1)]
    with pytest.raises(RuntimeError, match=r"needs gpu\(2\), and this MXNet build sees 2 GPU"):
        run_contexts(bert_spec(device="cuda:0", gpus=3))
    with pytest.raises(ValueError, match="resolved to a GPU count"):
        run_contexts(bert_spec(device="cuda:0", gpus="all"))


# -- SSD ----------------------------------------------------------------------------------------
def test_ssd_trains_on_two_contexts_with_the_same_parameters_on_both() -> None:
    wl = SsdGluon(ssd_spec(mode="train", gpus=2))
    wl.setup()
    params = trainable(wl.net)
    before = first_copies(params)
    assert [x.shape[0] for x in wl.image_shares] == [2, 2]
    assert [x.context for x in wl.image_shares] == TWO_CPUS
    for _ in range(3):
        losses = wl.step()
        assert isinstance(losses, list) and [loss.context for loss in losses] == TWO_CPUS
        assert all(loss.shape == (2,) for loss in losses)  # per sample, each context's share
        assert all(np.isfinite(loss.asnumpy()).all() for loss in losses)
    wl.sync()
    assert_same_on_every_context(params)
    assert largest_change(before, first_copies(params)) > 1e-3
    # BatchNorm's running statistics follow each context's own share (no SyncBatchNorm)
    running = [p for name, p in wl.net.collect_params().items() if name.endswith("running_mean")]
    assert any(not np.array_equal(*(d.asnumpy() for d in p.list_data())) for p in running)
    assert wl.samples_per_step == 4
    assert wl.execution_details()["multi_device"] == {
        "launcher": "one process, one context per device",
        "contexts": ["cpu(0)", "cpu(1)"],
        "global_batch": 4,
        "per_context_batch": 2,
        "kvstore": "device",
        "batch_norm": "per-context batch statistics",
    }
    # GluonCV's choice: SGD runs once on the kvstore and every context pulls the weights
    assert wl.details()["trainer"] == {"kvstore": "device", "update_on_kvstore": True}


def _one_share_twice(count: int, image_size: int = 512, seed: int = 0) -> DetectionBatch:
    """The global batch as the first half repeated: each context gets the same share."""
    share = detection_batch(count // 2, image_size, seed=seed)
    return DetectionBatch(
        **{f.name: np.concatenate([getattr(share, f.name)] * 2) for f in dataclasses.fields(share)}
    )


def test_ssd_two_contexts_update_as_one_context_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """BatchNorm normalizes with each context's own batch statistics (GluonCV's default), so
    two contexts compute one context's update only for a global batch whose every share has
    the batch's statistics: here the same share twice, [A; A]. Its loss, normalized by its
    positive anchors, and so its gradient, are A's: the reference is one context on A.

    Exact: each context computes one context's step on A with the loss scaled by 1/2 (twice
    the positives), a power of two that rounding commutes with, and the kvstore's sum of two
    equal halves is exact. (One context on [A; A] itself agrees only to a few percent: its
    BatchNorm sums over 2x the samples round differently, and a randomly initialized
    ResNet-50 amplifies that through its BatchNorms on the 1x1 maps of a 128-pixel image.)
    """
    one = SsdGluon(ssd_spec(mode="train", batch=2))
    one.setup()
    one.step()
    one.sync()
    monkeypatch.setattr(ssd_gluon, "detection_batch", _one_share_twice)
    two = SsdGluon(ssd_spec(mode="train", batch=2, gpus=2))
    two.setup()
    for a, b in zip(two.image_shares, one.image_shares * 2, strict=True):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
    before = first_copies(trainable(two.net))
    two.step()
    two.sync()
    after = first_copies(trainable(two.net))
    assert largest_change(before, after) > 1e-3
    for got, want in zip(after, first_copies(trainable(one.net)), strict=True):
        np.testing.assert_array_equal(got, want)


def test_ssd_inference_runs_each_share_on_its_context() -> None:
    """Replicas: each context detects on its share as one context does on those images
    (the same operators on the same shapes, so exactly)."""
    wl = SsdGluon(ssd_spec(batch=1, gpus=2))
    wl.setup()
    out = wl.step()
    assert isinstance(out, list) and len(out) == 2
    reference = SsdGluon(ssd_spec(batch=1))
    reference.setup()
    images = detection_batch(2, 128, seed=0).images
    for i, (share, ctx) in enumerate(zip(out, TWO_CPUS, strict=True)):
        want = reference.net(mx.nd.array(images[i : i + 1]))
        for got, expected in zip(share, want, strict=True):
            assert got.context == ctx and got.shape[0] == 1
            np.testing.assert_array_equal(got.asnumpy(), expected.asnumpy())


# -- BERT ---------------------------------------------------------------------------------------
def test_bert_trains_on_two_contexts_with_the_same_parameters_on_both() -> None:
    wl = BertGluon(bert_spec(mode="train", gpus=2), SMALL_SETTINGS)
    wl.setup()
    params = trainable(wl.model)
    assert [len(x) for x in wl.inputs] == [3, 3] and [x[0].context for x in wl.inputs] == TWO_CPUS
    for _ in range(3):
        wl.step()
    before = first_copies(params)
    losses = wl.step()
    wl.sync()
    assert isinstance(losses, list) and [loss.context for loss in losses] == TWO_CPUS
    assert all(math.isfinite(float(loss.asscalar())) for loss in losses)
    assert_same_on_every_context(params)
    assert largest_change(before, first_copies(params)) > 1e-4
    assert wl.samples_per_step == 8
    assert wl.total_steps == math.ceil(bert.EPOCH_SAMPLES / 8)  # an epoch of global batches
    assert wl.execution_details()["multi_device"] == {
        "launcher": "one process, one context per device",
        "contexts": ["cpu(0)", "cpu(1)"],
        "global_batch": 8,
        "per_context_batch": 4,
        "kvstore": "device",
    }
    # summed on the kvstore, clipped, then applied by each context's updater
    assert wl.details()["trainer"] == {"kvstore": "device", "update_on_kvstore": False}


def test_bert_two_contexts_step_as_one_context_on_the_global_batch(
    no_dropout: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two contexts of 4 sequences and one of 8 (the same seed, so the same weights and
    data) compute the same step: the same loss, the same clipped gradients and the same
    weights. The clip is lowered below the gradients' norm so that it acts.

    Tolerances: the two differ only in how float32 sums round (matrix products over 4 rows
    rather than 8, then the kvstore's sum): about 1e-8 on clipped gradients of up to 0.07
    (atol 1e-7). BERTAdam's first step moves a weight by up to lr * 0.1 / sqrt(0.001), about
    3e-3 here, and near a zero gradient by up to lr * 0.1 / epsilon = 100 times the
    gradient's difference: at most 1e-6 (atol 1e-6); the weights differ by about 2e-7. A
    missing reduction, or a loss normalized per context rather than over the global batch,
    changes the gradients or the loss by their own size."""
    clip = 0.25
    monkeypatch.setattr(bert, "GRAD_CLIP", clip)
    results = []
    for spec in (bert_spec(mode="train", batch=8), bert_spec(mode="train", batch=4, gpus=2)):
        # each built and stepped in turn: the seed is set on construction, and the head's
        # weights are drawn at the first forward
        wl = BertGluon(spec, SMALL_SETTINGS)
        wl.setup()
        with mx.autograd.predict_mode():
            wl.model(*wl.inputs[0])  # the head's deferred initialization, to read the weights
        before = first_copies(trainable(wl.model))
        out = wl.step()
        wl.sync()
        loss = sum(float(x.asscalar()) for x in (out if isinstance(out, list) else [out]))
        results.append((loss, before, trainable(wl.model)))
    (loss_one, before_one, params_one), (loss_two, before_two, params_two) = results
    for a, b in zip(before_one, before_two, strict=True):
        np.testing.assert_array_equal(a, b)  # the same initial weights
    assert loss_two == pytest.approx(loss_one, rel=1e-6)
    for ctx in range(2):
        grads = [p.list_grad()[ctx].asnumpy() for p in params_two]
        norm = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
        assert norm == pytest.approx(clip, rel=1e-5)  # the clip acted, on the summed grads
        for got, p in zip(grads, params_one, strict=True):
            np.testing.assert_allclose(got, p.grad().asnumpy(), rtol=0, atol=1e-7)
    after_one = first_copies(params_one)
    assert largest_change(before_one, after_one) > 1e-3
    for got, want in zip(first_copies(params_two), after_one, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_bert_inference_runs_each_share_on_its_context() -> None:
    """Replicas: each context's logits are one context's for those sequences (its matrix
    products run over 2 rows rather than 4: float32 rounding, rtol 1e-5)."""
    settings = bert.BertSettings(shape=SMALL)
    two = BertGluon(bert_spec(batch=2, gpus=2), settings)
    two.setup()
    out = two.step()
    assert isinstance(out, list) and [x.context for x in out] == TWO_CPUS
    one = BertGluon(bert_spec(batch=4), settings)
    one.setup()
    np.testing.assert_allclose(
        np.concatenate([x.asnumpy() for x in out]), one.step().asnumpy(), rtol=1e-5, atol=1e-6
    )


def test_bert_include_h2d_copies_each_share_to_its_context() -> None:
    """Each context's share is staged for it (on a GPU run: pinned memory of its GPU) and
    the timed step copies it there; the step is the one on the batch staged in place."""
    staged = BertGluon(bert_spec(mode="train", gpus=2, include_h2d=True), SMALL_SETTINGS)
    staged.setup()
    assert [a.context for a in staged.host_inputs] == [mx.cpu(0)] * 3 + [mx.cpu(1)] * 3
    assert [a.context for a in staged.host_labels] == TWO_CPUS
    copied = staged._inputs()
    assert [[a.context for a in share] for share in copied] == [[c] * 3 for c in TWO_CPUS]
    got = staged.step()  # before the next workload reseeds (the head is drawn at this step)
    plain = BertGluon(bert_spec(mode="train", gpus=2), SMALL_SETTINGS)
    plain.setup()
    for a, b in zip(got, plain.step(), strict=True):
        assert float(a.asscalar()) == float(b.asscalar())
    with pytest.raises(ValueError, match="staged for none of the run's contexts"):
        staged.copy_to_device(mx.nd.zeros((1,), ctx=mx.cpu(2)))


def test_worker_records_the_global_batch_and_the_contexts() -> None:
    record = execute(
        bert_spec(mode="infer", batch=1, seq_len=16, warmup=1, iters=2, gpus=2), progress=False
    )
    assert record.outcome.status == "ok", record.outcome
    assert record.workload.samples_per_step == 2
    assert record.execution.details["multi_device"]["contexts"] == ["cpu(0)", "cpu(1)"]
    assert record.execution.details["multi_device"]["kvstore"] is None  # no gradients


def test_a_run_without_gpus_records_no_multi_device_facts() -> None:
    wl: MxnetWorkload = BertGluon(bert_spec(mode="train"), SMALL_SETTINGS)
    wl.setup()
    wl.step()
    assert "multi_device" not in wl.execution_details() and "trainer" not in wl.details()
