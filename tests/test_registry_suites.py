from types import SimpleNamespace

import pytest

from bench.run import registry
from bench.run.runner import prepare
from bench.run.scenarios import FixedLoop, Scenario, scenario_for
from bench.run.suites import suite_specs
from bench.run.workload import Workload
from bench.schema.spec import SCENARIOS, RunSpec, SpecError


def test_every_registry_entry_names_a_workload_class():
    """Entries of this environment; tests/mxnet checks the MXNet environment's."""
    for (workload, backend), entry in registry.REGISTRY.items():
        if entry.env != "main":
            continue
        cls = registry.load(entry.target)
        assert isinstance(cls, type) and issubclass(cls, Workload), (workload, backend)


def test_the_scenario_table_names_one_class_per_spec_scenario():
    assert tuple(registry.SCENARIOS) == SCENARIOS
    for name, target in registry.SCENARIOS.items():
        cls = registry.load(target)
        assert isinstance(cls, type) and issubclass(cls, Scenario) and cls.name == name


def test_scenario_for_builds_the_specs_scenario():
    spec = RunSpec(workload="null", device="cpu")
    scenario = scenario_for(spec)
    assert type(scenario) is FixedLoop and scenario.spec is spec
    with pytest.raises(SpecError, match="unknown scenario 'nope': choose from loop, "):
        scenario_for(SimpleNamespace(scenario="nope"))  # a spec refuses it earlier


def test_lookup_refuses_missing_implementations():
    assert registry.lookup("ssd", "torch").target == "models.ssd.torch:SsdTorch"
    with pytest.raises(SpecError, match="no mxnet implementation of workload 'null'"):
        registry.lookup("null", "mxnet")
    with pytest.raises(SpecError, match="supports infer only"):
        registry.lookup("bert", "onnxruntime", "train")


def test_prepare_resolves_the_device_without_gpus():
    spec = prepare(RunSpec(workload="bert", device="auto"), gpus=[])
    assert spec.device == "cpu"
    with pytest.raises(SpecError, match="no onnxruntime implementation"):
        prepare(RunSpec(workload="null", backend="onnxruntime"), gpus=[])


def test_quick_suite_covers_every_workload_and_mode():
    specs = suite_specs("quick", gpu=False, device="cpu")
    assert {(s.workload, s.mode, s.backend) for s in specs if s.workload != "null"} == {
        (w, m, b) for w in ("ssd", "bert") for m in ("train", "infer") for b in ("torch", "mxnet")
    } | {("ssd", "infer", "onnxruntime"), ("bert", "infer", "onnxruntime")}
    assert {(s.workload, s.mode) for s in specs} == {
        ("null", "infer"),
        ("ssd", "infer"),
        ("ssd", "train"),
        ("bert", "infer"),
        ("bert", "train"),
    }
    assert all(s.device == "cpu" for s in specs)


def test_suite_overrides_apply_except_to_the_null_workload():
    specs = suite_specs(
        "workshop", gpu=True, backends=("torch",), device="cuda:0", precision="bf16", iters=7
    )
    assert [(s.workload, s.mode, s.batch) for s in specs] == [
        ("ssd", "train", 16),
        ("ssd", "infer", 16),
        ("bert", "train", 32),
        ("bert", "infer", 32),
        ("bert-qa", "train", 16),
        ("bert-qa", "infer", 16),
    ]
    assert all(s.seq_len == 384 for s in specs if s.workload == "bert-qa")
    assert all(s.precision == "bf16" and s.iters == 7 for s in specs)
    quick = suite_specs("quick", gpu=True, device="cuda:0", precision="bf16", duration_s=3.0)
    null = next(s for s in quick if s.workload == "null")
    assert null.precision == "fp32" and null.iters == 1000 and null.duration_s is None
    assert all(s.duration_s == 3.0 and s.iters is None for s in quick if s.workload != "null")


def test_fast_suite_runs_the_workshop_rows_compiled_on_torch():
    gpu = suite_specs("fast", gpu=True, device="cuda:0")
    assert [(s.workload, s.mode, s.batch, s.timing) for s in gpu] == [
        ("ssd", "train", 16, "pipelined"),
        ("ssd", "infer", 16, "pipelined"),
        ("bert", "train", 32, "pipelined"),
        ("bert", "infer", 32, "pipelined"),
        ("bert-qa", "train", 16, "pipelined"),
        ("bert-qa", "infer", 16, "pipelined"),
        ("bert", "infer", 1, "synchronized"),
    ]
    assert all(s.backend == "torch" and s.compile == "default" and s.cuda_graphs for s in gpu)
    assert all(s.precision == "auto" for s in gpu)
    assert gpu[-1].duration_s == 10.0 and gpu[0].duration_s == 20.0
    cpu = suite_specs("fast", gpu=False, device="cpu", precision="fp32")
    assert not any(s.cuda_graphs for s in cpu) and all(s.compile == "default" for s in cpu)
    assert all(s.precision == "fp32" for s in cpu)
    # the null workload measures the loop: an execution mode given to a suite skips it
    quick = suite_specs("quick", gpu=True, device="cuda:0", compile="default", cuda_graphs=True)
    null = next(s for s in quick if s.workload == "null")
    assert null.compile == "off" and not null.cuda_graphs


def test_unknown_suite():
    with pytest.raises(SpecError, match="unknown suite"):
        suite_specs("nightly", gpu=False)


def test_mxnet_refuses_bf16_and_gpus_newer_than_its_cuda_build():
    from bench.telemetry.devices import parse_gpu_query

    with pytest.raises(SpecError, match="does not support bf16"):
        prepare(RunSpec(workload="ssd", backend="mxnet", precision="bf16", device="cpu"), gpus=[])
    h100 = parse_gpu_query("0, NVIDIA H100 80GB HBM3, GPU-1, 0:19:0.0, 81559, 580.1, 9.0\n")
    with pytest.raises(SpecError, match=r"compute capability 9.0.*up to compute capability 8.6"):
        prepare(RunSpec(workload="bert", backend="mxnet", device="cuda"), gpus=h100)
