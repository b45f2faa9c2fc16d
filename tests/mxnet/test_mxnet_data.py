"""The MXNet path on real-format datasets (``spec.data``): GluonCV's and GluonNLP's own input
pipelines over tiny generated VOC folders, RecordIO files and aclImdb folders, trained and run
through the harness on the CPU, with and without loader worker processes and on two contexts.
Runs in the MXNet environment (.venv-mxnet)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mxnet as mx
import numpy as np
import pytest
from gluoncv.data.transforms.presets.ssd import SSDDefaultValTransform

from bench.run import registry
from bench.run.worker import execute
from bench.schema.record import RunRecord
from bench.schema.spec import RunSpec
from data.samples import make_imdb, make_voc, make_voc_record, write_vocab
from data.selection import voc_splits, vocab_path
from models import gluon_data
from models.bert import config as bert
from models.bert.gluon import BertGluon
from models.gluon_data import DataError
from models.mxnet_common import MxnetWorkload
from models.ssd.gluon import SsdGluon

SMALL = bert.BertShape(hidden=64, layers=2, heads=2, intermediate=128, max_positions=64)
SMALL_SETTINGS = bert.BertSettings(shape=SMALL)
WARMUP, ITERS = 1, 3
IMAGE_SIZE = 128
SEQ_LEN = 16
#: Images of the sample VOC07+12 trainval (3 + 2) and VOC07 test; reviews per IMDB split.
VOC_TRAINVAL, VOC_TEST, IMDB_SPLIT = 5, 1, {"train": 4, "test": 2}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("datasets")
    return {
        "voc": make_voc(root),
        "rec": make_voc_record(root),
        "imdb": make_imdb(root),
        "vocab": write_vocab(root / "vocab.txt"),
    }


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[MxnetWorkload]:
    """The workloads the harness makes, each keeping its steps' outputs; BERT in a small
    shape (the registry makes BERT base)."""
    made: list[MxnetWorkload] = []
    classes: dict[type, type] = {}

    def recording(base: type) -> type:
        class Recording(base):  # type: ignore[misc, valid-type]
            def __init__(self, spec: RunSpec) -> None:
                if base is BertGluon:
                    super().__init__(spec, SMALL_SETTINGS)
                else:
                    super().__init__(spec)
                self.outputs: list[Any] = []
                made.append(self)

            def step(self) -> Any:
                out = super().step()
                self.outputs.append(out)
                return out

        return Recording

    original: Callable[[registry.Entry], type] = registry.workload_class

    def workload_class(entry: registry.Entry) -> type:
        base = original(entry)
        return classes.setdefault(base, recording(base))

    monkeypatch.setattr(registry, "workload_class", workload_class)
    return made


def run(workload: str, mode: str = "train", **kw: Any) -> RunRecord:
    spec = RunSpec(
        workload=workload,
        backend="mxnet",
        mode=mode,
        device="cpu",
        batch=2,
        image_size=IMAGE_SIZE,
        seq_len=SEQ_LEN,
        warmup=WARMUP,
        iters=ITERS,
        **kw,
    )
    return execute(spec, progress=False, telemetry_interval_s=None)


def per_context(out: Any) -> list[np.ndarray]:
    return [x.asnumpy() for x in (out if isinstance(out, list) else [out])]


def check_data_section(record: RunRecord, wl: MxnetWorkload, fmt: str, samples: int) -> None:
    """The record's data section, from the waits the workload timed in every step."""
    assert record.outcome.status == "ok", record.outcome
    data = record.data
    assert (data.format, data.samples) == (fmt, samples)
    assert data.loader_workers == wl.spec.loader_workers
    assert data.details["num_workers"] == wl.spec.loader_workers
    assert data.details["batch_size"] == wl.global_batch
    assert data.details["last_batch"] == "rollover"
    assert len(wl.data_wait_s) == WARMUP + ITERS
    assert all(w >= 0 for w in wl.data_wait_s)
    assert data.wait_s == pytest.approx(sum(wl.data_wait_s[-ITERS:]), rel=1e-12)
    assert data.wait_s is not None and data.wait_s >= 0
    assert data.wait_share is not None and 0 <= data.wait_share <= 1
    assert data.wait_share == pytest.approx(data.wait_s / record.timing.window_s)


