"""Queries by sample index (``stage_samples`` / ``infer_samples``) on the MXNet path, on the
CPU with small models. Runs in the MXNet environment (.venv-mxnet).

The networks are hybridized with static_alloc/static_shape; queries of changing length make
MXNet plan again, and these tests check that the results stay right when they do."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mxnet as mx
import numpy as np
import pytest

from bench.run.workload import Workload
from bench.schema.spec import RunSpec
from data.synthetic import detection_batch, text_batch
from models.bert import config as bert
from models.bert.gluon import BertGluon
from models.ssd.gluon import SsdGluon

SMALL = bert.BertShape(hidden=64, layers=2, heads=2, intermediate=128, max_positions=64)
SMALL_SETTINGS = bert.BertSettings(shape=SMALL)
IMAGE_SIZE = 128
SEQ_LEN = 32
#: Samples staged; the step's batch is the first BATCH of them on the SSD path.
LIBRARY = 4
BATCH = 2
PATHS = ("ssd_gluon", "bert_gluon")


def ssd_spec(**kw: Any) -> RunSpec:
    base = {"workload": "ssd", "backend": "mxnet", "device": "cpu", "batch": BATCH}
    return RunSpec(**{**base, "image_size": IMAGE_SIZE, **kw})


def bert_spec(**kw: Any) -> RunSpec:
    base = {"workload": "bert", "backend": "mxnet", "device": "cpu", "batch": BATCH}
    return RunSpec(**{**base, "seq_len": SEQ_LEN, **kw})


def _staged(workload: Workload) -> Workload:
    mx.random.seed(0)
    workload.setup()
    workload.stage_samples(LIBRARY)
    return workload


@pytest.fixture(scope="module")
def ssd_gluon() -> Workload:
    return _staged(SsdGluon(ssd_spec()))


@pytest.fixture(scope="module")
def bert_gluon() -> Workload:
    return _staged(BertGluon(bert_spec(), SMALL_SETTINGS))


def _ssd_reference(wl: Any, rows: Sequence[int]) -> Any:
    images = detection_batch(LIBRARY, IMAGE_SIZE, seed=0).images[list(rows)]
    return wl.net(mx.nd.array(images, ctx=wl.ctx))


def _bert_reference(wl: Any, rows: Sequence[int]) -> Any:
    host = text_batch(LIBRARY, SEQ_LEN, vocab_size=SMALL.vocab_size, seed=0)
    arrays = (host.input_ids, host.token_type_ids, host.valid_length)
    return wl.model(*(mx.nd.array(a[list(rows)].astype("float32"), ctx=wl.ctx) for a in arrays))


REFERENCES = {"ssd_gluon": _ssd_reference, "bert_gluon": _bert_reference}


def _arrays(out: Any) -> list[np.ndarray]:
    """GluonCV's detections (ids, scores, boxes) or logits as a list of numpy arrays."""
    return [a.asnumpy() for a in (out if isinstance(out, (list, tuple)) else [out])]


def _assert_same(got: Any, want: Any) -> None:
    """Exactly equal: the same operators on the same shapes (on the CPU) give the same bits."""
    for g, w in zip(_arrays(got), _arrays(want), strict=True):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("path", PATHS)
def test_a_query_equals_the_model_on_exactly_those_rows(
    path: str, request: pytest.FixtureRequest
) -> None:
    wl = request.getfixturevalue(path)
    out = wl.infer_samples([2, 0, 2])
    assert all(a.shape[0] == 3 for a in _arrays(out))
    _assert_same(out, REFERENCES[path](wl, [2, 0, 2]))
    for a in _arrays(out):  # the repeated row
        np.testing.assert_allclose(a[0], a[2], rtol=1e-6, atol=1e-6)


def test_the_first_staged_images_are_the_steps_batch(ssd_gluon: Any) -> None:
    _assert_same(ssd_gluon.infer_samples(range(BATCH)), ssd_gluon.step())


@pytest.mark.parametrize("path", PATHS)
def test_query_lengths_vary_under_static_shape(path: str, request: pytest.FixtureRequest) -> None:
    wl = request.getfixturevalue(path)
    first = _arrays(wl.infer_samples([1]))
    kept = wl.infer_samples([0, 1, 2, 3])  # not read until other sizes have run
    for query in ([3, 3, 3], [1], [0, 1, 2, 3], [2, 0, 2], [1]):
        out = wl.infer_samples(query)
        assert all(a.shape[0] == len(query) for a in _arrays(out)), query
        _assert_same(out, REFERENCES[path](wl, query))
    for again, before in zip(_arrays(wl.infer_samples([1])), first, strict=True):
        np.testing.assert_array_equal(again, before)
    # an earlier result is not overwritten by later calls (static_alloc reuses buffers)
    _assert_same(kept, REFERENCES[path](wl, [0, 1, 2, 3]))


def test_bert_logits_do_not_depend_on_the_query_around_them(bert_gluon: Any) -> None:
    everything = bert_gluon.infer_samples(range(LIBRARY)).asnumpy()
    for i in range(LIBRARY):
        single = bert_gluon.infer_samples([i]).asnumpy()[0]
        np.testing.assert_allclose(single, everything[i], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", PATHS)
def test_bad_queries_raise(path: str, request: pytest.FixtureRequest) -> None:
    wl = request.getfixturevalue(path)
    with pytest.raises(ValueError, match="at least one sample index"):
        wl.infer_samples([])
    with pytest.raises(IndexError, match=f"outside the {LIBRARY} staged samples"):
        wl.infer_samples([0, LIBRARY])
    with pytest.raises(IndexError, match="outside"):
        wl.infer_samples([-1])
    with pytest.raises(ValueError, match="at least one sample"):
        wl.stage_samples(0)


def test_queries_before_staging_are_a_clear_error() -> None:
    for wl in (SsdGluon(ssd_spec()), BertGluon(bert_spec(), SMALL_SETTINGS)):
        with pytest.raises(RuntimeError, match="call stage_samples"):
            wl.infer_samples([0])


def test_training_runs_refuse_queries() -> None:
    training: list[Workload] = [
        SsdGluon(ssd_spec(mode="train")),
        BertGluon(bert_spec(mode="train"), SMALL_SETTINGS),
    ]
    for wl in training:
        with pytest.raises(NotImplementedError, match="inference runs only.*'train'"):
            wl.stage_samples(2)
        with pytest.raises(NotImplementedError, match="inference runs only"):
            wl.infer_samples([0])
