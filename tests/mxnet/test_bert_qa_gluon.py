"""BERT question answering on MXNet/GluonNLP (runs in .venv-mxnet): the span head's size,
training and inference at a tiny size, the same logits as transformers'
BertForQuestionAnswering from the same weights (PyTorch probed in the main environment), and
an evaluation on the project's SQuAD sample."""

import json
import subprocess
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from bench.run import envinfo, registry
from bench.schema.spec import RunSpec
from data import squad
from data.squad_sample import write_squad_sample, write_squad_vocab
from models.bert import config as bert
from models.bert_qa.gluon import BertQaGluon, transformers_state

SMALL = bert.BertShape(hidden=64, layers=2, heads=2, intermediate=128, max_positions=64)
SMALL_SETTINGS = bert.BertSettings(shape=SMALL)
MAIN_PYTHON = envinfo.PROJECT_ROOT / registry.ENVIRONMENTS["main"] / "bin" / "python"

#: transformers' model with the weights and inputs of argv[1]; its [B, L, 2] logits to argv[2].
TORCH_PROBE = """
import json, sys
import numpy as np
import torch
from transformers import BertForQuestionAnswering
from models.bert import config as bert
from models.bert.torch import base_config

data = np.load(sys.argv[1])
shape = bert.BertShape(**json.loads(str(data["shape"])))
model = BertForQuestionAnswering(base_config(shape, "eager")).eval()
state = {k[len("w:"):]: torch.from_numpy(data[k]) for k in data.files if k.startswith("w:")}
model.load_state_dict(state, strict=True)
ids = torch.from_numpy(data["ids"])
mask = (torch.arange(ids.shape[1])[None, :] < torch.from_numpy(data["valid"])[:, None]).long()
with torch.no_grad():
    out = model(input_ids=ids, token_type_ids=torch.from_numpy(data["types"]), attention_mask=mask)
logits = torch.stack([out.start_logits, out.end_logits], -1).numpy()
np.save(sys.argv[2], logits)
print(sum(p.numel() for p in model.parameters()))
"""


def qa_spec(**kw):
    return RunSpec(
        **{"workload": "bert-qa", "backend": "mxnet", "device": "cpu", "batch": 4, "seq_len": 32}
        | kw
    )


@pytest.fixture(autouse=True)
def _seed():
    mx.random.seed(0)
    np.random.seed(0)


def test_bert_base_span_head_parameter_count_matches_transformers():
    model = BertQaGluon(qa_spec(batch=1, seq_len=16))
    model.setup()
    assert model.step().shape == (1, 16, 2)
    assert model.details()["parameters"] == 108_893_186  # BertForQuestionAnswering's


def test_training_loss_falls_on_a_fixed_batch():
    settings = bert.BertSettings(shape=SMALL, learning_rate=1e-3, warmup_steps=1)
    wl = BertQaGluon(qa_spec(mode="train", batch=8), settings)
    wl.setup()
    losses = [float(wl.step().asscalar()) for _ in range(10)]
    assert max(losses[-3:]) < 0.6 * losses[0], losses


@pytest.mark.skipif(not MAIN_PYTHON.exists(), reason="the main environment (.venv) is not set up")
def test_same_logits_as_transformers_from_the_same_weights(tmp_path: Path):
    wl = BertQaGluon(qa_spec(batch=3, include_h2d=True), SMALL_SETTINGS)
    wl.setup()
    got = wl.step().asnumpy()
    ids, types, valid = (a.asnumpy().astype(np.int64) for a in wl.inputs[0])
    weights = transformers_state(wl.model)
    shape = json.dumps({f: getattr(SMALL, f) for f in SMALL.__dataclass_fields__})
    np.savez(
        tmp_path / "in.npz",
        ids=ids,
        types=types,
        valid=valid,
        shape=np.array(shape),
        **{f"w:{k}": v for k, v in weights.items()},
    )
    proc = subprocess.run(
        [str(MAIN_PYTHON), "-c", TORCH_PROBE, str(tmp_path / "in.npz"), str(tmp_path / "out.npy")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=envinfo.PROJECT_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.split()[-1]) == wl.details()["parameters"] == 2_024_834
    want = np.load(tmp_path / "out.npy")
    assert got.shape == want.shape == (3, 32, 2)
    for i, length in enumerate(valid):  # padding positions are never answers
        np.testing.assert_allclose(got[i, :length], want[i, :length], atol=1e-4)


def test_evaluation_on_the_squad_sample(tmp_path: Path):
    pytest.importorskip("tokenizers", reason="pyproject's mxnet-stack installs tokenizers")
    write_squad_sample(tmp_path / "dev-v1.1.json")
    vocab = write_squad_vocab(tmp_path / "vocab.txt")
    spec = qa_spec(scenario="evaluate", seq_len=48, data=str(tmp_path), vocab=str(vocab))
    wl = BertQaGluon(spec, SMALL_SETTINGS)
    wl.setup()
    result = wl.evaluate()
    assert (result["questions"], result["samples"], result["metric"]) == (6, 10, "squad_f1")
    assert 0.0 <= result["exact_match"] <= result["f1"] <= 100.0
    assert result["value"] == pytest.approx(result["f1"] / 100)
    # the same figures from the network's logits scored directly
    examples, features = squad.read_features(tmp_path, "dev", vocab, 48)
    arrays = [
        features.input_ids,
        features.token_type_ids,
        features.attention_mask.sum(axis=1),
    ]
    logits = wl.model(*(mx.nd.array(a.astype("float32")) for a in arrays)).asnumpy()
    scores = squad.squad_scores(examples, squad.best_spans(examples, features, logits))
    assert scores["f1"] == pytest.approx(result["f1"], abs=1e-6)
    with pytest.raises(ValueError, match="evaluate only"):
        BertQaGluon(qa_spec(mode="train", data=str(tmp_path), vocab=str(vocab)))