# -- SSD ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("source", "fmt", "workers"), [("voc", "voc", 0), ("rec", "recordio", 1)])
def test_ssd_trains_on_a_dataset_through_the_harness(
    datasets: dict[str, Path], made: list[MxnetWorkload], source: str, fmt: str, workers: int
) -> None:
    record = run("ssd", data=str(datasets[source]), loader_workers=workers)
    (wl,) = made
    check_data_section(record, wl, fmt, VOC_TRAINVAL)
    assert record.data.source == str(datasets[source])
    if fmt == "voc":
        assert record.data.details["splits"] == "VOC2007/trainval+VOC2012/trainval"
        assert record.data.details["dataset"] == "gluoncv.data.VOCDetection"
    else:
        assert record.data.details["dataset"] == "gluoncv.data.RecordFileDetection"
    assert record.data.details["shuffle"] is True
    assert "SSDDefaultTrainTransform(128, 128, anchors)" in record.data.details["transform"]
    # 4 batches of 2 from 5 images: the second epoch starts with the first one's leftover
    assert record.data.details["epochs_started"] == 2
    assert record.workload.step_description == SsdGluon.data_step_description
    assert len(wl.outputs) == WARMUP + ITERS
    for out in wl.outputs:  # GluonCV's per-sample loss
        (loss,) = per_context(out)
        assert loss.shape == (2,) and np.isfinite(loss).all() and (loss > 0).all()


def test_ssd_trains_on_two_contexts_from_a_loader(
    datasets: dict[str, Path], made: list[MxnetWorkload]
) -> None:
    record = run("ssd", data=str(datasets["voc"]), loader_workers=1, gpus=2)
    (wl,) = made
    check_data_section(record, wl, "voc", VOC_TRAINVAL)
    assert record.workload.samples_per_step == 4 and record.data.details["batch_size"] == 4
    assert record.execution.details["multi_device"]["contexts"] == ["cpu(0)", "cpu(1)"]
    assert record.workload.details["trainer"] == {"kvstore": "device", "update_on_kvstore": True}
    for out in wl.outputs:  # each context's half of the loaded batch
        losses = per_context(out)
        assert [x.shape for x in losses] == [(2,), (2,)]
        assert all(np.isfinite(x).all() and (x > 0).all() for x in losses)
    for param in wl.net.collect_params().values():
        if param.grad_req != "null":
            first, second = (d.asnumpy() for d in param.list_data())
            np.testing.assert_array_equal(first, second, err_msg=param.name)


def test_ssd_inference_reads_the_voc07_test_split(
    datasets: dict[str, Path], made: list[MxnetWorkload]
) -> None:
    record = run("ssd", "infer", data=str(datasets["voc"]), loader_workers=1)
    (wl,) = made
    check_data_section(record, wl, "voc", VOC_TEST)
    details = record.data.details
    assert details["splits"] == "VOC2007/test" and details["shuffle"] is False
    assert details["transform"] == "gluoncv SSDDefaultValTransform(128, 128)"
    # one image, batches of two: every batch takes two epochs (rollover)
    assert details["epochs_started"] == 2 * (WARMUP + ITERS)
    ids, scores, boxes = wl.outputs[-1]
    assert ids.shape == (2, 100, 1) and scores.shape == (2, 100, 1) and boxes.shape == (2, 100, 4)


