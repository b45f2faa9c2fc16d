"""Dataset checks: a quick one before a run reads a dataset (its layout, split lists, index
and record framing; no image decoded), and a thorough one of every file in it (``bench data
verify``: every image decoded, every record and review read).

The quick check turns an empty or malformed ``--data`` into a usage error before any worker
starts; the thorough one finds the truncated image a run would only meet when it happens to
sample it. Framework-free (numpy, Pillow on demand).
"""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from data.imdb import SPLITS, ImdbError, find_root, review_files
from data.recordio import (
    _MAX_LENGTH,
    MAGIC,
    RecordIOError,
    RecordReader,
    split_label,
    unpack,
)
from data.selection import IMDB_SPLITS, DataError, detection_input
from data.voc import VocError, find_devkit, parse_annotation, parse_splits, read_image

_HEADER = struct.Struct("<II")


# -- the quick check before a run -----------------------------------------------------------
def check_detection(path: Path, mode: str) -> str:
    """A VOCdevkit folder or a ``.rec`` file a detection run in ``mode`` can read; what it
    holds, in a few words. Raises :class:`DataError` saying what is missing."""
    found = detection_input(str(path), mode)
    if found.splits is None:
        return check_record_file(found.path)
    devkit = found.path
    images = 0
    for folder, name in found.splits:
        listing = devkit / folder / "ImageSets" / "Main" / f"{name}.txt"
        ids = [x for x in listing.read_text().split() if x]
        if not ids:
            raise DataError(f"{listing}: an empty split (no image ids)")
        for kind, sub, suffix in (
            ("image", "JPEGImages", ".jpg"),
            ("annotation", "Annotations", ".xml"),
        ):
            missing = [i for i in ids if not (devkit / folder / sub / f"{i}{suffix}").is_file()]
            if missing:
                first = devkit / folder / sub / f"{missing[0]}{suffix}"
                raise DataError(
                    f"{listing}: {len(missing)} {kind} file(s) of its {len(ids)} missing, "
                    f"e.g. {first}"
                )
        images += len(ids)
    return f"{images} images in {found.splits_text}"


def check_record_file(path: Path) -> str:
    """A ``.rec`` whose index is non-empty and whose every indexed record starts with the
    RecordIO magic and fits in the file (headers only: one read per record)."""
    try:
        reader = RecordReader(path)
    except (RecordIOError, OSError) as exc:
        raise DataError(str(exc)) from None
    if not reader.keys:
        raise DataError(f"{reader.idx_path}: an empty index (no records)")
    size = path.stat().st_size
    with open(path, "rb") as stream:
        for position, key in enumerate(reader.keys):
            offset = reader.index[key]
            stream.seek(offset)
            head = stream.read(_HEADER.size)
            where = f"{path}: record {position} (key {key}, byte {offset})"
            if len(head) < _HEADER.size:
                raise DataError(f"{where}: past the end of the file (truncated?)")
            magic, lrecord = _HEADER.unpack(head)
            if magic != MAGIC:
                raise DataError(f"{where}: not a RecordIO record (magic {magic:#010x})")
            length = lrecord & _MAX_LENGTH
            if offset + _HEADER.size + length > size:
                raise DataError(f"{where}: its {length} bytes run past the end of the file")
    return f"{len(reader.keys)} records"


def check_reviews(path: Path, mode: str) -> str:
    """An ``aclImdb`` folder with reviews in the split a run in ``mode`` reads."""
    split = IMDB_SPLITS[mode]
    try:
        files = review_files(find_root(path), split)
    except ImdbError as exc:
        raise DataError(str(exc)) from None
    return f"{len(files)} reviews in {split}"


def check_detection_run(path: Path, mode: str, scenario: str) -> None:
    """SSD's ``--data`` (its ``WorkloadInfo.data_check``): a VOC folder, or a ``.rec`` file
    beside its ``.idx``, holding the split a run in ``mode`` reads."""
    if not (path.is_dir() or path.suffix == ".rec"):
        raise DataError("SSD reads a VOC folder or a RecordIO .rec file")
    if path.suffix == ".rec" and not path.with_suffix(".idx").exists():
        raise DataError(f"the RecordIO index {path.with_suffix('.idx')} is missing")
    check_detection(path, mode)


