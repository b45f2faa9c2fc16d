"""The workshop's real datasets: fetch, pack and inspect them (``bench data``, whose options
are in :mod:`bench.commands.data`).

- ``bench data download NAME [--cache DIR]``: the public files of a dataset some workload
  declares (``WorkloadInfo.datasets``, each a ``data.sources.Source``: Pascal VOC 2007
  trainval and test and 2012 trainval; the aclImdb archive; BERT-base uncased's
  ``vocab.txt``; SQuAD v1.1's train and dev JSON into ``squad-v1.1/``), resumable (an
  interrupted download leaves ``NAME.part``, and the next call asks the server for the rest
  with an HTTP Range request), checked against the size and digest the Source states, then
  the tar archives unpacked beside them. Offline, or with a server that cannot be reached,
  it says so and exits 2; a file whose digest does not match is removed and refused (exit 2).
- ``bench data prepare voc --from DIR --out FILE.rec``: pack VOC splits into RecordIO
  (``data.recordio``; no framework needed); ``bench data prepare imdb --from DIR``: check
  an aclImdb folder and count its reviews.
- ``bench data info PATH``: what a dataset path holds (format, images or reviews, classes).

The default cache is ``results/cache/data`` in the checkout, beside the ONNX exports in
``results/cache/onnx``: one ignored place for everything the harness fetches or derives,
found without configuration; ``--cache`` points elsewhere (a shared disk) to keep one copy
for several checkouts.

The download is our own rather than pooch's: pooch streams each file into a temporary file
that it removes when the transfer fails, and asks for no byte range, so a 2 GB VOC archive
cut off at 90% would start again from zero.

Nothing here imports numpy at module load (the CLI stays light); the commands that read
datasets import the ``data`` readers when they run.
"""

from __future__ import annotations

import hashlib
import http.client
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from bench.run import registry
from data.sources import Archive, Source

DEFAULT_CACHE = Path(__file__).resolve().parents[1] / "results" / "cache" / "data"
#: ``data.voc.DEFAULT_SPLITS`` (not imported: loading the CLI imports no numpy).
VOC_TRAIN_SPLITS = "2007/trainval+2012/trainval"
CHUNK = 1 << 20
TIMEOUT_S = 30.0


class DataError(Exception):
    """A dataset that cannot be fetched, packed or read; the message says why."""


def sources() -> dict[str, Source]:
    """Every dataset ``bench data download`` fetches: those the registry's workloads declare
    (``WorkloadInfo.datasets``), each once, in the workloads' order (voc, imdb, bert-vocab,
    squad)."""
    targets: dict[str, str] = {}
    for workload in registry.workload_names():
        for name, target in registry.workload_info(workload).datasets.items():
            if targets.setdefault(name, target) != target:
                raise TypeError(f"dataset {name!r} is declared as {targets[name]} and {target}")
    return {name: _source(target) for name, target in targets.items()}


def _source(target: str) -> Source:
    source = registry.load(target)
    if not isinstance(source, Source):
        raise TypeError(f"{target} is not a data.sources.Source")
    return source


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        while block := stream.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, archive: Archive) -> None:
    """Refuse (and remove) a file whose size or digest is not the archive's."""
    size = path.stat().st_size
    if size != archive.size:
        path.unlink()
        raise DataError(
            f"{archive.name}: {size:,} bytes where {archive.size:,} were expected; "
            "the file was removed, run the command again"
        )
    algorithm, _, expected = archive.digest.partition(":")
    actual = file_digest(path, algorithm)
    if actual != expected.lower():
        path.unlink()
        raise DataError(
            f"{archive.name}: checksum mismatch ({algorithm} {actual}, expected {expected}); "
            "the file was removed"
        )


def fetch(archive: Archive, cache: Path, timeout: float = TIMEOUT_S) -> Path:
    """The archive in ``cache``, downloaded (or its download resumed) and verified."""
    target = cache / archive.name
    if target.is_file():
        verify(target, archive)
        return target
    part = cache / f"{archive.name}.part"
    offset = part.stat().st_size if part.is_file() else 0
    if offset > archive.size:
        part.unlink()
        offset = 0
    if offset < archive.size:
        _transfer(archive, part, offset, timeout)
    verify(part, archive)
    part.replace(target)
    return target


