"""Accuracy figures of the workloads: Pascal VOC07 mAP for SSD, accuracy for BERT.
They import nothing of the project, so the models score with them from below the analysis
(cost) layer.

:class:`Voc07MApMetric` is GluonCV 0.10's ``VOC07MApMetric``
(``gluoncv/utils/metrics/voc_detection.py``) in numpy, step for step:

- per image and class, detections are ranked (see below) and each, in rank order, is
  matched to the ground truth box of highest IoU; IoU >= ``iou_thresh`` (0.5) makes it a
  true positive if that box is not difficult and not taken yet, a false positive if it is
  taken; a detection matched to a difficult box is ignored (neither); below the threshold
  it is a false positive;
- IoU follows VOC's integer pixel convention: 1 is added to ``xmax`` and ``ymax`` of both
  boxes (so a box covers ``xmax - xmin + 1`` pixels), and boxes that only touch do not
  overlap;
- per class, all detections are ranked, precision and recall accumulate, and AP is the
  11-point interpolation: the mean over recall thresholds ``np.arange(0, 1.1, 0.1)``
  of the best precision at recall >= the threshold. (The thresholds are numpy's, with their
  rounding: the one meant as 0.3 is 0.30000000000000004, so a recall of exactly 3/10 does
  not reach it.)
- a class's AP is NaN when it has no non-difficult ground truth; the mean (mAP) is taken
  over the classes whose AP is a number.

Ranking: by score, highest first; equal scores in detection order (the order of the
``update`` calls, then the order within an image), by a stable sort. GluonCV reverses
numpy's default ``argsort``, whose order for equal scores is unspecified (it differs
between numpy versions and array sizes), so on tied scores GluonCV's figure depends on
the installed numpy; on distinct scores the two rankings, and so the figures, are equal.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def voc_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
    """IoU ``[N, M]`` of corner boxes ``a [N, 4]`` and ``b [M, 4]`` in VOC's convention
    (``xmax``, ``ymax`` inclusive: +1 on both before the areas are taken)."""
    pa = np.array(a, dtype=np.float64).reshape(-1, 4)
    pb = np.array(b, dtype=np.float64).reshape(-1, 4)
    pa[:, 2:] += 1
    pb[:, 2:] += 1
    tl = np.maximum(pa[:, None, :2], pb[:, :2])
    br = np.minimum(pa[:, None, 2:], pb[:, 2:])
    inter = np.prod(br - tl, axis=2) * (tl < br).all(axis=2)
    area_a = np.prod(pa[:, 2:] - pa[:, :2], axis=1)
    area_b = np.prod(pb[:, 2:] - pb[:, :2], axis=1)
    return np.asarray(inter / (area_a[:, None] + area_b - inter), dtype=np.float64)


def rank(scores: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """Indices of ``scores`` from the highest to the lowest, equal scores in their given
    order (a stable sort: the same under every numpy version)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def voc07_average_precision(recall: FloatArray | None, precision: FloatArray | None) -> float:
    """11-point interpolated AP of cumulative ``recall`` and ``precision`` (NaN if either
    is missing: no ground truth, or no detection record for the class)."""
    if recall is None or precision is None:
        return math.nan
    best = np.nan_to_num(precision)
    ap = 0.0
    for threshold in np.arange(0.0, 1.1, 0.1):
        reached = recall >= threshold
        p = float(np.max(best[reached])) if np.sum(reached) else 0.0
        ap += p / 11.0
    return ap


@dataclass(frozen=True)
class MapResult:
    """Per-class AP (index = class id; NaN: no non-difficult ground truth) and their mean."""

    per_class: tuple[float, ...]
    mean: float
    names: tuple[str, ...] | None = None


