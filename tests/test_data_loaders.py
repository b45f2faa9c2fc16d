"""PyTorch datasets, sampler and collation over the generated VOC, RecordIO and aclImdb
samples, in DataLoaders as models.torch_data builds them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data.bert_text import BertTextEncoder
from data.loaders import (
    DetectionDataset,
    EpochSampler,
    collate_detection,
    open_detection_source,
)
from data.recordio import DetectionRecordFile
from data.samples import SAMPLE_VOCAB, make_imdb, make_voc_record, write_vocab
from data.selection import read_reviews
from data.ssd_augment import SsdTrainTransform, SsdValTransform
from data.voc import VocDetection
from models.torch_data import TextCollate, review_samples

SIZE = 64


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("data")
    make_voc_record(base)
    make_imdb(base)
    write_vocab(base / "vocab.txt")
    return base


def test_validation_batches_pad_with_minus_one(root: Path) -> None:
    source = open_detection_source(root / "VOCdevkit")
    assert isinstance(source, VocDetection)
    dataset = DetectionDataset(source, SsdValTransform(SIZE, SIZE))
    batches = list(DataLoader(dataset, batch_size=3, collate_fn=collate_detection))
    assert [len(b.images) for b in batches] == [3, 2]
    first = batches[0]
    assert first.images.shape == (3, 3, SIZE, SIZE) and first.images.dtype == torch.float32
    assert first.boxes.shape == (3, 2, 4) and first.labels.dtype == torch.int64
    # image 000009 (80x60) has one object: the second row is padding
    np.testing.assert_allclose(
        first.boxes[2].numpy(),
        [[9 * 64 / 80, 19 * 64 / 60, 69 * 64 / 80, 54 * 64 / 60], [-1, -1, -1, -1]],
        rtol=1e-6,
    )
    assert first.labels.tolist() == [[11, 14], [7, 8], [6, -1]]
    assert first.difficult.tolist() == [[0, 0], [0, 1], [0, -1]]
    image, _ = dataset[0]
    np.testing.assert_array_equal(first.images[0].numpy(), image)


def test_a_record_file_loads_as_its_folder(root: Path) -> None:
    records = open_detection_source(root / "voc.rec")
    assert isinstance(records, DetectionRecordFile)
    folder = open_detection_source(root, "2007/trainval+2012/trainval")
    transform = SsdValTransform(SIZE, SIZE)
    for key in range(len(folder)):
        a = DetectionDataset(records, transform)[key]
        b = DetectionDataset(folder, transform)[key]
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_allclose(a[1], b[1], atol=1e-4)


def _epochs(dataset: DetectionDataset, workers: int) -> list[list[np.ndarray]]:
    loader = DataLoader(
        dataset,
        batch_size=2,
        sampler=EpochSampler(len(dataset), shuffle=True, seed=3),
        collate_fn=collate_detection,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    return [[b.boxes.numpy() for b in loader] for _ in range(2)]


def test_augmentation_depends_on_seed_epoch_and_index_not_on_workers(root: Path) -> None:
    dataset = DetectionDataset(VocDetection(root), SsdTrainTransform(SIZE, SIZE), seed=7)
    alone = _epochs(dataset, workers=0)
    pooled = _epochs(dataset, workers=2)  # persistent workers across both epochs
    for a, b in zip(alone, pooled, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    assert any(
        x.shape != y.shape or not np.array_equal(x, y)
        for x, y in zip(alone[0], alone[1], strict=True)
    )
    sampler = EpochSampler(5, shuffle=True, seed=3)
    first, second = list(sampler), list(sampler)
    assert {e for e, _ in first} == {0} and {e for e, _ in second} == {1}
    assert sorted(i for _, i in first) == list(range(5))


def test_fixed_object_rows() -> None:
    samples = [
        (np.zeros((3, 2, 2), np.float32), np.array([[1, 2, 3, 4, 5]], np.float32)),
        (np.ones((3, 2, 2), np.float32), np.zeros((0, 6), np.float32)),
    ]
    batch = collate_detection(samples, max_objects=3)
    assert batch.boxes.shape == (2, 3, 4)
    assert batch.labels.tolist() == [[5, -1, -1], [-1, -1, -1]]
    assert batch.difficult.tolist() == [[0, -1, -1], [-1, -1, -1]]
    with pytest.raises(ValueError, match="more than max_objects=0"):
        collate_detection(samples, max_objects=0)


def test_imdb_batches_are_tokenized(root: Path) -> None:
    ids = {t: i for i, t in enumerate(SAMPLE_VOCAB)}
    encoder = BertTextEncoder(root / "vocab.txt", seq_len=8)
    _, reviews = read_reviews(str(root), "infer")
    dataset = review_samples(reviews)
    assert [label for _, label in dataset] == [1, 0]  # the test split: pos/ then neg/
    loader = DataLoader(dataset, batch_size=2, collate_fn=TextCollate(encoder), num_workers=1)
    batches = list(loader)
    assert len(batches) == 1
    batch = batches[0]
    # "Cafe scenes: great!" and "Bad, bad, bad.": 5 and 6 word pieces
    words = [["cafe", "scenes", ":", "great", "!"], ["bad", ",", "bad", ",", "bad", "."]]
    want = [[ids["[CLS]"], *(ids[w] for w in ws), ids["[SEP]"]] for ws in words]
    want[0].append(ids["[PAD]"])
    assert batch.input_ids.tolist() == want
    assert batch.valid_length.tolist() == [7, 8]
    assert batch.labels.tolist() == [1, 0]
    assert batch.attention_mask.dtype == torch.int64
    split, train = read_reviews(str(root), "train")
    assert split == "train" and sorted(r.label for r in train) == [0, 0, 1, 1]


@pytest.mark.gpu
def test_pinned_batches_copy_to_the_gpu(root: Path) -> None:
    dataset = DetectionDataset(VocDetection(root), SsdValTransform(SIZE, SIZE))
    loader = DataLoader(
        dataset, batch_size=2, collate_fn=collate_detection, num_workers=1, pin_memory=True
    )
    batch = next(iter(loader))
    assert all(t.is_pinned() for t in batch)
    on_gpu = [t.to("cuda", non_blocking=True) for t in batch]
    torch.cuda.synchronize()
    for host, device in zip(batch, on_gpu, strict=True):
        assert torch.equal(host, device.cpu())