def _transfer(archive: Archive, part: Path, offset: int, timeout: float) -> None:
    host = urllib.parse.urlsplit(archive.url).netloc or archive.url
    headers = {"User-Agent": "gpu-bench"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(archive.url, headers=headers), timeout=timeout
        )
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            return  # nothing after offset: the part is whole (verified next)
        raise DataError(f"{archive.url}: the server answered HTTP {exc.code} {exc.reason}") from (
            None
        )
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"cannot reach {host} ({reason}): no network here, or the server is down; "
            f"fetch {archive.url} another way into {part.parent / archive.name}"
        ) from None
    with response:
        part.parent.mkdir(parents=True, exist_ok=True)
        resumed = bool(offset) and response.status == 206
        if resumed and _range_start(response.headers.get("Content-Range")) != offset:
            part.unlink()
            raise DataError(
                f"{archive.url}: the server resumed at the wrong offset; the partial file was "
                "removed, run the command again"
            )
        start = offset if resumed else 0
        if offset and not resumed:
            _say(f"{archive.name}: the server cannot resume; starting again")
        received = start
        progress = tqdm(
            total=archive.size,
            initial=start,
            unit="B",
            unit_scale=True,
            desc=archive.name,
            disable=not sys.stderr.isatty(),
        )
        try:
            with open(part, "ab" if resumed else "wb") as out, progress:
                while block := response.read(CHUNK):
                    out.write(block)
                    received += len(block)
                    progress.update(len(block))
        except (OSError, http.client.HTTPException) as exc:
            raise _interrupted(archive, received, exc) from None
    if received < archive.size:
        raise _interrupted(archive, received, "the connection closed early")


def _interrupted(archive: Archive, received: int, why: object) -> DataError:
    return DataError(
        f"the download of {archive.name} stopped after {received:,} of {archive.size:,} "
        f"bytes ({str(why) or type(why).__name__}); run the command again to resume"
    )


def _range_start(content_range: str | None) -> int | None:
    """The first byte of ``Content-Range: bytes START-END/TOTAL``."""
    if not content_range or not content_range.startswith("bytes "):
        return None
    first = content_range[len("bytes ") :].split("-", 1)[0]
    return int(first) if first.isdigit() else None


def unpack(path: Path, dest: Path) -> None:
    """Unpack a tar archive into ``dest`` once (a stamp file remembers it was done)."""
    stamp = dest / f".{path.name}.unpacked"
    if stamp.exists():
        return
    _say(f"unpacking {path.name} ...")
    with tarfile.open(path) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4+: refuse links and paths out
            tar.extractall(dest, filter="data")
        else:
            tar.extractall(dest)  # the archive's digest was checked first
    stamp.touch()


# --- what the commands do (bench.commands.data gives them their options) --------------------


def download(
    dataset: str, cache: Path, timeout: float = TIMEOUT_S, unpack_archives: bool = True
) -> Path:
    """Fetch (resuming), verify and unpack ``dataset``'s archives into ``cache``; the path
    to point the readers at."""
    source = sources()[dataset]
    for archive in source.archives:
        path = fetch(archive, cache, timeout)
        _say(f"{archive.name}: {archive.size:,} bytes, {archive.digest.split(':')[0]} verified")
        if archive.unpack and unpack_archives:
            try:
                unpack(path, cache)
            except (tarfile.TarError, OSError) as exc:
                raise DataError(f"cannot unpack {path}: {exc}") from None
    return cache / source.result


def prepare_voc(
    source: Path, out: Path | None, splits: str, header_width: int, object_width: int
) -> list[str]:
    """Pack VOC ``splits`` into RecordIO ``out`` (and its index); what was written."""
    from data.recordio import (
        DetectionLayout,
        RecordIOError,
        idx_path_for,
        voc_items,
        write_detection_records,
    )
    from data.voc import VocDetection, VocError

    if out is None or out.suffix != ".rec":
        raise DataError("prepare voc needs --out FILE.rec")
    try:
        voc = VocDetection(source, splits)
        layout = DetectionLayout(header_width, object_width)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f"{out.stem}.partial.rec")
        try:
            count = write_detection_records(partial, voc_items(voc), layout)
        except BaseException:  # an unreadable image, Ctrl-C: leave no half-written file
            partial.unlink(missing_ok=True)
            idx_path_for(partial).unlink(missing_ok=True)
            raise
        partial.replace(out)
        idx_path_for(partial).replace(idx_path_for(out))
    except (VocError, RecordIOError, ET.ParseError, OSError) as exc:
        raise DataError(str(exc)) from None
    skipped = len(voc) - count
    lines = [
        f"{out}: {count:,} images ({splits}), index {idx_path_for(out).name}",
        f"label layout: A={layout.header_width} B={layout.object_width}, normalised corners",
    ]
    if skipped:
        lines.append(f"skipped {skipped} image(s) without a usable object")
    return lines


def prepare_imdb(source: Path) -> list[str]:
    """Check an aclImdb folder; its reviews counted."""
    from data.imdb import ImdbError, count_reviews, find_root

    try:
        root = find_root(source)
        counts = count_reviews(root)
    except (ImdbError, OSError) as exc:
        raise DataError(str(exc)) from None
    return [f"{root}: aclImdb layout"] + [
        f"{split}: {labels['pos']:,} positive, {labels['neg']:,} negative"
        for split, labels in counts.items()
    ]


