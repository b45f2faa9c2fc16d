"""Host synchronizations of PyTorch steps, counted on the CPU with the host-read spy (the
reads that would each wait for a GPU): the spy itself with exact counts, the BERT and SSD
steps (synthetic and real data, train and infer) with none but SSD inference's NMS, the
count in the record, and the grad scaler's device-side path that fp16 graph capture needs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from transformers import BertForSequenceClassification

from bench.run import registry
from bench.run.registry import Entry
from bench.run.worker import execute
from bench.schema.spec import RunSpec
from data.samples import make_imdb, make_voc_record, write_vocab
from models.bert import config as bert
from models.bert.torch import BertTorch, attention_mask_form, base_config
from models.ssd.torch import SsdTorch
from models.torch_exec import check_capturable_scaling
from models.torch_syncs import HostReadSpy, count_host_syncs, not_counted_reason

HERE = "tests/test_host_syncs.py"
SMALL = bert.BertShape(hidden=64, layers=2, heads=2, intermediate=128, max_positions=64)
CPU = torch.device("cpu")
#: Where SSD inference's only host read is: the NMS sizes its output on the host.
NMS_SITE = "nms in torchvision/ops/boxes.py:nms"


class SmallBertTorch(BertTorch):
    def __init__(self, spec: RunSpec) -> None:
        super().__init__(spec, bert.BertSettings(shape=SMALL))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("datasets")
    make_voc_record(base)
    make_imdb(base)
    write_vocab(base / "vocab.txt")
    return base


def reads(x: torch.Tensor) -> None:
    """Seven host reads, one of each kind, and work that reads nothing."""
    x.sum().item()
    bool(x[0] > 0)
    x.tolist()
    x.nonzero()
    x[x > 0]
    x.new_tensor([1.0, 2.0])
    torch.repeat_interleave(torch.tensor([1, 2]))
    # no read: device work, a numpy view of host memory, an output size given
    (x * 2).softmax(0).topk(2)
    x.numpy()
    torch.repeat_interleave(torch.tensor([1, 2]), output_size=3)


@pytest.mark.parametrize("inference", [False, True])
def test_the_spy_counts_each_host_read_once_with_its_caller(inference):
    with torch.inference_mode(inference), HostReadSpy() as spy:
        reads(torch.tensor([1.0, -2.0, 3.0]))
    where = f"{HERE}:reads"
    expected = {
        f"item in {where}": 1,
        f"__bool__ in {where}": 1,
        f"tolist in {where}": 1,
        f"nonzero in {where}": 1,
        f"__getitem__ in {where}": 1,  # the boolean mask
        f"new_tensor in {where}": 1,
        f"repeat_interleave in {where}": 1,  # tensor repeats, no output size
    }
    assert dict(spy.syncs.sites) == expected
    assert spy.syncs.count == 7


def test_the_spy_sees_reads_made_below_the_python_api():
    x = torch.tensor([1.0, -2.0])
    with HostReadSpy() as spy:
        torch.ops.aten.is_nonzero(x[:1])  # an operator whose C++ reads the value
    assert dict(spy.syncs.sites) == {
        f"aten::_local_scalar_dense in {HERE}:test_the_spy_sees_reads_made_below_the_python_api": 1
    }


def test_the_spy_sees_torchvision_nms_and_restores_itself():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.1]])
    with HostReadSpy() as spy:
        torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
    assert dict(spy.syncs.sites) == {NMS_SITE: 1}
    with HostReadSpy() as spy:
        pass
    torch.tensor([1.0]).item()  # after the block: not counted
    assert spy.syncs.count == 0
    assert spy.syncs.facts() == {
        "per_step": 0,
        "sites": {},
        "method": "host-read spy (torch function and dispatch modes)",
    }


def test_counting_runs_the_step_once():
    calls = []
    syncs = count_host_syncs(lambda: calls.append(torch.ones(2).sum().item()), CPU, lambda: None)
    assert calls == [2.0]
    assert dict(syncs.sites) == {f"item in {HERE}:<lambda>": 1}


@pytest.mark.parametrize(
    "scenario, device, compile_mode, reason",
    [
        ("loop", "cpu", "off", None),
        ("loop", "cuda", "default", None),
        ("loop", "cpu", "default", "the CPU's host-read spy cannot run around a compiled step"),
        ("offline", "cuda", "off", "the offline scenario times no repeated step"),
        ("to-accuracy", "cpu", "off", "the to-accuracy scenario times no repeated step"),
    ],
)
def test_which_runs_are_counted(scenario, device, compile_mode, reason):
    assert not_counted_reason(scenario, device, compile_mode) == reason


def test_the_mask_form_is_the_mask_transformers_builds_without_reading_it():
    torch.manual_seed(0)
    model = BertForSequenceClassification(base_config(SMALL, "sdpa")).eval()
    ids = torch.randint(5, 30, (3, 12))
    padded = torch.ones(3, 12, dtype=torch.int64)
    padded[1, 7:] = 0
    padded[2, 3:] = 0
    full = torch.ones(3, 12, dtype=torch.int64)
    assert attention_mask_form(full, all_ones=True) is None
    form = attention_mask_form(padded, all_ones=False)
    assert form is not None and form.shape == (3, 1, 12, 12) and form.dtype == torch.bool
    assert torch.equal(form[:, 0, 5], padded.bool())
    with torch.inference_mode():
        for mask in (padded, full):
            want = model(input_ids=ids, attention_mask=mask).logits  # transformers' own path
            with HostReadSpy() as spy:
                got = model(
                    input_ids=ids,
                    attention_mask=attention_mask_form(mask, bool(mask.numpy().all())),
                ).logits
            assert spy.syncs.count == 0
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        with HostReadSpy() as spy:
            model(input_ids=ids, attention_mask=padded)
    # transformers' 2-d mask handling asks mask.all() in every forward
    assert dict(spy.syncs.sites) == {
        "__bool__ in transformers/masking_utils.py:_ignore_bidirectional_mask_sdpa": 1
    }


def bert_workload(mode: str, **kw) -> BertTorch:
    spec = RunSpec(workload="bert", device="cpu", batch=4, seq_len=16, mode=mode, **kw)
    workload = SmallBertTorch(spec)
    workload.setup()
    return workload


def ssd_workload(mode: str, **kw) -> SsdTorch:
    spec = RunSpec(workload="ssd", device="cpu", batch=2, image_size=128, mode=mode, **kw)
    workload = SsdTorch(spec)
    workload.setup()
    return workload


def step_syncs(workload) -> dict[str, int]:
    try:
        return dict(count_host_syncs(workload.step, workload.device, workload.sync).sites)
    finally:
        workload.teardown()


@pytest.mark.parametrize("mode", ["train", "infer"])
@pytest.mark.parametrize("include_h2d", [False, True])
def test_bert_steps_read_nothing_on_the_host(mode, include_h2d):
    workload = bert_workload(mode, include_h2d=include_h2d)
    assert not workload.mask_full  # the synthetic batch is padded: the mask is passed
    assert step_syncs(workload) == {}


@pytest.mark.parametrize("mode", ["train", "infer"])
def test_bert_steps_on_aclimdb_read_nothing_on_the_host(root, mode):
    data = dict(data=str(root / "aclImdb"), vocab=str(root / "vocab.txt"), loader_workers=0)
    assert step_syncs(bert_workload(mode, **data)) == {}


def test_bert_queries_by_sample_read_nothing_on_the_host():
    workload = bert_workload("infer")
    workload.stage_samples(8)
    assert workload.library_full is not None and workload.library_full.shape == (8,)
    try:
        syncs = count_host_syncs(lambda: workload.infer_samples([1, 5, 2]), CPU, workload.sync)
    finally:
        workload.teardown()
    assert syncs.count == 0


@pytest.mark.parametrize("include_h2d", [False, True])
def test_ssd_training_steps_read_nothing_on_the_host(include_h2d):
    assert step_syncs(ssd_workload("train", include_h2d=include_h2d)) == {}


def test_ssd_training_on_voc_reads_nothing_on_the_host(root):
    # the box targets are encoded in the step: no constant made from host data
    workload = ssd_workload("train", data=str(root / "VOCdevkit"), loader_workers=0)
    assert step_syncs(workload) == {}


@pytest.mark.parametrize("data", [False, True], ids=["synthetic", "voc"])
def test_ssd_inference_reads_the_host_only_in_its_nms(root, data):
    kw = dict(data=str(root / "voc.rec"), loader_workers=0) if data else {}
    assert step_syncs(ssd_workload("infer", **kw)) == {NMS_SITE: 1}


@pytest.fixture
def small_bert(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = dict(registry.REGISTRY)
    entries[("bert", "torch")] = Entry("tests.test_host_syncs:SmallBertTorch")
    monkeypatch.setattr(registry, "REGISTRY", entries)


def test_the_record_holds_the_count_of_a_loop_run(small_bert):
    spec = RunSpec(
        workload="bert", mode="train", device="cpu", batch=2, seq_len=16, warmup=1, iters=2
    )
    record = execute(spec, progress=False, telemetry_interval_s=None)
    assert record.ok, record.outcome
    assert spec.timing == "pipelined"
    assert record.execution.details["host_syncs"] == {
        "per_step": 0,
        "sites": {},
        "method": "host-read spy (torch function and dispatch modes)",
        "counted": "one step after the measured window",
    }


def test_a_compiled_cpu_run_records_no_count_and_why():
    workload = SmallBertTorch(
        RunSpec(workload="bert", device="cpu", batch=2, seq_len=16, compile="default")
    )
    workload.count_host_syncs()  # decided before any step runs
    assert workload.execution_details()["host_syncs"] == {
        "per_step": None,
        "reason": "the CPU's host-read spy cannot run around a compiled step",
    }


# -- the grad scaler's device-side path (fp16 training in a CUDA graph) ----------------------


def scaled_update(fused: bool) -> dict[str, int]:
    """One fp16-style update through a grad scaler; the host reads it made."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(8)) for _ in range(3)]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, fused=fused)
    scaler = torch.amp.GradScaler("cpu")
    loss = sum((p * p).sum() for p in params)
    with HostReadSpy() as spy:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return dict(spy.syncs.sites)


