"""The framework-free data code against MXNet, GluonCV and the files they write: VOC
reading, RecordIO framing and detection labels both ways, the SSD transforms' box math and
random paths, and VOC07 mAP (with the tied-score cases of tests/test_detection_metrics.py
run here too, under this environment's numpy). Runs in the MXNet environment (.venv-mxnet)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mxnet as mx
import numpy as np
import pytest
from gluoncv.data import RecordFileDetection, VOCDetection
from gluoncv.data.transforms import bbox as gbbox
from gluoncv.data.transforms import image as gimage
from gluoncv.data.transforms.experimental import bbox as gexp_bbox
from gluoncv.data.transforms.experimental import image as gexp_image
from gluoncv.data.transforms.presets.ssd import SSDDefaultValTransform
from gluoncv.utils.bbox import bbox_iou
from gluoncv.utils.metrics.voc_detection import VOC07MApMetric

from bench.metrics import Voc07MApMetric
from data import ssd_augment as aug
from data.recordio import (
    MAGIC,
    DetectionRecordFile,
    RecordReader,
    RecordWriter,
    encode_label,
    unpack,
)
from data.samples import make_voc, make_voc_record
from data.voc import VOC_CLASSES, VocDetection, read_image
from tests.test_detection_metrics import (  # noqa: F401  (run here too, under numpy 1.23)
    test_many_tied_scores_keep_detection_order,
    test_tied_scores_across_images_rank_in_detection_order,
    test_tied_scores_in_one_image_match_in_detection_order,
)

SPLITS = ((2007, "trainval"), (2012, "trainval"))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("voc")
    make_voc(base)
    make_voc_record(base)
    return base


# --- VOC and RecordIO --------------------------------------------------------------------


def test_voc_reader_equals_gluoncv_vocdetection(root: Path) -> None:
    assert VOC_CLASSES == VOCDetection.CLASSES
    for splits, text in ((SPLITS, "2007/trainval+2012/trainval"), (((2007, "test"),), "2007/test")):
        theirs = VOCDetection(str(root / "VOCdevkit"), splits=splits)
        ours = VocDetection(root / "VOCdevkit", text)
        assert [i for _, i in theirs._items] == [i.image_id for i in ours.items]
        for k in range(len(theirs)):
            image, label = theirs[k]
            np.testing.assert_array_equal(ours.label(k), label)
            np.testing.assert_array_equal(read_image(ours.items[k].image_path), image.asnumpy())


def test_our_records_read_by_mxnet_and_gluoncv(root: Path) -> None:
    rec = root / "voc.rec"
    folder = VocDetection(root / "VOCdevkit")
    reader = mx.recordio.MXIndexedRecordIO(str(rec.with_suffix(".idx")), str(rec), "r")
    assert reader.keys == list(range(5))
    for k in reader.keys:
        header, bgr = mx.recordio.unpack_img(reader.read_idx(k))
        annotation = folder.annotations[k]
        want = encode_label(annotation.label, annotation.width, annotation.height)
        assert (header.flag, header.id, header.id2) == (want.size, k, 0)
        np.testing.assert_array_equal(header.label, want)
        np.testing.assert_array_equal(bgr[:, :, ::-1], read_image(folder.items[k].image_path))
    reader.close()
    theirs = RecordFileDetection(str(rec))
    ours = DetectionRecordFile(rec)
    assert len(theirs) == len(ours) == 5
    for k in range(5):
        image, label = theirs[k]
        our_image, our_label = ours[k]
        np.testing.assert_array_equal(our_image, image.asnumpy())
        assert our_label.dtype == label.dtype == np.float32
        np.testing.assert_array_equal(our_label, label)


def test_mxnet_records_read_by_us(root: Path, tmp_path: Path) -> None:
    folder = VocDetection(root / "VOCdevkit")
    rec, idx = tmp_path / "mx.rec", tmp_path / "mx.idx"
    writer = mx.recordio.MXIndexedRecordIO(str(idx), str(rec), "w")
    for k, item in enumerate(folder.items):
        a = folder.annotations[k]
        # MXNet example/ssd's layout (SageMaker's VOC notebook): A=2, B=6, no image size
        size = np.array([a.width, a.height, a.width, a.height])
        objects = np.column_stack([a.label[:, 4], a.label[:, :4] / size, a.label[:, 5]])
        label = np.concatenate([[2, 6], objects.ravel()]).astype(np.float32)
        header = mx.recordio.IRHeader(0, label, k + 100, 0)
        writer.write_idx(k + 100, mx.recordio.pack(header, item.image_path.read_bytes()))
    writer.close()
    reader = RecordReader(rec)
    assert reader.keys == [100, 101, 102, 103, 104]
    mx_reader = mx.recordio.MXIndexedRecordIO(str(idx), str(rec), "r")
    for key in reader.keys:
        ours, theirs = unpack(reader.read(key)), mx.recordio.unpack(mx_reader.read_idx(key))
        assert ours[0].flag == theirs[0].flag and ours[0].id == theirs[0].id == key
        np.testing.assert_array_equal(ours[0].label, theirs[0].label)
        assert ours[1] == theirs[1]
    theirs_ds, ours_ds = RecordFileDetection(str(rec)), DetectionRecordFile(rec)
    for k in range(len(ours_ds)):
        np.testing.assert_array_equal(ours_ds[k][1], theirs_ds[k][1])


def _payloads() -> Iterator[bytes]:
    m = MAGIC.to_bytes(4, "little")
    rng = np.random.default_rng(0)
    yield b""
    for n in range(1, 9):
        yield bytes(range(n))
    yield m
    yield m + m
    yield b"abcd" + m + b"efgh" + m + b"ij"
    yield b"ab" + m + b"cd"  # unaligned: no split
    yield rng.integers(0, 256, 1001, dtype=np.uint8).tobytes()
    yield (m + b"\0\0\0\0") * 50 + m


def test_framing_is_byte_identical_to_mxnets(tmp_path: Path) -> None:
    payloads = list(_payloads())
    ours = RecordWriter(tmp_path / "ours.rec")
    theirs = mx.recordio.MXIndexedRecordIO(
        str(tmp_path / "theirs.idx"), str(tmp_path / "theirs.rec"), "w"
    )
    for key, payload in enumerate(payloads):
        ours.write(key, payload)
        theirs.write_idx(key, payload)
    ours.close()
    theirs.close()
    assert (tmp_path / "ours.rec").read_bytes() == (tmp_path / "theirs.rec").read_bytes()
    assert (tmp_path / "ours.idx").read_text() == (tmp_path / "theirs.idx").read_text()
    reader = RecordReader(tmp_path / "theirs.rec")
    mx_reader = mx.recordio.MXIndexedRecordIO(
        str(tmp_path / "ours.idx"), str(tmp_path / "ours.rec"), "r"
    )
    for key, payload in enumerate(payloads):
        assert reader.read(key) == payload
        assert mx_reader.read_idx(key) == payload


# --- SSD transforms ----------------------------------------------------------------------


def _boxes(rng: np.random.Generator, n: int, width: int, height: int) -> np.ndarray:
    x0 = rng.uniform(0, width - 2, n)
    y0 = rng.uniform(0, height - 2, n)
    x1 = np.minimum(x0 + rng.uniform(1, width, n), width)
    y1 = np.minimum(y0 + rng.uniform(1, height, n), height)
    extra = np.column_stack([rng.integers(0, 20, n), rng.integers(0, 2, n)])
    return np.column_stack([x0, y0, x1, y1, extra]).astype(np.float32)


def test_box_math_equals_gluoncvs() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        w, h = (int(v) for v in rng.integers(20, 600, 2))
        boxes = _boxes(rng, int(rng.integers(1, 8)), w, h)
        for fx, fy in ((True, False), (False, True), (True, True)):
            np.testing.assert_array_equal(
                aug.flip_boxes(boxes, (w, h), fx, fy), gbbox.flip(boxes, (w, h), fx, fy)
            )
        out = (int(rng.integers(10, 700)), int(rng.integers(10, 700)))
        np.testing.assert_array_equal(
            aug.resize_boxes(boxes, (w, h), out), gbbox.resize(boxes, (w, h), out)
        )
        dx, dy = (int(v) for v in rng.integers(0, 300, 2))
        np.testing.assert_array_equal(
            aug.translate_boxes(boxes, dx, dy), gbbox.translate(boxes, dx, dy)
        )
        window = (
            int(rng.integers(1, w)),
            int(rng.integers(1, h)),
            int(rng.integers(1, w)),
            int(rng.integers(1, h)),
        )
        for inside in (True, False):
            np.testing.assert_array_equal(
                aug.crop_boxes(boxes, window, inside), gbbox.crop(boxes, window, inside)
            )
        other = _boxes(rng, 3, w, h)
        np.testing.assert_array_equal(aug.box_iou(boxes, other), bbox_iou(boxes, other))
    assert aug.CROP_CONSTRAINTS == (
        (0.1, None),
        (0.3, None),
        (0.5, None),
        (0.7, None),
        (0.9, None),
        (None, 1),
    )


class Recorder:
    """A Generator whose draws are kept, to be replayed to GluonCV's random calls."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.draws: list[float] = []

    def uniform(self, low: float = 0.0, high: float = 1.0) -> float:
        self.draws.append(float(self.rng.uniform(low, high)))
        return self.draws[-1]

    def integers(self, low: int, high: int) -> int:
        self.draws.append(int(self.rng.integers(low, high)))
        return int(self.draws[-1])