def check_reviews_run(path: Path, mode: str, scenario: str) -> None:
    """BERT's ``--data`` (its ``WorkloadInfo.data_check``): an ``aclImdb`` folder with
    reviews in the split a run in ``mode`` reads."""
    if not path.is_dir():
        raise DataError("BERT reads an aclImdb folder")
    check_reviews(path, mode)


# -- every file: bench data verify ----------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """One bad file (or record of a file) and why."""

    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


def verify(path: Path) -> Iterator[tuple[str, Finding | None]]:
    """Check every file of the dataset at ``path``: yields ``(what was checked, the
    finding or None)`` as it goes. Raises :class:`DataError` where ``path`` is no dataset."""
    if path.is_file() and path.suffix == ".rec":
        yield from _verify_records(path)
        return
    if not path.is_dir():
        raise DataError(f"{path}: not a dataset folder or .rec file")
    try:
        devkit = find_devkit(path)
    except VocError:
        devkit = None
    if devkit is not None:
        yield from _verify_voc(devkit)
        return
    try:
        root = find_root(path)
    except ImdbError:
        raise DataError(
            f"{path}: not a dataset this tool knows (VOCdevkit, aclImdb, .rec)"
        ) from None
    yield from _verify_reviews(root)


def _problem(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def _verify_voc(devkit: Path) -> Iterator[tuple[str, Finding | None]]:
    for folder in sorted(devkit.glob("VOC20*")):
        ids: set[str] = set()
        for listing in sorted((folder / "ImageSets" / "Main").glob("*.txt")):
            if "_" not in listing.stem:  # class lists are <class>_<split>.txt
                parse_splits(f"{folder.name}/{listing.stem}")
                ids.update(x for x in listing.read_text().split() if x)
        stems = ids | {p.stem for p in (folder / "JPEGImages").glob("*.jpg")}
        for image_id in sorted(stems):
            xml = folder / "Annotations" / f"{image_id}.xml"
            if image_id in ids or xml.exists():
                yield str(xml), _check_annotation(xml)
            image = folder / "JPEGImages" / f"{image_id}.jpg"
            yield str(image), _check_image(image)


def _check_annotation(path: Path) -> Finding | None:
    if not path.is_file():
        return Finding(str(path), "missing (the image is in a split list)")
    try:
        parse_annotation(path)
    except (VocError, ValueError, ET.ParseError, OSError) as exc:
        return Finding(str(path), _problem(exc))
    return None


def _check_image(path: Path) -> Finding | None:
    if not path.is_file():
        return Finding(str(path), "missing (its id is in a split list)")
    try:
        read_image(path)
    except (OSError, ValueError, SyntaxError) as exc:
        return Finding(str(path), f"cannot decode the image ({_problem(exc)})")
    return None


def _verify_records(path: Path) -> Iterator[tuple[str, Finding | None]]:
    try:
        reader = RecordReader(path)
    except (RecordIOError, OSError) as exc:
        raise DataError(str(exc)) from None
    try:
        for position, key in enumerate(reader.keys):
            where = f"{path}: record {position} (key {key})"
            try:
                header, encoded = unpack(reader.read(key))
                if isinstance(header.label, float):
                    raise RecordIOError("a scalar label, not a detection label")
                split_label(header.label)
            except (RecordIOError, OSError) as exc:
                # the reader's message names the file and key already
                yield where, Finding(where, str(exc).removeprefix(f"{path}: key {key} "))
                continue
            try:
                read_image(encoded)
            except (OSError, ValueError, SyntaxError) as exc:
                yield where, Finding(where, f"cannot decode the image ({_problem(exc)})")
            else:
                yield where, None
    finally:
        reader.close()


def _verify_reviews(root: Path) -> Iterator[tuple[str, Finding | None]]:
    for split in SPLITS:
        try:
            files = review_files(root, split)
        except ImdbError as exc:
            yield str(root / split), Finding(str(root / split), str(exc))
            continue
        for file, *_ in files:
            try:
                file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                yield str(file), Finding(str(file), _problem(exc))
            else:
                yield str(file), None
