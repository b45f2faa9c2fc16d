"""PyTorch runs on real dataset formats: SSD on a VOC folder and on its RecordIO packing, BERT
on an aclImdb folder, through the harness's worker on the CPU, with loader worker processes.
BERT runs a two-layer model of BERT's structure (the input pipeline is what is tested)."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
import torch

from bench.run import registry, runner
from bench.run.registry import Entry
from bench.run.worker import execute
from bench.schema.record import RunRecord
from bench.schema.spec import RunSpec
from data.loaders import EpochSampler
from data.samples import make_imdb, make_voc_record, write_vocab
from data.selection import DataError, voc_splits
from data.voc import VocDetection
from models.bert import config as bert
from models.bert.torch import BertTorch
from models.torch_data import EndlessSampler, imdb_stream, rank_shard, ssd_stream

OPTIONS = dict(progress=False, telemetry_interval_s=None)
SMALL = bert.BertShape(hidden=64, layers=2, heads=2, intermediate=128, max_positions=64)
#: Batches one run reads: 1 warm-up step and 3 timed steps.
RUN = dict(warmup=1, iters=3, batch=2, device="cpu")


class SmallBertTorch(BertTorch):
    def __init__(self, spec: RunSpec) -> None:
        super().__init__(spec, bert.BertSettings(shape=SMALL))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("datasets")
    make_voc_record(base)  # VOCdevkit/ and voc.rec (+ .idx) of its 5 trainval images
    make_imdb(base)
    write_vocab(base / "vocab.txt")
    return base


@pytest.fixture
def small_bert(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = dict(registry.REGISTRY)
    entries[("bert", "torch")] = Entry("tests.test_torch_data:SmallBertTorch")
    monkeypatch.setattr(registry, "REGISTRY", entries)


def new_processes(before: set[int]) -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.pid not in before]


def check_data(record: RunRecord, fmt: str, samples: int, workers: int) -> dict:
    assert record.ok, record.outcome
    data = record.data
    assert (data.format, data.samples, data.loader_workers) == (fmt, samples, workers)
    assert data.wait_s is not None and data.wait_s >= 0
    assert data.wait_share is not None and 0 <= data.wait_share <= 1
    assert record.timing is not None and record.timing.measured_samples == 3 * 2
    assert data.details["num_workers"] == workers and data.details["batch_size"] == 2
    assert data.details["last_batch"] == "rollover" and data.details["pin_memory"] is False
    return data.details


def test_ssd_trains_on_a_voc_folder_with_a_worker_process(root: Path) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    spec = RunSpec(
        workload="ssd",
        mode="train",
        image_size=128,
        data=str(root / "VOCdevkit"),
        loader_workers=1,
        **RUN,
    )
    record = execute(spec, **OPTIONS)
    details = check_data(record, "voc", 5, 1)
    assert details["splits"] == "VOC2007/trainval+VOC2012/trainval"
    assert details["shuffle"] is True and details["shard_samples"] == 5
    # 4 batches of 2 from 5 images: the third batch took its second image from epoch 1
    assert (details["batches_read"], details["epochs_read"]) == (4, 1.6)
    assert details["transform"].startswith("SsdTrainTransform(128, 128)")
    assert record.workload is not None and "ssd_targets" in record.workload.step_description
    assert "in the step" in record.workload.step_description
    assert record.workload.details["positive_anchors_in_batch"] is None
    assert new_processes(before) == []  # the loader's worker stopped with the run


def test_ssd_infers_on_a_record_file_in_process(root: Path) -> None:
    data = str(root / "voc.rec")
    spec = RunSpec(workload="ssd", mode="infer", image_size=128, data=data, loader_workers=0, **RUN)
    details = check_data(execute(spec, **OPTIONS), "recordio", 5, 0)
    assert details["shuffle"] is False and details["batches_read"] == 4
    assert details["transform"] == "SsdValTransform(128, 128): resize, normalize"


@pytest.mark.parametrize(("mode", "workers", "samples"), [("train", 2, 4), ("infer", 0, 2)])
def test_bert_runs_on_aclimdb(root: Path, small_bert: None, mode: str, workers: int, samples: int):
    spec = RunSpec(
        workload="bert",
        mode=mode,
        seq_len=16,
        data=str(root / "aclImdb"),
        vocab=str(root / "vocab.txt"),
        loader_workers=workers,
        **RUN,
    )
    record = execute(spec, **OPTIONS)
    details = check_data(record, "aclimdb", samples, workers)
    assert details["split"] == ("train" if mode == "train" else "test")
    assert details["vocab_size"] == 31 and details["shuffle"] is (mode == "train")
    # the step that found the attention kernel read a batch too
    assert details["batches_read"] == 5
    assert record.workload is not None
    assert record.workload.step_description.startswith("each step waits for the loader")


@pytest.mark.parametrize(
    ("vocab", "message"),
    [
        (None, "BERT on a dataset needs its WordPiece vocabulary"),
        ("missing.txt", "no vocabulary file"),
    ],
)
def test_bert_without_its_vocabulary_is_an_error_record(root, small_bert, vocab, message):
    spec = RunSpec(
        workload="bert",
        mode="train",
        seq_len=16,
        data=str(root / "aclImdb"),
        vocab=None if vocab is None else str(root / vocab),
        loader_workers=0,
        **RUN,
    )
    record = execute(spec, **OPTIONS)
    assert record.outcome.status == "error"
    assert record.outcome.message is not None and message in record.outcome.message
    assert record.timing is None


def test_an_empty_voc_split_is_an_error_record(tmp_path: Path) -> None:
    devkit = tmp_path / "VOCdevkit"
    for year in ("VOC2007", "VOC2012"):
        (devkit / year / "Annotations").mkdir(parents=True)
        (devkit / year / "ImageSets" / "Main").mkdir(parents=True)
        (devkit / year / "ImageSets" / "Main" / "trainval.txt").write_text("")
    spec = RunSpec(workload="ssd", mode="train", image_size=128, data=str(devkit), **RUN)
    record = execute(spec, **OPTIONS)
    assert record.outcome.status == "error"
    assert record.outcome.message == (
        f"DataError: {devkit}: no images (VOC2007/trainval+VOC2012/trainval)"
    )


@pytest.mark.slow
def test_two_gloo_ranks_train_ssd_on_their_shards_of_a_voc_folder(root: Path, tmp_path: Path):
    spec = RunSpec(
        workload="ssd",
        mode="train",
        image_size=128,
        data=str(root / "VOCdevkit"),
        loader_workers=1,
        gpus=2,
        **RUN,
    )
    prepared = runner.prepare(spec, gpus=[])
    record, _ = runner.run(prepared, runner.RunOptions(out_dir=tmp_path, **OPTIONS))
    assert record.ok, record.outcome
    assert [(r.rank, r.status) for r in record.ranks] == [(0, "ok"), (1, "ok")]
    assert record.timing is not None and record.timing.measured_samples == 2 * 3 * 2
    # the ranks' updates stayed in step while each read its own 3 of the 5 images
    sums = [r.distributed["parameter_sum"] for r in record.ranks]
    assert sums[0] == sums[1]
    details = record.data.details  # rank 0's
    assert (record.data.format, record.data.samples) == ("voc", 5)
    assert (details["rank"], details["shard_samples"]) == (0, 3)


# -- the loader without a model -----------------------------------------------------------------
def test_the_record_file_loads_as_the_folder_whatever_the_workers(root: Path) -> None:
    """Augmentation is keyed by (seed, epoch, index): the same batches from the folder in
    this process and from its RecordIO packing in two workers, across an epoch's end."""
    common = dict(batch_size=2, seed=3, ranks=(0, 1), pin_memory=False)
    folder = ssd_stream(str(root / "VOCdevkit"), "train", 64, workers=0, **common)
    packed = ssd_stream(str(root / "voc.rec"), "train", 64, workers=2, **common)
    try:
        for _ in range(3):
            a, b = folder.next(), packed.next()
            assert a.images.shape == (2, 3, 64, 64)
            torch.testing.assert_close(a.images, b.images, rtol=0, atol=0)
            torch.testing.assert_close(a.boxes, b.boxes, rtol=0, atol=1e-4)
            assert torch.equal(a.labels, b.labels) and torch.equal(a.difficult, b.difficult)
            assert (a.labels[:, 0] >= 0).all()  # every crop keeps a box
        assert packed.read_facts()["epochs_read"] == 1.2
    finally:
        folder.close()
        packed.close()