def test_a_fused_optimizer_keeps_the_grad_scaler_on_the_device():
    assert scaled_update(fused=True) == {}
    # unfused, GradScaler.step reads the inf check to decide whether to step
    assert scaled_update(fused=False) == {"item in torch/amp/grad_scaler.py:<genexpr>": 1}


def test_only_a_fused_optimizer_lets_a_scaled_step_be_captured():
    params = [torch.nn.Parameter(torch.zeros(2))]
    scaler = torch.amp.GradScaler("cpu")
    check_capturable_scaling(scaler, torch.optim.SGD(params, lr=0.1, fused=True))
    check_capturable_scaling(scaler, torch.optim.AdamW(params, fused=True))
    check_capturable_scaling(None, torch.optim.SGD(params, lr=0.1))  # no scaler, no read
    with pytest.raises(ValueError, match=r"^fp16 training with SGD \(not fused\) reads"):
        check_capturable_scaling(scaler, torch.optim.SGD(params, lr=0.1))


def test_bert_trains_with_the_fused_optimizer_on_every_device():
    workload = bert_workload("train")
    try:
        assert workload.optimizer.defaults["fused"] is True
        assert workload.execution_details()["fused_optimizer"] is True
    finally:
        workload.teardown()


def test_queries_by_sample_give_the_logits_of_the_2d_mask():
    workload = bert_workload("infer")
    try:
        workload.stage_samples(6)
        indices = [4, 0, 3]
        got = workload.infer_samples(indices)
        assert workload.library is not None
        with torch.inference_mode():
            want = workload.model(**{k: v[indices] for k, v in workload.library.items()}).logits
    finally:
        workload.teardown()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("compile_mode, passed", [("off", False), ("default", True)])
def test_a_compiled_model_is_always_given_the_mask(compile_mode, passed):
    # one input structure for a compiled model: a batch without padding compiles nothing new
    workload = SmallBertTorch(RunSpec(workload="bert", device="cpu", compile=compile_mode))
    ones = torch.ones(2, 8, dtype=torch.int64)
    mask = workload._with_mask_form({"attention_mask": ones}, all_ones=True)["attention_mask"]
    assert (mask is not None) is passed
