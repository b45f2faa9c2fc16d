"""The IMDB sentiment dataset in the ``aclImdb`` layout of its public archive.

``aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt``: 12,500 reviews per split and label;
ratings 7-10 are positive (label 1), 1-4 negative (label 0). Other files of the archive
(``unsup/``, ``urls_*.txt``, ``labeledBow.feat``, ``imdb.vocab``) are not read.

Order is deterministic: positive reviews, then negative, each by the numeric review id
(``2_7.txt`` before ``10_9.txt``), whatever order the file system lists them in.

Text handling follows the workshop's BERT lab. It read GluonNLP's ``IMDB`` dataset
(``gluonnlp/data/sentiment.py``), which gives each review as it is with its 1-10 rating and
does no cleaning, and mapped ratings to ``1 if rating >= 5 else 0``. So by default the text
is kept as it is, HTML line breaks included; BERT's basic tokenizer then splits ``<br />``
into the tokens ``<``, ``br``, ``/``, ``>``.
``breaks="space"`` replaces each ``<br />`` (and ``<br/>``, ``<br>``) with a space instead,
the common clean-up elsewhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from data.sources import Archive, Source

SPLITS = ("train", "test")
LABELS = {"pos": 1, "neg": 0}
BREAK_MODES = ("keep", "space")
_NAME = re.compile(r"^(\d+)_(\d+)\.txt$")
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)

#: The public archive (``bench data download imdb``).
SOURCE = Source(
    (
        Archive(
            "aclImdb_v1.tar.gz",
            "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
            "md5:7c2ac02c03563afcf9b574c7e56c153a",
            84_125_825,
        ),
    ),
    "aclImdb",
    "IMDB movie reviews, 25k train / 25k test (84 MB)",
)


class ImdbError(ValueError):
    """A folder that is not in the aclImdb layout."""


@dataclass(frozen=True)
class Review:
    text: str
    label: int
    rating: int
    review_id: int


def find_root(path: Path) -> Path:
    """The ``aclImdb`` folder at or directly under ``path``."""
    path = Path(path)
    if all((path / s).is_dir() for s in SPLITS):
        return path
    if (path / "aclImdb").is_dir():
        return path / "aclImdb"
    raise ImdbError(f"no aclImdb layout ({'/, '.join(SPLITS)}/ with pos/ and neg/) at {path}")


def clean_review(text: str, breaks: str = "keep") -> str:
    """The review text as a model reads it (see the module's note on ``breaks``)."""
    if breaks == "keep":
        return text
    if breaks == "space":
        return _BREAK.sub(" ", text)
    raise ValueError(f"breaks must be one of {BREAK_MODES}, not {breaks!r}")


def review_files(root: Path, split: str) -> list[tuple[Path, int, int, int]]:
    """``(path, label, rating, review id)`` of one split, in the module's order; checks
    every name and that each rating matches its folder's label."""
    if split not in SPLITS:
        raise ImdbError(f"split must be one of {SPLITS}, not {split!r}")
    files = []
    for folder, label in LABELS.items():
        directory = Path(root) / split / folder
        if not directory.is_dir():
            raise ImdbError(f"missing folder {directory}")
        found = []
        for path in directory.iterdir():
            match = _NAME.match(path.name)
            if match is None:
                raise ImdbError(f"not a review file name (<id>_<rating>.txt): {path}")
            review_id, rating = int(match[1]), int(match[2])
            if (rating >= 5) != bool(label) or not 1 <= rating <= 10:
                raise ImdbError(f"rating {rating} does not belong in {folder}/: {path}")
            found.append((path, label, rating, review_id))
        if not found:
            raise ImdbError(f"no reviews in {directory}")
        files += sorted(found, key=lambda f: f[3])
    return files


def read_imdb(root: Path | str, split: str = "train", breaks: str = "keep") -> list[Review]:
    """Every review of ``split`` under ``root`` (an ``aclImdb`` folder or its parent)."""
    clean_review("", breaks)  # refuse a bad mode before reading anything
    return [
        Review(clean_review(path.read_text(encoding="utf-8"), breaks), label, rating, rid)
        for path, label, rating, rid in review_files(find_root(Path(root)), split)
    ]


def count_reviews(root: Path | str) -> dict[str, dict[str, int]]:
    """``{split: {"pos": n, "neg": n}}``: the layout checked, no text read."""
    base = find_root(Path(root))
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        files = review_files(base, split)
        counts[split] = {name: sum(f[1] == label for f in files) for name, label in LABELS.items()}
    return counts
