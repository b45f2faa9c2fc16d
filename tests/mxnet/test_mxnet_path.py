"""The MXNet path for real, on the CPU. Runs in the MXNet environment (.venv-mxnet):
`make test` runs `.venv-mxnet/bin/python -m pytest tests/mxnet`."""

import math

import mxnet as mx
import numpy as np
import pytest

from bench.run.worker import execute
from bench.schema.spec import RunSpec
from models.bert import config as bert
from models.bert.gluon import BertGluon, uncased_vocab
from models.ssd.gluon import SsdGluon, parameter_counts

SMALL = bert.BertShape(hidden=64, layers=2, heads=2, intermediate=128, max_positions=64)
SMALL_SETTINGS = bert.BertSettings(shape=SMALL)


def ssd_spec(**kw):
    return RunSpec(
        **{
            "workload": "ssd",
            "backend": "mxnet",
            "device": "cpu",
            "batch": 2,
            "image_size": 256,
            **kw,
        }
    )


def bert_spec(**kw):
    return RunSpec(
        **{"workload": "bert", "backend": "mxnet", "device": "cpu", "batch": 8, "seq_len": 32, **kw}
    )


@pytest.fixture(autouse=True)
def _seed():
    mx.random.seed(0)
    np.random.seed(0)


def test_ssd_training_loss_falls_on_a_fixed_batch():
    # From random weights lr 0.001 with momentum oscillates at first (GluonCV starts from
    # an ImageNet backbone); 1e-4 falls steadily.
    wl = SsdGluon(ssd_spec(mode="train"), learning_rate=1e-4)
    wl.setup()
    losses = []
    for _ in range(8):
        loss = wl.step()
        losses.append(float(loss.sum().asscalar()))
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.9 * losses[0], losses


def test_ssd_inference_outputs():
    wl = SsdGluon(ssd_spec(mode="infer"))
    wl.setup()
    ids, scores, boxes = (a.asnumpy() for a in wl.step())
    assert ids.shape == (2, 100, 1) and scores.shape == (2, 100, 1) and boxes.shape == (2, 100, 4)
    kept = ids[..., 0] >= 0
    assert kept.any()
    assert ((ids[kept] >= 0) & (ids[kept] < 20)).all()
    s = scores[..., 0]
    assert ((s[kept] > 0) & (s[kept] <= 1)).all()
    for row, keep in zip(s, kept, strict=True):
        assert (np.diff(row[keep]) <= 1e-6).all()  # sorted, best first
    assert (s[~kept] == -1).all()
    # GluonCV does not clip: an untrained net's box offsets can overflow exp() to +-inf,
    # but never to NaN, and corners stay ordered.
    assert not np.isnan(boxes[kept]).any()
    assert (boxes[kept][:, 2] >= boxes[kept][:, 0]).all()


def test_ssd_structure_matches_the_pytorch_port():
    wl = SsdGluon(ssd_spec(mode="infer", image_size=512, batch=1))
    wl.setup()
    with mx.autograd.train_mode():
        cls, box, anchors = wl.net(wl.images)
    assert cls.shape == (1, 6132, 21) and box.shape == (1, 6132, 4)
    assert anchors.shape == (1, 6132, 4)
    assert parameter_counts(wl.net) == {
        "trainable": 36_468_974,
        "running_stats": 59_264,
        "anchors": 399_360,
        "total": 36_927_598,
    }


def test_bert_base_parameter_count_matches_transformers():
    model = BertGluon(bert_spec(mode="infer", batch=1))
    model.setup()
    model.step()
    assert model.details()["parameters"] == 109_483_778  # BertForSequenceClassification's
    assert len(uncased_vocab()) == 30522


def test_bert_training_loss_falls_on_a_fixed_batch():
    settings = bert.BertSettings(shape=SMALL, learning_rate=1e-3, warmup_steps=1)
    wl = BertGluon(bert_spec(mode="train"), settings)
    wl.setup()
    losses = [float(wl.step().asscalar()) for _ in range(25)]
    assert max(losses[-3:]) < 0.6 * losses[0], losses


def test_bert_inference_returns_logits_with_h2d():
    wl = BertGluon(bert_spec(mode="infer", include_h2d=True), SMALL_SETTINGS)
    wl.setup()
    logits = wl.step().asnumpy()
    assert logits.shape == (8, 2) and np.isfinite(logits).all()


def test_missing_pretrained_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="ssd_512_resnet50_v1_voc"):
        SsdGluon(ssd_spec(pretrained=str(tmp_path))).setup()
    with pytest.raises(FileNotFoundError, match="no .params file"):
        BertGluon(bert_spec(pretrained=str(tmp_path)), SMALL_SETTINGS).setup()


def test_pretrained_bert_parameters_load(tmp_path):
    saved = BertGluon(bert_spec(mode="infer"), SMALL_SETTINGS)
    saved.setup()
    saved.step()
    saved.model.save_parameters(str(tmp_path / "bert_small.params"))
    loaded = BertGluon(bert_spec(mode="infer", pretrained=str(tmp_path)), SMALL_SETTINGS)
    loaded.setup()
    np.testing.assert_allclose(loaded.step().asnumpy(), saved.step().asnumpy(), rtol=1e-5)


def test_fp16_is_refused_on_the_cpu_and_bf16_everywhere():
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        SsdGluon(ssd_spec(precision="fp16"))
    with pytest.raises(ValueError, match="no bf16"):
        SsdGluon(ssd_spec(precision="bf16"))


def test_worker_runs_the_mxnet_path_and_records_versions():
    record = execute(
        bert_spec(mode="infer", batch=1, seq_len=16, warmup=1, iters=2), progress=False
    )
    assert record.outcome.status == "ok", record.outcome
    framework = record.environment.framework
    assert framework["mxnet_version"] == "1.9.1" and framework["gluonnlp_version"] == "0.10.0"
    assert record.environment.packages["numpy"].startswith("1.")


def test_registry_entries_of_this_environment_load():
    from bench.run import registry
    from bench.run.workload import Workload

    for (_, backend), entry in registry.REGISTRY.items():
        if entry.env == "mxnet":
            assert issubclass(registry.load(entry.target), Workload), backend


def test_pipelined_mxnet_training_is_recorded_as_what_it_was():
    """GluonCV's SSD loss reads a count on the host every step (asscalar): a pipelined SSD
    run is synchronized in fact and its record says so, and why; BERT's fp32 step only
    queues work and stays pipelined."""
    from bench.run.scenarios import FixedLoop, RunContext

    ssd = SsdGluon(ssd_spec(mode="train", warmup=1, iters=1))
    assert ssd.spec.timing == "pipelined"
    ssd.setup()
    loop = FixedLoop(ssd.spec)
    loop.run(RunContext(ssd, progress=False))
    facts = loop.facts()
    assert facts.timing == "synchronized"
    assert facts.timing_reason is not None and "asscalar" in facts.timing_reason

    bert_wl = BertGluon(bert_spec(mode="train", warmup=1, iters=1), SMALL_SETTINGS)
    bert_wl.setup()
    loop = FixedLoop(bert_wl.spec)
    loop.run(RunContext(bert_wl, progress=False))
    assert (loop.facts().timing, loop.facts().timing_reason) == ("pipelined", None)
