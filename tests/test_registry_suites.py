import pytest

from bench import registry
from bench.runner import prepare
from bench.spec import RunSpec, SpecError
from bench.suites import suite_specs
from models.base import Workload


def test_every_registry_entry_names_a_workload_class():
    for (workload, backend), entry in registry.REGISTRY.items():
        cls = registry.load(entry.target)
        assert isinstance(cls, type) and issubclass(cls, Workload), (workload, backend)


def test_lookup_refuses_missing_implementations():
    assert registry.lookup("ssd", "torch").target == "models.ssd.torch:SsdTorch"
    with pytest.raises(SpecError, match="no onnxruntime implementation of workload 'ssd'"):
        registry.lookup("ssd", "onnxruntime")


def test_prepare_resolves_the_device_without_gpus():
    spec = prepare(RunSpec(workload="bert", device="auto"), gpus=[])
    assert spec.device == "cpu"
    with pytest.raises(SpecError):
        prepare(RunSpec(workload="bert", backend="mxnet"), gpus=[])


def test_quick_suite_covers_every_workload_and_mode():
    specs = suite_specs("quick", gpu=False, device="cpu")
    assert {(s.workload, s.mode) for s in specs} == {
        ("null", "infer"),
        ("ssd", "infer"),
        ("ssd", "train"),
        ("bert", "infer"),
        ("bert", "train"),
    }
    assert all(s.device == "cpu" for s in specs)


def test_suite_overrides_apply_except_to_the_null_workload():
    specs = suite_specs("workshop", gpu=True, device="cuda:0", precision="bf16", iters=7)
    assert [(s.workload, s.mode, s.batch) for s in specs] == [
        ("ssd", "train", 16),
        ("ssd", "infer", 16),
        ("bert", "train", 32),
        ("bert", "infer", 32),
    ]
    assert all(s.precision == "bf16" and s.iters == 7 for s in specs)
    quick = suite_specs("quick", gpu=True, device="cuda:0", precision="bf16", duration_s=3.0)
    null = next(s for s in quick if s.workload == "null")
    assert null.precision == "fp32" and null.iters == 1000 and null.duration_s is None
    assert all(s.duration_s == 3.0 and s.iters is None for s in quick if s.workload != "null")


def test_unknown_suite():
    with pytest.raises(SpecError, match="unknown suite"):
        suite_specs("nightly", gpu=False)
