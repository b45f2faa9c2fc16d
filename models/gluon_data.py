"""Real datasets through Gluon's own input pipelines, for the MXNet path's ``spec.data`` runs.

SSD reads a VOCdevkit folder with ``gluoncv.data.VOCDetection`` or a detection RecordIO file
with ``gluoncv.data.RecordFileDetection``, transformed by GluonCV's SSD presets (training:
``SSDDefaultTrainTransform`` with the network's anchors, so the loader workers compute the
class and box targets), as GluonCV's ``scripts/detection/ssd/train_ssd.py`` does. BERT reads
an ``aclImdb`` folder (:mod:`data.imdb`) and tokenizes it in the workers with GluonNLP's
``BERTTokenizer`` and ``BERTSentenceTransform`` over a ``BERTVocab`` from a ``vocab.txt``.

Either way a ``gluon.data.DataLoader`` with ``num_workers`` worker processes batches the
samples, and :class:`BatchStream` hands its batches out endlessly, a new epoch after each.

Evaluations read the test split through :class:`EvalData`: the same datasets and transforms
(SSD's ``SSDDefaultValTransform``), in order, the last short batch kept, as GluonCV's
validation loaders do, so that every test sample is scored once.
"""

from __future__ import annotations

# isort: off
import models.mxnet_env  # noqa: F401 - first: sets OMP_NUM_THREADS before MXNet loads
# isort: on

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mxnet as mx
import numpy as np
from mxnet import gluon

from data.imdb import ImdbError, read_imdb
from data.recordio import idx_path_for
from data.selection import (
    EVAL_LAST_BATCH,
    IMDB_SPLITS,
    DataError,
    voc_splits,
)
from data.voc import VocError, find_devkit

#: What every loader here keeps its last, short batch for (GluonCV's choice for training):
#: it starts the next epoch, so that every batch is full and shapes never change.
LAST_BATCH = "rollover"


class BatchStream:
    """Batches of a DataLoader without end: when an epoch ends the next one starts.

    ``next()`` returns once every array of the batch is ready: a batch from a worker
    process arrives complete, one made in this process (no workers) holds operators that
    MXNet's engine may still be running, and they count as loading time. (On a CPU run
    those operators share the engine's CPU workers with the steps' own, so there an
    in-process wait may include compute queued before it.)
    """

    def __init__(self, loader: gluon.data.DataLoader, facts: dict[str, Any]) -> None:
        self.loader = loader
        self.facts = facts
        #: Epochs begun, the first included.
        self.epochs = 0
        self._batches: Iterator[Any] | None = None

    def next(self) -> tuple[mx.nd.NDArray, ...]:
        while True:
            if self._batches is None:
                self._batches = iter(self.loader)
                self.epochs += 1
            try:
                batch = next(self._batches)
                break
            except StopIteration:
                # with rollover, an epoch smaller than a batch yields none and hands its
                # samples to the next; the loop ends because the dataset is not empty
                self._batches = None
        arrays = tuple(batch)
        for array in arrays:
            array.wait_to_read()
        return arrays

    def close(self) -> None:
        """Stop the worker processes (Gluon's loader leaves that to its ``__del__``)."""
        close_loader(self.loader)


class EvalData:
    """A test split's loader for evaluations: each iteration is one pass over its samples
    (at most ``max_samples``, the first ones), in order, the last batch short if it must be.
    The loader and its worker processes are made once and serve every evaluation."""

    def __init__(
        self, loader: gluon.data.DataLoader, facts: dict[str, Any], max_samples: int | None
    ) -> None:
        self.loader = loader
        #: ``split``, ``samples`` (read per pass), ``split_samples`` and the pipeline's facts.
        self.facts = facts
        self.max_samples = max_samples

    @property
    def split(self) -> str:
        return str(self.facts["split"])

    def __iter__(self) -> Iterator[tuple[mx.nd.NDArray, ...]]:
        for batch in self.loader:
            yield tuple(batch)

    def close(self) -> None:
        """Stop the worker processes."""
        close_loader(self.loader)


