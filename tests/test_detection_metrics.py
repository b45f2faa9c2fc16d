"""VOC07 mAP and accuracy on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.metrics import (
    Accuracy,
    Voc07MApMetric,
    accuracy,
    voc07_average_precision,
    voc_iou,
)

A, B = [0, 0, 9, 9], [20, 20, 29, 29]
FAR = [50, 50, 59, 59]


def batch(*rows: list[float]) -> np.ndarray:
    """One image's rows, as a batch of one."""
    return np.array([rows], dtype=np.float64)


def test_iou_counts_pixels_inclusively() -> None:
    # [0, 9] covers 10 pixels: half of A is 50 of its 100 pixels
    np.testing.assert_array_equal(voc_iou([A], [[0, 0, 9, 4]]), [[0.5]])
    # boxes that only touch after the +1 do not overlap
    np.testing.assert_array_equal(voc_iou([A], [[10, 0, 19, 9], A]), [[0.0, 1.0]])


def test_eleven_point_ap_of_a_ranked_list() -> None:
    metric = Voc07MApMetric()
    metric.update(
        pred_boxes=batch(A, A, B, FAR),
        pred_labels=batch(0, 0, 0, 0),
        pred_scores=batch(0.9, 0.8, 0.7, 0.6),
        gt_boxes=batch(A, B),
        gt_labels=batch(0, 0),
    )
    # TP, FP (A already taken), TP, FP: precision 1, 1/2, 2/3, 1/2 at recall 1/2, 1/2, 1, 1
    recall, precision = metric.recall_precision()
    np.testing.assert_array_equal(recall[0], [0.5, 0.5, 1, 1])
    np.testing.assert_allclose(precision[0], [1, 0.5, 2 / 3, 0.5])
    # thresholds 0..0.5 reach precision 1, 0.6..1.0 reach 2/3
    result = metric.result()
    assert result.per_class == pytest.approx((28 / 33,), abs=1e-12)
    assert result.mean == pytest.approx(28 / 33, abs=1e-12)


def test_difficult_boxes_are_neither_hits_nor_misses() -> None:
    metric = Voc07MApMetric()
    metric.update(
        pred_boxes=batch(B, A, FAR),
        pred_labels=batch(0, 0, 0),
        pred_scores=batch(0.9, 0.8, 0.7),
        gt_boxes=batch(A, B),
        gt_labels=batch(0, 0),
        gt_difficult=batch(0, 1),
    )
    recall, precision = metric.recall_precision()
    # the first detection (on difficult B) is ignored: TP then FP; one positive
    np.testing.assert_array_equal(recall[0], [0, 1, 1])
    np.testing.assert_array_equal(np.nan_to_num(precision[0]), [0, 1, 0.5])
    assert metric.result().mean == pytest.approx(1.0)


def test_iou_threshold_uses_the_plus_one_convention() -> None:
    # IoU 0.5 exactly with +1 (it would be 0.44 without): a hit
    metric = Voc07MApMetric()
    metric.update(batch([0, 0, 9, 4]), batch(0), batch(0.5), batch(A), batch(0))
    assert metric.result().mean == pytest.approx(1.0)
    metric = Voc07MApMetric(iou_thresh=0.51)
    metric.update(batch([0, 0, 9, 4]), batch(0), batch(0.5), batch(A), batch(0))
    assert metric.result().mean == 0.0


def test_classes_padding_and_the_mean() -> None:
    metric = Voc07MApMetric(class_names=["cat", "dog", "cow"])
    metric.update(
        pred_boxes=np.array([[A, A, B, FAR, FAR], [FAR, A, A, A, A]], dtype=np.float64),
        pred_labels=np.array([[0, 0, 0, 0, -1], [2, -1, -1, -1, -1]]),
        pred_scores=np.array([[0.9, 0.8, 0.7, 0.6, 0.99], [0.5, 1, 1, 1, 1]]),
        gt_boxes=np.array([[A, B, A], [B, A, A]], dtype=np.float64),
        gt_labels=np.array([[0, 0, -1], [1, -1, -1]]),
    )
    result = metric.result()
    # cat as above; dog: one box, never detected (AP 0); cow: no ground truth (NaN)
    assert result.per_class[0] == pytest.approx(28 / 33)
    assert result.per_class[1] == 0.0 and math.isnan(result.per_class[2])
    assert result.mean == pytest.approx(14 / 33)
    assert result.names == ("cat", "dog", "cow")
    metric.reset()
    assert math.isnan(metric.result().mean)


