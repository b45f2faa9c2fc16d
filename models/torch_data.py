"""Real datasets through PyTorch DataLoaders, for the PyTorch path's ``spec.data`` runs: what
differs from the MXNet path (:mod:`models.gluon_data`) over the scaffolding both share
(:mod:`models.data_base`: the stream and evaluation bookkeeping, the facts recorded; which
files and splits a run reads is :mod:`data.selection`'s).

SSD reads a VOCdevkit folder or a detection RecordIO file
(:func:`data.loaders.open_detection_source`) as :class:`data.loaders.DetectionDataset` with
GluonCV's SSD train or validation transform (:mod:`data.ssd_augment`); BERT reads an
``aclImdb`` split (:func:`data.selection.read_reviews`) and tokenizes each batch in the
loader workers (:class:`data.bert_text.BertTextEncoder`).

Batches come from a ``torch.utils.data.DataLoader`` whose sampler never ends
(:class:`EndlessSampler`): one epoch's keys follow the previous one's, so a short last batch
takes its rest from the next epoch (GluonCV's ``last_batch="rollover"``, which the MXNet path
uses), every batch is full (its images of one shape), and the workers' prefetching runs across
epoch ends instead of draining there. Each data-parallel rank reads its own shard
(:func:`rank_shard`, ``DistributedSampler``'s split). A loader worker's error is raised with
its own message first (:func:`worker_error`).

Evaluations read the test split through :class:`EvalData` (:func:`ssd_eval_data`,
:func:`imdb_eval_data`): the inference datasets and transforms, in order, the last batch
short, at most ``max_samples`` (the first ones), as the MXNet path's ``EvalData`` does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from data import selection
from data.bert_text import BertTextEncoder
from data.imdb import Review
from data.loaders import (
    DetectionDataset,
    DetectionTensors,
    EpochSampler,
    Sample,
    TextTensors,
    collate_detection,
    open_detection_source,
)
from data.selection import DataError
from data.ssd_augment import SsdTrainTransform, SsdValTransform
from models import data_base

LOADER = "torch.utils.data.DataLoader"


def rank_shard(size: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """The dataset indices of ``rank``: as ``DistributedSampler`` splits them, every
    ``world_size``-th from ``rank``, the list first wrapped round to a multiple of
    ``world_size`` so that every rank has as many samples."""
    if size <= 0:
        raise DataError("an empty dataset has nothing to shard")
    total = -(-size // world_size) * world_size
    return [i % size for i in range(rank, total, world_size)]


class EndlessSampler(Sampler[Any]):
    """The keys of ``indices`` epoch after epoch, without end: each epoch's order from an
    :class:`EpochSampler` (shuffled by ``(seed, epoch)`` when asked). ``keyed`` yields
    ``(epoch, index)`` (a :class:`DetectionDataset` seeds each sample's augmentation by
    it), else the index alone."""

    def __init__(
        self, indices: Sequence[int], shuffle: bool, seed: int = 0, keyed: bool = True
    ) -> None:
        if not indices:
            raise DataError("no samples to draw from")
        self.indices = list(indices)
        self.shuffle, self.seed, self.keyed = shuffle, seed, keyed

    def __iter__(self) -> Iterator[Any]:
        epochs = EpochSampler(len(self.indices), shuffle=self.shuffle, seed=self.seed)
        while True:
            for epoch, position in epochs:  # each pass starts the sampler's next epoch
                index = self.indices[position]
                yield (epoch, index) if self.keyed else index


def collate_boxes(samples: Sequence[Sample]) -> DetectionTensors:
    """:func:`collate_detection` with at least one (padding) box row: a batch whose crops
    kept no box still has a box dimension for anchor matching."""
    rows = max(1, max((len(label) for _, label in samples), default=0))
    return collate_detection(samples, rows)


class TextCollate:
    """``(text, label)`` samples -> :class:`TextTensors`, tokenized where it runs (in the
    loader workers when there are any)."""

    def __init__(self, encoder: BertTextEncoder) -> None:
        self.encoder = encoder

    def __call__(self, samples: Sequence[tuple[str, int]]) -> TextTensors:
        batch = self.encoder.encode([t for t, _ in samples], [label for _, label in samples])
        return TextTensors(
            torch.from_numpy(batch.input_ids),
            torch.from_numpy(batch.token_type_ids),
            torch.from_numpy(batch.attention_mask),
            torch.from_numpy(batch.valid_length),
            torch.from_numpy(batch.labels),
        )


def worker_error(exc: Exception) -> DataError | None:
    """A loader worker's error with its own message first. PyTorch re-raises it in the main
    process as ``Caught X in DataLoader worker process N.`` with the worker's traceback
    below, and a record keeps only the first line: the error's last line (the readers name
    the file and the record) becomes the message. None for any other error."""
    text = str(exc)
    if not (text.startswith("Caught ") and "Original Traceback" in text):
        return None
    last = [line for line in text.splitlines() if line.strip()][-1].strip()
    first = text.splitlines()[0].removeprefix("Caught ").removesuffix(".")
    return DataError(f"{last.split(': ', 1)[-1]} ({first.split(' in ', 1)[-1]})")


class BatchStream(data_base.BatchStream):
    """The batches of a DataLoader over an :class:`EndlessSampler`, one after another.

    The loader's iterator (and its worker processes, which start prefetching at once) is
    made here, at set-up, so that no step waits for the workers to start.
    """

    def __init__(self, loader: DataLoader[Any], facts: dict[str, Any], shard: int) -> None:
        super().__init__(facts)
        self.loader = loader
        self.shard = shard
        self._iterator: Iterator[Any] | None = iter(loader)

    def take(self) -> Any:
        if self._iterator is None:
            raise RuntimeError("the batch stream is closed")
        return next(self._iterator)

    def name_error(self, exc: Exception) -> Exception | None:
        return worker_error(exc)

    def progress(self) -> dict[str, Any]:
        """The batches read and the epochs of this rank's shard they make."""
        samples = self.batches * int(self.facts["batch_size"])
        return {"batches_read": self.batches, "epochs_read": round(samples / self.shard, 3)}

    def close(self) -> None:
        iterator, self._iterator = self._iterator, None
        shutdown_workers(iterator)


