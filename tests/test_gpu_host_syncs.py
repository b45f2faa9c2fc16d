"""On a real NVIDIA GPU: host synchronizations of the pipelined PyTorch steps counted by
PyTorch's own detector (``torch.cuda.set_sync_debug_mode``), the installed build checked
against the GPU, and fp16 training replayed from a CUDA graph against eager steps (the grad
scaler's device-side path). Skipped without a GPU (see conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parameters_to_vector

from bench.schema.spec import RunSpec
from data.samples import make_imdb, make_voc_record, write_vocab
from models.bert import torch as bert_torch
from models.bert.config import BertSettings, BertShape
from models.bert.torch import BertTorch
from models.ssd.torch import SsdTorch
from models.torch_common import build_refusal
from models.torch_exec import CapturedStep
from models.torch_syncs import count_host_syncs, cuda_sync_detector

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda:0")
TINY_BERT = BertSettings(
    shape=BertShape(hidden=64, layers=2, heads=2, intermediate=128, max_positions=64),
    learning_rate=1e-3,
    warmup_steps=1,
)
#: Where the sync detector points for SSD inference's NMS (its output size is read on the
#: host, after the replay).
NMS_FILE = "sync at torchvision/ops/boxes.py:"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("datasets")
    make_voc_record(base)
    make_imdb(base)
    write_vocab(base / "vocab.txt")
    return base


@pytest.fixture
def no_bert_dropout(monkeypatch):
    original = bert_torch.base_config

    def config(*args, **kw):
        built = original(*args, **kw)
        built.hidden_dropout_prob = 0.0
        built.attention_probs_dropout_prob = 0.0
        return built

    monkeypatch.setattr(bert_torch, "base_config", config)


def test_the_detector_counts_a_host_read_and_nothing_else():
    x = torch.randn(64, device=CUDA)
    torch.cuda.synchronize()
    with cuda_sync_detector() as none:
        (x * 2).softmax(0).topk(4)
    with cuda_sync_detector() as one:
        x.sum().item()
    assert none.count == 0
    assert one.count == 1 and one.method == "torch.cuda.set_sync_debug_mode"
    assert torch.cuda.get_sync_debug_mode() == 0  # restored


class ReadsInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t):
        return t * 1

    @staticmethod
    def backward(ctx, grad):
        grad.sum().item()
        return grad


def test_the_detector_counts_a_host_read_in_the_backward_pass():
    # backward runs on the autograd engine's device thread: its warnings must reach the count
    w = torch.randn(8, device=CUDA, requires_grad=True)
    with cuda_sync_detector() as syncs:
        ReadsInBackward.apply(w).sum().backward()
    assert syncs.count == 1


def test_the_installed_build_runs_on_this_gpu():
    assert build_refusal(CUDA) is None


def bert(mode: str, **kw) -> BertTorch:
    spec = RunSpec(workload="bert", device="cuda:0", batch=4, seq_len=32, mode=mode, **kw)
    workload = BertTorch(spec, TINY_BERT)
    workload.setup()
    return workload


def ssd(mode: str, **kw) -> SsdTorch:
    spec = RunSpec(workload="ssd", device="cuda:0", batch=2, image_size=128, mode=mode, **kw)
    workload = SsdTorch(spec)
    workload.setup()
    return workload


def syncs_of(workload) -> dict[str, int]:
    try:
        return dict(count_host_syncs(workload.step, workload.device, workload.sync).sites)
    finally:
        workload.teardown()


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("mode", ["train", "infer"])
def test_bert_steps_do_not_sync(mode, precision):
    assert syncs_of(bert(mode, precision=precision)) == {}


def test_bert_steps_on_aclimdb_do_not_sync(root):
    data = dict(data=str(root / "aclImdb"), vocab=str(root / "vocab.txt"), loader_workers=0)
    assert syncs_of(bert("train", seq_len=16, **data)) == {}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_ssd_training_steps_do_not_sync(precision):
    assert syncs_of(ssd("train", precision=precision)) == {}


def test_ssd_training_on_voc_does_not_sync(root):
    assert syncs_of(ssd("train", data=str(root / "VOCdevkit"), loader_workers=0)) == {}


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_ssd_inference_syncs_only_in_its_nms(cuda_graphs):
    sites = syncs_of(ssd("infer", cuda_graphs=cuda_graphs))
    assert sites and all(site.startswith(NMS_FILE) for site in sites), sites


@pytest.mark.parametrize("workload", ["bert", "ssd"])
def test_graph_captured_training_does_not_sync(workload, no_bert_dropout):
    made = (bert if workload == "bert" else ssd)("train", cuda_graphs=True, precision="fp16")
    assert syncs_of(made) == {}


# -- fp16 training in a CUDA graph ------------------------------------------------------------


def fp16_trainer(fused_optimizer: str):
    """A small model, its fused optimizer and a grad scaler that changes its scale often."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 4)).to(CUDA)
    if fused_optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, fused=True)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True, capturable=True)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**14, growth_interval=2)
    return model, optimizer, scaler