def test_recall_of_exactly_three_tenths_misses_the_point_0_3() -> None:
    # numpy's 0.3 threshold is 0.30000000000000004: GluonCV's AP is 3/11 here, not 4/11
    gt = [[10 * i, 0, 10 * i + 9, 9] for i in range(10)]
    metric = Voc07MApMetric()
    metric.update(
        pred_boxes=np.array([gt[:3]], dtype=np.float64),
        pred_labels=batch(0, 0, 0),
        pred_scores=batch(0.9, 0.8, 0.7),
        gt_boxes=np.array([gt], dtype=np.float64),
        gt_labels=np.zeros((1, 10)),
    )
    assert metric.result().mean == pytest.approx(3 / 11)
    assert math.isnan(voc07_average_precision(None, np.array([1.0])))


def test_accuracy() -> None:
    assert accuracy([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], [1, 0, 0]) == pytest.approx(2 / 3)
    assert accuracy([1, 1, 0, 0], [1, 0, 0, 0]) == 0.75
    running = Accuracy()
    assert math.isnan(running.value)
    running.update([[0.1, 0.9], [0.8, 0.2]], [1, 1])
    running.update([0, 0], [0, 0])
    assert (running.correct, running.total, running.value) == (3, 4, 0.75)
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        accuracy([1, 0, 1], [1, 0])


# --- equal scores: ranked by detection order (the same under every numpy) ------------------


def test_tied_scores_across_images_rank_in_detection_order() -> None:
    metric = Voc07MApMetric()
    # image 1: a hit at 0.5; image 2: a miss at 0.5. Detection order: hit, then miss
    metric.update(
        pred_boxes=[np.array([A]), np.array([FAR])],
        pred_labels=[np.array([0]), np.array([0])],
        pred_scores=[np.array([0.5]), np.array([0.5])],
        gt_boxes=[np.array([A]), np.array([B])],
        gt_labels=[np.array([0]), np.array([0])],
    )
    recall, precision = metric.recall_precision()
    np.testing.assert_array_equal(recall[0], [0.5, 0.5])
    np.testing.assert_array_equal(precision[0], [1.0, 0.5])
    # thresholds 0 .. 0.5 (six) reach precision 1; the hit ranked second would give 3/11
    assert metric.result().mean == pytest.approx(6 / 11, abs=1e-12)


def test_tied_scores_in_one_image_match_in_detection_order() -> None:
    metric = Voc07MApMetric()
    # both overlap A (IoU 1 and 0.8): the first in detection order takes it, the second is
    # a duplicate (a false positive) and ranks after it
    metric.update(
        pred_boxes=batch(A, [0, 0, 9, 7]),
        pred_labels=batch(0, 0),
        pred_scores=batch(0.7, 0.7),
        gt_boxes=batch(A),
        gt_labels=batch(0),
    )
    assert metric._match[0] == [1, 0]
    recall, precision = metric.recall_precision()
    np.testing.assert_array_equal(recall[0], [1.0, 1.0])
    np.testing.assert_array_equal(precision[0], [1.0, 0.5])
    assert metric.result().mean == pytest.approx(1.0, abs=1e-12)


def test_many_tied_scores_keep_detection_order() -> None:
    # 40 images (past numpy's small-array insertion sort), one detection each, all at 0.25:
    # hits at even images, misses at odd ones
    n = 40
    metric = Voc07MApMetric()
    for i in range(n):
        box = A if i % 2 == 0 else FAR
        metric.update(batch(box), batch(0), batch(0.25), batch(A), batch(0))
    hits = np.array([i % 2 == 0 for i in range(n)])
    tp, fp = np.cumsum(hits), np.cumsum(~hits)
    recall, precision = metric.recall_precision()
    np.testing.assert_array_equal(recall[0], tp / n)
    np.testing.assert_array_equal(precision[0], tp / (tp + fp))