class EvalData(data_base.EvalData):
    """A test split's DataLoader (its worker processes persistent, kept between passes)."""

    loader: DataLoader[Any]

    def name_error(self, exc: Exception) -> Exception | None:
        return worker_error(exc)

    def close(self) -> None:
        shutdown_workers(getattr(self.loader, "_iterator", None))
        self.loader._iterator = None


def shutdown_workers(iterator: Any) -> None:
    """Stop a DataLoader iterator's worker processes now rather than when it is collected."""
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def make_stream(
    dataset: Dataset[Any],
    size: int,
    collate: Any,
    *,
    batch_size: int,
    workers: int,
    train: bool,
    seed: int,
    keyed: bool,
    ranks: tuple[int, int],
    pin_memory: bool,
    facts: dict[str, Any],
) -> BatchStream:
    """A :class:`BatchStream` of full batches over this rank's shard of ``dataset``
    (``size`` samples), shuffled each epoch when training, in order for inference."""
    rank, world_size = ranks
    shard = rank_shard(size, rank, world_size)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EndlessSampler(shard, shuffle=train, seed=seed, keyed=keyed),
        collate_fn=collate,
        num_workers=workers,
        pin_memory=pin_memory,
    )
    facts = {
        **facts,
        **data_base.loader_facts(LOADER, batch_size, train, workers, pin_memory),
        "rank": rank,
        "shard_samples": len(shard),
    }
    return BatchStream(loader, facts, len(shard))


def make_eval_data(
    dataset: Dataset[Any],
    size: int,
    collate: Any,
    *,
    batch_size: int,
    workers: int,
    max_samples: int | None,
    pin_memory: bool,
    facts: dict[str, Any],
) -> EvalData:
    """:class:`EvalData` over the first ``max_samples`` of ``dataset`` (``size`` samples):
    no shuffle, the last batch kept."""
    samples = data_base.eval_samples(size, max_samples)
    loader = DataLoader(
        Subset(dataset, range(samples)),
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
    )
    facts = data_base.eval_facts(facts, samples, size, LOADER, batch_size, workers, pin_memory)
    return EvalData(loader, facts, max_samples)


# -- detection ----------------------------------------------------------------------------------
#: How a detection batch is put together, as the facts say it.
DETECTION_COLLATE = "images stacked; boxes, class ids, difficult padded with -1"


def detection_source(path: str, mode: str) -> tuple[Any, dict[str, Any]]:
    """The detection images a run in ``mode`` reads from ``path`` (a ``.rec`` file whole, or
    a VOCdevkit folder's splits; see :func:`data.selection.detection_input`) and their
    facts."""
    found = selection.detection_input(path, mode)
    if found.splits_text is None:
        source = open_detection_source(found.path)
        facts = found.facts("data.recordio.DetectionRecordFile")
    else:
        source = open_detection_source(found.path, found.splits_text)
        facts = found.facts("data.voc.VocDetection")
    if len(source) == 0:
        raise DataError(f"{path}: no images ({found.splits_text or 'empty record file'})")
    return source, facts


def val_transform_text(image_size: int) -> str:
    return f"SsdValTransform({image_size}, {image_size}): resize, normalize"


