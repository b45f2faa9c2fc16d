"""MXNet RecordIO files (``.rec`` + ``.idx``) in pure Python, for detection data.

The PyTorch path reads the workshop's RecordIO files with this module; no MXNet needed.

**Record framing** (dmlc-core ``RecordIOWriter``): each record is a little-endian uint32
magic ``0xced7230a``, a uint32 ``lrecord`` = ``cflag << 29 | length``, ``length`` bytes of
data and zero padding to a multiple of 4 bytes. A payload that holds the magic at a
4-aligned offset is split there into parts (``cflag`` 1 first, 2 middle, 3 last; 0 a
whole record) and the magic itself is left out; a reader puts it back between the parts.
**Index** (``MXIndexedRecordIO``): one ``key<TAB>byte offset`` line per record.

**Image records** (``mx.recordio.pack``): a 24-byte ``IRHeader`` ``<IfQQ`` = (flag, label,
id, id2). With ``flag`` = 0 the label is the float in the header; with ``flag`` = n > 0
the header's label is 0 and n float32 labels follow it. Then the encoded image.

**Detection labels** accepted (the ``im2rec`` ``--pack-label`` layout, read by GluonCV's
``RecordFileDetection``, ``mx.image.ImageDetIter`` and SageMaker's object detection
algorithm): ``[A, B, extra header..., objects...]`` where A >= 2 is the header width
(counting A and B), B >= 5 the width of one object, and each object is
``[class id, xmin, ymin, xmax, ymax, extra...]``; the length must be A + k * B with k >= 1
(GluonCV refuses fewer than one object). Coordinates are normalised to [0, 1] by the image
width and height (or absolute pixels, ``normalized=False``). Known layouts:

- A=4, B=5: ``[4, 5, width, height, cls, xmin, ymin, xmax, ymax, ...]``: GluonCV's
  custom-dataset tutorial (``write_line`` for ``im2rec``);
- A=2, B=6: ``[2, 6, cls, xmin, ymin, xmax, ymax, difficult, ...]``: MXNet's
  ``example/ssd`` VOC preparation (``prepare_dataset.py``), the tool SageMaker's object
  detection documentation points to for VOC RecordIO files;
- A=4, B=6: both extras, what :func:`write_detection_records` writes by default.

(SageMaker's ``label_width`` hyperparameter, 350 in the workshop, is the length these
labels are padded to.)

A decoded label is in GluonCV's order, ``[xmin, ymin, xmax, ymax, class id, extra...]`` in
pixels, with the same float32 arithmetic as ``RecordFileDetection`` (so equal to the bit).
With B >= 6 the first extra column is VOC's ``difficult`` flag.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, NamedTuple

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from data.voc import VocDetection

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_WORD = struct.Struct("<II")
_LENGTH_BITS = 29
_MAX_LENGTH = (1 << _LENGTH_BITS) - 1
#: ``cflag`` values: a whole record, or the first, a middle and the last part of one.
WHOLE, FIRST, MIDDLE, LAST = 0, 1, 2, 3
_IR = struct.Struct("<IfQQ")


class RecordIOError(ValueError):
    """A file or record that is not valid RecordIO, or a label that is not detection."""


def _padding(length: int) -> int:
    return -length % 4


def write_record(stream: IO[bytes], payload: bytes) -> None:
    """Append one record, split at every 4-aligned copy of the magic as dmlc-core does."""
    if len(payload) > _MAX_LENGTH:
        raise RecordIOError(f"a record holds at most {_MAX_LENGTH} bytes, not {len(payload)}")
    start = 0
    for offset in range(0, len(payload) - 3, 4):
        if payload[offset : offset + 4] == _MAGIC_BYTES:
            flag = FIRST if start == 0 else MIDDLE
            stream.write(_WORD.pack(MAGIC, flag << _LENGTH_BITS | (offset - start)))
            stream.write(payload[start:offset])
            start = offset + 4
    flag = WHOLE if start == 0 else LAST
    stream.write(_WORD.pack(MAGIC, flag << _LENGTH_BITS | (len(payload) - start)))
    stream.write(payload[start:])
    stream.write(b"\0" * _padding(len(payload)))


def read_record(stream: IO[bytes]) -> bytes | None:
    """The next record's payload, or None at the end of the file."""
    parts: list[bytes] = []
    while True:
        head = stream.read(_WORD.size)
        if not head and not parts:
            return None
        if len(head) != _WORD.size:
            raise RecordIOError("truncated RecordIO file (a record header is cut short)")
        magic, lrecord = _WORD.unpack(head)
        if magic != MAGIC:
            raise RecordIOError(f"not a RecordIO record: magic {magic:#010x}")
        flag, length = lrecord >> _LENGTH_BITS, lrecord & _MAX_LENGTH
        data = stream.read(length + _padding(length))
        if len(data) != length + _padding(length):
            raise RecordIOError("truncated RecordIO file (a record's data is cut short)")
        parts.append(data[:length])
        if flag in (WHOLE, LAST):
            return _MAGIC_BYTES.join(parts)


