"""``bench data``: its options and actions (the datasets' logic is :mod:`bench.datasets`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench import datasets
from bench.commands.exits import EXIT_FAILED_RUN, EXIT_OK


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``bench data`` and its actions."""
    p = sub.add_parser(
        "data",
        help="fetch, pack and inspect the real datasets (Pascal VOC, IMDB, BERT vocabulary)",
        description="Fetch the workshop's datasets into a cache, pack VOC into RecordIO, check "
        "an IMDB folder, and show what a dataset path holds.",
    )
    actions = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    sources = datasets.sources()
    d = actions.add_parser(
        "download",
        help="fetch and unpack a dataset (resumable, checksummed)",
        description="Download a dataset's public archives into the cache (resuming an "
        "interrupted download), check their size and digest, and unpack them. "
        + " ".join(f"{k}: {s.about}." for k, s in sources.items()),
    )
    d.add_argument("dataset", choices=sorted(sources))
    d.add_argument(
        "--cache", type=Path, default=datasets.DEFAULT_CACHE, help="default: results/cache/data"
    )
    d.add_argument("--no-unpack", action="store_true", help="keep the archives packed")
    d.add_argument(
        "--timeout", type=float, default=datasets.TIMEOUT_S, help="network timeout, seconds"
    )
    p = actions.add_parser(
        "prepare",
        help="pack VOC into RecordIO, or check an IMDB folder",
        description="voc: pack the images of VOC splits and their boxes into FILE.rec and "
        "FILE.idx (MXNet RecordIO, as GluonCV and SageMaker read it). imdb: check the aclImdb "
        "layout and count the reviews.",
    )
    p.add_argument("dataset", choices=("voc", "imdb"))
    p.add_argument("--from", dest="source", type=Path, required=True, help="the dataset folder")
    p.add_argument("--out", type=Path, help="voc: the .rec file to write")
    splits = datasets.VOC_TRAIN_SPLITS
    p.add_argument(
        "--splits", default=splits, help=f"voc: YEAR/SPLIT joined by + (default {splits})"
    )
    p.add_argument(
        "--header-width",
        type=int,
        choices=(2, 4),
        default=4,
        help="voc: label header A: 4 stores the image width and height (default), 2 does not",
    )
    p.add_argument(
        "--object-width",
        type=int,
        choices=(5, 6),
        default=6,
        help="voc: values per object B: 6 adds the difficult flag (default), 5 does not",
    )
    p = actions.add_parser(
        "info",
        help="what a dataset path holds",
        description="Describe a VOCdevkit folder, a detection .rec file, an aclImdb folder or "
        "a vocab.txt: format, images or reviews, classes.",
    )
    p.add_argument("path", type=Path)
    p = actions.add_parser(
        "verify",
        help="read every file of a dataset; list the bad ones",
        description="Read every file of a VOCdevkit folder (each annotation parsed, each image "
        "decoded), a detection .rec file (each record read and its image decoded) or an "
        "aclImdb folder (each review read), and print one line per bad file. Exit 0 when all "
        "are good, 1 when some are bad, 2 when the path is no dataset.",
    )
    p.add_argument("path", type=Path)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_data(args: argparse.Namespace) -> int:
    """One action; a :class:`bench.datasets.DataError` is the caller's to report (exit 2)."""
    if args.data_command == "download":
        print(datasets.download(args.dataset, args.cache, args.timeout, not args.no_unpack))
        return EXIT_OK
    if args.data_command == "verify":
        return _verify(args.path, progress=not args.no_progress)
    if args.data_command == "info":
        lines = datasets.describe(args.path)
    elif args.dataset == "voc":
        lines = datasets.prepare_voc(
            args.source, args.out, args.splits, args.header_width, args.object_width
        )
    else:
        lines = datasets.prepare_imdb(args.source)
    print("\n".join(lines))
    return EXIT_OK


def _verify(path: Path, progress: bool) -> int:
    """Each bad file on a line as it is found, then the count; exit 1 when some are bad."""
    checked, bad = 0, 0
    bar = tqdm(desc=f"verify {path.name}", unit="file", disable=not progress or None)
    try:
        for finding in datasets.verify_files(path):
            checked += 1
            bar.update()
            if finding is not None:
                bad += 1
                bar.write(str(finding), file=sys.stdout)
    finally:
        bar.close()
    unit = "records" if path.suffix == ".rec" else "files"
    print(f"{path}: {checked:,} {unit} checked, {bad:,} bad")
    return EXIT_FAILED_RUN if bad else EXIT_OK