def test_the_ssd_loaders_batches_are_gluoncvs_transforms(datasets: dict[str, Path]) -> None:
    """Validation batches hold SSDDefaultValTransform's images in file order; training
    batches hold a target per anchor of the network."""
    rec = str(datasets["rec"])
    dataset, facts = gluon_data.detection_dataset(rec, "infer")
    assert facts == {
        "format": "recordio",
        "dataset": "gluoncv.data.RecordFileDetection",
        "samples": VOC_TRAINVAL,
    }
    stream = gluon_data.ssd_stream(rec, "infer", 64, batch_size=2, workers=0)
    images, labels = stream.next()
    expected = [SSDDefaultValTransform(64, 64)(*dataset[i]) for i in range(2)]
    np.testing.assert_allclose(
        images.asnumpy(), np.stack([e[0].asnumpy() for e in expected]), rtol=0, atol=1e-6
    )
    # labels padded with -1 to the batch's largest object count (2 and 2 objects)
    np.testing.assert_allclose(labels[0].asnumpy(), expected[0][1], atol=1e-4)
    assert labels.shape == (2, 2, 6)

    anchors = mx.nd.zeros((1, 7, 4))
    anchors[0, :, 2:] = 1.0  # seven whole-image boxes (corners, fractions of the image)
    train = gluon_data.ssd_stream(rec, "train", 64, batch_size=2, workers=0, anchors=anchors)
    images, cls_targets, box_targets = train.next()
    assert images.shape == (2, 3, 64, 64)
    assert cls_targets.shape == (2, 7) and box_targets.shape == (2, 7, 4)
    targets = cls_targets.asnumpy()
    # 0 background or class id + 1; bipartite matching gives every object its own anchor
    assert np.array_equal(targets, np.round(targets)) and targets.min() >= 0
    assert targets.max() <= 20 and ((targets > 0).sum(axis=1) >= 1).all()
    with pytest.raises(ValueError, match="anchors"):
        gluon_data.ssd_stream(rec, "train", 64, batch_size=2, workers=0)


# -- BERT ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [0, 1])
def test_bert_trains_on_imdb_through_the_harness(
    datasets: dict[str, Path], made: list[MxnetWorkload], workers: int
) -> None:
    record = run(
        "bert", data=str(datasets["imdb"]), vocab=str(datasets["vocab"]), loader_workers=workers
    )
    (wl,) = made
    check_data_section(record, wl, "aclimdb", IMDB_SPLIT["train"])
    details = record.data.details
    assert details["split"] == "train" and details["vocab_size"] == 31
    assert details["transform"] == (
        "gluonnlp BERTSentenceTransform(max_seq_length=16, pad=True, pair=False)"
    )
    assert record.workload.step_description == BertGluon.data_step_description
    # the embedding table is the vocabulary's
    assert wl.model.bert.word_embed[0].weight.shape == (31, SMALL.hidden)
    # two classes from near-zero logits: the first mean loss is about ln 2
    (first,) = per_context(wl.outputs[0])
    assert float(first) == pytest.approx(math.log(2), abs=0.1)
    assert all(np.isfinite(per_context(out)[0]).all() for out in wl.outputs)


def test_bert_trains_on_two_contexts_from_a_loader(
    datasets: dict[str, Path], made: list[MxnetWorkload]
) -> None:
    record = run(
        "bert",
        data=str(datasets["imdb"]),
        vocab=str(datasets["vocab"]),
        loader_workers=1,
        gpus=2,
    )
    (wl,) = made
    check_data_section(record, wl, "aclimdb", IMDB_SPLIT["train"])
    assert record.workload.samples_per_step == 4
    shares = per_context(wl.outputs[0])
    assert len(shares) == 2  # each context's share of the global batch's mean loss
    assert sum(float(s) for s in shares) == pytest.approx(math.log(2), abs=0.1)


def test_the_bert_loader_tokenizes_the_test_split_in_order(datasets: dict[str, Path]) -> None:
    stream, vocab = gluon_data.imdb_stream(
        str(datasets["imdb"]), "infer", datasets["vocab"], 12, batch_size=2, workers=1
    )
    try:
        ids, types, valid, labels = stream.next()
    finally:
        stream.close()
    assert stream.facts["split"] == "test" and stream.facts["samples"] == IMDB_SPLIT["test"]
    assert len(vocab) == 31 and vocab.padding_token == "[PAD]"
    # "Café scenes: great!" (pos/1_10.txt), then "Bad, bad, bad." (neg/7_2.txt)
    tokens = [
        ["[CLS]", "cafe", "scenes", ":", "great", "!", "[SEP]"],
        ["[CLS]", "bad", ",", "bad", ",", "bad", ".", "[SEP]"],
    ]
    expected = [vocab[t] + [0] * (12 - len(t)) for t in tokens]
    assert ids.dtype == np.float32 and ids.asnumpy().tolist() == expected
    assert types.asnumpy().tolist() == [[0] * 12] * 2
    assert valid.asnumpy().tolist() == [7, 8] and labels.asnumpy().tolist() == [1, 0]


