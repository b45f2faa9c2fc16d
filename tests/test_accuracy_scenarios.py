"""The accuracy scenarios with a fake workload and a fake clock: exact times to target, the
evaluations' schedule, the refusals, and what compare says about them."""

import itertools
from pathlib import Path

import pytest

from bench.analysis.compare import accuracy_lines, compare
from bench.analysis.prices import load_catalogue
from bench.analysis.pricing import Pricing
from bench.run.accuracy import Evaluate, ToAccuracy
from bench.run.scenarios import RunContext
from bench.run.store import new_record
from bench.schema.record import Environment, InstanceFacts, Outcome, Throughput
from bench.schema.spec import RunSpec, SpecError


class Learner:
    """Each evaluation scores 0.3 more than the last; every call costs one clock tick."""

    samples_per_step = 4

    def __init__(self):
        self.steps = self.evals = 0

    def step(self):
        self.steps += 1

    def sync(self):
        pass

    def open_data(self):
        return 0

    def evaluate(self, max_samples=None):
        self.evals += 1
        return {"metric": "accuracy", "value": 0.3 * self.evals, "samples": 10, "split": "test"}


def ticking():
    ticks = itertools.count()
    return lambda: float(next(ticks))


def to_accuracy(**changes):
    fields = dict(
        workload="bert",
        mode="train",
        scenario="to-accuracy",
        data="aclImdb",
        target_metric=0.5,
        eval_every=2,
        iters=10,
        warmup=1,
    )
    return RunSpec(**{**fields, **changes})


def test_training_stops_at_the_evaluation_that_reaches_the_target():
    scenario = ToAccuracy(to_accuracy())
    learner = Learner()
    m = scenario.run(RunContext(learner, progress=False, clock=ticking()))
    result = scenario.result
    # clock reads (1 tick each): start 0; data opened 1; warm-up (step 1) done 2; window
    # start 3; step 2 at 4, its evaluation 5; step 3 at 6; step 4 at 7, its evaluation 8
    assert learner.steps == 4 and learner.evals == 2
    assert m.latencies_s == [1.0] * 3 and m.window_s == 3.0 and m.warmup_s == 2.0
    assert result["reached"] is True and result["steps_to_target"] == 4
    assert result["time_to_target_s"] == 8.0  # from before the data was opened
    assert result["train_s_to_target"] == 5.0 and result["eval_s"] == 2.0
    assert result["open_data_s"] == 1.0
    assert result["samples_to_target"] == 16
    assert [(e["step"], e["value"]) for e in result["evaluations"]] == [(2, 0.3), (4, 0.6)]
    assert scenario.missed_goal() is None


class Clock:
    """A fake clock: each read one tick later; ``advance`` moves it on."""

    def __init__(self):
        self.now = -1.0

    def __call__(self):
        self.now += 1.0
        return self.now

    def advance(self, seconds):
        self.now += seconds


class CompilingLearner(Learner):
    """Set-up left its compiling step on real batches for ``open_data`` (10 s, one update),
    as a compiled PyTorch run in a to-accuracy scenario does."""

    def __init__(self, clock):
        super().__init__()
        self.clock = clock
        self.opened = False

    def step(self):
        assert self.opened, "a step before the data was opened"
        super().step()

    def open_data(self):
        self.opened = True
        self.clock.advance(10.0)
        self.step()
        return 1


def test_the_clock_starts_before_the_data_is_opened_and_counts_every_update():
    clock = Clock()
    scenario = ToAccuracy(to_accuracy(warmup=2, eval_every=4, target_metric=0.3))
    learner = CompilingLearner(clock)
    m = scenario.run(RunContext(learner, progress=False, clock=clock))
    result = scenario.result
    # start 0; data opened (10 s, 1 update) at 11; warm-up (updates 2, 3) done at 12;
    # window start 13; update 4 at 14, its evaluation 15
    assert learner.steps == 4
    assert result["open_data_s"] == 11.0 and m.warmup_s == 12.0
    assert result["steps_to_target"] == 4 and result["samples_to_target"] == 16
    assert result["time_to_target_s"] == 15.0
    assert result["train_s_to_target"] == 13.0  # everything but the evaluation and the mark
    assert m.latencies_s == [1.0]


def test_a_target_out_of_reach_trains_to_the_bound_and_evaluates_at_the_end():
    scenario = ToAccuracy(to_accuracy(target_metric=1.0, iters=5, eval_every=2))
    scenario.run(RunContext(Learner(), progress=False, clock=ticking()))
    result = scenario.result
    assert result["reached"] is False and result["time_to_target_s"] is None
    assert [e["step"] for e in result["evaluations"]] == [2, 4, 5]
    assert result["best"] == pytest.approx(0.9)
    assert scenario.missed_goal() == (
        "target accuracy 1 not reached: best 0.9000 in 5 steps (3 evaluations)"
    )


def test_evaluate_times_one_pass():
    spec = RunSpec(
        workload="ssd", scenario="evaluate", data="VOCdevkit", iters=1, warmup=0, eval_samples=10
    )
    scenario = Evaluate(spec)
    m = scenario.run(RunContext(Learner(), progress=False, clock=ticking()))
    assert m.window_s == 1.0 and m.samples == 10 and m.latencies_s == [1.0]
    assert scenario.facts().result == {
        "metric": "accuracy",
        "value": 0.3,
        "samples": 10,
        "split": "test",
        "weights": "random",  # no --pretrained: said in the record
    }
    trained = Evaluate(spec.replace(pretrained="ckpt"))
    trained.run(RunContext(Learner(), progress=False, clock=ticking()))
    assert trained.facts().result["weights"] == "ckpt"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"data": None}, "needs a dataset"),
        ({"mode": "infer", "target_metric": None}, "to-accuracy trains"),
        ({"target_metric": None}, "needs a target metric"),
        ({"target_metric": 1.5}, "target_metric must be in"),
        ({"timing": "pipelined"}, "synchronized steps"),
        ({"gpus": 2, "device": "cpu"}, "runs on one device"),
        ({"eval_every": 0}, "eval_every must be between 1"),
    ],
)
def test_bad_accuracy_specs(changes, message):
    with pytest.raises(SpecError, match=message):
        to_accuracy(**changes)
    with pytest.raises(SpecError, match="applies to the to-accuracy scenario"):
        RunSpec(workload="bert", target_metric=0.5)


def test_compare_prices_the_time_to_accuracy():
    spec = to_accuracy(device="cuda:0", precision="bf16")
    record = new_record(
        spec,
        Environment(
            framework={"device_name": "NVIDIA A10G"},
            instance=InstanceFacts(instance_type="g5.xlarge"),
        ),
    )
    record.outcome = Outcome(status="ok", message=None)
    record.throughput = Throughput(samples_per_s=100.0, iters_per_s=25.0)
    scenario = ToAccuracy(spec)
    scenario.run(RunContext(Learner(), progress=False, clock=ticking()))
    record.scenario = scenario.facts()
    record.scenario.result["time_to_target_s"] = 3600.0
    c = compare([(Path("r.json"), record)], Pricing(load_catalogue()))
    (rows,) = c.groups.values()
    # g5.xlarge: 1.006 $/h, one hour to the target
    assert accuracy_lines(rows) == [
        "",
        "- to accuracy, bert train torch bf16 b1 on g5.xlarge: accuracy 0.5 in 3,600 s "
        "(4 steps), $1.01",
    ]
