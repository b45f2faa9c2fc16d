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

What the PyTorch path (:mod:`models.torch_data`) does alike is in :mod:`models.data_base`
(the stream and evaluation bookkeeping, the facts recorded) and :mod:`data.selection` (which
files and splits a run reads). What is here is Gluon's: its loaders, datasets, transforms
and NDArray batches.
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

from data import selection
from data.imdb import Review
from data.recordio import idx_path_for
from data.selection import EVAL_LAST_BATCH, DataError
from models import data_base

LOADER = "mxnet.gluon.data.DataLoader"


class BatchStream(data_base.BatchStream):
    """Batches of a DataLoader without end: when an epoch ends the next one starts.

    ``next()`` returns once every array of the batch is ready: a batch from a worker
    process arrives complete, one made in this process (no workers) holds operators that
    MXNet's engine may still be running, and they count as loading time. (On a CPU run
    those operators share the engine's CPU workers with the steps' own, so there an
    in-process wait may include compute queued before it.)
    """

    def __init__(self, loader: gluon.data.DataLoader, facts: dict[str, Any]) -> None:
        super().__init__(facts)
        self.loader = loader
        #: Epochs begun, the first included.
        self.epochs = 0
        self._batches: Iterator[Any] | None = None

    def take(self) -> tuple[mx.nd.NDArray, ...]:
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

    def progress(self) -> dict[str, Any]:
        return {"epochs_started": self.epochs}

    def close(self) -> None:
        close_loader(self.loader)


class EvalData(data_base.EvalData):
    """A test split's DataLoader; its batches as tuples of NDArrays."""

    loader: gluon.data.DataLoader

    def convert(self, batch: Any) -> tuple[mx.nd.NDArray, ...]:
        return tuple(batch)

    def close(self) -> None:
        close_loader(self.loader)


def close_loader(loader: gluon.data.DataLoader) -> None:
    """Stop ``loader``'s worker processes, if it has any (Gluon leaves that to ``__del__``)."""
    pool = getattr(loader, "_worker_pool", None)
    if pool is not None:
        pool.terminate()
        pool.join()
        loader._worker_pool = None


def make_eval_data(
    dataset: gluon.data.Dataset,
    batch_size: int,
    batchify_fn: Callable[[list[Any]], Any],
    workers: int,
    max_samples: int | None,
    facts: dict[str, Any],
) -> EvalData:
    """:class:`EvalData` over the first ``max_samples`` of ``dataset`` (already transformed):
    no shuffle, the last batch kept."""
    samples = data_base.eval_samples(len(dataset), max_samples)
    loader = gluon.data.DataLoader(
        dataset.take(samples),
        batch_size=batch_size,
        shuffle=False,
        batchify_fn=batchify_fn,
        last_batch=EVAL_LAST_BATCH,
        num_workers=workers,
    )
    facts = data_base.eval_facts(facts, samples, len(dataset), LOADER, batch_size, workers, False)
    return EvalData(loader, facts, max_samples)


def make_stream(
    dataset: gluon.data.Dataset,
    batch_size: int,
    batchify_fn: Callable[[list[Any]], Any],
    shuffle: bool,
    workers: int,
    facts: dict[str, Any],
) -> BatchStream:
    """A :class:`BatchStream` over a ``gluon.data.DataLoader`` of full batches only
    (:data:`models.data_base.LAST_BATCH`)."""
    loader = gluon.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        batchify_fn=batchify_fn,
        last_batch=data_base.LAST_BATCH,
        num_workers=workers,
    )
    return BatchStream(
        loader, {**facts, **data_base.loader_facts(LOADER, batch_size, shuffle, workers, False)}
    )


# -- detection ----------------------------------------------------------------------------------
def detection_dataset(path: str, mode: str) -> tuple[gluon.data.Dataset, dict[str, Any]]:
    """GluonCV's dataset for a ``.rec`` (its ``.idx`` beside it) or a VOC folder (see
    :func:`data.selection.detection_input`), and its facts (``format``, ``samples``, the
    class and, for VOC, the splits read). Refuses a missing or empty one."""
    from gluoncv.data import RecordFileDetection, VOCDetection

    source = Path(path)
    if not source.exists():
        raise DataError(f"no dataset at {source}")
    found = selection.detection_input(path, mode)
    if found.splits is None:
        if not idx_path_for(source).is_file():
            raise DataError(f"no index file {idx_path_for(source)} beside {source}")
        dataset = RecordFileDetection(str(source))
        facts = found.facts("gluoncv.data.RecordFileDetection")
    else:
        dataset = VOCDetection(str(found.path), splits=list(found.splits))
        facts = found.facts("gluoncv.data.VOCDetection")
    if len(dataset) == 0:
        raise DataError(f"{source}: no images ({found.splits_text or 'empty index'})")
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


