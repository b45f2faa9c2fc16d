"""How the MXNet workloads execute, on the CPU: the CUDA graphs switch set from the spec
before MXNet reads it, the execution switches as a run sees them (MXNet's defaults marked),
the hybridize flags of a real hybridized run, the capture steps of a cuda_graphs set-up,
and no per-step timer. Runs in the MXNet environment (.venv-mxnet)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import mxnet as mx
import pytest

import models.mxnet_common as mxnet_common
from bench.schema.spec import RunSpec
from models.bert import config as bert
from models.bert.gluon import BertGluon
from models.mxnet_common import (
    CUDA_GRAPHS,
    EXECUTION_SWITCHES,
    MxnetWorkload,
    execution_switches,
    set_cuda_graphs,
)
from models.ssd.gluon import SsdGluon

SMALL = bert.BertSettings(
    shape=bert.BertShape(hidden=64, layers=2, heads=2, intermediate=128, max_positions=64)
)
DEFAULTS = {
    "MXNET_ENABLE_CUDA_GRAPHS": "0 (default)",
    "MXNET_CUDA_GRAPHS_VERBOSE": "0 (default)",
    "MXNET_USE_FUSION": "1 (default)",
    "MXNET_EXEC_BULK_EXEC_TRAIN": "1 (default)",
    "MXNET_EXEC_BULK_EXEC_INFERENCE": "1 (default)",
}


@pytest.fixture
def clean_switches(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """None of the switches set; whatever the process held is restored afterwards, also
    after a test (or a workload) sets one directly."""
    for name in EXECUTION_SWITCHES:
        monkeypatch.setenv(name, "")  # remembers the process's value
        monkeypatch.delenv(name)
    yield monkeypatch


@pytest.fixture
def fake_gpus(clean_switches: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Two GPUs as far as the workloads' constructors can tell (nothing runs on them), and
    a fresh process state for the fp32 math mode, restored afterwards."""
    clean_switches.setattr(mx.context, "num_gpus", lambda: 2)
    clean_switches.setattr(mxnet_common, "_process_fp32_math", {})
    clean_switches.setenv("NVIDIA_TF32_OVERRIDE", os.environ.get("NVIDIA_TF32_OVERRIDE", "1"))
    yield clean_switches


def bert_spec(**kw: Any) -> RunSpec:
    base = RunSpec(workload="bert", backend="mxnet", device="cpu", batch=2, seq_len=16)
    return base.replace(**kw)


# -- the switches, from data -----------------------------------------------------------------
def test_switches_unset_read_as_mxnets_defaults() -> None:
    assert execution_switches({}) == DEFAULTS


def test_switches_set_read_as_set() -> None:
    environ = {
        "MXNET_ENABLE_CUDA_GRAPHS": "1",
        "MXNET_USE_FUSION": "0",
        "MXNET_EXEC_BULK_EXEC_TRAIN": "",  # set, if empty: recorded as it is
        "MXNET_UNRELATED": "1",
    }
    assert execution_switches(environ) == {
        "MXNET_ENABLE_CUDA_GRAPHS": "1",
        "MXNET_CUDA_GRAPHS_VERBOSE": "0 (default)",
        "MXNET_USE_FUSION": "0",
        "MXNET_EXEC_BULK_EXEC_TRAIN": "",
        "MXNET_EXEC_BULK_EXEC_INFERENCE": "1 (default)",
    }


def test_set_cuda_graphs_sets_or_unsets_the_variable(clean_switches: pytest.MonkeyPatch) -> None:
    set_cuda_graphs(True)
    assert os.environ[CUDA_GRAPHS] == "1"
    set_cuda_graphs(False)
    assert CUDA_GRAPHS not in os.environ
    os.environ[CUDA_GRAPHS] = "1"  # from the caller's environment: the spec decides
    set_cuda_graphs(False)
    assert CUDA_GRAPHS not in os.environ


# -- the workloads set it from the spec, before set-up ---------------------------------------------
@pytest.mark.parametrize("workload", [SsdGluon, BertGluon])
def test_a_cuda_graphs_spec_turns_mxnet_graphs_on_before_setup(
    workload: type[MxnetWorkload], fake_gpus: pytest.MonkeyPatch
) -> None:
    name = "ssd" if workload is SsdGluon else "bert"
    spec = RunSpec(workload=name, backend="mxnet", device="cuda:1", cuda_graphs=True)
    wl = workload(spec)  # constructed only: set-up would run on the (fake) GPU
    assert os.environ[CUDA_GRAPHS] == "1"
    assert wl.switches == {**DEFAULTS, "MXNET_ENABLE_CUDA_GRAPHS": "1"}
    fake_gpus.setenv("MXNET_USE_FUSION", "0")
    again = workload(spec.replace(cuda_graphs=False, device="cuda:0"))
    assert CUDA_GRAPHS not in os.environ  # a run without graphs lifts a leftover setting
    assert again.switches == {**DEFAULTS, "MXNET_USE_FUSION": "0"}


def test_a_cpu_run_has_no_cuda_graphs_whatever_the_environment(
    clean_switches: pytest.MonkeyPatch,
) -> None:
    os.environ[CUDA_GRAPHS] = "1"
    wl = BertGluon(bert_spec(), SMALL)
    assert CUDA_GRAPHS not in os.environ and wl.switches == DEFAULTS


# -- a small hybridized run ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("workload", "spec"),
    [
        ("bert", bert_spec(mode="infer")),
        ("bert", bert_spec(mode="train")),
        ("ssd", RunSpec(workload="ssd", backend="mxnet", device="cpu", batch=1, image_size=128)),
    ],
)
def test_execution_details_of_a_hybridized_run(
    workload: str, spec: RunSpec, clean_switches: pytest.MonkeyPatch
) -> None:
    clean_switches.setenv("MXNET_EXEC_BULK_EXEC_INFERENCE", "0")
    wl: MxnetWorkload = BertGluon(spec, SMALL) if workload == "bert" else SsdGluon(spec)
    wl.setup()
    wl.step()
    wl.sync()
    assert wl.execution_details() == {
        "hybridize": {"static_alloc": True, "static_shape": True, "inline_limit": 2},
        "cuda_graphs": False,
        "switches": {**DEFAULTS, "MXNET_EXEC_BULK_EXEC_INFERENCE": "0"},
    }
    assert wl.one_off_s == {}  # no capture steps without cuda_graphs
    assert wl.step_timer(lambda: 0.0) is None


# -- the capture steps of a cuda_graphs set-up -----------------------------------------------------
class CountingWorkload(MxnetWorkload):
    """A workload whose step only counts (set-up is not needed for the capture steps)."""

    events: list[str]

    def setup(self) -> None:
        pass

    def step(self) -> None:
        self.events.append("step")

    def sync(self) -> None:
        self.events.append("sync")


def test_cuda_graphs_capture_in_two_steps_timed_as_capture_s(
    fake_gpus: pytest.MonkeyPatch,
) -> None:
    """MXNet runs each segment conventionally once and captures it on its second run: two
    steps and a synchronize, outside the timed window."""
    readings = iter([10.0, 12.5])
    wl = CountingWorkload(bert_spec(device="cuda:0", cuda_graphs=True))
    wl.events = []
    wl.capture_cuda_graphs(clock=lambda: next(readings))
    assert wl.events == ["step", "step", "sync"]
    assert wl.one_off_s == {"capture_s": 2.5}
    plain = CountingWorkload(bert_spec())
    plain.events = []
    plain.capture_cuda_graphs(clock=lambda: next(readings))
    assert plain.events == [] and plain.one_off_s == {}