class Voc07MApMetric:
    """Accumulate detections and ground truth over batches; :meth:`result` gives VOC07 mAP.

    Inputs per batch (numpy arrays or sequences of per-image arrays; rows whose label is
    negative are padding and are dropped): ``pred_boxes [B, N, 4]``, ``pred_labels [B, N]``,
    ``pred_scores [B, N]``, ``gt_boxes [B, M, 4]``, ``gt_labels [B, M]`` and optionally
    ``gt_difficult [B, M]`` (none difficult when omitted). Boxes are corner boxes in pixels.
    """

    def __init__(self, iou_thresh: float = 0.5, class_names: Sequence[str] | None = None) -> None:
        self.iou_thresh = iou_thresh
        self.class_names = tuple(class_names) if class_names is not None else None
        self.reset()

    def reset(self) -> None:
        self._n_pos: defaultdict[int, int] = defaultdict(int)
        self._score: defaultdict[int, list[float]] = defaultdict(list)
        self._match: defaultdict[int, list[int]] = defaultdict(list)

    def update(
        self,
        pred_boxes: Any,
        pred_labels: Any,
        pred_scores: Any,
        gt_boxes: Any,
        gt_labels: Any,
        gt_difficult: Any = None,
    ) -> None:
        if gt_difficult is None:
            gt_difficult = [None] * len(gt_labels)
        for image in zip(
            pred_boxes, pred_labels, pred_scores, gt_boxes, gt_labels, gt_difficult, strict=True
        ):
            self._update_image(*image)

    def _update_image(
        self,
        pred_box: Any,
        pred_label: Any,
        pred_score: Any,
        gt_box: Any,
        gt_label: Any,
        gt_difficult: Any,
    ) -> None:
        p_label = np.asarray(pred_label).ravel()
        valid = np.flatnonzero(p_label >= 0)
        p_box = np.asarray(pred_box).reshape(-1, 4)[valid]
        p_label = p_label[valid].astype(int)
        p_score = np.asarray(pred_score).ravel()[valid]
        g_label = np.asarray(gt_label).ravel()
        valid_gt = np.flatnonzero(g_label >= 0)
        g_box = np.asarray(gt_box).reshape(-1, 4)[valid_gt]
        g_label = g_label[valid_gt].astype(int)
        if gt_difficult is None:
            g_difficult = np.zeros(len(g_box))
        else:
            g_difficult = np.asarray(gt_difficult).ravel()[valid_gt]

        for cls in np.unique(np.concatenate((p_label, g_label)).astype(int)):
            key = int(cls)
            mine = p_label == cls
            order = rank(p_score[mine])
            boxes = p_box[mine][order]
            scores = p_score[mine][order]
            truth = g_box[g_label == cls]
            difficult = g_difficult[g_label == cls]
            self._n_pos[key] += int(np.logical_not(difficult).sum())
            self._score[key].extend(float(s) for s in scores)
            if len(boxes) == 0:
                continue
            if len(truth) == 0:
                self._match[key].extend([0] * len(boxes))
                continue
            iou = voc_iou(boxes, truth)
            best = iou.argmax(axis=1)
            best[iou.max(axis=1) < self.iou_thresh] = -1
            taken = np.zeros(len(truth), dtype=bool)
            for g in best:
                if g < 0:
                    self._match[key].append(0)
                    continue
                if difficult[g]:
                    self._match[key].append(-1)
                else:
                    self._match[key].append(0 if taken[g] else 1)
                taken[g] = True

    def recall_precision(self) -> tuple[list[FloatArray | None], list[FloatArray | None]]:
        """Cumulative recall and precision per class id (None where undefined)."""
        if not self._n_pos:
            return [], []
        classes = max(self._n_pos) + 1
        recall: list[FloatArray | None] = [None] * classes
        precision: list[FloatArray | None] = [None] * classes
        for cls, positives in self._n_pos.items():
            scores = np.array(self._score[cls])
            match = np.array(self._match[cls], dtype=np.int32)[rank(scores)]
            tp = np.cumsum(match == 1)
            fp = np.cumsum(match == 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                precision[cls] = tp / (fp + tp)
            if positives > 0:
                recall[cls] = tp / positives
        return recall, precision

    def result(self) -> MapResult:
        """Per-class AP (one per class name when names were given) and mAP."""
        recall, precision = self.recall_precision()
        aps = [voc07_average_precision(r, p) for r, p in zip(recall, precision, strict=True)]
        mean = float(np.nanmean(aps)) if any(not math.isnan(ap) for ap in aps) else math.nan
        if self.class_names is not None:
            count = len(self.class_names)
            aps = (aps + [math.nan] * count)[:count]
        return MapResult(per_class=tuple(aps), mean=mean, names=self.class_names)


def accuracy(predictions: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Share of correct predictions: class ids ``[N]``, or scores ``[N, C]`` (argmax)."""
    correct, total = _count_correct(predictions, labels)
    if total == 0:
        raise ValueError("accuracy of no samples")
    return correct / total


def _count_correct(predictions: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[int, int]:
    pred = np.asarray(predictions)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    truth = np.asarray(labels).ravel()
    pred = pred.ravel()
    if pred.shape != truth.shape:
        raise ValueError(f"{pred.shape[0]} predictions for {truth.shape[0]} labels")
    return int((pred.astype(np.int64) == truth.astype(np.int64)).sum()), int(truth.size)


class Accuracy:
    """Accuracy accumulated over batches (``mx.metric.Accuracy``)."""

    def __init__(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, predictions: npt.ArrayLike, labels: npt.ArrayLike) -> None:
        correct, total = _count_correct(predictions, labels)
        self.correct += correct
        self.total += total

    @property
    def value(self) -> float:
        """The accuracy so far (NaN before any sample)."""
        return self.correct / self.total if self.total else math.nan
