"""The report's decision table on fake priced records with known answers, labels that tell
every run apart, plain units, and the narrow console tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.analysis.compare import compare
from bench.analysis.decision import decision_jobs, unpriced_notes
from bench.analysis.labels import unique_labels
from bench.analysis.prices import InstancePrice
from bench.analysis.pricing import Pricing
from bench.analysis.report import assemble, decision_rows
from bench.analysis.table import render
from bench.analysis.units import plain, ratio, tick, usd
from bench.run import registry
from bench.run.store import new_record
from bench.schema.record import (
    Environment,
    Execution,
    Flag,
    InstanceFacts,
    Latency,
    Outcome,
    RunRecord,
    ScenarioFacts,
    Throughput,
)
from bench.schema.spec import RunSpec


def _price(name: str, gpus: int, usd_per_hour: float) -> InstancePrice:
    return InstancePrice(name, "GPU", gpus, 16.0, 8, 64.0, usd_per_hour, "r", "2026-01", "test")


#: Known prices: one GPU of c.gpu8 costs what a.gpu1 costs.
CATALOGUE = {
    "a.gpu1": _price("a.gpu1", 1, 2.0),
    "b.gpu1": _price("b.gpu1", 1, 1.0),
    "c.gpu8": _price("c.gpu8", 8, 16.0),
}
PRICING = Pricing(CATALOGUE)
EPOCH = registry.workload_info("bert").epoch_samples


def record(
    instance: str | None,
    sps: float,
    *,
    mode: str = "infer",
    backend: str = "torch",
    flags: tuple[str, ...] = (),
    hardware: str = "GPU X",
    **spec_kw: object,
) -> RunRecord:
    spec_kw.setdefault("batch", 32)
    spec_kw.setdefault("device", "cuda:0")
    workload = str(spec_kw.pop("workload", "bert"))
    spec = RunSpec(workload=workload, mode=mode, backend=backend, **spec_kw)  # type: ignore[arg-type]
    env = Environment(framework={"device_name": hardware}, instance=InstanceFacts(instance))
    r = new_record(spec, env)
    r.outcome = Outcome(status="ok", message=None)
    r.throughput = Throughput(samples_per_s=sps, iters_per_s=sps / spec.batch)
    r.latency = Latency(200, 5.0, 5.0, 6.0, 7.0, 8.0, 4.0, 9.0, 1.0, 1.0, 0.01)
    r.validity.flags = [Flag(code, code) for code in flags]
    return r


def served(instance: str, qps: float, valid: bool) -> RunRecord:
    r = record(
        instance,
        qps,
        scenario="server",
        target_qps=qps,
        latency_bound_ms=20.0,
        iters=None,
        duration_s=60.0,
    )
    r.latency = None
    r.scenario = ScenarioFacts(
        name="server",
        timing="loadgen",
        # LoadGen's own keys, as a LoadGen run keeps them: p99 9 ms
        result={
            "valid": valid,
            "loadgen": {
                "values": {
                    "effective_scenario": "Server",
                    "effective_target_latency_percentile": 0.99,
                    "result_validity": "VALID" if valid else "INVALID",
                    "result_99.00_percentile_latency_ns": 9e6,
                }
            },
        },
    )
    return r


def pairs(*records: RunRecord) -> list[tuple[Path, RunRecord]]:
    return [(Path(f"{r.run_id}.json"), r) for r in records]


def known_runs() -> list[tuple[Path, RunRecord]]:
    return pairs(
        # training: a.gpu1 $2/h at 100/s, b.gpu1 $1/h at 40/s; c.gpu8 one GPU ($2/h) at
        # 200/s is cheapest per epoch but shared with other processes: invalid
        record("a.gpu1", 100.0, mode="train"),
        record("b.gpu1", 40.0, mode="train"),
        record("c.gpu8", 200.0, mode="train", flags=("other_processes", "few_iterations")),
        record(None, 500.0, mode="train", hardware="GPU Y"),  # not priced
        # inference at full throughput: a.gpu1 at 1000/s, b.gpu1 (ONNX Runtime) at 400/s
        record("a.gpu1", 1000.0),
        record("b.gpu1", 400.0, backend="onnxruntime"),
        # serving at p99 <= 20 ms: a.gpu1 valid up to 100 QPS, b.gpu1 up to 80 QPS
        served("a.gpu1", 100.0, True),
        served("a.gpu1", 200.0, False),
        served("b.gpu1", 80.0, True),
        # the harness's own overhead: not a job
        record("a.gpu1", 5e6, workload="null"),
    )


def test_epoch_size_is_the_reference_dataset():
    assert EPOCH == 25_000  # IMDB's training split


def test_decision_table_names_the_cheapest_valid_instance_per_job():
    jobs = decision_jobs(compare(known_runs(), PRICING))
    assert [j.title for j in jobs] == [
        "bert train seq 128",
        "bert infer seq 128",
        "bert serve seq 128 at p99 <= 20 ms",
    ]
    train, infer, serve = jobs
    # $/epoch = $/h x 25,000 samples / (samples/s x 3600)
    assert train.best is not None and train.runner_up is not None
    assert train.best.label == "a.gpu1 · torch · fp32 · b32"
    assert train.best.figure == pytest.approx(2.0 * 25_000 / (100 * 3600), rel=1e-12)
    assert train.runner_up.label == "b.gpu1 · torch · fp32 · b32"
    assert train.runner_up.figure == pytest.approx(1.0 * 25_000 / (40 * 3600), rel=1e-12)
    assert train.ratio == pytest.approx(1.25, rel=1e-12)
    third = train.candidates[2]
    assert third.label == "c.gpu8 · torch · fp32 · b32"
    assert third.figure == pytest.approx(2.0 * 25_000 / (200 * 3600), rel=1e-12)
    assert third.invalid == ("other_processes",)  # few_iterations leaves the cost valid
    assert train.candidates[3].figure is None
    assert train.candidates[3].missing == "not priced (see above)"
    # $/1M = $/h x 1e6 / (samples/s x 3600)
    assert infer.best is not None and infer.best.label == "a.gpu1 · torch · fp32 · b32"
    assert infer.best.figure == pytest.approx(2.0 * 1e6 / (1000 * 3600), rel=1e-12)
    assert infer.ratio == pytest.approx((1e6 / (400 * 3600)) / (2e6 / (1000 * 3600)))
    # at the bound: a.gpu1 at 100 QPS ($5.56) loses to b.gpu1 at 80 QPS ($3.47)
    assert serve.best is not None and serve.best.label == "b.gpu1 · torch · fp32"
    assert serve.best.figure == pytest.approx(1e6 / (80 * 3600), rel=1e-12)
    assert serve.ratio == pytest.approx(1.6, rel=1e-12)


def test_decision_rows_as_the_report_prints_them():
    rows = decision_rows(decision_jobs(compare(known_runs(), PRICING)))
    assert rows == [
        [
            "bert train seq 128",
            "$ per epoch (25,000 samples)",
            "a.gpu1 · torch · fp32 · b32",
            "$0.139",
            "yes",
            "b.gpu1 · torch · fp32 · b32",
            "$0.174",
            "yes",
            "1.25x",
            "3 of 4",
        ],
        [
            "bert infer seq 128",
            "$ per 1M inferences, no latency bound",
            "a.gpu1 · torch · fp32 · b32",
            "$0.556",
            "yes",
            "b.gpu1 · onnxruntime · fp32 · b32",
            "$0.694",
            "yes",
            "1.25x",
            "2 of 2",
        ],
        [
            "bert serve seq 128 at p99 <= 20 ms",
            "$ per 1M inferences at the bound",
            "b.gpu1 · torch · fp32",
            "$3.47",
            "yes",
            "a.gpu1 · torch · fp32",
            "$5.56",
            "yes",
            "1.60x",
            "2 of 2",
        ],
    ]


def test_an_invalid_figure_is_named_only_when_no_valid_one_exists():
    runs = pairs(record("c.gpu8", 200.0, mode="train", flags=("throttled",)))
    (job,) = decision_jobs(compare(runs, PRICING))
    assert job.best is not None and job.best.validity_text() == "no: throttled"


def test_unpriced_runs_say_why_and_how_to_price_them():
    runs = pairs(
        record(None, 10.0, hardware="GPU Y"),
        record(None, 20.0, hardware="GPU Y"),
        record("z.unknown", 10.0),
    )
    c = compare(runs, PRICING)
    (row,) = decision_rows(decision_jobs(c))
    assert row[2:] == ["none: not priced (see above)", "-", "-", "-", "-", "-", "-", "0 of 3"]
    notes = unpriced_notes(c)
    assert notes == [
        "2 runs on GPU Y: no instance type recorded and no --price-per-hour given; price them "
        "with --instance 'GPU Y=TYPE' (an instance type of the price catalogue) or "
        "--price-per-hour USD",
        "1 run on GPU X: instance type z.unknown is not in the price catalogue; add its price "
        "with --prices FILE (a price file)",
    ]


def test_unique_labels_add_only_the_parts_that_tell_items_apart():
    parts = [
        ("i1", "torch", "fp32", "b8", "cpu", "run1"),
        ("i1", "torch", "fp32", "b8", "gpu", "run2"),
        ("i2", "torch", "fp32", "b8", "gpu", "run3"),
        ("i1", "torch", "fp32", "b8", "gpu", "run4"),
    ]
    assert unique_labels(parts, always=3) == [
        "i1 · torch · fp32 · cpu",
        "i1 · torch · fp32 · gpu · run2",
        "i2 · torch · fp32",
        "i1 · torch · fp32 · gpu · run4",
    ]
    assert unique_labels([("a", "x"), ("a", "x")], always=1) == ["a #1", "a #2"]


def test_every_chart_of_the_report_labels_its_bars_uniquely():
    """Runs that differ only in execution mode, in batch, in data or in nothing at all (a
    repeat) each get a bar of their own."""
    same = {"instance": "a.gpu1", "sps": 100.0}
    runs = pairs(
        record(**same),  # type: ignore[arg-type]
        record(**same, compile="default"),  # type: ignore[arg-type]
        record(**same, batch=8),  # type: ignore[arg-type]
        record(**same),  # type: ignore[arg-type]  # a repeat: told apart by its run id
        record("b.gpu1", 50.0),
        record("b.gpu1", 60.0, mode="train"),
        record("b.gpu1", 70.0, mode="train"),
    )
    report = assemble(compare(runs, PRICING))
    assert report.labels, "no chart drawn"
    for name, labels in report.labels.items():
        assert len(labels) == len(set(labels)), (name, labels)
    cost = report.labels["cost_1"]  # inference: the second job
    assert len(cost) == 5
    assert "a.gpu1 · torch (compile) · fp32 · b32" in cost
    assert "a.gpu1 · torch · fp32 · b8" in cost
    assert sum(label.startswith("a.gpu1 · torch · fp32 · b32 · ") for label in cost) == 2
    train = report.labels["cost_0"]
    assert len(train) == 2 and train[0].startswith("b.gpu1 · torch · fp32 · b32 · ")


def test_the_report_starts_with_the_decision_table_and_ends_with_the_appendix():
    report = assemble(compare(known_runs(), PRICING))
    headings = [b[1] for b in report.blocks if b[0] in ("h1", "h2")]
    assert headings[:2] == ["Benchmark report", "Which instance and path, per job"]
    assert headings[-1] == "Appendix: harness overhead"
    kinds = [b[0] for b in report.blocks]
    # what is not priced and how to price it, then the table
    assert kinds[:5] == ["h1", "note", "ul", "h2", "table"] and report.blocks[4][3] == "decision"
    assert report.blocks[2][1][0].startswith("1 run on GPU Y: no instance type recorded")


@pytest.mark.parametrize(
    "value, text",
    [
        (0.000028123, "0.0000281"),
        (0.954, "0.954"),
        (12.345, "12.3"),
        (999.96, "1.00k"),
        (1375.21, "1.38k"),
        (1.77e6, "1.77M"),
        (None, "-"),
    ],
)
def test_plain_units(value, text):
    assert plain(value) == text


@pytest.mark.parametrize(
    "value, text",
    [
        (0.0000281234, "$0.0000281"),
        (0.0619, "$0.0619"),
        (3.7412, "$3.74"),
        (115.834, "$115.83"),
        (5205486.59, "$5,205,487"),
    ],
)
def test_dollars(value, text):
    assert usd(value) == text


def test_ticks_and_ratios():
    assert [tick(v, True) for v in (0, 0.5, 0.02, 1500)] == ["$0", "$0.5", "$0.02", "$1,500"]
    assert [tick(v, False) for v in (0, 1500, 2e6)] == ["0", "1.5k", "2M"]
    assert ratio(1.3333) == "1.33x" and ratio(None) == "-"


def test_an_untimed_pipelined_step_says_why_it_has_no_latency():
    r = record(None, 0.345, mode="train", backend="mxnet", device="cpu")
    r.latency = None
    r.execution = Execution(step_timer=None)
    narrow = render([r])
    row = [line for line in narrow.splitlines() if line.startswith("| bert")][0]
    assert row.count("n/a\u2020") == 2  # p50 and p99
    assert "\u2020 n/a: mxnet runs its operators asynchronously" in narrow
    assert "--timing synchronized times every step" in narrow
    assert render([r], wide=True).count("n/a\u2020") == 2


def trained(instance: str, seconds: float | None) -> RunRecord:
    r = record(
        instance,
        30.0,
        mode="train",
        scenario="to-accuracy",
        data="aclImdb",
        target_metric=0.85,
        timing="synchronized",
    )
    result = {"metric": "accuracy", "target": 0.85, "reached": seconds is not None}
    if seconds is not None:
        result |= {"time_to_target_s": seconds, "steps_to_target": 100}
    r.scenario = ScenarioFacts(name="to-accuracy", result=result)
    return r


def test_dollars_to_accuracy_are_the_hourly_price_times_the_time_to_the_target():
    runs = pairs(trained("a.gpu1", 1800.0), trained("b.gpu1", 5400.0), trained("c.gpu8", None))
    (job,) = decision_jobs(compare(runs, PRICING))
    assert (job.title, job.measure) == ("bert train seq 128 to accuracy 0.85", "$ to accuracy 0.85")
    assert [c.figure for c in job.candidates[:2]] == [pytest.approx(1.0), pytest.approx(1.5)]
    assert job.best is not None and job.best.label.startswith("a.gpu1 · ")
    assert job.ratio == pytest.approx(1.5)
    assert job.candidates[2].figure is None and job.candidates[2].missing == "target not reached"


def test_charts_of_every_kind_have_unique_labels():
    report = assemble(compare(known_runs(), PRICING))
    kinds = {name.rsplit("_", 1)[0] for name in report.labels}
    assert {"cost", "throughput", "serving", "frontier"} <= kinds
    for name, labels in report.labels.items():
        assert labels and len(labels) == len(set(labels)), (name, labels)
    assert report.labels["serving_2"] == ["b.gpu1 · torch · fp32", "a.gpu1 · torch · fp32"]


@pytest.mark.parametrize("ranks, drawn", [((2,), False), ((1, 2), True)])
def test_a_scaling_curve_needs_two_points(ranks, drawn):
    runs = pairs(*(record("c.gpu8", 100.0 * n, mode="train", gpus=n) for n in ranks))
    report = assemble(compare(runs, PRICING))
    headings = [b[1] for b in report.blocks if b[0] == "h2"]
    assert ("Scaling across GPUs" in headings) is drawn
    assert any(name.startswith("scaling_") for name in report.labels) is drawn