def verify_files(path: Path) -> Iterator[object | None]:
    """Read every file of the dataset at ``path``: for each, None when good, else what is
    wrong with it."""
    if not path.exists():
        raise DataError(f"no such file or folder: {path}")
    return _findings(path)


def _findings(path: Path) -> Iterator[object | None]:
    from data.checks import verify
    from data.selection import DataError as ReaderError

    try:
        for _, finding in verify(path):
            yield finding
    except ReaderError as exc:
        raise DataError(str(exc)) from None


def describe(path: Path) -> list[str]:
    """What a dataset path holds (format, images or reviews, classes)."""
    if not path.exists():
        raise DataError(f"no such file or folder: {path}")
    if path.is_file() and path.suffix == ".rec":
        return _rec_info(path)
    if path.is_file():
        return _vocab_info(path)
    return _folder_info(path)


def _class_name(class_id: int) -> str:
    from data.voc import VOC_CLASSES

    return VOC_CLASSES[class_id] if 0 <= class_id < len(VOC_CLASSES) else f"class {class_id}"


def _class_lines(counts: Counter[int]) -> list[str]:
    return [
        f"classes: {len(counts)}",
        *(f"  {_class_name(c)}: {n:,} objects" for c, n in sorted(counts.items())),
    ]


def _rec_info(path: Path) -> list[str]:
    from data.recordio import RecordIOError, RecordReader, split_label, unpack

    try:
        reader = RecordReader(path)
        layouts: Counter[tuple[int, int]] = Counter()
        classes: Counter[int] = Counter()
        difficult = 0
        for key in reader.keys:
            header, _ = unpack(reader.read(key))
            if isinstance(header.label, float):
                raise RecordIOError(f"record {key} holds a scalar label: not detection data")
            a, b, objects = split_label(header.label)
            layouts[(a, b)] += 1
            classes.update(int(c) for c in objects[:, 0])
            if b >= 6:
                difficult += int((objects[:, 5] > 0).sum())
    except (RecordIOError, OSError) as exc:
        raise DataError(str(exc)) from None
    shapes = ", ".join(f"A={a} B={b} ({n:,})" for (a, b), n in sorted(layouts.items()))
    return [
        f"{path}: MXNet RecordIO, detection labels",
        f"images: {len(reader):,}",
        f"label layout: {shapes or 'none'}",
        f"objects: {sum(classes.values()):,} ({difficult:,} difficult)",
        *_class_lines(classes),
    ]


def _vocab_info(path: Path) -> list[str]:
    try:
        tokens = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a text file this tool knows ({exc})") from None
    specials = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t in tokens]
    if "[CLS]" not in specials or "[SEP]" not in specials:
        raise DataError(f"{path}: not a dataset this tool knows (.rec, VOCdevkit, aclImdb, vocab)")
    return [
        f"{path}: WordPiece vocabulary",
        f"tokens: {len(tokens):,}",
        f"special tokens: {' '.join(f'{t}={tokens.index(t)}' for t in specials)}",
    ]


def _folder_info(path: Path) -> list[str]:
    from data.imdb import ImdbError, count_reviews, find_root
    from data.voc import VocError, find_devkit, parse_annotation

    try:
        devkit = find_devkit(path)
    except VocError:
        devkit = None
    if devkit is not None:
        lines = [f"{devkit}: Pascal VOC (VOCdevkit layout)"]
        classes: Counter[int] = Counter()
        for folder in sorted(devkit.glob("VOC20*")):
            images = sum(1 for _ in (folder / "JPEGImages").glob("*.jpg"))
            lines.append(f"{folder.name}: {images:,} images")
            for listing in sorted((folder / "ImageSets" / "Main").glob("*.txt")):
                if "_" not in listing.stem:  # class lists are <class>_<split>.txt
                    ids = [x for x in listing.read_text().split() if x]
                    lines.append(f"  {listing.stem}: {len(ids):,} images")
            for xml in sorted((folder / "Annotations").glob("*.xml")):
                try:
                    label = parse_annotation(xml).label
                except (VocError, ValueError, ET.ParseError, OSError) as exc:
                    raise DataError(f"{xml}: {exc}") from None
                classes.update(int(c) for c in label[:, 4])
        return lines + _class_lines(classes)
    try:
        root = find_root(path)
        counts = count_reviews(root)
    except ImdbError:
        raise DataError(
            f"{path}: not a dataset this tool knows (VOCdevkit, aclImdb, .rec, vocab)"
        ) from None
    return [f"{root}: IMDB reviews (aclImdb layout)"] + [
        f"{split}: {c['pos']:,} positive, {c['neg']:,} negative" for split, c in counts.items()
    ]
