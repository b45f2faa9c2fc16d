import math

import pytest

from bench.run.stats import latency_summary, min_samples_for, percentile, throughput
from bench.schema.record import Throughput

TEN_MS = [x / 1000 for x in range(1, 11)]  # 1..10 ms, given in seconds


def test_percentile_interpolates_like_numpy_linear():
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 10.0
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 90) == pytest.approx(9.1)
    assert percentile(values, 99) == pytest.approx(9.91)
    assert percentile([4.0], 99) == 4.0


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_summary_exact_values():
    s = latency_summary(TEN_MS)
    assert s.count == 10
    expected = {
        "mean_ms": 5.5,
        "p50_ms": 5.5,
        "p90_ms": 9.1,
        "p95_ms": 9.55,
        "p99_ms": 9.91,
        "min_ms": 1.0,
        "max_ms": 10.0,
        "stdev_ms": math.sqrt(55 / 6),  # sample variance of 1..10 is 82.5 / 9
        "iqr_ms": 7.75 - 3.25,
    }
    for key, value in expected.items():
        assert getattr(s, key) == pytest.approx(value, rel=1e-12), key
    assert s.cv == pytest.approx(math.sqrt(55 / 6) / 5.5, rel=1e-12)
    # 10 samples are too few for p90 (needs 10: fine), p95 (20) and p99 (100)
    assert s.unreliable_percentiles == ["p95", "p99"]


def test_latency_summary_order_does_not_matter_and_single_sample():
    shuffled = [TEN_MS[i] for i in (3, 9, 0, 5, 1, 8, 2, 7, 4, 6)]
    assert latency_summary(shuffled) == latency_summary(TEN_MS)
    one = latency_summary([0.002])
    assert one.stdev_ms == 0.0 and one.p99_ms == pytest.approx(2.0)


def test_latency_summary_empty_is_an_error():
    with pytest.raises(ValueError):
        latency_summary([])


def test_min_samples_for_percentiles():
    assert min_samples_for(50) == 2
    assert min_samples_for(90) == 10
    assert min_samples_for(95) == 20
    assert min_samples_for(99) == 100


def test_throughput():
    assert throughput(samples=64, iterations=4, window_s=2.0) == Throughput(
        samples_per_s=32.0, iters_per_s=2.0
    )
    with pytest.raises(ValueError):
        throughput(1, 1, 0.0)
