"""Accuracy of the PyTorch path on tiny generated datasets: SSD's VOC07 mAP and BERT's
accuracy from ``evaluate()``, scored as :mod:`bench.metrics` scores the
same predictions, and the ``evaluate`` and ``to-accuracy`` scenarios through the worker.
BERT runs a two-layer model of BERT's structure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bench.metrics import Voc07MApMetric, accuracy
from bench.run import registry
from bench.run.registry import Entry
from bench.run.worker import execute
from bench.schema.spec import RunSpec
from data.loaders import DetectionTensors
from data.samples import make_imdb, make_voc_record, write_vocab
from data.selection import read_reviews
from models.ssd.torch import SsdTorch
from tests.test_torch_data import SmallBertTorch

OPTIONS = dict(progress=False, telemetry_interval_s=None)
KEYS = {"metric", "value", "samples", "split"}
SIZE = 128


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("datasets")
    make_voc_record(base)  # VOCdevkit/ (VOC2007/test: 1 image) and voc.rec of 5 images
    make_imdb(base)  # test split: 1 positive, 1 negative review
    write_vocab(base / "vocab.txt")
    return base


@pytest.fixture
def small_bert(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = dict(registry.REGISTRY)
    entries[("bert", "torch")] = Entry("tests.test_torch_data:SmallBertTorch")
    monkeypatch.setattr(registry, "REGISTRY", entries)


@pytest.fixture(scope="module")
def ssd(root: Path) -> Iterator[SsdTorch]:
    spec = RunSpec(
        workload="ssd", mode="infer", image_size=SIZE, batch=2, data=str(root / "voc.rec")
    )
    workload = SsdTorch(spec.replace(device="cpu", loader_workers=0))
    workload.setup()
    yield workload
    workload.teardown()


def bert_workload(root: Path, mode: str) -> SmallBertTorch:
    spec = RunSpec(
        workload="bert",
        mode=mode,
        seq_len=16,
        batch=2,
        device="cpu",
        data=str(root / "aclImdb"),
        vocab=str(root / "vocab.txt"),
        loader_workers=0,
    )
    workload = SmallBertTorch(spec)
    workload.setup()
    return workload


class TruthDetector:
    """Stands in for ``SsdTorch._detect``: the ground truth of the batches in the order the
    evaluation reads them, as detections (score 1), the boxes of image ``shifted`` moved
    right by their own width (so that they miss)."""

    def __init__(self, batches: list[DetectionTensors], shifted: int | None = None) -> None:
        self.batches = list(batches)
        self.shifted = shifted
        self.seen: list[int] = []
        self.images = 0

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        assert torch.is_inference_mode_enabled()
        batch = self.batches.pop(0)
        assert images.shape == batch.images.shape
        boxes = batch.boxes.clone()
        for i in range(len(images)):
            if self.images + i == self.shifted:
                width = boxes[i, :, 2] - boxes[i, :, 0] + 1
                boxes[i, :, 0] += width
                boxes[i, :, 2] += width
        self.seen.append(len(images))
        self.images += len(images)
        return batch.labels.clone(), torch.ones(batch.labels.shape), boxes


def truth(workload: SsdTorch, max_samples: int | None) -> list[DetectionTensors]:
    return list(workload.eval_data(max_samples))


def test_ssd_evaluate_scores_the_ground_truth_as_a_perfect_detector(ssd, monkeypatch):
    batches = truth(ssd, None)
    detector = TruthDetector(batches)
    monkeypatch.setattr(ssd, "_detect", detector)
    result = ssd.evaluate()
    # eleven points of 1/11 each: 1 up to float rounding
    assert result == {
        "metric": "voc07_map",
        "value": pytest.approx(1.0, abs=1e-12),
        "samples": 5,
        "split": "voc.rec",
    }
    # no shuffle, the short last batch kept; the eval-mode network's flag is restored
    assert detector.seen == [2, 2, 1] and ssd.net.training is False


def test_ssd_evaluate_equals_the_metric_fed_the_same_detections(ssd, monkeypatch):
    batches = truth(ssd, None)
    # image 0 (000005: dog and person) is missed; the 5 other classes with a
    # non-difficult object (the chair is difficult) are found: mAP 5/7
    monkeypatch.setattr(ssd, "_detect", TruthDetector(batches, shifted=0))
    value = ssd.evaluate()["value"]
    assert value == pytest.approx(5 / 7, abs=1e-12)
    metric = Voc07MApMetric()
    replay = TruthDetector(batches, shifted=0)
    for batch in batches:
        with torch.inference_mode():
            ids, scores, boxes = replay(batch.images)
        metric.update(
            np.clip(boxes.numpy(), 0, SIZE),
            ids.numpy(),
            scores.numpy(),
            batch.boxes.numpy(),
            batch.labels.numpy(),
            batch.difficult.numpy(),
        )
    assert value == metric.result().mean
    assert int((torch.cat([b.difficult.flatten() for b in batches]) == 1).sum()) == 1


def test_ssd_evaluate_reads_at_most_max_samples_with_one_loader(ssd, monkeypatch):
    detector = TruthDetector(truth(ssd, 3))
    monkeypatch.setattr(ssd, "_detect", detector)
    first = ssd.eval_data(3)
    result = ssd.evaluate(3)
    assert result["samples"] == 3 and detector.seen == [2, 1]
    assert ssd.eval_data(3) is first  # built once, reused
    assert first.facts["samples"] == 3 and first.facts["split_samples"] == 5
    assert first.facts["last_batch"] == "keep" and first.facts["shuffle"] is False


def test_ssd_evaluate_of_the_network(ssd):
    result = ssd.evaluate(2)
    assert set(result) == KEYS and result["samples"] == 2
    assert 0.0 <= result["value"] <= 1.0


def test_bert_accuracy_is_the_argmax_of_the_logits(root: Path, monkeypatch):
    workload = bert_workload(root, "train")
    try:
        assert workload.model is not None and workload.model.training
        logits: list[torch.Tensor] = []
        modes: list[bool] = []
        original = workload._logits

        def recording(features: dict[str, torch.Tensor]) -> torch.Tensor:
            assert workload.model is not None and torch.is_inference_mode_enabled()
            modes.append(workload.model.training)
            logits.append(original(features))
            return logits[-1]

        monkeypatch.setattr(workload, "_logits", recording)
        result = workload.evaluate()
        labels = [r.label for r in read_reviews(str(root / "aclImdb"), "infer")[1]]
        expected = accuracy(torch.cat(logits).numpy(), labels)
        assert result == {"metric": "accuracy", "value": expected, "samples": 2, "split": "test"}
        assert modes == [False] and workload.model.training  # eval mode, then train again
        assert workload.evaluate(1)["samples"] == 1
        # no dropout: the same weights give the same logits
        workload.evaluate()
        assert torch.equal(logits[0], logits[-1])
    finally:
        workload.teardown()


def evaluate_spec(root: Path, workload: str, **changes: Any) -> RunSpec:
    fields: dict[str, Any] = dict(
        workload=workload,
        mode="infer",
        scenario="evaluate",
        device="cpu",
        iters=1,
        warmup=0,
        batch=2,
    )
    if workload == "ssd":
        fields.update(image_size=SIZE, data=str(root / "VOCdevkit"), loader_workers=1)
    else:
        fields.update(
            seq_len=16,
            data=str(root / "aclImdb"),
            vocab=str(root / "vocab.txt"),
            loader_workers=0,
        )
    return RunSpec(**{**fields, **changes})


@pytest.mark.parametrize(
    ("workload", "metric", "split", "samples", "limit"),
    [("ssd", "voc07_map", "VOC2007/test", 1, None), ("bert", "accuracy", "test", 1, 1)],
)
def test_the_evaluate_scenario_runs(root, small_bert, workload, metric, split, samples, limit):
    record = execute(evaluate_spec(root, workload, eval_samples=limit), **OPTIONS)
    assert record.ok, record.outcome
    assert record.scenario is not None and record.scenario.result is not None
    result = record.scenario.result
    assert (result["metric"], result["split"], result["samples"]) == (metric, split, samples)
    assert 0.0 <= result["value"] <= 1.0
    assert record.data is not None and record.data.samples == samples
    assert record.data.details["last_batch"] == "keep"


def to_accuracy(root: Path, target: float) -> RunSpec:
    return evaluate_spec(
        root,
        "bert",
        mode="train",
        scenario="to-accuracy",
        target_metric=target,
        eval_every=2,
        iters=4,
    )


def test_to_accuracy_stops_at_the_first_evaluation_that_reaches_the_target(root, small_bert):
    record = execute(to_accuracy(root, 1e-9), **OPTIONS)
    assert record.ok, record.outcome
    assert record.scenario is not None and record.scenario.result is not None
    result = record.scenario.result
    assert result["reached"] is True and result["steps_to_target"] == 2
    assert [e["step"] for e in result["evaluations"]] == [2]
    assert result["evaluations"][0]["eval_samples"] == 2
    assert result["metric"] == "accuracy" and result["best"] > 0


def test_to_accuracy_out_of_reach_evaluates_every_eval_every_steps(root, small_bert):
    record = execute(to_accuracy(root, 1.0), **OPTIONS)
    # measured in full, but the goal was missed: its own outcome, the curve kept
    assert record.outcome.status == "target_missed" and not record.ok
    assert record.outcome.message is not None
    assert record.outcome.message.startswith("target accuracy 1 not reached: best ")
    assert record.timing is not None and record.throughput is not None
    assert record.scenario is not None and record.scenario.result is not None
    result = record.scenario.result
    assert result["reached"] is False and result["steps_to_target"] is None
    evaluations = result["evaluations"]
    assert [e["step"] for e in evaluations] == [2, 4]
    assert all(0.0 <= e["value"] < 1.0 for e in evaluations)
    assert result["best"] == max(e["value"] for e in evaluations)


def test_to_accuracy_set_up_reads_no_data_until_the_clock_runs(root):
    """Set-up builds the model untimed; the loader, and BERT's inspected step on a real
    batch, wait for ``open_data()``, which the scenario calls inside its clock."""
    spec = to_accuracy(root, 0.5)
    workload = SmallBertTorch(spec.replace(device="cpu"))
    try:
        workload.setup()
        assert workload.batches is None and workload.setup_steps == 0
        assert workload.open_data() == 1  # the inspected step: one update on a real batch
        assert workload.batches is not None and workload.batches.batches == 1
        assert workload.open_data() == 0  # done once
    finally:
        workload.teardown()
    loop = SmallBertTorch(spec.replace(device="cpu", scenario="loop", target_metric=None))
    try:
        loop.setup()  # any other scenario: all of it in set-up, as before
        assert loop.batches is not None and loop.setup_steps == 1
    finally:
        loop.teardown()


def test_to_accuracy_counts_the_inspected_step_and_the_time_to_open_the_data(root, small_bert):
    record = execute(to_accuracy(root, 1e-9), **OPTIONS)
    assert record.ok, record.outcome
    result = record.scenario.result if record.scenario is not None else None
    assert result is not None and result["open_data_s"] > 0
    # the inspected step (update 1) and the measured step 2, then the evaluation
    assert result["steps"] == 2 and record.timing is not None
    assert record.timing.measured_iters == 1
    assert result["time_to_target_s"] > result["open_data_s"]


def test_a_missed_target_prints_so_and_exits_1(root, small_bert, monkeypatch, capsys, tmp_path):
    from bench import cli
    from bench.run import runner
    from bench.run.store import write_record

    def run_here(spec: RunSpec, options: runner.RunOptions) -> tuple[Any, Path]:
        record = execute(spec.replace(loader_workers=0), **OPTIONS)
        return record, write_record(record, options.out_dir)

    monkeypatch.setattr(runner, "run", run_here)
    argv = ["run", "--workload", "bert", "--mode", "train", "--scenario", "to-accuracy"]
    argv += ["--data", str(root / "aclImdb"), "--vocab", str(root / "vocab.txt")]
    argv += ["--device", "cpu", "--batch", "2", "--seq-len", "16", "--warmup", "0"]
    argv += ["--iters", "2", "--eval-every", "2", "--target", "1.0", "--out", str(tmp_path)]
    argv += ["--no-progress", "--no-telemetry"]
    assert cli.main(argv) == 1
    out = capsys.readouterr().out
    assert "target_missed: target accuracy 1 not reached" in out
    (path,) = tmp_path.glob("*.json")
    assert '"reached": false' in path.read_text()


def test_bench_eval_refuses_random_weights_unless_asked(root, tmp_path, capsys):
    from bench import cli

    argv = ["eval", "--workload", "ssd", "--data", str(root / "VOCdevkit"), "--device", "cpu"]
    argv += ["--image-size", str(SIZE), "--batch", "1", "--out", str(tmp_path)]
    argv += ["--no-progress", "--no-telemetry", "--loader-workers", "0"]
    assert cli.main(argv) == 2
    assert "--pretrained" in capsys.readouterr().err
    assert not tmp_path.exists() or not list(tmp_path.iterdir())

    assert cli.main([*argv, "--random-weights"]) == 0
    assert "random_weights" in capsys.readouterr().out  # the flags' legend under the table
    (path,) = tmp_path.glob("*.json")
    from bench.run.store import load_record

    record = load_record(path)
    assert [f.code for f in record.validity.flags if f.code == "random_weights"] == [
        "random_weights"
    ]
    assert record.scenario is not None and record.scenario.result is not None
    assert record.scenario.result["weights"] == "random"
