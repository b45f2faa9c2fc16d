import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertForSequenceClassification

from bench.schema.spec import RunSpec
from models import torch_common
from models.bert import config as bert
from models.bert.torch import BertTorch, base_config

SMALL = bert.BertShape(hidden=64, layers=2, heads=2, intermediate=128, max_positions=64)
SMALL_SETTINGS = bert.BertSettings(shape=SMALL)


def spec(**kw):
    return RunSpec(**{"workload": "bert", "device": "cpu", "batch": 4, "seq_len": 32, **kw})


def test_bert_base_shape_and_parameter_count():
    with torch.device("meta"):
        model = BertForSequenceClassification(base_config())
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.vocab_size) == (
        12,
        768,
        12,
        30522,
    )
    assert sum(p.numel() for p in model.parameters()) == 109_483_778


@pytest.mark.parametrize("seq_len", [16, 128])
def test_analytic_flops_match_the_flop_counter(seq_len):
    with torch.device("meta"):
        model = BertForSequenceClassification(base_config()).eval()
        ids = torch.zeros(1, seq_len, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(input_ids=ids)
    assert bert.forward_flops_per_sample(seq_len) == counter.get_total_flops()
    assert bert.forward_flops_per_sample(128) == 22_348_434_432


def test_linear_warmup_decay_schedule():
    f = bert.linear_warmup_decay
    assert [f(s, 4, 10) for s in range(11)] == [
        0.25,
        0.5,
        0.75,
        1.0,
        1.0,
        5 / 6,
        4 / 6,
        0.5,
        2 / 6,
        1 / 6,
        0.0,
    ]
    assert f(20, 4, 10) == 0.0


def test_training_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    settings = bert.BertSettings(shape=SMALL, learning_rate=1e-3, warmup_steps=1)
    wl = BertTorch(spec(mode="train", batch=8), settings)
    wl.setup()
    losses = [float(wl.step()) for _ in range(25)]
    assert max(losses[-3:]) < 0.6 * losses[0], losses
    assert wl.optimizer.param_groups[0]["weight_decay"] == bert.WEIGHT_DECAY
    assert wl.optimizer.param_groups[1]["weight_decay"] == 0.0


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_inference_returns_logits(precision):
    wl = BertTorch(spec(mode="infer", precision=precision, include_h2d=True), SMALL_SETTINGS)
    wl.setup()
    logits = wl.step()
    assert logits.shape == (4, 2) and torch.isfinite(logits.float()).all()
    assert wl.details()["fp32_math"] == "fp32"  # the CPU has no TF32


def test_declared_flops_are_bert_base_at_the_spec_length():
    flops, source = bert.INFO.flops(spec(seq_len=128))
    assert flops == bert.forward_flops_per_sample(128) == 22_348_434_432
    assert "analytic" in source and "128" in source


def test_pretrained_weights_load_from_a_local_directory(tmp_path):
    torch.manual_seed(1)
    saved = BertForSequenceClassification(base_config(SMALL))
    saved.save_pretrained(tmp_path)
    wl = BertTorch(spec(pretrained=str(tmp_path)), SMALL_SETTINGS)
    wl.setup()
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(wl.model.state_dict()[name], saved.state_dict()[name])
    assert wl.details()["pretrained"] is True


def test_missing_pretrained_checkpoint_is_a_clear_error(tmp_path):
    wl = BertTorch(spec(pretrained=str(tmp_path)), SMALL_SETTINGS)
    with pytest.raises(FileNotFoundError, match="no BERT checkpoint in"):
        wl.setup()


def test_fp32_math_on_cuda_is_full_fp32_as_declared(monkeypatch):
    """On a GPU BertTorch turns TF32 matrix multiplies off, as bert.INFO declares for torch;
    on the CPU it leaves the switch alone. (No GPU needed: only the device selection is faked.)"""
    matmul = torch.backends.cuda.matmul
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(torch_common, "build_refusal", lambda device: None)
    saved = matmul.allow_tf32  # a property of torch's module, not an attribute monkeypatch restores
    try:
        matmul.allow_tf32 = True
        cpu = BertTorch(spec(), SMALL_SETTINGS)
        assert cpu.fp32_math == "fp32" and matmul.allow_tf32 is True
        gpu_spec = spec(device="cuda:0")
        gpu = BertTorch(gpu_spec, SMALL_SETTINGS)
        assert matmul.allow_tf32 is False
        assert gpu.fp32_math == bert.INFO.fp32_math["torch"] == "fp32"
        assert not bert.INFO.uses_tf32(gpu_spec)
    finally:
        matmul.allow_tf32 = saved
