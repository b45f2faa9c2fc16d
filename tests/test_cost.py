import pytest

from bench.analysis.cost import cost_metrics, gpus_used, run_cost
from bench.run.store import new_record
from bench.schema.record import Environment, RunRecord, Throughput
from bench.schema.spec import RunSpec
from bench.schema.telemetry import TelemetrySummary


def _record(mode: str, workload: str = "ssd", device: str = "cpu") -> RunRecord:
    record = new_record(RunSpec(workload=workload, mode=mode, device=device), Environment())
    record.throughput = Throughput(samples_per_s=100.0, iters_per_s=100.0)
    record.telemetry = TelemetrySummary(energy_per_sample_j=1.8)
    return record


def test_cost_metrics_hand_computed():
    # 100 samples/s on a $3.06/h instance: 360,000 samples per hour
    c = cost_metrics(100.0, 3.06, epoch_samples=16_551, energy_per_sample_j=1.8)
    assert c.samples_per_usd == pytest.approx(360_000 / 3.06)
    assert c.usd_per_million_samples == pytest.approx(3.06 / 0.36)  # $8.50
    assert c.hours_per_epoch == pytest.approx(16_551 / 100 / 3600)
    assert c.usd_per_epoch == pytest.approx(16_551 / 100 / 3600 * 3.06)  # $0.1407
    assert c.kwh_per_million_samples == pytest.approx(0.5)  # 1.8 MJ


def test_no_epoch_no_epoch_cost_and_unpriced_runs_no_dollars():
    c = cost_metrics(1000.0, 0.526)
    assert c.usd_per_million_samples == pytest.approx(0.526 / 3.6)
    assert c.usd_per_epoch is None and c.hours_per_epoch is None
    unpriced = cost_metrics(50.0, None, epoch_samples=25_000)
    assert unpriced.usd_per_million_samples is None and unpriced.samples_per_usd is None
    assert unpriced.hours_per_epoch == pytest.approx(25_000 / 50 / 3600)
    assert cost_metrics(None, 1.0, epoch_samples=16_551).usd_per_epoch is None


def test_run_cost_takes_the_epoch_of_the_workshop_dataset_for_training_only():
    # SSD: VOC07+12 trainval, 16,551 images; BERT: IMDB train, 25,000 reviews
    assert run_cost(_record("train"), 1.0).hours_per_epoch == pytest.approx(16_551 / 100 / 3600)
    assert run_cost(_record("train", "bert"), 1.0).hours_per_epoch == pytest.approx(
        25_000 / 100 / 3600
    )
    assert run_cost(_record("infer"), 1.0).hours_per_epoch is None
    assert run_cost(_record("train", "null"), 1.0).hours_per_epoch is None
    assert run_cost(_record("infer"), 1.0).energy_per_sample_j == 1.8


def test_gpus_used():
    assert gpus_used(_record("infer", device="cuda:3")) == 1
    assert gpus_used(_record("infer")) == 0
