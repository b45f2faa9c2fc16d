"""What a run on a dataset reads, the same on every framework path: which VOC splits, which
IMDB split, which vocabulary file. Framework-free, so the PyTorch and MXNet paths choose alike.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from data.voc import DEFAULT_SPLITS, parse_splits

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
