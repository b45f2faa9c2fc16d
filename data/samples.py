"""Tiny generated datasets in the real formats, for tests and smoke runs.

- :func:`make_voc`: a VOCdevkit folder (VOC2007 trainval/test, VOC2012 trainval) of small
  JPEGs with XML annotations, including a difficult object, an object of an unknown class
  and a box outside its image (both skipped by readers, as GluonCV skips them);
- :func:`make_voc_record`: the same packed as a detection RecordIO file;
- :func:`make_imdb`: an ``aclImdb`` folder with a few reviews per split and label;
- :func:`write_vocab`: a small WordPiece ``vocab.txt``.

Everything is deterministic: the same call writes the same files. numpy and Pillow only.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.recordio import DEFAULT_LAYOUT, DetectionLayout, voc_items, write_detection_records
from data.voc import VOC_CLASSES, VocDetection


@dataclass(frozen=True)
class SampleObject:
    """An annotated object in VOC's 1-based pixel coordinates, as the XML holds it."""

    name: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int
    difficult: int = 0


@dataclass(frozen=True)
class SampleImage:
    image_id: str
    width: int
    height: int
    objects: tuple[SampleObject, ...]


_O = SampleObject
#: folder -> split -> images. VOC2007 trainval has 3 images, test 1; VOC2012 trainval 2.
VOC_SAMPLE: dict[str, dict[str, tuple[SampleImage, ...]]] = {
    "VOC2007": {
        "trainval": (
            SampleImage("000005", 64, 48, (_O("dog", 8, 6, 40, 30), _O("person", 30, 10, 64, 48))),
            SampleImage(
                "000007", 48, 64, (_O("cat", 5, 5, 30, 40), _O("chair", 20, 30, 45, 60, 1))
            ),
            SampleImage(
                "000009",
                80,
                60,
                (
                    _O("car", 10, 20, 70, 55),
                    _O("unicorn", 2, 2, 20, 20),  # not a VOC class: skipped
                    _O("bicycle", 40, 10, 90, 50),  # xmax beyond the width: skipped
                ),
            ),
        ),
        "test": (
            SampleImage(
                "000001", 64, 64, (_O("bird", 12, 12, 50, 40), _O("bird", 1, 1, 10, 10, 1))
            ),
        ),
    },
    "VOC2012": {
        "trainval": (
            SampleImage(
                "2008_000002",
                72,
                56,
                (_O("aeroplane", 4, 4, 60, 40), _O("tvmonitor", 40, 30, 70, 55)),
            ),
            SampleImage("2008_000008", 56, 72, (_O("sheep", 10, 10, 50, 70),)),
        ),
    },
}