def ssd_stream(
    path: str,
    mode: str,
    image_size: int,
    *,
    batch_size: int,
    workers: int,
    seed: int,
    ranks: tuple[int, int],
    pin_memory: bool,
) -> BatchStream:
    """SSD's loader: training with GluonCV's SSD train augmentation, shuffled; inference with
    the validation transform, in order. Batches are :class:`DetectionTensors`; the class and
    box targets are the step's to compute."""
    source, facts = detection_source(path, mode)
    train = mode == "train"
    if train:
        transform: Any = SsdTrainTransform(image_size, image_size)
        facts["transform"] = (
            f"SsdTrainTransform({image_size}, {image_size}) (GluonCV's SSDDefaultTrainTransform "
            "without anchors): colour distortion, random expansion and crop, flip, resize, "
            "normalize; augmentation seeded by (seed, epoch, index)"
        )
    else:
        transform = SsdValTransform(image_size, image_size)
        facts["transform"] = val_transform_text(image_size)
    facts["collate"] = DETECTION_COLLATE
    return make_stream(
        DetectionDataset(source, transform, seed=seed),
        len(source),
        collate_boxes,
        batch_size=batch_size,
        workers=workers,
        train=train,
        seed=seed,
        keyed=True,
        ranks=ranks,
        pin_memory=pin_memory,
        facts={**facts, "samples": len(source)},
    )


def ssd_eval_data(
    path: str,
    image_size: int,
    *,
    batch_size: int,
    workers: int,
    max_samples: int | None,
    pin_memory: bool,
) -> EvalData:
    """SSD's evaluation loader: the test split of a VOC folder (VOC2007/test, else whatever
    test or val split it has; see :func:`data.selection.voc_splits`) or the whole ``.rec``
    file, with the validation transform (images resized to the input size, their boxes with
    them), batches of :class:`DetectionTensors` (boxes, class ids, difficult flags padded
    with -1), the last one short."""
    source, facts = detection_source(path, "infer")
    facts["split"] = facts.get("splits", Path(path).name)
    facts["transform"] = val_transform_text(image_size)
    facts["collate"] = DETECTION_COLLATE
    return make_eval_data(
        DetectionDataset(source, SsdValTransform(image_size, image_size)),
        len(source),
        collate_boxes,
        batch_size=batch_size,
        workers=workers,
        max_samples=max_samples,
        pin_memory=pin_memory,
        facts=facts,
    )


# -- text ---------------------------------------------------------------------------------------
def text_pipeline(seq_len: int) -> dict[str, str]:
    """How the reviews become the model's inputs, as the facts say it."""
    return {
        "tokenizer": "tokenizers BertWordPieceTokenizer(lowercase=True)",
        "transform": f"[CLS] tokens [SEP] truncated and padded to {seq_len}, one segment",
    }


def review_samples(reviews: list[Review]) -> Dataset[tuple[str, int]]:
    """``(text, label)`` of each review: a list, which a DataLoader indexes as a map-style
    dataset."""
    return cast("Dataset[tuple[str, int]]", [(r.text, r.label) for r in reviews])


def imdb_stream(
    path: str,
    mode: str,
    vocab_file: Path,
    seq_len: int,
    *,
    model_vocab_size: int,
    batch_size: int,
    workers: int,
    seed: int,
    ranks: tuple[int, int],
    pin_memory: bool,
) -> BatchStream:
    """BERT's loader over an aclImdb split (train for training, test for inference):
    batches of :class:`TextTensors`, tokenized in the workers. Refuses a vocabulary with
    more tokens than the model's embedding has rows."""
    split, reviews = selection.read_reviews(path, mode)
    encoder = BertTextEncoder(vocab_file, seq_len)
    if len(encoder.vocab) > model_vocab_size:
        raise DataError(
            f"{vocab_file} has {len(encoder.vocab)} tokens, more than the model's "
            f"{model_vocab_size} embeddings"
        )
    return make_stream(
        review_samples(reviews),
        len(reviews),
        TextCollate(encoder),
        batch_size=batch_size,
        workers=workers,
        train=mode == "train",
        seed=seed,
        keyed=False,
        ranks=ranks,
        pin_memory=pin_memory,
        facts=data_base.imdb_facts(split, len(encoder.vocab), text_pipeline(seq_len), len(reviews)),
    )


def imdb_eval_data(
    path: str,
    vocab_file: Path,
    seq_len: int,
    *,
    batch_size: int,
    workers: int,
    max_samples: int | None,
    pin_memory: bool,
) -> EvalData:
    """BERT's evaluation loader: the aclImdb ``test`` reviews (pos/ then neg/, as
    :func:`data.imdb.read_imdb` lists them) tokenized as the training loader does, batches
    of :class:`TextTensors`, the last one short."""
    split, reviews = selection.read_reviews(path, "infer")
    encoder = BertTextEncoder(vocab_file, seq_len)
    return make_eval_data(
        review_samples(reviews),
        len(reviews),
        TextCollate(encoder),
        batch_size=batch_size,
        workers=workers,
        max_samples=max_samples,
        pin_memory=pin_memory,
        facts=data_base.imdb_facts(split, len(encoder.vocab), text_pipeline(seq_len)),
    )
