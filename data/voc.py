"""Pascal VOC detection folders (the VOCdevkit layout), read as GluonCV's ``VOCDetection``.

Layout: ``<root>/VOC2007/{JPEGImages/<id>.jpg, Annotations/<id>.xml,
ImageSets/Main/<split>.txt}`` and the same under ``VOC2012``. ``root`` is the VOCdevkit
folder (or a folder holding one).

A label is a float32 array ``[N, 6]``: ``xmin, ymin, xmax, ymax, class id, difficult``.
As in GluonCV (``gluoncv/data/pascal_voc/detection.py``), 1 is subtracted from the 1-based
pixel coordinates of the XML files, objects of unknown classes are skipped, boxes outside
the image are skipped with a warning, and difficult objects are kept (training uses them;
the VOC07 metric ignores them).

numpy and the standard library only; :func:`read_image` imports Pillow when called.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

#: The 20 VOC classes in GluonCV's order: class id = position.
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
#: The workshop's training set: VOC07+12 trainval, 16,551 images.
DEFAULT_SPLITS = "2007/trainval+2012/trainval"
#: Columns of a label row.
LABEL_WIDTH = 6

log = logging.getLogger(__name__)


class VocError(ValueError):
    """A VOC folder or split that cannot be read."""


def parse_splits(text: str) -> tuple[tuple[str, str], ...]:
    """``"2007/trainval+2012/trainval"`` -> ``(("VOC2007", "trainval"), ("VOC2012",
    "trainval"))``. A year may also be given as its folder name (``VOC2007/test``)."""
    splits = []
    for part in text.split("+"):
        year, sep, name = part.strip().partition("/")
        if not sep or not year or not name:
            raise VocError(f"not a VOC split: {part!r} (expected YEAR/NAME, e.g. 2007/trainval)")
        folder = f"VOC{year}" if year.isdigit() else year
        splits.append((folder, name))
    return tuple(splits)


def find_devkit(path: Path) -> Path:
    """The VOCdevkit folder at or directly under ``path`` (the folder holding VOC2007/...)."""
    path = Path(path)
    if any(path.glob("VOC20*/Annotations")):
        return path
    if (path / "VOCdevkit").is_dir():
        return path / "VOCdevkit"
    raise VocError(f"no VOCdevkit layout (VOC20xx/Annotations) at {path}")


@dataclass(frozen=True)
class VocAnnotation:
    """One image's annotation: its size in pixels and its label ``[N, 6]`` (float32)."""

    width: int
    height: int
    label: npt.NDArray[np.float32]


def parse_annotation(path: Path, classes: tuple[str, ...] = VOC_CLASSES) -> VocAnnotation:
    """Read one ``Annotations/<id>.xml`` file as GluonCV's ``VOCDetection._load_label``."""
    root = ET.parse(path).getroot()
    width = float(_text(root, "size/width", path))
    height = float(_text(root, "size/height", path))
    index = {name: i for i, name in enumerate(classes)}
    rows: list[list[float]] = []
    for obj in root.iter("object"):
        name = _text(obj, "name", path).strip().lower()
        if name not in index:
            continue
        try:
            difficult = int(obj.findtext("difficult", "0"))
        except ValueError:
            difficult = 0
        xmin, ymin, xmax, ymax = (
            float(_text(obj, f"bndbox/{k}", path)) - 1 for k in ("xmin", "ymin", "xmax", "ymax")
        )
        if not (0 <= xmin < width and 0 <= ymin < height):
            log.warning("invalid box at %s: corner (%g, %g) outside the image", path, xmin, ymin)
            continue
        if not (xmin < xmax <= width and ymin < ymax <= height):
            log.warning("invalid box at %s: (%g, %g, %g, %g)", path, xmin, ymin, xmax, ymax)
            continue
        rows.append([xmin, ymin, xmax, ymax, index[name], difficult])
    label = np.asarray(rows, dtype=np.float32).reshape(-1, LABEL_WIDTH)
    return VocAnnotation(width=int(width), height=int(height), label=label)


def _text(node: ET.Element, path: str, source: Path) -> str:
    found = node.findtext(path)
    if found is None:
        raise VocError(f"{source}: no <{path}>")
    return found


@dataclass(frozen=True)
class VocItem:
    """One image of a split: its VOC20xx folder and id."""

    folder: Path
    image_id: str

    @property
    def image_path(self) -> Path:
        return self.folder / "JPEGImages" / f"{self.image_id}.jpg"

    @property
    def annotation_path(self) -> Path:
        return self.folder / "Annotations" / f"{self.image_id}.xml"


class VocDetection:
    """The images of one or more VOC splits, in split-file order, splits concatenated.

    ``dataset[i]`` is ``(image, label)``: a uint8 RGB array ``[H, W, 3]`` and the float32
    label ``[N, 6]``. Labels are parsed once, up front (GluonCV's ``preload_label``).
    """

    def __init__(
        self,
        root: Path | str,
        splits: str = DEFAULT_SPLITS,
        classes: tuple[str, ...] = VOC_CLASSES,
    ) -> None:
        self.root = find_devkit(Path(root))
        self.splits = parse_splits(splits)
        self.classes = classes
        self.items: list[VocItem] = []
        for folder, name in self.splits:
            listing = self.root / folder / "ImageSets" / "Main" / f"{name}.txt"
            if not listing.is_file():
                raise VocError(f"no split file {listing}")
            ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
            self.items += [VocItem(self.root / folder, i) for i in ids]
        self.annotations = [parse_annotation(i.annotation_path, classes) for i in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def label(self, index: int) -> npt.NDArray[np.float32]:
        return self.annotations[index].label.copy()

    def __getitem__(self, index: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
        path = self.items[index].image_path
        try:
            image = read_image(path)
        except (OSError, ValueError, SyntaxError) as exc:  # truncated or not an image
            raise VocError(f"{path}: cannot decode the image ({_first_line(exc)})") from exc
        return image, self.label(index)


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def read_image(source: Path | bytes) -> npt.NDArray[np.uint8]:
    """Decode an image file or encoded bytes to a uint8 RGB array ``[H, W, 3]``."""
    import io

    from PIL import Image

    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    with Image.open(stream) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