def close_loader(loader: gluon.data.DataLoader) -> None:
    """Stop ``loader``'s worker processes, if it has any (Gluon leaves that to ``__del__``)."""
    pool = getattr(loader, "_worker_pool", None)
    if pool is not None:
        pool.terminate()
        pool.join()
        loader._worker_pool = None


def first_samples(
    dataset: gluon.data.Dataset, max_samples: int | None
) -> tuple[gluon.data.Dataset, int]:
    """The first ``max_samples`` samples of ``dataset`` (all without a limit) and their count."""
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"an evaluation reads at least one sample, not {max_samples}")
    taken = dataset.take(max_samples)
    return taken, len(taken)


def make_eval_data(
    dataset: gluon.data.Dataset,
    batch_size: int,
    batchify_fn: Callable[[list[Any]], Any],
    workers: int,
    max_samples: int | None,
    facts: dict[str, Any],
) -> EvalData:
    """:class:`EvalData` over the first ``max_samples`` of ``dataset`` (already transformed):
    no shuffle, the last batch kept (:data:`EVAL_LAST_BATCH`)."""
    split_samples = len(dataset)
    dataset, samples = first_samples(dataset, max_samples)
    loader = gluon.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        batchify_fn=batchify_fn,
        last_batch=EVAL_LAST_BATCH,
        num_workers=workers,
    )
    facts = {
        **facts,
        "samples": samples,
        "split_samples": split_samples,
        **loader_facts(batch_size, False, workers),
        "last_batch": EVAL_LAST_BATCH,
    }
    return EvalData(loader, facts, max_samples)


def make_loader(
    dataset: gluon.data.Dataset,
    batch_size: int,
    batchify_fn: Callable[[list[Any]], Any],
    shuffle: bool,
    workers: int,
) -> gluon.data.DataLoader:
    """``gluon.data.DataLoader`` with full batches only (:data:`LAST_BATCH`)."""
    return gluon.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        batchify_fn=batchify_fn,
        last_batch=LAST_BATCH,
        num_workers=workers,
    )


def loader_facts(batch_size: int, shuffle: bool, workers: int) -> dict[str, Any]:
    return {
        "loader": "mxnet.gluon.data.DataLoader",
        "batch_size": batch_size,
        "shuffle": shuffle,
        "last_batch": LAST_BATCH,
        "num_workers": workers,
        "pin_memory": False,
    }


# -- detection ----------------------------------------------------------------------------------
def detection_dataset(path: str, mode: str) -> tuple[gluon.data.Dataset, dict[str, Any]]:
    """GluonCV's dataset for a ``.rec`` (its ``.idx`` beside it) or a VOC folder, and its
    facts (``format``, ``samples``, the class and, for VOC, the splits read). Refuses a
    missing or empty one."""
    from gluoncv.data import RecordFileDetection, VOCDetection

    source = Path(path)
    if not source.exists():
        raise DataError(f"no dataset at {source}")
    if source.suffix == ".rec":
        if not idx_path_for(source).is_file():
            raise DataError(f"no index file {idx_path_for(source)} beside {source}")
        dataset = RecordFileDetection(str(source))
        facts: dict[str, Any] = {
            "format": "recordio",
            "dataset": "gluoncv.data.RecordFileDetection",
        }
    elif source.is_dir():
        try:
            devkit = find_devkit(source)
        except VocError as exc:
            raise DataError(str(exc)) from None
        splits = voc_splits(devkit, mode)
        dataset = VOCDetection(str(devkit), splits=list(splits))
        facts = {
            "format": "voc",
            "dataset": "gluoncv.data.VOCDetection",
            "splits": "+".join(f"{folder}/{name}" for folder, name in splits),
        }
    else:
        raise DataError(f"{source}: neither a VOCdevkit folder nor a .rec file")
    if len(dataset) == 0:
        raise DataError(f"{source}: no images ({facts.get('splits', 'empty index')})")
    return NamedErrors(dataset, facts["format"]), {**facts, "samples": len(dataset)}