def idx_path_for(rec_path: Path) -> Path:
    """The index beside a record file, as MXNet and GluonCV look for it."""
    return Path(rec_path).with_suffix(".idx")


def read_index(idx_path: Path) -> dict[int, int]:
    """``key -> byte offset`` from an ``.idx`` file, in file order."""
    index: dict[int, int] = {}
    for number, line in enumerate(Path(idx_path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.strip().split("\t")
        try:
            index[int(fields[0])] = int(fields[1])
        except (ValueError, IndexError):
            raise RecordIOError(f"{idx_path}:{number}: not 'key<TAB>offset': {line!r}") from None
    return index


class RecordWriter:
    """Write a ``.rec`` and its ``.idx`` (``MXIndexedRecordIO(idx, rec, 'w')``)."""

    def __init__(self, rec_path: Path | str, idx_path: Path | str | None = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else idx_path_for(self.rec_path)
        self._rec = open(self.rec_path, "wb")  # noqa: SIM115 (closed by close())
        self._idx = open(self.idx_path, "w")  # noqa: SIM115

    def write(self, key: int, payload: bytes) -> None:
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        write_record(self._rec, payload)

    def close(self) -> None:
        self._rec.close()
        self._idx.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordReader:
    """Random access to the records of a ``.rec`` by key, through its ``.idx``.

    The file is opened on first use in each process, so a reader can be handed to
    DataLoader worker processes (it pickles without its file handle).
    """

    def __init__(self, rec_path: Path | str, idx_path: Path | str | None = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else idx_path_for(self.rec_path)
        if not self.rec_path.is_file():
            raise RecordIOError(f"no record file {self.rec_path}")
        if not self.idx_path.is_file():
            raise RecordIOError(f"no index file {self.idx_path} beside {self.rec_path}")
        self.index = read_index(self.idx_path)
        self.keys = list(self.index)
        self._file: IO[bytes] | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.keys)

    def read(self, key: int) -> bytes:
        """The record stored under ``key``."""
        if self._file is None or self._pid != os.getpid():
            self._file = open(self.rec_path, "rb")  # noqa: SIM115 (closed by close())
            self._pid = os.getpid()
        offset = self.index[key]
        self._file.seek(offset)
        try:
            record = read_record(self._file)
        except RecordIOError as exc:
            raise RecordIOError(f"{self.rec_path}: key {key} at byte {offset}: {exc}") from None
        if record is None:
            raise RecordIOError(f"{self.rec_path}: key {key} points past the end of the file")
        return record

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_file": None, "_pid": -1}


class IRHeader(NamedTuple):
    """MXNet's image record header. ``label`` is a float, or float32 labels (``flag`` > 0)."""

    flag: int
    label: float | npt.NDArray[np.float32]
    id: int
    id2: int


def pack(header: IRHeader, payload: bytes) -> bytes:
    """``mx.recordio.pack``: an array label sets ``flag`` to its length and precedes the
    payload; a scalar label sets ``flag`` to 0 and stays in the header."""
    if isinstance(header.label, np.ndarray):
        labels = np.ascontiguousarray(header.label, dtype="<f4").ravel()
        head = _IR.pack(labels.size, 0.0, header.id, header.id2)
        return head + labels.tobytes() + payload
    return _IR.pack(0, float(header.label), header.id, header.id2) + payload


def unpack(record: bytes) -> tuple[IRHeader, bytes]:
    """``mx.recordio.unpack``: the header (with its float32 labels) and the payload."""
    if len(record) < _IR.size:
        raise RecordIOError(f"a record of {len(record)} bytes has no image record header")
    flag, label, key, key2 = _IR.unpack_from(record)
    rest = record[_IR.size :]
    if flag > 0:
        if len(rest) < 4 * flag:
            raise RecordIOError(f"a record's {flag} labels are cut short")
        labels = np.frombuffer(rest, dtype="<f4", count=flag).astype(np.float32)
        return IRHeader(flag, labels, key, key2), rest[4 * flag :]
    return IRHeader(flag, label, key, key2), rest


@dataclass(frozen=True)
class DetectionLayout:
    """How a detection label is packed: header width A and object width B (see module)."""

    header_width: int = 4
    object_width: int = 6

    def __post_init__(self) -> None:
        if self.header_width not in (2, 4):
            raise RecordIOError(f"header width must be 2 or 4, not {self.header_width}")
        if self.object_width not in (5, 6):
            raise RecordIOError(f"object width must be 5 or 6, not {self.object_width}")


#: What :func:`write_detection_records` writes unless told otherwise: A=4 (with the image
#: size), B=6 (with VOC's difficult flag).
DEFAULT_LAYOUT = DetectionLayout()


def encode_label(
    label: npt.ArrayLike,
    width: int,
    height: int,
    layout: DetectionLayout = DEFAULT_LAYOUT,
) -> npt.NDArray[np.float32]:
    """A GluonCV-order pixel label ``[N, 5+]`` (``xmin, ymin, xmax, ymax, class id
    [, difficult]``) as a packed, normalised float32 detection label."""
    rows = np.atleast_2d(np.asarray(label, dtype=np.float64))
    if rows.ndim != 2 or rows.shape[0] < 1 or rows.shape[1] < 5:
        raise RecordIOError(f"a detection label needs at least one [N, 5+] row, got {rows.shape}")
    objects = np.zeros((rows.shape[0], layout.object_width), dtype=np.float64)
    objects[:, 0] = rows[:, 4]
    objects[:, 1:5] = rows[:, :4] / np.array([width, height, width, height], dtype=np.float64)
    if layout.object_width > 5:
        objects[:, 5] = rows[:, 5] if rows.shape[1] > 5 else 0.0
    header = [layout.header_width, layout.object_width]
    if layout.header_width == 4:
        header += [width, height]
    return np.concatenate([np.asarray(header, dtype=np.float64), objects.ravel()]).astype(
        np.float32
    )


def split_label(label: npt.ArrayLike) -> tuple[int, int, npt.NDArray[np.float32]]:
    """``(A, B, objects [k, B])`` of a packed detection label, checked as GluonCV checks."""
    flat = np.asarray(label, dtype=np.float32).ravel()
    if flat.size < 2:
        raise RecordIOError(f"a detection label has a header [A, B, ...], got {flat.size} values")
    header, width = int(flat[0]), int(flat[1])
    if header < 2:
        raise RecordIOError(f"header width A must be >= 2, got {header}")
    if width < 5:
        raise RecordIOError(f"label width B of each object must be >= 5, got {width}")
    if flat.size < header + 5:
        raise RecordIOError(f"expected a label of >= {header + 5} values, got {flat.size}")
    if (flat.size - header) % width:
        raise RecordIOError(
            f"a label of {flat.size} values is not A={header} + k * B={width} (broken label)"
        )
    return header, width, flat[header:].reshape(-1, width).copy()


def decode_label(
    label: npt.ArrayLike, width: int | None = None, height: int | None = None
) -> npt.NDArray[np.float32]:
    """A packed detection label -> ``[k, B]`` in GluonCV's order, ``xmin, ymin, xmax, ymax,
    class id, extra...``; coordinates multiplied by the image size when it is given
    (normalised labels), as ``gluoncv.data.RecordFileDetection`` does."""
    _, _, objects = split_label(label)
    out = objects.copy()
    out[:, :4] = objects[:, 1:5]
    out[:, 4] = objects[:, 0]
    if width is not None and height is not None:
        out[:, (0, 2)] *= np.float32(width)
        out[:, (1, 3)] *= np.float32(height)
    return out


def image_size(encoded: bytes) -> tuple[int, int]:
    """(width, height) of an encoded image, read from its header without decoding it."""
    from PIL import Image

    with Image.open(io.BytesIO(encoded)) as image:
        return image.size


class DetectionRecordFile:
    """A detection ``.rec`` read as GluonCV's ``RecordFileDetection``.

    ``dataset[i]`` is ``(image, label)``: a uint8 RGB array ``[H, W, 3]`` (decoded with
    Pillow) and the float32 label ``[k, B]`` in GluonCV's order, in pixels of the decoded
    image when ``normalized`` (the labels are fractions of the image size).
    """

    def __init__(self, rec_path: Path | str, normalized: bool = True) -> None:
        self.reader = RecordReader(rec_path)
        self.normalized = normalized

    def __len__(self) -> int:
        return len(self.reader)

    def raw(self, index: int) -> tuple[IRHeader, bytes]:
        """The ``index``-th record's header and encoded image."""
        key = self.reader.keys[index]
        try:
            return unpack(self.reader.read(key))
        except RecordIOError as exc:  # name the record by its position too, as a loader does
            rec = self.reader.rec_path
            why = str(exc).removeprefix(f"{rec}: key {key} ")
            raise RecordIOError(f"{rec}: record {index} (key {key}): {why}") from None

    def label(self, index: int) -> npt.NDArray[np.float32]:
        """The label alone (reads the image's size from its header, decodes no pixels)."""
        header, encoded = self.raw(index)
        size = image_size(encoded) if self.normalized else (None, None)
        return decode_label(_labels(header), *size)

    def __getitem__(self, index: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
        from data.voc import read_image

        header, encoded = self.raw(index)
        try:
            image = read_image(encoded)
        except (OSError, ValueError, SyntaxError) as exc:  # truncated or not an image
            where = f"{self.reader.rec_path}: record {index} (key {self.reader.keys[index]})"
            first = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise RecordIOError(f"{where}: cannot decode the image ({first})") from exc
        height, width = image.shape[:2]
        if self.normalized:
            return image, decode_label(_labels(header), width, height)
        return image, decode_label(_labels(header))


def _labels(header: IRHeader) -> npt.NDArray[np.float32]:
    if not isinstance(header.label, np.ndarray):
        raise RecordIOError(f"record {header.id} has a scalar label, not a detection label")
    return header.label


@dataclass(frozen=True)
class DetectionItem:
    """One image to pack: its encoded bytes (stored as they are), its size, and its
    GluonCV-order pixel label ``[N, 5+]``."""

    image: bytes
    width: int
    height: int
    label: npt.NDArray[np.float32]


def write_detection_records(
    rec_path: Path | str,
    items: Iterable[DetectionItem],
    layout: DetectionLayout = DEFAULT_LAYOUT,
) -> int:
    """Pack images and labels into ``rec_path`` and its ``.idx``; returns the record count.

    Record ``i`` has key ``i`` and header id ``i`` (as ``im2rec`` numbers a list); images are
    stored as given (``im2rec --pass-through``), so nothing is re-encoded. Images without an
    object are skipped: a detection label needs one (GluonCV refuses fewer).
    """
    count = 0
    with RecordWriter(rec_path) as writer:
        for item in items:
            if len(item.label) == 0:
                continue
            label = encode_label(item.label, item.width, item.height, layout)
            writer.write(count, pack(IRHeader(0, label, count, 0), item.image))
            count += 1
    return count


def voc_items(voc: VocDetection) -> Iterator[DetectionItem]:
    """The images of a VOC dataset as items to pack, with ``VOCDetection``'s boxes
    (0-based: the XML's corners minus 1) and sizes from the XML files, so that a packed
    file loads with the same boxes as the folder. (MXNet's ``example/ssd`` divides the
    XML's corners as they are: its files' boxes sit 1 pixel right of and below these.)"""
    for item, annotation in zip(voc.items, voc.annotations, strict=True):
        yield DetectionItem(
            image=item.image_path.read_bytes(),
            width=annotation.width,
            height=annotation.height,
            label=annotation.label,
        )
