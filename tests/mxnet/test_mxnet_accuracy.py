"""Accuracy on the MXNet path: ``evaluate()`` of SSD (VOC07 mAP, scored as GluonCV's
``VOC07MApMetric`` scores the same detections) and BERT (accuracy) over the test split of tiny
generated datasets, on one context and two, and the ``evaluate`` and ``to-accuracy``
scenarios through the harness, a training run going on training after each evaluation.
Runs in the MXNet environment (.venv-mxnet)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gluoncv.utils.metrics.voc_detection import VOC07MApMetric

import models.ssd.gluon as ssd_gluon
from bench import metrics
from bench.run import registry
from bench.run.worker import execute
from bench.schema.record import RunRecord
from bench.schema.spec import RunSpec
from data.samples import make_imdb, make_voc, make_voc_record, write_vocab
from models.bert import config as bert
from models.bert.gluon import BertGluon
from models.mxnet_common import MxnetWorkload
from models.ssd.gluon import SsdGluon

SMALL_SETTINGS = bert.BertSettings(
    shape=bert.BertShape(hidden=64, layers=2, heads=2, intermediate=128, max_positions=64)
)
IMAGE_SIZE = 128
SEQ_LEN = 16
#: Images in the sample RecordIO file (VOC07+12 trainval) and VOC07 test; IMDB test reviews
#: (pos/1_10.txt, then neg/7_2.txt).
REC_IMAGES, VOC_TEST, IMDB_TEST_LABELS = 5, 1, [1, 0]
RESULT_KEYS = {"metric", "value", "samples", "split"}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("datasets")
    return {
        "voc": make_voc(root),
        "rec": make_voc_record(root),
        "imdb": make_imdb(root),
        "vocab": write_vocab(root / "vocab.txt"),
    }


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[MxnetWorkload]:
    """The workloads the harness makes, each keeping its steps' outputs; BERT small."""
    made: list[MxnetWorkload] = []
    classes: dict[type, type] = {}

    def recording(base: type) -> type:
        class Recording(base):  # type: ignore[misc, valid-type]
            def __init__(self, spec: RunSpec) -> None:
                if base is BertGluon:
                    super().__init__(spec, SMALL_SETTINGS)
                else:
                    super().__init__(spec)
                self.outputs: list[Any] = []
                made.append(self)

            def step(self) -> Any:
                out = super().step()
                self.outputs.append(out)
                return out

        return Recording

    original: Callable[[registry.Entry], type] = registry.workload_class

    def workload_class(entry: registry.Entry) -> type:
        base = original(entry)
        return classes.setdefault(base, recording(base))

    monkeypatch.setattr(registry, "workload_class", workload_class)
    return made


def spec(workload: str, data: Path, **kw: Any) -> RunSpec:
    base: dict[str, Any] = {
        "workload": workload,
        "backend": "mxnet",
        "mode": "infer",
        "scenario": "evaluate",
        "data": str(data),
        "device": "cpu",
        "batch": 2,
        "image_size": IMAGE_SIZE,
        "seq_len": SEQ_LEN,
        "iters": 1,
        "warmup": 0,
        "loader_workers": 0,
    }
    return RunSpec(**{**base, **kw})


def run(workload: str, data: Path, **kw: Any) -> RunRecord:
    return execute(spec(workload, data, **kw), progress=False, telemetry_interval_s=None)


# -- SSD ----------------------------------------------------------------------------------------
class TeeMetric(metrics.Voc07MApMetric):
    """The harness's metric, handing every update to GluonCV's VOC07MApMetric as well."""

    made: list[TeeMetric] = []

    def __init__(self, class_names: Any = None) -> None:
        super().__init__(class_names=class_names)
        self.gluoncv = VOC07MApMetric(iou_thresh=0.5, class_names=class_names)
        self.updates = 0
        TeeMetric.made.append(self)

    def update(self, *args: Any) -> None:
        super().update(*args)
        self.gluoncv.update(*args)
        self.updates += 1

    def gluoncv_map(self) -> float:
        names, values = self.gluoncv.get()
        assert names[-1] == "mAP"
        return float(values[-1])