class NamedErrors(gluon.data.Dataset):
    """A GluonCV detection dataset whose read errors name the image file (and the record of a
    ``.rec``): MXNet's decoder errors name neither, and a loader worker passes them on as
    they are."""

    def __init__(self, dataset: gluon.data.Dataset, fmt: str) -> None:
        self._dataset = dataset
        self._format = fmt

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, idx: int) -> Any:
        try:
            return self._dataset[idx]
        except Exception as exc:
            first = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
            raise DataError(f"{self.where(idx)}: cannot read the sample ({first})") from exc

    def where(self, idx: int) -> str:
        """The file (and record) behind sample ``idx``."""
        data = self._dataset
        if self._format == "recordio":
            return f"{data.filename}: record {idx} (key {data._record.keys[idx]})"
        return str(data._image_path.format(*data._items[idx]))


def ssd_stream(
    path: str,
    mode: str,
    image_size: int,
    batch_size: int,
    workers: int,
    anchors: mx.nd.NDArray | None = None,
) -> BatchStream:
    """SSD's loader as train_ssd.py builds it. Training (``anchors``: the network's, from a
    forward in train mode): ``SSDDefaultTrainTransform`` with the anchors, batches of
    (images, class targets, box targets), shuffled. Inference: ``SSDDefaultValTransform``,
    batches of (images, labels padded with -1), in order."""
    from gluoncv.data.batchify import Pad, Stack, Tuple
    from gluoncv.data.transforms.presets.ssd import (
        SSDDefaultTrainTransform,
        SSDDefaultValTransform,
    )

    dataset, facts = detection_dataset(path, mode)
    size = (image_size, image_size)
    train = mode == "train"
    if train:
        if anchors is None:
            raise ValueError("training targets need the network's anchors")
        transform: Any = SSDDefaultTrainTransform(*size, anchors.as_in_context(mx.cpu()))
        batchify = Tuple(Stack(), Stack(), Stack())
        facts["transform"] = (
            f"gluoncv SSDDefaultTrainTransform({image_size}, {image_size}, anchors): "
            "colour distortion, random expansion and crop, flip, resize, normalize; class "
            "and box targets from SSDTargetGenerator in the loader"
        )
        facts["batchify"] = "Tuple(Stack(), Stack(), Stack())"
    else:
        transform = SSDDefaultValTransform(*size)
        batchify = Tuple(Stack(), Pad(pad_val=-1))
        facts["transform"] = f"gluoncv SSDDefaultValTransform({image_size}, {image_size})"
        facts["batchify"] = "Tuple(Stack(), Pad(pad_val=-1))"
    loader = make_loader(dataset.transform(transform), batch_size, batchify, train, workers)
    return BatchStream(loader, {**facts, **loader_facts(batch_size, train, workers)})


def ssd_eval_data(
    path: str, image_size: int, batch_size: int, workers: int, max_samples: int | None = None
) -> EvalData:
    """SSD's evaluation loader as train_ssd.py's validation loader: the test split of a VOC
    folder (VOC2007/test, else whatever test or val split it has; see :func:`voc_splits`)
    or the whole ``.rec`` file, ``SSDDefaultValTransform`` (images resized to the input
    size, their boxes with them), batches of (images, labels padded with -1: corners,
    class, difficult), the last one short."""
    from gluoncv.data.batchify import Pad, Stack, Tuple
    from gluoncv.data.transforms.presets.ssd import SSDDefaultValTransform

    dataset, facts = detection_dataset(path, "infer")
    facts["split"] = facts.get("splits", Path(path).name)
    facts["transform"] = f"gluoncv SSDDefaultValTransform({image_size}, {image_size})"
    facts["batchify"] = "Tuple(Stack(), Pad(pad_val=-1))"
    transform = SSDDefaultValTransform(image_size, image_size)
    batchify = Tuple(Stack(), Pad(pad_val=-1))
    return make_eval_data(
        dataset.transform(transform), batch_size, batchify, workers, max_samples, facts
    )


# -- text ---------------------------------------------------------------------------------------
def bert_vocab(path: Path) -> Any:
    """A ``BERTVocab`` with the ids of ``path``'s lines (token i on line i), as GluonNLP's
    conversion of Google's vocabularies builds it."""
    import gluonnlp as nlp

    tokens = [t for t in path.read_text(encoding="utf-8").splitlines() if t]
    ids = {token: i for i, token in enumerate(tokens)}
    if len(ids) != len(tokens):
        raise DataError(f"{path}: repeated tokens")
    missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t not in ids]
    if missing:
        raise DataError(f"{path} lacks the special tokens {', '.join(missing)}")
    return nlp.vocab.BERTVocab(nlp.data.count_tokens(tokens), token_to_idx=ids)


