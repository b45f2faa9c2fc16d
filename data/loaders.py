"""PyTorch datasets over the real formats (VOC folders or a detection RecordIO file for SSD,
an ``aclImdb`` folder for BERT) and their batches' layout; ``models.torch_data`` builds the
loaders.

**Detection.** :class:`DetectionDataset` reads an image and its label from a VOC folder
(:class:`data.voc.VocDetection`) or a ``.rec`` (:class:`data.recordio.DetectionRecordFile`)
and applies a transform (:class:`data.ssd_augment.SsdTrainTransform` or
``SsdValTransform``); :func:`collate_detection` stacks images and pads boxes, class ids and
difficult flags with -1 to the batch's largest object count (or a fixed ``max_objects``),
the layout of :class:`data.synthetic.DetectionBatch`. SSD training targets (anchor
matching, box encoding) are not computed here: the workload computes them from the loaded
boxes with ``models.ssd.torch_box.ssd_targets``, the work GluonCV's loader workers do with
``SSDTargetGenerator`` -- on the device, in one batched call.

**Reproducible augmentation.** :class:`EpochSampler` yields ``(epoch, index)`` keys and
the dataset draws each sample's augmentation from a generator seeded by ``(seed, epoch,
index)``: the same sample gets the same augmentation in the same epoch whatever the number
of worker processes, and a different one the next epoch (the sampler lives in the main
process, so persistent workers see the epoch change too).

**Text.** :class:`TextTensors` is a tokenized batch of ``(text, label)`` reviews
(``models.torch_data.TextCollate`` tokenizes in the loader's workers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset, Sampler

from data.recordio import DetectionRecordFile
from data.voc import DEFAULT_SPLITS, VocDetection

Key = int | tuple[int, int]
Sample = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]


class DetectionSource(Protocol):
    """What :class:`DetectionDataset` reads: ``(uint8 RGB [H, W, 3], label [N, 5+])``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]: ...


Transform = Callable[[npt.NDArray[np.uint8], npt.NDArray[np.float32], np.random.Generator], Sample]


def open_detection_source(path: Path | str, splits: str = DEFAULT_SPLITS) -> DetectionSource:
    """A ``.rec`` file (its ``.idx`` beside it), or a VOCdevkit folder read with ``splits``."""
    path = Path(path)
    if path.suffix == ".rec":
        return DetectionRecordFile(path)
    return VocDetection(path, splits)


class DetectionDataset(Dataset[Sample]):
    """Transformed detection samples: ``(image [3, H, W] float32, label [M, 5+] float32)``.

    Indexed by an int (epoch 0) or an ``(epoch, index)`` key from :class:`EpochSampler`.
    """

    def __init__(self, source: DetectionSource, transform: Transform, seed: int = 0) -> None:
        self.source = source
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: Key) -> Sample:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        image, label = self.source[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        return self.transform(image, label, rng)


class EpochSampler(Sampler[tuple[int, int]]):
    """``(epoch, index)`` keys over ``size`` samples, shuffled per epoch when asked (by a
    generator seeded with ``(seed, epoch)``); the epoch advances with each pass."""

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0, epoch: int = 0) -> None:
        self.size, self.shuffle, self.seed, self.epoch = size, shuffle, seed, epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        self.epoch += 1
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.size)
        else:
            order = np.arange(self.size)
        return iter([(epoch, int(i)) for i in order])


class DetectionTensors(NamedTuple):
    """A loaded detection batch (``DetectionBatch``'s layout, as tensors).

    images: float32 [N, 3, H, W]; boxes: float32 [N, M, 4] pixels of the transformed
    image; labels: int64 [N, M] class ids; difficult: int64 [N, M] (0 where the label has
    no difficult column). Padding rows are -1 in all three.
    """

    images: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    difficult: torch.Tensor


def collate_detection(
    samples: Sequence[Sample], max_objects: int | None = None
) -> DetectionTensors:
    """Stack images and pad labels with -1 (to ``max_objects`` rows when given)."""
    rows = max((len(label) for _, label in samples), default=0)
    if max_objects is not None:
        if rows > max_objects:
            raise ValueError(f"an image has {rows} objects, more than max_objects={max_objects}")
        rows = max_objects
    n = len(samples)
    boxes = np.full((n, rows, 4), -1.0, dtype=np.float32)
    labels = np.full((n, rows), -1, dtype=np.int64)
    difficult = np.full((n, rows), -1, dtype=np.int64)
    for i, (_, label) in enumerate(samples):
        k = len(label)
        boxes[i, :k] = label[:, :4]
        labels[i, :k] = label[:, 4]
        difficult[i, :k] = label[:, 5] if label.shape[1] > 5 else 0
    images = np.stack([image for image, _ in samples])
    return DetectionTensors(
        torch.from_numpy(images),
        torch.from_numpy(boxes),
        torch.from_numpy(labels),
        torch.from_numpy(difficult),
    )


class TextTensors(NamedTuple):
    """A tokenized batch (``TextBatch``'s fields, as int64 tensors)."""

    input_ids: torch.Tensor
    token_type_ids: torch.Tensor
    attention_mask: torch.Tensor
    valid_length: torch.Tensor
    labels: torch.Tensor