def _replay(monkeypatch: pytest.MonkeyPatch, draws: list[float]) -> None:
    """GluonCV's random calls (stdlib random and numpy's global state) take the draws in
    order; randint-style calls check that the value is in their range."""
    queue = list(draws)

    def take(low: float, high: float, inclusive: bool) -> Any:
        value = queue.pop(0)
        assert low <= value <= high if inclusive else low <= value < high
        return value

    monkeypatch.setattr(random, "uniform", lambda a, b: take(a, b, True))
    monkeypatch.setattr(random, "randrange", lambda n: take(0, n, False))
    monkeypatch.setattr(random, "randint", lambda a, b: take(a, b, True))
    monkeypatch.setattr(np.random, "uniform", lambda a=0.0, b=1.0: take(a, b, True))
    monkeypatch.setattr(np.random, "randint", lambda a, b: take(a, b, False))


def test_constrained_crop_takes_gluoncvs_path(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    for seed in range(150):
        w, h = (int(v) for v in rng.integers(30, 500, 2))
        boxes = _boxes(rng, int(rng.integers(0, 5)), w, h)
        recorder = Recorder(seed)
        ours = aug.random_crop_with_constraints(boxes, (w, h), recorder)
        with monkeypatch.context() as m:
            _replay(m, recorder.draws)
            theirs = gexp_bbox.random_crop_with_constraints(boxes, (w, h))
        assert ours[1] == tuple(theirs[1])
        np.testing.assert_array_equal(ours[0], theirs[0])


def test_expansion_and_color_distortion_take_gluoncvs_path(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    fill = [m * 255 for m in aug.IMAGE_MEAN]
    for seed in range(30):
        shape = (int(rng.integers(5, 40)), int(rng.integers(5, 40)), 3)
        image = rng.integers(0, 256, shape).astype(np.uint8)
        pixels = image.astype(np.float32)  # expansion follows the float32 colour step
        recorder = Recorder(seed)
        canvas, place = aug.random_expand(pixels, recorder, fill=fill)
        with monkeypatch.context() as m:
            # random.randint is inclusive; our integers(0, n + 1) drew the same value
            _replay(m, recorder.draws)
            theirs, their_place = gimage.random_expand(mx.nd.array(pixels), fill=fill)
        assert place == tuple(their_place)
        np.testing.assert_array_equal(canvas, theirs.asnumpy())

        recorder = Recorder(seed)
        ours = aug.random_color_distort(image, recorder)
        with monkeypatch.context() as m:
            _replay(m, recorder.draws)
            theirs = gexp_image.random_color_distort(mx.nd.array(image))
        np.testing.assert_allclose(ours, theirs.asnumpy(), rtol=1e-5, atol=1e-3)


def test_validation_boxes_equal_gluoncvs() -> None:
    rng = np.random.default_rng(4)
    for _ in range(10):
        h, w = (int(v) for v in rng.integers(20, 300, 2))
        image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        boxes = _boxes(rng, 3, w, h)
        _, ours = aug.SsdValTransform(128, 96)(image, boxes)
        _, theirs = SSDDefaultValTransform(128, 96)(mx.nd.array(image), boxes)
        np.testing.assert_array_equal(ours, theirs)


# --- VOC07 mAP ---------------------------------------------------------------------------


def _detections(rng: np.random.Generator, classes: int) -> list[np.ndarray]:
    batch, m, n = 4, 6, 12
    gt = np.full((batch, m, 4), -1.0)
    gt_labels = np.full((batch, m), -1.0)
    difficult = np.zeros((batch, m))
    pred = np.full((batch, n, 4), -1.0)
    labels = np.full((batch, n), -1.0)
    scores = np.full((batch, n), -1.0)
    for i in range(batch):
        k = int(rng.integers(0, m + 1))
        xy = rng.integers(0, 200, (k, 2))
        gt[i, :k] = np.column_stack([xy, xy + rng.integers(5, 80, (k, 2))])
        gt_labels[i, :k] = rng.integers(0, classes, k)
        difficult[i, :k] = rng.random(k) < 0.2
        j = int(rng.integers(0, n + 1))
        source = rng.integers(0, max(k, 1), j)
        jitter = rng.integers(-6, 7, (j, 4))
        near = gt[i, source] + jitter if k else rng.integers(0, 250, (j, 4))
        wild = rng.random(j) < 0.3
        near[wild] = np.sort(rng.integers(0, 250, (int(wild.sum()), 4)), axis=1)
        pred[i, :j] = near
        labels[i, :j] = np.where(
            rng.random(j) < 0.8, gt_labels[i, source] if k else 0, rng.integers(0, classes, j)
        )
        scores[i, :j] = rng.random(j)
    return [pred, labels, scores, gt, gt_labels, difficult]


def test_voc07_map_equals_gluoncvs() -> None:
    rng = np.random.default_rng(5)
    names = ["c0", "c1", "c2", "c3", "c4"]
    for _ in range(8):
        theirs, ours = VOC07MApMetric(iou_thresh=0.5, class_names=names), Voc07MApMetric(0.5, names)
        for _ in range(3):
            arrays = _detections(rng, len(names))
            theirs.update(*arrays)
            ours.update(*arrays)
        _, values = theirs.get()
        result = ours.result()
        np.testing.assert_allclose(result.per_class, values[:-1], rtol=0, atol=1e-6, equal_nan=True)
        np.testing.assert_allclose(result.mean, values[-1], rtol=0, atol=1e-6)
        assert not np.isnan(result.mean)


def test_tied_scores_rank_as_gluoncv_ranks_them_made_distinct_in_detection_order() -> None:
    """Ours on scores with ties equals GluonCV's on the same scores, each lowered by a
    hair per detection (so that GluonCV's sort sees the documented order: by score, then
    detection order)."""
    rng = np.random.default_rng(11)
    names = ["c0", "c1", "c2"]
    for _ in range(8):
        theirs, ours = VOC07MApMetric(iou_thresh=0.5, class_names=names), Voc07MApMetric(0.5, names)
        ties = 0
        seen = 0
        for _ in range(3):
            arrays = _detections(rng, len(names))
            scores = np.round(arrays[2], 1)  # a handful of values: many ties
            valid = arrays[1] >= 0
            ties += int(valid.sum()) - len(np.unique(scores[valid]))
            order = np.arange(scores.size, dtype=np.float64).reshape(scores.shape) + seen
            seen += scores.size
            ours.update(arrays[0], arrays[1], scores, *arrays[3:])
            theirs.update(arrays[0], arrays[1], scores - order * 1e-9, *arrays[3:])
        _, values = theirs.get()
        result = ours.result()
        assert ties > 0
        np.testing.assert_allclose(result.per_class, values[:-1], rtol=0, atol=1e-6, equal_nan=True)
        np.testing.assert_allclose(result.mean, values[-1], rtol=0, atol=1e-6)
