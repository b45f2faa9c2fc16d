"""What a run on a dataset reads, the same on every framework path: which VOC splits (of which
folder, or a whole ``.rec``: :func:`detection_input`), which IMDB split and its reviews
(:func:`read_reviews`), which vocabulary file. Framework-free, so the PyTorch and MXNet paths
(and the checks before a run) choose alike.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data.imdb import ImdbError, Review, read_imdb
from data.voc import DEFAULT_SPLITS, VocError, find_devkit, parse_splits

#: Split names each mode looks for in a VOC folder when the workshop's own are absent, in
#: order: training on trainval (else train), inference on VOC's test set (else val); each
#: falls back to the other's.
PREFERRED_SPLITS = {"train": ("trainval", "train"), "infer": ("test", "val")}
#: IMDB's split per mode: fine-tuning on train, inference on test (as the lab evaluated).
IMDB_SPLITS = {"train": "train", "infer": "test"}
#: What an evaluation loader does with a short last batch: keeps it (GluonCV's validation).
EVAL_LAST_BATCH = "keep"


class DataError(ValueError):
    """A dataset or vocabulary the run cannot read."""


def voc_splits(devkit: Path, mode: str) -> tuple[tuple[str, str], ...]:
    """The splits a run in ``mode`` reads from ``devkit``: for training the workshop's
    (VOC07+12 trainval) that exist, else (and for inference) the split files of
    :data:`PREFERRED_SPLITS`, in every VOC20xx folder that has them."""
    listings = {
        (folder.name, path.stem)
        for folder in devkit.glob("VOC20*")
        for path in (folder / "ImageSets" / "Main").glob("*.txt")
        if "_" not in path.stem  # class lists are <class>_<split>.txt
    }
    if mode == "train":
        workshop = tuple(s for s in parse_splits(DEFAULT_SPLITS) if s in listings)
        if workshop:
            return workshop
    other = "infer" if mode == "train" else "train"
    for name in PREFERRED_SPLITS[mode] + PREFERRED_SPLITS[other]:
        found = tuple(sorted(s for s in listings if s[1] == name))
        if found:
            return found
    names = "/".join(PREFERRED_SPLITS[mode] + PREFERRED_SPLITS[other])
    raise DataError(f"no split file ({names}.txt in VOC20xx/ImageSets/Main) under {devkit}")


def vocab_path(vocab: str | None, pretrained: str | None) -> Path:
    """The WordPiece ``vocab.txt`` of a run: ``vocab``, else the one in ``pretrained``."""
    if vocab is not None:
        path = Path(vocab)
    elif pretrained is not None:
        path = Path(pretrained) / "vocab.txt"
    else:
        raise DataError(
            "BERT on a dataset needs its WordPiece vocabulary: give vocab (--vocab FILE) or a "
            "pretrained directory holding vocab.txt"
        )
    if not path.is_file():
        raise DataError(f"no vocabulary file {path}")
    return path


def copy_vocab(vocab: str | None, pretrained: str | None, directory: Path) -> list[str]:
    """Copy a run's ``vocab.txt`` (``vocab``, else the one in ``pretrained`` when it has one)
    into ``directory``; returns the names written (none when the run had no vocabulary)."""
    source = Path(vocab) if vocab else Path(pretrained) / "vocab.txt" if pretrained else None
    if source is None or not source.is_file():
        return []
    shutil.copyfile(source, directory / "vocab.txt")
    return ["vocab.txt"]


@dataclass(frozen=True)
class DetectionInput:
    """What a detection run reads from its ``--data``: a ``.rec`` file whole (``splits``
    None), or a VOCdevkit folder's splits (:func:`voc_splits`)."""

    #: The ``.rec`` file, or the VOCdevkit folder.
    path: Path
    splits: tuple[tuple[str, str], ...] | None = None

    @property
    def splits_text(self) -> str | None:
        """The splits as ``VOC2007/trainval+VOC2012/trainval`` (None for a ``.rec``)."""
        if self.splits is None:
            return None
        return "+".join(f"{folder}/{name}" for folder, name in self.splits)

    def facts(self, dataset: str) -> dict[str, Any]:
        """``format``, the ``dataset`` class that reads it and, for VOC, the splits read."""
        if self.splits_text is None:
            return {"format": "recordio", "dataset": dataset}
        return {"format": "voc", "dataset": dataset, "splits": self.splits_text}


def detection_input(path: str, mode: str) -> DetectionInput:
    """What a detection run in ``mode`` reads from ``path``: a ``.rec`` file, or the splits of
    :func:`voc_splits` of a VOCdevkit folder."""
    source = Path(path)
    if source.suffix == ".rec":
        return DetectionInput(source)
    if not source.is_dir():
        raise DataError(f"{path}: neither a VOCdevkit folder nor a .rec file")
    try:
        devkit = find_devkit(source)
    except VocError as exc:
        raise DataError(str(exc)) from None
    return DetectionInput(devkit, voc_splits(devkit, mode))


def read_reviews(path: str, mode: str) -> tuple[str, list[Review]]:
    """The aclImdb split a run in ``mode`` reads (:data:`IMDB_SPLITS`) and its reviews, in
    :func:`data.imdb.read_imdb`'s order; refuses a split without any."""
    split = IMDB_SPLITS[mode]
    try:
        reviews = read_imdb(path, split)
    except ImdbError as exc:
        raise DataError(str(exc)) from None
    if not reviews:
        raise DataError(f"{path}: no reviews in {split}")
    return split, reviews