def val_pipeline(image_size: int) -> tuple[Any, Any, dict[str, str]]:
    """``SSDDefaultValTransform``, the batchify of its (image, label padded with -1) pairs,
    and their facts."""
    from gluoncv.data.batchify import Pad, Stack, Tuple
    from gluoncv.data.transforms.presets.ssd import SSDDefaultValTransform

    facts = {
        "transform": f"gluoncv SSDDefaultValTransform({image_size}, {image_size})",
        "batchify": "Tuple(Stack(), Pad(pad_val=-1))",
    }
    return SSDDefaultValTransform(image_size, image_size), Tuple(Stack(), Pad(pad_val=-1)), facts


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
    from gluoncv.data.batchify import Stack, Tuple
    from gluoncv.data.transforms.presets.ssd import SSDDefaultTrainTransform

    dataset, facts = detection_dataset(path, mode)
    train = mode == "train"
    if train:
        if anchors is None:
            raise ValueError("training targets need the network's anchors")
        transform: Any = SSDDefaultTrainTransform(
            image_size, image_size, anchors.as_in_context(mx.cpu())
        )
        batchify: Any = Tuple(Stack(), Stack(), Stack())
        facts["transform"] = (
            f"gluoncv SSDDefaultTrainTransform({image_size}, {image_size}, anchors): "
            "colour distortion, random expansion and crop, flip, resize, normalize; class "
            "and box targets from SSDTargetGenerator in the loader"
        )
        facts["batchify"] = "Tuple(Stack(), Stack(), Stack())"
    else:
        transform, batchify, pipeline = val_pipeline(image_size)
        facts.update(pipeline)
    return make_stream(dataset.transform(transform), batch_size, batchify, train, workers, facts)


def ssd_eval_data(
    path: str, image_size: int, batch_size: int, workers: int, max_samples: int | None = None
) -> EvalData:
    """SSD's evaluation loader as train_ssd.py's validation loader: the test split of a VOC
    folder (VOC2007/test, else whatever test or val split it has; see
    :func:`data.selection.voc_splits`) or the whole ``.rec`` file,
    ``SSDDefaultValTransform`` (images resized to the input size, their boxes with them),
    batches of (images, labels padded with -1: corners, class, difficult), the last one
    short."""
    dataset, facts = detection_dataset(path, "infer")
    facts["split"] = facts.get("splits", Path(path).name)
    transform, batchify, pipeline = val_pipeline(image_size)
    facts.update(pipeline)
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


def text_data(
    reviews: list[Review], vocab: Any, seq_len: int
) -> tuple[gluon.data.Dataset, Callable[[list[Any]], Any]]:
    """The reviews as the classifier's inputs (:class:`BertExample`) and their batchify."""
    import gluonnlp as nlp

    dataset = gluon.data.SimpleDataset([(r.text, r.label) for r in reviews])
    stack = nlp.data.batchify.Stack(dtype="float32")
    batchify = nlp.data.batchify.Tuple(stack, stack, stack, stack)
    return dataset.transform(BertExample(vocab, seq_len)), batchify


def text_pipeline(seq_len: int) -> dict[str, str]:
    """How the reviews become the classifier's inputs, as the facts say it."""
    return {
        "transform": f"gluonnlp BERTSentenceTransform(max_seq_length={seq_len}, pad=True, "
        "pair=False)",
        "batchify": "Tuple(Stack(float32) x 4): token ids, token types, valid lengths, labels",
    }


def imdb_stream(
    path: str, mode: str, vocab_file: Path, seq_len: int, batch_size: int, workers: int
) -> tuple[BatchStream, Any]:
    """BERT's loader over an aclImdb split (train for training, test for inference) and the
    vocabulary; batches of (token ids, token types, valid lengths, labels), float32 as the
    classifier takes them."""
    split, reviews = selection.read_reviews(path, mode)
    vocab = bert_vocab(vocab_file)
    dataset, batchify = text_data(reviews, vocab, seq_len)
    pipeline = {"tokenizer": "gluonnlp BERTTokenizer(lower=True)", **text_pipeline(seq_len)}
    facts = data_base.imdb_facts(split, len(vocab), pipeline, len(reviews))
    train = mode == "train"
    return make_stream(dataset, batch_size, batchify, train, workers, facts), vocab


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
    split, reviews = selection.read_reviews(path, "infer")
    dataset, batchify = text_data(reviews, vocab, seq_len)
    facts = data_base.imdb_facts(split, len(vocab), text_pipeline(seq_len))
    return make_eval_data(dataset, batch_size, batchify, workers, max_samples, facts)
