"""``save_weights`` on the MXNet path: a training run of SSD (128 px) and of a two-layer BERT
saves its trained parameters beside the record under the name ``--pretrained`` looks for,
and a new workload loads exactly those parameters. Runs in the MXNet environment
(.venv-mxnet)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from mxnet import gluon

from bench.run import registry
from bench.run.worker import execute
from bench.schema.spec import RunSpec
from data.samples import make_imdb, write_vocab
from models.bert import config as bert
from models.bert.gluon import PARAMS_FILE, BertGluon
from models.mxnet_common import MxnetWorkload
from models.ssd.gluon import MODEL_NAME, SsdGluon

SMALL_SETTINGS = bert.BertSettings(
    shape=bert.BertShape(hidden=64, layers=2, heads=2, intermediate=128, max_positions=64)
)
OPTIONS = dict(progress=False, telemetry_interval_s=None)


class SmallBertGluon(BertGluon):
    def __init__(self, spec: RunSpec) -> None:
        super().__init__(spec, SMALL_SETTINGS)


@pytest.fixture
def small_bert(monkeypatch: pytest.MonkeyPatch) -> None:
    original: Callable[[registry.Entry], type] = registry.workload_class

    def workload_class(entry: registry.Entry) -> type:
        base = original(entry)
        return SmallBertGluon if base is BertGluon else base

    monkeypatch.setattr(registry, "workload_class", workload_class)


def parameters(block: gluon.Block) -> dict[str, np.ndarray]:
    """Initialized parameters by their structural names (as save_parameters writes them):
    a seeded model that has run no forward pass still defers some shapes."""
    items = block._collect_params_with_prefix().items()
    return {k: p.data().asnumpy() for k, p in items if p._data is not None}


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def differ(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    """Some parameter both hold differs."""
    return any(not np.array_equal(a[k], b[k]) for k in a.keys() & b.keys())


def train_and_save(spec: RunSpec, out_dir: Path) -> Path:
    record = execute(spec, out_dir=out_dir, save_weights=True, **OPTIONS)
    assert record.ok, record.outcome
    directory = out_dir / record.execution.details["weights"]
    assert directory.name == f"{record.run_id}.weights" and directory.is_dir()
    info = registry.workload_info(spec.workload)
    assert info.missing_checkpoint(spec.backend, directory) is None
    return directory


def loaded_and_fresh(
    cls: type[MxnetWorkload], spec: RunSpec, directory: Path
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Parameters of a new inference workload from ``directory`` (its vocabulary too, where
    the run had one) and of one from the seed."""
    out = []
    for variant in (spec.replace(vocab=None, pretrained=str(directory)), spec):
        workload = cls(variant.replace(mode="infer"))
        workload.setup()
        block = workload.net if isinstance(workload, SsdGluon) else workload.model
        out.append(parameters(block))
        workload.teardown()
    return out[0], out[1]


def test_ssd_training_saves_parameters_that_pretrained_loads(tmp_path):
    spec = RunSpec(
        workload="ssd",
        backend="mxnet",
        mode="train",
        image_size=128,
        batch=2,
        device="cpu",
        warmup=1,
        iters=1,
    )
    directory = train_and_save(spec, tmp_path)
    assert [p.name for p in directory.iterdir()] == [f"{MODEL_NAME}.params"]
    loaded, fresh = loaded_and_fresh(SsdGluon, spec, directory)
    assert differ(loaded, fresh), "the trained parameters, not the initial ones"
    assert same(loaded, _saved(directory / f"{MODEL_NAME}.params", loaded))


def test_bert_training_saves_parameters_and_vocab_that_pretrained_loads(small_bert, tmp_path):
    root = tmp_path / "datasets"
    root.mkdir()
    make_imdb(root)
    vocab = write_vocab(root / "vocab.txt")
    spec = RunSpec(
        workload="bert",
        backend="mxnet",
        mode="train",
        seq_len=16,
        batch=2,
        device="cpu",
        warmup=1,
        iters=1,
        data=str(root / "aclImdb"),
        vocab=str(vocab),
        loader_workers=0,
    )
    directory = train_and_save(spec, tmp_path / "runs")
    assert sorted(p.name for p in directory.iterdir()) == [PARAMS_FILE, "vocab.txt"]
    loaded, fresh = loaded_and_fresh(SmallBertGluon, spec, directory)
    assert differ(loaded, fresh), "the trained parameters, not the initial ones"
    assert same(loaded, _saved(directory / PARAMS_FILE, loaded))


def _saved(path: Path, like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays of a save_parameters file, by the same names."""
    import mxnet as mx

    arrays = {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}
    assert arrays.keys() == like.keys()
    return arrays