class BertExample:
    """``(text, label)`` -> the classifier's inputs and the label: token ids, token types,
    valid length (GluonNLP's ``BERTSentenceTransform``, one segment, padded to the sequence
    length) and the label as float32."""

    def __init__(self, vocab: Any, seq_len: int) -> None:
        import gluonnlp as nlp

        tokenizer = nlp.data.BERTTokenizer(vocab, lower=True)
        self.sentence = nlp.data.BERTSentenceTransform(
            tokenizer, max_seq_length=seq_len, pad=True, pair=False
        )

    def __call__(self, text: str, label: int) -> tuple[np.ndarray, ...]:
        ids, valid_length, types = self.sentence((text,))
        return ids, types, valid_length, np.float32(label)


def imdb_stream(
    path: str, mode: str, vocab_file: Path, seq_len: int, batch_size: int, workers: int
) -> tuple[BatchStream, Any]:
    """BERT's loader over an aclImdb split (train for training, test for inference) and the
    vocabulary; batches of (token ids, token types, valid lengths, labels), float32 as the
    classifier takes them."""
    import gluonnlp as nlp

    split = IMDB_SPLITS[mode]
    try:
        reviews = read_imdb(path, split)
    except ImdbError as exc:
        raise DataError(str(exc)) from None
    if not reviews:
        raise DataError(f"{path}: no reviews in {split}")
    vocab = bert_vocab(vocab_file)
    dataset = gluon.data.SimpleDataset([(r.text, r.label) for r in reviews])
    stack = nlp.data.batchify.Stack(dtype="float32")
    batchify = nlp.data.batchify.Tuple(stack, stack, stack, stack)
    train = mode == "train"
    transform = BertExample(vocab, seq_len)
    loader = make_loader(dataset.transform(transform), batch_size, batchify, train, workers)
    facts = {
        "format": "aclimdb",
        "samples": len(reviews),
        "split": split,
        "labels": "1 for ratings >= 5 (pos/), 0 otherwise (neg/)",
        "vocab_size": len(vocab),
        "tokenizer": "gluonnlp BERTTokenizer(lower=True)",
        "transform": f"gluonnlp BERTSentenceTransform(max_seq_length={seq_len}, pad=True, "
        "pair=False)",
        "batchify": "Tuple(Stack(float32) x 4): token ids, token types, valid lengths, labels",
        **loader_facts(batch_size, train, workers),
    }
    return BatchStream(loader, facts), vocab


def imdb_eval_data(
    path: str,
    vocab: Any,
    seq_len: int,
    batch_size: int,
    workers: int,
    max_samples: int | None = None,
) -> EvalData:
    """BERT's evaluation loader: the aclImdb ``test`` reviews (pos/ then neg/, as
    :func:`data.imdb.read_imdb` lists them) tokenized over ``vocab`` as the training loader
    does, batches of (token ids, token types, valid lengths, labels), the last one short."""
    import gluonnlp as nlp

    split = IMDB_SPLITS["infer"]
    try:
        reviews = read_imdb(path, split)
    except ImdbError as exc:
        raise DataError(str(exc)) from None
    if not reviews:
        raise DataError(f"{path}: no reviews in {split}")
    dataset = gluon.data.SimpleDataset([(r.text, r.label) for r in reviews])
    stack = nlp.data.batchify.Stack(dtype="float32")
    batchify = nlp.data.batchify.Tuple(stack, stack, stack, stack)
    facts = {
        "format": "aclimdb",
        "split": split,
        "vocab_size": len(vocab),
        "transform": f"gluonnlp BERTSentenceTransform(max_seq_length={seq_len}, pad=True, "
        "pair=False)",
        "batchify": "Tuple(Stack(float32) x 4): token ids, token types, valid lengths, labels",
    }
    transform = BertExample(vocab, seq_len)
    return make_eval_data(
        dataset.transform(transform), batch_size, batchify, workers, max_samples, facts
    )