def _pixels(image: SampleImage, seed: int) -> np.ndarray:
    """A noisy gradient with each object drawn as a flat rectangle of its class's colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : image.height, 0 : image.width]
    base = np.stack([x * 255 // image.width, y * 255 // image.height, (x + y) % 256], axis=-1)
    pixels = base + rng.integers(-20, 21, base.shape)
    for obj in image.objects:
        cls = VOC_CLASSES.index(obj.name) if obj.name in VOC_CLASSES else 7
        colour = ((cls * 53) % 256, (cls * 97) % 256, (cls * 151) % 256)
        pixels[obj.ymin - 1 : obj.ymax, obj.xmin - 1 : obj.xmax] = colour
    return np.clip(pixels, 0, 255).astype(np.uint8)


def jpeg_bytes(pixels: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _annotation(folder: str, image: SampleImage) -> str:
    objects = "".join(
        f"<object><name>{o.name}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{o.difficult}</difficult><bndbox><xmin>{o.xmin}</xmin>"
        f"<ymin>{o.ymin}</ymin><xmax>{o.xmax}</xmax><ymax>{o.ymax}</ymax></bndbox></object>"
        for o in image.objects
    )
    return (
        f"<annotation><folder>{folder}</folder><filename>{image.image_id}.jpg</filename>"
        f"<size><width>{image.width}</width><height>{image.height}</height><depth>3</depth>"
        f"</size><segmented>0</segmented>{objects}</annotation>\n"
    )


def make_voc(root: Path) -> Path:
    """Write the sample VOCdevkit under ``root``; returns the VOCdevkit folder."""
    devkit = Path(root) / "VOCdevkit"
    seed = 0
    for folder, splits in VOC_SAMPLE.items():
        base = devkit / folder
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        for split, images in splits.items():
            listing = "".join(f"{image.image_id}\n" for image in images)
            (base / "ImageSets" / "Main" / f"{split}.txt").write_text(listing)
            for image in images:
                seed += 1
                jpeg = jpeg_bytes(_pixels(image, seed))
                (base / "JPEGImages" / f"{image.image_id}.jpg").write_bytes(jpeg)
                (base / "Annotations" / f"{image.image_id}.xml").write_text(
                    _annotation(folder, image)
                )
    return devkit


def make_voc_record(
    root: Path,
    splits: str = "2007/trainval+2012/trainval",
    layout: DetectionLayout = DEFAULT_LAYOUT,
    name: str = "voc.rec",
) -> Path:
    """The sample VOC (written under ``root`` if it is not there) packed as ``root/name``
    plus its ``.idx``; returns the ``.rec`` path."""
    devkit = Path(root) / "VOCdevkit"
    if not devkit.is_dir():
        make_voc(root)
    rec = Path(root) / name
    write_detection_records(rec, voc_items(VocDetection(devkit, splits)), layout)
    return rec


#: split -> label folder -> (file name, text). Ratings are in the names: 7-10 pos, 1-4 neg.
IMDB_SAMPLE: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {
    "train": {
        "pos": (
            ("10_9.txt", "A GREAT film.<br /><br />I loved it!"),
            ("2_7.txt", "Good, not great: a good movie."),
        ),
        "neg": (
            ("3_1.txt", "Bad. Unbelievable bad.<br />Not good."),
            ("0_4.txt", "This is not a good film"),
        ),
    },
    "test": {
        "pos": (("1_10.txt", "Caf\u00e9 scenes: great!"),),
        "neg": (("7_2.txt", "Bad, bad, bad."),),
    },
}


def make_imdb(root: Path) -> Path:
    """Write the sample ``aclImdb`` folder under ``root`` (with the extra files of the real
    archive that readers must ignore: ``urls_*.txt``, ``labeledBow.feat``, ``unsup/``);
    returns the ``aclImdb`` folder."""
    base = Path(root) / "aclImdb"
    for split, labels in IMDB_SAMPLE.items():
        for label, reviews in labels.items():
            folder = base / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for name, text in reviews:
                (folder / name).write_text(text, encoding="utf-8")
            (base / split / f"urls_{label}.txt").write_text("http://example.invalid/\n")
        (base / split / "labeledBow.feat").write_text("0 0:1\n")
    (base / "train" / "unsup").mkdir(exist_ok=True)
    (base / "train" / "unsup" / "0_0.txt").write_text("not labelled")
    (base / "imdb.vocab").write_text("the\n")
    return base


#: A tiny uncased WordPiece vocabulary: the special tokens at BERT's positions relative to
#: each other, punctuation, words and continuation pieces.
SAMPLE_VOCAB: tuple[str, ...] = (
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "!",
    ",",
    ".",
    "/",
    ":",
    "<",
    ">",
    "a",
    "bad",
    "br",
    "film",
    "good",
    "great",
    "i",
    "is",
    "it",
    "loved",
    "movie",
    "not",
    "this",
    "un",
    "##believ",
    "##able",
    "cafe",
    "scenes",
    "was",
)


def write_vocab(path: Path, tokens: tuple[str, ...] = SAMPLE_VOCAB) -> Path:
    """Write a ``vocab.txt`` (one token a line, id = line number from 0)."""
    path = Path(path)
    path.write_text("".join(f"{t}\n" for t in tokens), encoding="utf-8")
    return path