@pytest.mark.parametrize("fused_optimizer", ["sgd", "adamw"])
def test_fp16_training_replays_the_eager_steps(fused_optimizer):
    torch.manual_seed(1)
    x = torch.randn(32, 64, device=CUDA)
    y = torch.randint(0, 4, (32,), device=CUDA)
    clean = x.clone()

    def body(model, optimizer, scaler):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16, cache_enabled=False):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.detach()

    eager = fp16_trainer(fused_optimizer)
    graphed = fp16_trainer(fused_optimizer)
    captured = CapturedStep(lambda: body(*graphed), CUDA)
    captured.capture()  # three warm-up steps, then the capture
    for _ in range(captured.warmup):
        body(*eager)
    # a step whose gradients overflow: skipped, and the scale backs off, on the device
    plan = ["clean", "clean", "inf", "clean", "clean", "clean"]
    want, got, scales = [], [], []
    for kind in plan:
        x.copy_(clean if kind == "clean" else torch.full_like(clean, float("inf")))
        want.append(float(body(*eager)))
        with cuda_sync_detector() as syncs:
            loss = captured.replay()
        assert syncs.count == 0
        got.append(float(loss))
        scales.append((eager[2].get_scale(), graphed[2].get_scale()))
    finite = [i for i, kind in enumerate(plan) if kind == "clean"]
    assert [got[i] for i in finite] == pytest.approx([want[i] for i in finite], rel=1e-3)
    assert [g for _, g in scales] == [e for e, _ in scales]  # the same scale, step by step
    assert scales[2][1] < scales[1][1]  # the overflow backed the scale off
    want_params = parameters_to_vector(eager[0].parameters()).detach()
    got_params = parameters_to_vector(graphed[0].parameters()).detach()
    assert torch.isfinite(got_params).all()
    assert float((got_params - want_params).norm()) <= 1e-3 * float(want_params.norm())


def test_graph_captured_fp16_ssd_training_follows_eager_steps():
    eager = ssd("train", precision="fp16")
    graphed = ssd("train", precision="fp16", cuda_graphs=True)
    want = [float(eager.step()) for _ in range(6)]
    got = [float(graphed.step()) for _ in range(3)]
    assert got == pytest.approx(want[3:], rel=5e-3)
    assert graphed.scaler is not None
    assert graphed.scaler.get_scale() == eager.scaler.get_scale()
    assert graphed.execution_details()["cuda_graphs"] is True


def test_graph_captured_fp16_bert_training_follows_eager_steps(no_bert_dropout):
    # clipping unscales the gradients first: the fused AdamW then gets the inf check only
    eager = bert("train", precision="fp16")
    graphed = bert("train", precision="fp16", cuda_graphs=True)
    want = [float(eager.step()) for _ in range(6)]
    got = [float(graphed.step()) for _ in range(3)]
    assert got == pytest.approx(want[3:], rel=5e-3)
    assert graphed.scaler.get_scale() == eager.scaler.get_scale()
    assert graphed.optimizer.defaults["fused"] is True