# -- what is refused ----------------------------------------------------------------------------
def test_voc_splits_follow_the_workshop_then_whatever_the_folder_has(tmp_path: Path) -> None:
    devkit = make_voc(tmp_path)
    assert voc_splits(devkit, "train") == (
        ("VOC2007", "trainval"),
        ("VOC2012", "trainval"),
    )
    assert voc_splits(devkit, "infer") == (("VOC2007", "test"),)
    main07 = devkit / "VOC2007" / "ImageSets" / "Main"
    (main07 / "trainval.txt").unlink()
    (main07 / "test.txt").rename(main07 / "val.txt")
    (main07 / "dog_trainval.txt").write_text("000005  1\n")  # a class list: not a split
    assert voc_splits(devkit, "train") == (("VOC2012", "trainval"),)
    assert voc_splits(devkit, "infer") == (("VOC2007", "val"),)
    (devkit / "VOC2012" / "ImageSets" / "Main" / "trainval.txt").unlink()
    assert voc_splits(devkit, "train") == (("VOC2007", "val"),)
    (main07 / "val.txt").unlink()
    with pytest.raises(DataError, match="no split file"):
        voc_splits(devkit, "infer")


def test_datasets_without_samples_and_missing_files_are_refused(tmp_path: Path) -> None:
    devkit = make_voc(tmp_path / "empty")
    for listing in devkit.glob("VOC20*/ImageSets/Main/*.txt"):
        listing.write_text("")
    with pytest.raises(DataError, match=r"no images \(VOC2007/trainval\+VOC2012/trainval\)"):
        gluon_data.detection_dataset(str(devkit), "train")
    rec = make_voc_record(tmp_path / "rec")
    rec.with_suffix(".idx").unlink()
    with pytest.raises(DataError, match=r"no index file .*voc\.idx beside"):
        gluon_data.detection_dataset(str(rec), "train")
    with pytest.raises(DataError, match="no dataset at"):
        gluon_data.detection_dataset(str(tmp_path / "missing.rec"), "train")
    imdb = make_imdb(tmp_path / "text")
    with pytest.raises(DataError, match="no VOCdevkit layout"):
        gluon_data.detection_dataset(str(imdb), "train")
    vocab = write_vocab(tmp_path / "vocab.txt")
    for review in (imdb / "train" / "neg").iterdir():
        review.unlink()
    with pytest.raises(DataError, match=r"no reviews in .*neg"):
        gluon_data.imdb_stream(str(imdb), "train", vocab, 16, batch_size=2, workers=0)
    with pytest.raises(DataError, match="give vocab .--vocab FILE. or a pretrained directory"):
        vocab_path(None, None)
    with pytest.raises(DataError, match=r"no vocabulary file .*vocab\.txt"):
        vocab_path(None, str(tmp_path / "model"))
    assert vocab_path(None, str(tmp_path)) == vocab
    write_vocab(tmp_path / "bad.txt", ("[PAD]", "[CLS]", "[SEP]", "word"))
    with pytest.raises(DataError, match=r"lacks the special tokens \[UNK\], \[MASK\]"):
        gluon_data.bert_vocab(tmp_path / "bad.txt")


def test_a_refused_dataset_is_the_runs_one_line_error(
    datasets: dict[str, Path], tmp_path: Path
) -> None:
    record = run("bert", data=str(datasets["imdb"]), vocab=str(tmp_path / "none.txt"))
    assert record.outcome.status == "error"
    assert record.outcome.message == f"DataError: no vocabulary file {tmp_path / 'none.txt'}"
    assert record.data.format is None  # no data section for a run that did not run
