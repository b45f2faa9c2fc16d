import pytest

from bench.run.registry import run_label
from bench.schema.spec import RunSpec, SpecError


def test_defaults_are_valid_and_round_trip():
    spec = RunSpec(workload="bert")
    assert spec.iters == 20 and spec.duration_s is None
    assert RunSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"mode": "serve"}, "unknown mode"),
        ({"precision": "int8"}, "unknown precision"),
        ({"batch": 0}, "batch must be between 1"),
        ({"batch": 2.5}, "batch must be an integer"),
        ({"batch": True}, "batch must be an integer"),
        ({"warmup": -1}, "warmup must be between 0"),
        ({"seq_len": 513}, "seq_len must be between 1 and 512"),
        ({"image_size": 500}, "multiple of 32"),
        ({"image_size": 32}, "image_size must be between 64"),
        ({"device": "gpu"}, "device must be"),
        ({"device": "cuda:x"}, "device must be"),
        ({"iters": None}, "exactly one of iters and duration_s"),
        ({"duration_s": 5.0}, "exactly one of iters and duration_s"),
        ({"iters": 0}, "iters must be between 1"),
    ],
)
def test_bad_specs_are_refused(changes, message):
    with pytest.raises(SpecError, match=message):
        RunSpec(**{"workload": "ssd", **changes})


def test_duration_instead_of_iters():
    spec = RunSpec(workload="ssd", iters=None, duration_s=2.5)
    assert spec.duration_s == 2.5
    with pytest.raises(SpecError, match="duration_s"):
        RunSpec(workload="ssd", iters=None, duration_s=-1)


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(SpecError, match="unknown spec field"):
        RunSpec.from_dict({"workload": "ssd", "batchsize": 4})


def test_label_names_the_shape():
    spec = RunSpec(workload="bert", mode="train", batch=32, device="cuda:0", precision="bf16")
    assert run_label(spec) == "bert_torch_train_b32_s128_bf16_cuda0"
    assert (
        run_label(RunSpec(workload="ssd", batch=16, device="cpu"))
        == "ssd_torch_infer_b16_i512_fp32_cpu"
    )
    assert run_label(RunSpec(workload="null", device="cpu")) == "null_torch_infer_b1_fp32_cpu"


def test_timing_auto_resolves_by_mode():
    assert RunSpec(workload="bert", mode="train").timing == "pipelined"
    assert RunSpec(workload="bert", mode="infer").timing == "synchronized"
    assert RunSpec(workload="bert", mode="infer", timing="pipelined").timing == "pipelined"
    # a stored spec holds the resolved timing and reads back the same
    spec = RunSpec(workload="ssd", mode="train")
    assert spec.to_dict()["timing"] == "pipelined"
    assert RunSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"compile": "fast"}, "unknown compile"),
        ({"timing": "async"}, "unknown timing"),
        ({"cuda_graphs": "yes"}, "cuda_graphs must be true or false"),
        ({"cuda_graphs": True, "device": "cpu"}, "CUDA graphs need a GPU"),
        (
            {"cuda_graphs": True, "device": "cuda", "compile": "reduce-overhead"},
            "captures CUDA graphs itself",
        ),
        ({"cuda_graphs": True, "device": "cuda", "include_h2d": True}, "static device inputs"),
        ({"scenario": "offline", "timing": "pipelined"}, "times every query itself"),
        ({"scenario": "offline", "compile": "default"}, "batches of varying size"),
    ],
)
def test_bad_execution_modes_are_refused(changes, message):
    with pytest.raises(SpecError, match=message):
        RunSpec(**{"workload": "ssd", **changes})


def test_execution_modes_in_labels():
    spec = RunSpec(
        workload="bert",
        mode="train",
        batch=32,
        device="cuda:0",
        compile="default",
        cuda_graphs=True,
    )
    assert run_label(spec) == "bert_torch_train_b32_s128_fp32_cuda0_compile-default-graphs"
    assert spec.execution_label == "compile, graphs"
    assert RunSpec(workload="bert", mode="train").execution_label == ""
    assert RunSpec(workload="bert", mode="train", timing="synchronized").execution_label == (
        "synchronized"
    )
    assert RunSpec(workload="ssd", timing="pipelined", compile="max-autotune").execution_label == (
        "compile:max-autotune, pipelined"
    )


@pytest.mark.parametrize(
    "changes, why",
    [
        ({"mode": "train"}, "pipelined timing"),  # auto timing of a training loop
        ({"mode": "infer", "timing": "pipelined"}, "pipelined timing"),
        ({"mode": "infer", "compile": "default"}, "a compiled step"),
        ({"mode": "train", "timing": "synchronized", "compile": "max-autotune"}, "a compiled step"),
    ],
)
def test_warmup_0_is_refused_where_the_first_step_would_land_in_the_window(changes, why):
    with pytest.raises(SpecError, match=f"--warmup 0 with {why}"):
        RunSpec(workload="ssd", warmup=0, **changes)
    assert RunSpec(workload="ssd", warmup=1, **changes).warmup == 1


def test_warmup_0_stays_allowed_for_synchronized_eager_loops_and_one_off_scenarios():
    assert RunSpec(workload="ssd", mode="train", timing="synchronized", warmup=0).warmup == 0
    assert RunSpec(workload="null", warmup=0).warmup == 0
    evaluate = RunSpec(
        workload="ssd", scenario="evaluate", data="VOCdevkit", compile="default", warmup=0
    )
    assert evaluate.compile == "default"
