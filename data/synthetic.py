"""Deterministic synthetic batches, shared by every framework path.

They are plain numpy arrays so that the PyTorch, MXNet and ONNX Runtime paths time the same
inputs. The same ``seed`` always gives the same batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: ImageNet statistics, as GluonCV's SSD transforms normalise with.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)

#: BERT uncased special token ids.
PAD_ID, CLS_ID, SEP_ID = 0, 101, 102
#: First id after the special and unused entries of the uncased vocabulary.
FIRST_WORD_ID = 1996


@dataclass(frozen=True)
class DetectionBatch:
    """Images and padded ground truth in GluonCV's layout.

    images: float32 [N, 3, H, W], normalised.
    boxes: float32 [N, M, 4] corner boxes (xmin, ymin, xmax, ymax) in pixels; padding rows -1.
    labels: int64 [N, M] class ids in [0, num_classes); padding -1.
    """

    images: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class TextBatch:
    """Token ids with attention masks and labels for sequence classification.

    input_ids, token_type_ids, attention_mask: int64 [N, L]; labels: int64 [N].
    valid_length: int64 [N], the number of non-padding tokens (GluonNLP's input).
    """

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    attention_mask: np.ndarray
    valid_length: np.ndarray
    labels: np.ndarray


def detection_batch(
    batch: int,
    image_size: int = 512,
    num_classes: int = 20,
    max_objects: int = 8,
    seed: int = 0,
) -> DetectionBatch:
    """Random images with 1..max_objects boxes each, at least 16 pixels wide and high."""
    if batch < 1 or image_size < 32 or num_classes < 1 or max_objects < 1:
        raise ValueError("batch, num_classes and max_objects must be positive, image_size >= 32")
    rng = np.random.default_rng(seed)
    pixels = rng.random((batch, 3, image_size, image_size), dtype=np.float32)
    mean = np.asarray(IMAGE_MEAN, dtype=np.float32)[None, :, None, None]
    std = np.asarray(IMAGE_STD, dtype=np.float32)[None, :, None, None]
    images = (pixels - mean) / std

    boxes = np.full((batch, max_objects, 4), -1.0, dtype=np.float32)
    labels = np.full((batch, max_objects), -1, dtype=np.int64)
    min_side = 16.0
    for i in range(batch):
        count = int(rng.integers(1, max_objects + 1))
        x0 = rng.uniform(0, image_size - min_side, count)
        y0 = rng.uniform(0, image_size - min_side, count)
        w = rng.uniform(min_side, image_size, count)
        h = rng.uniform(min_side, image_size, count)
        x1 = np.minimum(x0 + w, image_size)
        y1 = np.minimum(y0 + h, image_size)
        boxes[i, :count] = np.stack([x0, y0, x1, y1], axis=1)
        labels[i, :count] = rng.integers(0, num_classes, count)
    return DetectionBatch(images=images, boxes=boxes, labels=labels)


def text_batch(
    batch: int,
    seq_len: int = 128,
    vocab_size: int = 30522,
    num_labels: int = 2,
    seed: int = 0,
) -> TextBatch:
    """Random word ids framed as ``[CLS] words [SEP] [PAD]...``, lengths from seq_len/2 up."""
    if batch < 1 or seq_len < 2 or num_labels < 1:
        raise ValueError("batch and num_labels must be positive, seq_len >= 2")
    if vocab_size <= FIRST_WORD_ID:
        raise ValueError(f"vocab_size must exceed {FIRST_WORD_ID}")
    rng = np.random.default_rng(seed)
    lengths = rng.integers(max(2, seq_len // 2), seq_len + 1, batch)
    ids = rng.integers(FIRST_WORD_ID, vocab_size, (batch, seq_len), dtype=np.int64)
    positions = np.arange(seq_len)[None, :]
    valid = positions < lengths[:, None]
    ids = np.where(valid, ids, PAD_ID)
    ids[:, 0] = CLS_ID
    ids[np.arange(batch), lengths - 1] = SEP_ID
    return TextBatch(
        input_ids=ids,
        token_type_ids=np.zeros((batch, seq_len), dtype=np.int64),
        attention_mask=valid.astype(np.int64),
        valid_length=lengths.astype(np.int64),
        labels=rng.integers(0, num_labels, batch, dtype=np.int64),
    )