def with_found_objects(seed: int) -> Callable[..., None]:
    """``update_map`` with, in front of the network's detections (an untrained network
    finds nothing), detections near every ground-truth box (jittered, some duplicated,
    some of another class, some reaching past the input's edges) and a few anywhere in the
    image, all scored at random."""
    rng = np.random.default_rng(seed)
    real = ssd_gluon.update_map

    def update_map(metric: Any, ids: Any, scores: Any, boxes: Any, labels: Any, size: int) -> None:
        ids, scores, boxes = ids.copy(), scores.copy(), boxes.copy()
        for b, image in enumerate(labels):
            row = 0
            objects = image[image[:, 4] >= 0]
            for obj in objects:
                for reach in (0.0, 0.0, 40.0):
                    boxes[b, row] = obj[:4] + rng.uniform(-8, 8, 4) + [0, 0, reach, reach]
                    ids[b, row, 0] = obj[4] if rng.random() < 0.8 else (obj[4] + 3) % 20
                    scores[b, row, 0] = rng.uniform(0.05, 1.0)
                    row += 1
            for _ in range(4):  # and some anywhere, of the classes in the image
                corner = rng.uniform(0, size - 32, 2)
                boxes[b, row] = [*corner, *(corner + rng.uniform(16, 64, 2))]
                ids[b, row, 0] = rng.choice(objects[:, 4])
                scores[b, row, 0] = rng.uniform(0.05, 1.0)
                row += 1
        real(metric, ids, scores, boxes, labels, size)

    return update_map


