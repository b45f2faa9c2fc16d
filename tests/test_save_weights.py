"""``save_weights``: a training run saves its trained weights beside its record in the layout
``--pretrained`` reads, and a new workload loads exactly those weights. PyTorch SSD at 128 px
and a two-layer BERT; the refusal of inference runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bench import cli
from bench.run import registry, runner
from bench.run.capabilities import check_save_weights
from bench.run.registry import Entry
from bench.run.worker import execute
from bench.run.workload import Workload
from bench.schema.spec import RunSpec, SpecError
from data.samples import make_imdb, write_vocab
from models.ssd.torch import PRETRAINED_FILE, SsdTorch
from tests.test_torch_data import SmallBertTorch

OPTIONS = dict(progress=False, telemetry_interval_s=None)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("datasets")
    make_imdb(base)
    write_vocab(base / "vocab.txt")
    return base


@pytest.fixture
def small_bert(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = dict(registry.REGISTRY)
    entries[("bert", "torch")] = Entry("tests.test_torch_data:SmallBertTorch")
    monkeypatch.setattr(registry, "REGISTRY", entries)


def train_and_save(spec: RunSpec, out_dir: Path) -> Path:
    """Train ``spec`` for 2 steps with ``save_weights``; the folder it saved to."""
    record = execute(spec, out_dir=out_dir, save_weights=True, **OPTIONS)
    assert record.ok, record.outcome
    name = record.execution.details["weights"]
    assert name == f"{record.run_id}.weights"
    directory = out_dir / name
    assert directory.is_dir()
    info = registry.workload_info(spec.workload)
    assert info.missing_checkpoint(spec.backend, directory) is None
    return directory


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_ssd_training_saves_weights_that_pretrained_loads(tmp_path):
    spec = RunSpec(
        workload="ssd", mode="train", image_size=128, batch=2, device="cpu", warmup=1, iters=1
    )
    directory = train_and_save(spec, tmp_path)
    assert sorted(p.name for p in directory.iterdir()) == [PRETRAINED_FILE]
    loaded = SsdTorch(spec.replace(mode="infer", pretrained=str(directory)))
    fresh = SsdTorch(spec.replace(mode="infer"))
    loaded.setup()
    fresh.setup()
    saved = torch.load(directory / PRETRAINED_FILE, weights_only=True)
    state = loaded.net.state_dict()
    assert saved.keys() == state.keys()
    assert all(torch.equal(saved[k], state[k]) for k in saved)
    assert not same_state(loaded.net, fresh.net), "the trained weights, not the initial ones"


def test_bert_training_saves_weights_and_vocab_that_pretrained_loads(root, small_bert, tmp_path):
    spec = RunSpec(
        workload="bert",
        mode="train",
        seq_len=16,
        batch=2,
        device="cpu",
        warmup=1,
        iters=1,
        data=str(root / "aclImdb"),
        vocab=str(root / "vocab.txt"),
        loader_workers=0,
    )
    directory = train_and_save(spec, tmp_path)
    names = {p.name for p in directory.iterdir()}
    assert {"config.json", "vocab.txt"} <= names
    assert (directory / "vocab.txt").read_text() == (root / "vocab.txt").read_text()
    # the reloaded run takes its vocabulary from the saved folder too
    again = spec.replace(mode="infer", vocab=None, pretrained=str(directory))
    runner.prepare(again, gpus=[])
    loaded = SmallBertTorch(again)
    loaded.setup()
    try:
        assert loaded.model is not None
        reference = SmallBertTorch(spec.replace(mode="infer"))
        reference.setup()
        assert reference.model is not None
        assert not same_state(loaded.model, reference.model)
        saved = load_file(str(directory / "model.safetensors"))
        state = loaded.model.state_dict()
        assert saved.keys() == state.keys()
        assert all(torch.equal(saved[k], state[k]) for k in saved)
    finally:
        loaded.teardown()


def test_save_weights_refuses_an_inference_run(tmp_path, capsys):
    spec = RunSpec(workload="ssd", mode="infer", image_size=128, device="cpu")
    with pytest.raises(SpecError, match="training run"):
        check_save_weights(spec, True)
    with pytest.raises(SpecError, match="training run"):
        runner.run(spec, runner.RunOptions(out_dir=tmp_path, save_weights=True))
    argv = ["run", "--workload", "ssd", "--device", "cpu", "--out", str(tmp_path)]
    assert cli.main([*argv, "--save-weights"]) == 2
    assert "--save-weights" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_save_weights_refuses_an_implementation_that_declares_it_cannot(tmp_path):
    spec = RunSpec(workload="bert-qa", mode="train", device="cpu")
    assert not registry.lookup("bert-qa", "torch").saves_weights
    with pytest.raises(SpecError) as refused:
        runner.run(spec, runner.RunOptions(out_dir=tmp_path, save_weights=True))
    assert str(refused.value) == (
        "--save-weights: bert-qa on torch cannot save its weights for --pretrained yet"
    )
    assert not list(tmp_path.iterdir())
    check_save_weights(spec.replace(workload="ssd"), True)  # ssd on torch declares it can
    check_save_weights(spec, False)


def test_a_failed_save_fails_the_run_and_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(SsdTorch, "save_weights", Workload.save_weights)
    spec = RunSpec(
        workload="ssd", mode="train", image_size=128, batch=1, device="cpu", warmup=1, iters=1
    )
    record = execute(spec, out_dir=tmp_path, save_weights=True, **OPTIONS)
    assert record.outcome.status == "error"
    assert "cannot save its weights" in (record.outcome.message or "")
    assert not (tmp_path / f"{record.run_id}.weights").exists()
