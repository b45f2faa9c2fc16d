"""Real datasets through PyTorch DataLoaders, for the PyTorch path's ``spec.data`` runs.

SSD reads a VOCdevkit folder or a detection RecordIO file
(:func:`data.loaders.open_detection_source`) as :class:`data.loaders.DetectionDataset` with
GluonCV's SSD train or validation transform (:mod:`data.ssd_augment`); BERT reads an
``aclImdb`` split (:class:`data.loaders.ImdbDataset`) and tokenizes each batch in the loader
workers (:class:`data.bert_text.BertTextEncoder`).

Batches come from a ``torch.utils.data.DataLoader`` whose sampler never ends
(:class:`EndlessSampler`): one epoch's keys follow the previous one's, so a short last batch
takes its rest from the next epoch (GluonCV's ``last_batch="rollover"``, which the MXNet path
uses), every batch is full (its images of one shape), and the workers' prefetching runs across epoch
ends instead of draining there. Each data-parallel rank reads its own shard
(:func:`rank_shard`, ``DistributedSampler``'s split).

Evaluations read the test split through :class:`EvalData` (:func:`ssd_eval_data`,
:func:`imdb_eval_data`): the inference datasets and transforms, in order, the last batch
short, at most ``max_samples`` (the first ones), as the MXNet path's ``EvalData`` does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from data.bert_text import BertTextEncoder
from data.loaders import (
    DetectionDataset,
    DetectionTensors,
    EpochSampler,
    ImdbDataset,
    Sample,
    TextTensors,
    collate_detection,
    open_detection_source,
)
from data.selection import (
    EVAL_LAST_BATCH,
    IMDB_SPLITS,
    DataError,
    voc_splits,
)
from data.ssd_augment import SsdTrainTransform, SsdValTransform
from data.voc import VocError, find_devkit

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


class BatchStream:
    """The batches of a DataLoader over an :class:`EndlessSampler`, one after another.

    The loader's iterator (and its worker processes, which start prefetching at once) is
    made here, at set-up, so that no step waits for the workers to start.
    """

    def __init__(self, loader: DataLoader[Any], facts: dict[str, Any], shard: int) -> None:
        self.loader = loader
        self.facts = facts
        self.shard = shard
        #: Batches handed out so far.
        self.batches = 0
        self._iterator: Iterator[Any] | None = iter(loader)

    def next(self) -> Any:
        if self._iterator is None:
            raise RuntimeError("the batch stream is closed")
        try:
            batch = next(self._iterator)
        except Exception as exc:
            named = worker_error(exc)
            if named is None:
                raise
            raise named from exc
        self.batches += 1
        return batch

    def read_facts(self) -> dict[str, Any]:
        """The loader's facts and how far this rank has read into its shard."""
        samples = self.batches * int(self.facts["batch_size"])
        return {
            **self.facts,
            "batches_read": self.batches,
            "epochs_read": round(samples / self.shard, 3),
        }

    def close(self) -> None:
        """Stop the worker processes now rather than when the iterator is collected."""
        iterator, self._iterator = self._iterator, None
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
    if workers < 0:
        raise ValueError(f"loader workers must be 0 or more, not {workers}")
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
    loader_facts = {
        "loader": LOADER,
        "batch_size": batch_size,
        "shuffle": train,
        "last_batch": "rollover",
        "num_workers": workers,
        "pin_memory": pin_memory,
        "rank": rank,
        "shard_samples": len(shard),
    }
    return BatchStream(loader, {**facts, **loader_facts}, len(shard))


