import pytest

from bench.analysis.cost import EPOCH_SAMPLES, cost_metrics, gpus_used


def test_cost_metrics_hand_computed():
    # 100 samples/s on a $3.06/h instance: 360,000 samples per hour
    c = cost_metrics(100.0, 3.06, workload="ssd", mode="train", energy_per_sample_j=1.8)
    assert c["samples_per_usd"] == pytest.approx(360_000 / 3.06)
    assert c["usd_per_million_samples"] == pytest.approx(3.06 / 0.36)  # $8.50
    assert c["hours_per_epoch"] == pytest.approx(16_551 / 100 / 3600)
    assert c["usd_per_epoch"] == pytest.approx(16_551 / 100 / 3600 * 3.06)  # $0.1407
    assert c["kwh_per_million_samples"] == pytest.approx(0.5)  # 1.8 MJ


def test_inference_runs_have_no_epoch_cost_and_unpriced_runs_no_dollars():
    c = cost_metrics(1000.0, 0.526, workload="bert", mode="infer")
    assert c["usd_per_million_samples"] == pytest.approx(0.526 / 3.6)
    assert c["usd_per_epoch"] is None and c["hours_per_epoch"] is None
    unpriced = cost_metrics(50.0, None, workload="bert", mode="train")
    assert unpriced["usd_per_million_samples"] is None and unpriced["samples_per_usd"] is None
    assert unpriced["hours_per_epoch"] == pytest.approx(25_000 / 50 / 3600)
    assert cost_metrics(None, 1.0, workload="ssd", mode="train")["usd_per_epoch"] is None


def test_epoch_sizes_are_the_workshop_datasets():
    assert EPOCH_SAMPLES == {"ssd": 16_551, "bert": 25_000}


def test_gpus_used():
    assert gpus_used({"spec": {"device": "cuda:3"}}) == 1
    assert gpus_used({"spec": {"device": "cpu"}}) == 0