def test_the_sampler_rolls_over_epochs_and_ranks_split_the_indices() -> None:
    keys = iter(EndlessSampler([10, 11, 12, 13, 14], shuffle=True, seed=7))
    first = [next(keys) for _ in range(10)]
    orders = EpochSampler(5, shuffle=True, seed=7)
    expected = [(e, 10 + i) for e, i in orders] + [(e, 10 + i) for e, i in orders]
    assert first == expected and {e for e, _ in first} == {0, 1}
    plain = iter(EndlessSampler([4, 2], shuffle=False, keyed=False))
    assert [next(plain) for _ in range(5)] == [4, 2, 4, 2, 4]
    # DistributedSampler's split: wrapped round to a multiple of the ranks
    assert [rank_shard(5, r, 2) for r in (0, 1)] == [[0, 2, 4], [1, 3, 0]]
    assert [rank_shard(4, r, 3) for r in (0, 1, 2)] == [[0, 3], [1, 0], [2, 1]]
    with pytest.raises(DataError):
        rank_shard(0)


def test_each_rank_reads_its_shard(root: Path) -> None:
    common = dict(batch_size=3, workers=0, seed=0, pin_memory=False)
    streams = [
        ssd_stream(str(root / "voc.rec"), "infer", 64, ranks=(r, 2), **common) for r in (0, 1)
    ]
    source = VocDetection(root / "VOCdevkit", "2007/trainval+2012/trainval")
    try:
        for rank, stream in enumerate(streams):
            assert stream.read_facts()["shard_samples"] == 3
            batch = stream.next()
            # the validation transform keeps every box: the shard's first objects are the
            # dataset's images rank, rank + 2, rank + 4 (wrapped)
            firsts = [int(source.label(i % 5)[0, 4]) for i in (rank, rank + 2, rank + 4)]
            assert batch.labels[:, 0].tolist() == firsts
    finally:
        for stream in streams:
            stream.close()


def test_voc_splits_per_mode_and_a_vocabulary_too_large(root: Path) -> None:
    devkit = root / "VOCdevkit"
    assert voc_splits(devkit, "train") == (("VOC2007", "trainval"), ("VOC2012", "trainval"))
    assert voc_splits(devkit, "infer") == (("VOC2007", "test"),)
    with pytest.raises(DataError, match="has 31 tokens, more than the model's 30 embeddings"):
        imdb_stream(
            str(root / "aclImdb"),
            "train",
            root / "vocab.txt",
            16,
            model_vocab_size=30,
            batch_size=2,
            workers=0,
            seed=0,
            ranks=(0, 1),
            pin_memory=False,
        )
