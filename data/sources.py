"""Where a real dataset comes from: the public files ``bench data download`` fetches, their
sizes and digests. Each workload names the datasets it reads in its ``WorkloadInfo.datasets``
(name -> import string of a :class:`Source`), and ``bench data download`` offers every
dataset some registered workload names.

A Source sits beside its reader where that reader imports no numpy (``data.imdb:SOURCE``);
the CLI loads every Source to write its help, and loading the CLI imports no numpy. The VOC,
SQuAD and WordPiece readers do, so their Sources are here. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Archive:
    """One file to fetch: where from, its size in bytes and its digest (``md5:HEX`` or
    ``sha256:HEX``: the digests their publishers and common loaders state), and whether
    it is a tar archive to unpack."""

    name: str
    url: str
    digest: str
    size: int
    unpack: bool = True


@dataclass(frozen=True)
class Source:
    archives: tuple[Archive, ...]
    #: What to point the readers at once fetched, relative to the cache.
    result: str
    about: str


_VOC = "https://thor.robots.ox.ac.uk/pascal/VOC"
_SQUAD = "https://rajpurkar.github.io/SQuAD-explorer/dataset"

#: Pascal VOC, read by ``data.voc`` (SSD). MD5 digests as torchvision's VOC dataset states
#: them; sizes as the server reports.
VOC = Source(
    (
        Archive(
            "VOCtrainval_06-Nov-2007.tar",
            f"{_VOC}/voc2007/VOCtrainval_06-Nov-2007.tar",
            "md5:c52e279531787c972589f7e41ab4ae64",
            460_032_000,
        ),
        Archive(
            "VOCtest_06-Nov-2007.tar",
            f"{_VOC}/voc2007/VOCtest_06-Nov-2007.tar",
            "md5:b6e924de25625d8de591ea690078ad9f",
            451_020_800,
        ),
        Archive(
            "VOCtrainval_11-May-2012.tar",
            f"{_VOC}/voc2012/VOCtrainval_11-May-2012.tar",
            "md5:6cd6e144f989b92b3379bac3b3de84fd",
            1_999_639_040,
        ),
    ),
    "VOCdevkit",
    "Pascal VOC 2007 trainval+test and 2012 trainval (2.9 GB)",
)

#: The WordPiece vocabulary ``data.bert_text`` and ``data.squad`` tokenize with (BERT and
#: BERT question answering).
BERT_VOCAB = Source(
    (
        Archive(
            "bert-base-uncased-vocab.txt",
            "https://huggingface.co/bert-base-uncased/resolve/main/vocab.txt",
            "sha256:07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            231_508,
            unpack=False,
        ),
    ),
    "bert-base-uncased-vocab.txt",
    "BERT-base uncased WordPiece vocabulary, 30,522 tokens",
)

#: SQuAD v1.1, read by ``data.squad`` (BERT question answering). SHA-256 digests and sizes
#: of the files the SQuAD site serves; both into one folder, which bert-qa's --data takes.
SQUAD = Source(
    tuple(
        Archive(f"squad-v1.1/{name}", f"{_SQUAD}/{name}", digest, size, unpack=False)
        for name, digest, size in (
            (
                "train-v1.1.json",
                "sha256:3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955",
                30_288_272,
            ),
            (
                "dev-v1.1.json",
                "sha256:95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9",
                4_854_279,
            ),
        )
    ),
    "squad-v1.1",
    "SQuAD v1.1 train and dev questions (35 MB)",
)