class EvalData:
    """A test split's loader for evaluations: each iteration is one pass over its samples
    (at most ``max_samples``, the first ones), in order, the last batch short if it must be.
    The loader (and its worker processes, kept between passes) is made once and serves
    every evaluation."""

    def __init__(
        self, loader: DataLoader[Any], facts: dict[str, Any], max_samples: int | None
    ) -> None:
        self.loader = loader
        #: ``split``, ``samples`` (read per pass), ``split_samples`` and the pipeline's facts.
        self.facts = facts
        self.max_samples = max_samples

    @property
    def split(self) -> str:
        return str(self.facts["split"])

    @property
    def samples(self) -> int:
        """The samples one pass reads."""
        return int(self.facts["samples"])

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self.loader
        except Exception as exc:
            named = worker_error(exc)
            if named is None:
                raise
            raise named from exc

    def close(self) -> None:
        """Stop the persistent worker processes, if any."""
        iterator = getattr(self.loader, "_iterator", None)
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self.loader._iterator = None


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
    no shuffle, the last batch kept (:data:`EVAL_LAST_BATCH`)."""
    if workers < 0:
        raise ValueError(f"loader workers must be 0 or more, not {workers}")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"an evaluation reads at least one sample, not {max_samples}")
    samples = size if max_samples is None else min(size, max_samples)
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
    facts = {
        **facts,
        "samples": samples,
        "split_samples": size,
        "loader": LOADER,
        "batch_size": batch_size,
        "shuffle": False,
        "last_batch": EVAL_LAST_BATCH,
        "num_workers": workers,
        "pin_memory": pin_memory,
    }
    return EvalData(loader, facts, max_samples)


# -- detection ----------------------------------------------------------------------------------
def detection_source(path: str, mode: str) -> tuple[Any, dict[str, Any]]:
    """The detection images a run in ``mode`` reads from ``path`` (a ``.rec`` file whole, or
    a VOCdevkit folder's splits of :func:`voc_splits`) and their facts."""
    source_path = Path(path)
    facts: dict[str, Any]
    if source_path.suffix == ".rec":
        source: Any = open_detection_source(source_path)
        facts = {"format": "recordio", "dataset": "data.recordio.DetectionRecordFile"}
    elif source_path.is_dir():
        try:
            devkit = find_devkit(source_path)
        except VocError as exc:
            raise DataError(str(exc)) from None
        splits = voc_splits(devkit, mode)
        text = "+".join(f"{folder}/{name}" for folder, name in splits)
        source = open_detection_source(devkit, text)
        facts = {"format": "voc", "dataset": "data.voc.VocDetection", "splits": text}
    else:
        raise DataError(f"{path}: neither a VOCdevkit folder nor a .rec file")
    if len(source) == 0:
        raise DataError(f"{path}: no images ({facts.get('splits', 'empty record file')})")
    return source, facts


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
        facts["transform"] = f"SsdValTransform({image_size}, {image_size}): resize, normalize"
    facts["collate"] = "images stacked; boxes, class ids, difficult padded with -1"
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
    test or val split it has; see :func:`voc_splits`) or the whole ``.rec`` file, with the
    validation transform (images resized to the input size, their boxes with them), batches
    of :class:`DetectionTensors` (boxes, class ids, difficult flags padded with -1), the
    last one short."""
    source, facts = detection_source(path, "infer")
    facts["split"] = facts.get("splits", Path(path).name)
    facts["transform"] = f"SsdValTransform({image_size}, {image_size}): resize, normalize"
    facts["collate"] = "images stacked; boxes, class ids, difficult padded with -1"
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
    split = IMDB_SPLITS[mode]
    dataset = ImdbDataset(path, split)
    if len(dataset) == 0:
        raise DataError(f"{path}: no reviews in {split}")
    encoder = BertTextEncoder(vocab_file, seq_len)
    if len(encoder.vocab) > model_vocab_size:
        raise DataError(
            f"{vocab_file} has {len(encoder.vocab)} tokens, more than the model's "
            f"{model_vocab_size} embeddings"
        )
    train = mode == "train"
    facts = {
        "format": "aclimdb",
        "samples": len(dataset),
        "split": split,
        "labels": "1 for ratings >= 5 (pos/), 0 otherwise (neg/)",
        "vocab_size": len(encoder.vocab),
        "tokenizer": "tokenizers BertWordPieceTokenizer(lowercase=True)",
        "transform": f"[CLS] tokens [SEP] truncated and padded to {seq_len}, one segment",
    }
    return make_stream(
        dataset,
        len(dataset),
        TextCollate(encoder),
        batch_size=batch_size,
        workers=workers,
        train=train,
        seed=seed,
        keyed=False,
        ranks=ranks,
        pin_memory=pin_memory,
        facts=facts,
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
    split = IMDB_SPLITS["infer"]
    dataset = ImdbDataset(path, split)
    if len(dataset) == 0:
        raise DataError(f"{path}: no reviews in {split}")
    encoder = BertTextEncoder(vocab_file, seq_len)
    facts = {
        "format": "aclimdb",
        "split": split,
        "vocab_size": len(encoder.vocab),
        "tokenizer": "tokenizers BertWordPieceTokenizer(lowercase=True)",
        "transform": f"[CLS] tokens [SEP] truncated and padded to {seq_len}, one segment",
    }
    return make_eval_data(
        dataset,
        len(dataset),
        TextCollate(encoder),
        batch_size=batch_size,
        workers=workers,
        max_samples=max_samples,
        pin_memory=pin_memory,
        facts=facts,
    )
