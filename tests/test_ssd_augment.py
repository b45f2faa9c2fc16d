"""SSD augmentation: exact box geometry of each step, scripted random paths, and the whole
training transform's invariants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data import ssd_augment as aug
from data.samples import make_voc
from data.synthetic import IMAGE_MEAN, IMAGE_STD
from data.voc import VocDetection
from tests.scripted import ScriptedRng

BOX = np.array([[10, 20, 30, 40, 5]], dtype=np.float32)


def test_box_iou() -> None:
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 5, 15, 15], [10, 0, 20, 10], [0, 0, 10, 10]])
    np.testing.assert_array_equal(aug.box_iou(a, b), [[25 / 175, 0.0, 1.0]])


def test_flip_translate_resize() -> None:
    np.testing.assert_array_equal(
        aug.flip_boxes(BOX, (100, 50), flip_x=True), [[70, 20, 90, 40, 5]]
    )
    np.testing.assert_array_equal(
        aug.flip_boxes(BOX, (100, 50), flip_y=True), [[10, 10, 30, 30, 5]]
    )
    both = aug.flip_boxes(BOX, (100, 50), flip_x=True, flip_y=True)
    np.testing.assert_array_equal(both, [[70, 10, 90, 30, 5]])
    np.testing.assert_array_equal(aug.translate_boxes(BOX, 3, 4), [[13, 24, 33, 44, 5]])
    resized = aug.resize_boxes(BOX, (100, 50), (200, 200))
    np.testing.assert_array_equal(resized, [[20, 80, 60, 160, 5]])
    assert resized.dtype == np.float64
    np.testing.assert_array_equal(BOX, [[10, 20, 30, 40, 5]])  # inputs untouched


def test_crop_clips_moves_and_drops() -> None:
    boxes = np.array(
        [[0, 0, 20, 20, 1], [55, 55, 80, 80, 2], [70, 70, 90, 90, 3], [5, 30, 15, 40, 4]],
        dtype=np.float32,
    )
    window = (10, 10, 50, 50)
    np.testing.assert_array_equal(
        aug.crop_boxes(boxes, window, allow_outside_center=False),
        [[0, 0, 10, 10, 1], [0, 20, 5, 30, 4]],
    )
    np.testing.assert_array_equal(
        aug.crop_boxes(boxes, window),
        [[0, 0, 10, 10, 1], [45, 45, 50, 50, 2], [0, 20, 5, 30, 4]],
    )


def test_expand_places_the_image_on_a_mean_canvas() -> None:
    image = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    canvas = aug.expand_image(image, 1, 0, 4, 3, fill=(1, 2, 3))
    assert canvas.shape == (3, 4, 3)
    np.testing.assert_array_equal(canvas[0:2, 1:3], image)
    np.testing.assert_array_equal(canvas[2, 0], [1, 2, 3])
    np.testing.assert_array_equal(canvas[0, 3], [1, 2, 3])
    with pytest.raises(ValueError, match="does not fit"):
        aug.expand_image(image, 3, 0, 4, 3)
    rng = ScriptedRng([2.0, 3, 1])  # ratio, y offset, x offset
    out, (x, y, w, h) = aug.random_expand(np.ones((4, 5, 3)), rng, fill=0)
    assert (x, y, w, h) == (1, 3, 10, 8)
    assert rng.calls == [("uniform", 1, 4.0), ("integers", 0, 5), ("integers", 0, 6)]
    assert out[3:7, 1:6].min() == 1 and out.sum() == 4 * 5 * 3


def test_constrained_crop_along_a_scripted_path() -> None:
    bbox = np.array([[20, 20, 60, 60, 0]], dtype=np.float32)
    script = [
        *(0.5, 1.0, 10, 20),  # min IoU 0.1: window (20, 10, 50, 50), IoU 0.64: taken
        *(0.5, 1.0, 0, 0),  # min IoU 0.3: window (0, 0, 50, 50), IoU 0.28: refused
        *(0.6, 1.0, 10, 10),  # window (10, 10, 60, 60), IoU 0.44: taken
        *(0.3, 1.0, 0, 0),  # min IoU 0.9: two refused tries, no candidate
        *(0.3, 1.0, 0, 0),
        1,  # candidates: whole image, (20, 10, 50, 50), (10, 10, 60, 60): take the second
    ]
    rng = ScriptedRng(script)
    boxes, crop = aug.random_crop_with_constraints(
        bbox, (100, 100), rng, constraints=((0.1, None), (0.3, None), (0.9, None)), max_trial=2
    )
    assert crop == (20, 10, 50, 50)
    np.testing.assert_array_equal(boxes, [[0, 10, 40, 50, 0]])
    assert rng.values == []
    assert rng.calls[:4] == [
        ("uniform", 0.3, 1.0),
        ("uniform", 0.5, 2.0),  # aspect ratio in [max(1/2, s^2), min(2, 1/s^2)]
        ("integers", 0, 50),
        ("integers", 0, 50),
    ]


def test_crop_candidates_that_lose_every_box_are_passed_over() -> None:
    bbox = np.array([[80, 80, 100, 100, 3]], dtype=np.float32)
    rng = ScriptedRng([0.5, 1.0, 0, 0, 1, 0])  # window (0, 0, 50, 50) drops the box
    boxes, crop = aug.random_crop_with_constraints(
        bbox, (100, 100), rng, constraints=((None, 1.0),), max_trial=1
    )
    assert crop == (0, 0, 100, 100)
    np.testing.assert_array_equal(boxes, bbox)
    empty = np.zeros((0, 5), dtype=np.float32)
    boxes, crop = aug.random_crop_with_constraints(empty, (100, 100), ScriptedRng([0.5, 1, 5, 7]))
    assert crop == (7, 5, 50, 50) and boxes.shape == (0, 5)


def test_color_distortion_steps() -> None:
    image = np.array([[[10, 20, 30], [200, 100, 0]]], dtype=np.uint8)
    # brightness +10; contrast-first order; contrast x1.5; saturation and hue skipped
    out = aug.random_color_distort(image, ScriptedRng([0.9, 10.0, 1, 0.9, 1.5, 0.1, 0.1]))
    np.testing.assert_array_equal(out, (image.astype(np.float32) + 10) * np.float32(1.5))
    assert out.dtype == np.float32
    # saturation 0 leaves the gray value 0.299 R + 0.587 G + 0.114 B in every channel
    rng = ScriptedRng([0.1, 0, 0.9, 0.0, 0.1, 0.1])
    gray = aug.random_color_distort(image, rng, saturation_low=0.0)
    want = (image * np.float32([0.299, 0.587, 0.114])).sum(axis=2, keepdims=True)
    np.testing.assert_allclose(gray, np.repeat(want, 3, axis=2), rtol=1e-6)
    # a hue rotation by 0 is the YIQ round trip: the identity up to the matrices' rounding
    rng = ScriptedRng([0.1, 0, 0.1, 0.9, 0.0, 0.1])
    same = aug.random_color_distort(image, rng)
    np.testing.assert_allclose(same, image, atol=0.5)


def test_auto_interpolation_is_mxnets_interp_9() -> None:
    assert aug.auto_interpolation((500, 375), (512, 512)) == 2  # both grow: cubic
    assert aug.auto_interpolation((1000, 800), (512, 512)) == 3  # both shrink: area
    assert aug.auto_interpolation((600, 300), (512, 512)) == 1  # mixed: bilinear


def test_normalisation_is_imagenet_mean_and_std() -> None:
    chw = aug.to_normalized_chw(np.full((2, 3, 3), 100, dtype=np.uint8))
    assert chw.shape == (3, 2, 3) and chw.dtype == np.float32
    want = (np.float32(100) / np.float32(255) - np.float32(IMAGE_MEAN)) / np.float32(IMAGE_STD)
    np.testing.assert_array_equal(chw[:, 0, 0], want)


def test_validation_transform_resizes_boxes_exactly() -> None:
    image = np.full((48, 64, 3), 100, dtype=np.uint8)
    label = np.array([[7, 5, 39, 29, 11, 0]], dtype=np.float32)
    out, boxes = aug.SsdValTransform(128, 128)(image, label)
    assert out.shape == (3, 128, 128)
    np.testing.assert_array_equal(boxes, np.float32([[14, 5 * 128 / 48, 78, 29 * 128 / 48, 11, 0]]))
    want = (100 / 255 - np.array(IMAGE_MEAN)) / np.array(IMAGE_STD)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), want, rtol=1e-5)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> VocDetection:
    root: Path = tmp_path_factory.mktemp("voc")
    return VocDetection(make_voc(root))


def test_training_transform_keeps_boxes_inside_and_is_seeded(sample: VocDetection) -> None:
    transform = aug.SsdTrainTransform(96, 64)
    expands = 0
    for seed in range(40):
        image, label = sample[seed % len(sample)]
        out, boxes = transform(image, label, np.random.default_rng(seed))
        assert out.shape == (3, 64, 96) and out.dtype == np.float32
        assert boxes.dtype == np.float32 and 1 <= len(boxes) <= len(label)
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 96).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= 64).all()
        assert (boxes[:, 0] < boxes[:, 2]).all() and (boxes[:, 1] < boxes[:, 3]).all()
        assert set(boxes[:, 4]) <= set(label[:, 4]) and set(boxes[:, 5]) <= {0.0, 1.0}
        again = transform(image, label, np.random.default_rng(seed))
        np.testing.assert_array_equal(again[0], out)
        np.testing.assert_array_equal(again[1], boxes)
        # a mean-filled expansion shows as exact zeros once normalised
        expands += bool((np.abs(out).max(axis=0) < 1e-5).any())
    assert expands > 5