def test_ssd_voc07_map_is_gluoncvs_on_the_same_detections(
    datasets: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    found = with_found_objects(seed=0)

    def counting(*args: Any) -> None:
        batches.append(len(args[4]))  # the labels
        found(*args)

    monkeypatch.setattr(ssd_gluon, "Voc07MApMetric", TeeMetric)
    monkeypatch.setattr(ssd_gluon, "update_map", counting)
    TeeMetric.made.clear()
    wl = SsdGluon(spec("ssd", datasets["rec"]))
    wl.setup()
    try:
        assert wl.batches is None  # an evaluate run reads the test split only
        result = wl.evaluate()
        assert set(result) == RESULT_KEYS
        assert (result["metric"], result["samples"], result["split"]) == (
            "voc07_map",
            REC_IMAGES,
            "voc.rec",
        )
        assert batches == [2, 2, 1]  # in batches of two, the last one kept short
        (metric,) = TeeMetric.made
        assert metric.updates == 3
        assert 0.2 < result["value"] < 1
        assert result["value"] == pytest.approx(metric.gluoncv_map(), abs=1e-6)

        batches.clear()
        limited = wl.evaluate(max_samples=3)
        assert (limited["samples"], batches) == (3, [2, 1])
        assert limited["value"] == pytest.approx(TeeMetric.made[-1].gluoncv_map(), abs=1e-6)
        facts = wl.data_facts()
        assert (facts["samples"], facts["split_samples"]) == (3, REC_IMAGES)
        assert (facts["last_batch"], facts["shuffle"]) == ("keep", False)
    finally:
        wl.teardown()


def test_detections_are_fed_as_gluoncvs_validation_feeds_them() -> None:
    """Boxes clipped to the input, ground truth and difficult flags sliced from the labels
    (none without the sixth column)."""
    fed: list[tuple[Any, ...]] = []

    class Recorder:
        def update(self, *args: Any) -> None:
            fed.append(args)

    ids = np.array([[[3.0], [-1.0]]])
    scores = np.array([[[0.9], [-1.0]]])
    boxes = np.array([[[-5.0, 10.0, 140.0, 60.0], [0.0, 0.0, 0.0, 0.0]]])
    labels = np.array([[[1.0, 2.0, 30.0, 40.0, 3.0, 1.0], [-1, -1, -1, -1, -1, -1]]])
    ssd_gluon.update_map(Recorder(), ids, scores, boxes, labels, 128)
    pred_boxes, pred_ids, pred_scores, gt_boxes, gt_ids, difficult = fed[0]
    np.testing.assert_array_equal(pred_boxes[0, 0], [0.0, 10.0, 128.0, 60.0])
    assert pred_ids is ids and pred_scores is scores
    np.testing.assert_array_equal(gt_boxes, labels[..., :4])
    np.testing.assert_array_equal(gt_ids[..., 0], [[3.0, -1.0]])
    np.testing.assert_array_equal(difficult[..., 0], [[1.0, -1.0]])
    ssd_gluon.update_map(Recorder(), ids, scores, boxes, labels[..., :5], 128)
    assert fed[1][5] is None


def test_ssd_evaluate_scenario_through_the_harness(
    datasets: dict[str, Path], made: list[MxnetWorkload]
) -> None:
    record = run("ssd", datasets["voc"], loader_workers=1)
    assert record.outcome.status == "ok", record.outcome
    (wl,) = made
    assert wl.outputs == []  # no step: one pass of evaluation
    result = record.scenario.result
    assert record.scenario.name == "evaluate"
    assert result is not None and set(result) == RESULT_KEYS | {"weights"}
    assert result["weights"] == "random"  # no --pretrained: the record says so
    assert [f.code for f in record.validity.flags if f.code == "random_weights"] == [
        "random_weights"
    ]
    assert (result["metric"], result["samples"], result["split"]) == (
        "voc07_map",
        VOC_TEST,
        "VOC2007/test",
    )
    assert 0 <= result["value"] <= 1
    assert record.timing.measured_samples == VOC_TEST
    assert (record.data.format, record.data.samples) == ("voc", VOC_TEST)
    assert record.data.details["split"] == "VOC2007/test"
    assert record.data.details["last_batch"] == "keep"


def test_ssd_trains_to_accuracy_evaluating_every_two_steps(
    datasets: dict[str, Path], made: list[MxnetWorkload]
) -> None:
    record = run(
        "ssd",
        datasets["voc"],
        mode="train",
        scenario="to-accuracy",
        target_metric=1.0,
        eval_every=2,
        iters=4,
    )
    # measured in full, the target missed: its own outcome, the curve kept
    assert record.outcome.status == "target_missed", record.outcome
    assert "not reached" in (record.outcome.message or "")
    (wl,) = made
    result = record.scenario.result
    assert result is not None
    assert [e["step"] for e in result["evaluations"]] == [2, 4]
    assert [e["samples"] for e in result["evaluations"]] == [4, 8]
    assert all(e["metric"] == "voc07_map" for e in result["evaluations"])
    assert all(e["eval_samples"] == VOC_TEST for e in result["evaluations"])
    assert all(0 <= e["value"] <= 1 for e in result["evaluations"])
    assert result["reached"] is False and result["steps_to_target"] is None
    assert result["best"] == max(e["value"] for e in result["evaluations"])
    # every step trained, those after an evaluation too: GluonCV's per-sample loss
    assert len(wl.outputs) == 4
    for out in wl.outputs:
        loss = out.asnumpy()
        assert loss.shape == (2,) and np.isfinite(loss).all() and (loss > 0).all()
    assert record.data.details["evaluation"]["split"] == "VOC2007/test"


# -- BERT ---------------------------------------------------------------------------------------
def test_bert_accuracy_is_the_logits_argmax_on_one_context_and_two(
    datasets: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    logits: list[np.ndarray] = []
    original = BertGluon.logits

    def keeping(self: BertGluon, features: Any) -> np.ndarray:
        out = original(self, features)
        logits.append(out)
        return out

    monkeypatch.setattr(BertGluon, "logits", keeping)
    data, vocab = datasets["imdb"], str(datasets["vocab"])
    one = BertGluon(spec("bert", data, vocab=vocab), SMALL_SETTINGS)
    one.setup()
    result = one.evaluate()
    assert set(result) == RESULT_KEYS
    assert (result["metric"], result["samples"], result["split"]) == ("accuracy", 2, "test")
    (single,) = logits
    expected = float(np.mean(single.argmax(axis=1) == IMDB_TEST_LABELS))
    assert result["value"] == expected
    assert one.evaluate(max_samples=1)["samples"] == 1

    # two contexts, one sample each (a loop run: the accuracy scenarios take one device)
    two = BertGluon(
        spec("bert", data, vocab=vocab, scenario="loop", batch=1, gpus=2), SMALL_SETTINGS
    )
    two.setup()
    try:
        logits.clear()
        assert two.evaluate() == result
        np.testing.assert_allclose(logits[0], single, rtol=1e-5, atol=1e-6)
        logits.clear()
        assert two.evaluate(max_samples=1)["samples"] == 1  # one sample: one context
        np.testing.assert_allclose(logits[0], single[:1], rtol=1e-5, atol=1e-6)
    finally:
        two.teardown()


def test_a_bert_training_run_evaluates_without_dropout_and_trains_on(
    datasets: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    logits: list[np.ndarray] = []
    original = BertGluon.logits

    def keeping(self: BertGluon, features: Any) -> np.ndarray:
        logits.append(original(self, features))
        return logits[-1]

    monkeypatch.setattr(BertGluon, "logits", keeping)
    wl = BertGluon(
        spec(
            "bert",
            datasets["imdb"],
            vocab=str(datasets["vocab"]),
            mode="train",
            scenario="loop",
            warmup=1,
        ),
        SMALL_SETTINGS,
    )
    wl.setup()
    try:
        before = float(wl.step().asnumpy())
        wl.evaluate()
        wl.evaluate()
        np.testing.assert_array_equal(logits[0], logits[1])  # inference: no dropout
        after = float(wl.step().asnumpy())
        assert math.isfinite(before) and math.isfinite(after)
        assert wl.step_count == 2 and wl.data_facts()["evaluation"]["split"] == "test"
    finally:
        wl.teardown()


def test_bert_evaluate_scenario_respects_eval_samples(
    datasets: dict[str, Path], made: list[MxnetWorkload]
) -> None:
    record = run("bert", datasets["imdb"], vocab=str(datasets["vocab"]), eval_samples=1)
    assert record.outcome.status == "ok", record.outcome
    result = record.scenario.result
    assert result is not None
    assert (result["metric"], result["samples"], result["split"]) == ("accuracy", 1, "test")
    assert result["value"] in (0.0, 1.0)
    assert (record.data.format, record.data.samples) == ("aclimdb", 1)
    assert record.data.details["split_samples"] == 2


def test_bert_reaches_a_tiny_target_at_the_first_evaluation(
    datasets: dict[str, Path], made: list[MxnetWorkload]
) -> None:
    record = run(
        "bert",
        datasets["imdb"],
        vocab=str(datasets["vocab"]),
        mode="train",
        scenario="to-accuracy",
        target_metric=1e-9,
        eval_every=2,
        iters=4,
        loader_workers=1,  # the evaluation's loader forks its worker mid-run
    )
    assert record.outcome.status == "ok", record.outcome
    result = record.scenario.result
    assert result is not None
    (first,) = result["evaluations"]
    assert first["step"] == 2 and first["eval_samples"] == 2 and first["value"] > 0
    assert result["reached"] is True and result["steps_to_target"] == 2
    assert result["samples_to_target"] == 4
    assert result["time_to_target_s"] == first["wall_s"]
    assert record.timing.measured_iters == 2  # training stopped at the target


@pytest.mark.parametrize("workload", ["ssd", "bert"])
def test_to_accuracy_set_up_opens_no_loader_until_the_clock_runs(
    datasets: dict[str, Path], workload: str
) -> None:
    """The model is built untimed; the training loader opens in ``open_data()``, inside the
    to-accuracy clock (MXNet runs no step in set-up: it opens nothing else there)."""
    data, extra = (
        (datasets["voc"], {})
        if workload == "ssd"
        else (datasets["imdb"], {"vocab": str(datasets["vocab"])})
    )
    to_acc = spec(workload, data, mode="train", scenario="to-accuracy", target_metric=0.5, **extra)
    make = SsdGluon if workload == "ssd" else (lambda s: BertGluon(s, SMALL_SETTINGS))
    wl = make(to_acc)
    wl.setup()
    assert wl.batches is None
    assert wl.open_data() == 0
    assert wl.batches is not None
    wl.step()  # trains on the loader's first batch
    loop = make(to_acc.replace(scenario="loop", target_metric=None, warmup=1))
    loop.setup()
    assert loop.batches is not None  # any other scenario: opened in set-up, as before


def test_evaluation_needs_a_dataset() -> None:
    wl = BertGluon(RunSpec(workload="bert", backend="mxnet", device="cpu"), SMALL_SETTINGS)
    with pytest.raises(RuntimeError, match="give spec.data"):
        wl.evaluate()
