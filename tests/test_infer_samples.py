"""Queries by sample index (``stage_samples`` / ``infer_samples``) on the PyTorch and ONNX
Runtime paths, on the CPU with small models: the right rows in the right order, the same
forward and post-processing as ``step()``, any query length, and clear refusals.

The MXNet path's tests are in tests/mxnet/test_infer_samples_gluon.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bench.run.workload import Workload
from bench.schema.spec import RunSpec
from data.synthetic import detection_batch, text_batch
from models.bert import config as bert
from models.bert.onnx import NAMES, BertOnnx
from models.bert.torch import FEATURES, BertTorch
from models.ssd.onnx import SsdOnnx
from models.ssd.torch import SsdTorch
from models.ssd.torch_box import detect

SMALL = bert.BertShape(hidden=64, layers=2, heads=2, intermediate=128, max_positions=64)
SMALL_SETTINGS = bert.BertSettings(shape=SMALL)
IMAGE_SIZE = 128
SEQ_LEN = 32
#: Samples staged; the step's batch is the first BATCH of them on the SSD paths.
LIBRARY = 4
BATCH = 2
PATHS = ("ssd_torch", "bert_torch", "ssd_onnx", "bert_onnx")


def ssd_spec(backend: str, **kw: Any) -> RunSpec:
    base = {"workload": "ssd", "backend": backend, "device": "cpu", "batch": BATCH}
    return RunSpec(**{**base, "image_size": IMAGE_SIZE, **kw})


def bert_spec(backend: str, **kw: Any) -> RunSpec:
    base = {"workload": "bert", "backend": backend, "device": "cpu", "batch": BATCH}
    return RunSpec(**{**base, "seq_len": SEQ_LEN, **kw})


@pytest.fixture(scope="module", autouse=True)
def _two_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    yield
    torch.set_num_threads(threads)


def _staged(workload: Workload) -> Workload:
    torch.manual_seed(0)
    workload.setup()
    workload.stage_samples(LIBRARY)
    return workload


@pytest.fixture(scope="module")
def ssd_torch() -> Workload:
    return _staged(SsdTorch(ssd_spec("torch")))


@pytest.fixture(scope="module")
def bert_torch() -> Workload:
    return _staged(BertTorch(bert_spec("torch"), SMALL_SETTINGS))


@pytest.fixture(scope="module")
def ssd_onnx(tmp_path_factory: pytest.TempPathFactory) -> Workload:
    return _staged(SsdOnnx(ssd_spec("onnxruntime"), cache_dir=tmp_path_factory.mktemp("onnx")))


@pytest.fixture(scope="module")
def bert_onnx(tmp_path_factory: pytest.TempPathFactory) -> Workload:
    cache = tmp_path_factory.mktemp("onnx")
    return _staged(BertOnnx(bert_spec("onnxruntime"), cache_dir=cache, settings=SMALL_SETTINGS))


# -- references: the model run on a batch built on the host from the synthetic makers ------


def _ssd_rows(rows: Sequence[int]) -> np.ndarray:
    return np.ascontiguousarray(detection_batch(LIBRARY, IMAGE_SIZE, seed=0).images[list(rows)])


def _bert_rows(rows: Sequence[int]) -> dict[str, np.ndarray]:
    host = text_batch(LIBRARY, SEQ_LEN, vocab_size=SMALL.vocab_size, seed=0)
    return {n: np.ascontiguousarray(getattr(host, n)[list(rows)]) for n in NAMES}


def _ssd_torch_reference(wl: Any, rows: Sequence[int]) -> Any:
    with torch.inference_mode():
        cls_preds, box_preds, anchors = wl.net(torch.from_numpy(_ssd_rows(rows)))
        return detect(cls_preds, box_preds, anchors, (IMAGE_SIZE, IMAGE_SIZE))


def _bert_torch_reference(wl: Any, rows: Sequence[int]) -> Any:
    features = {n: torch.from_numpy(a) for n, a in _bert_rows(rows).items() if n in FEATURES}
    with torch.inference_mode():
        return wl.model(**features).logits


def _ssd_onnx_reference(wl: Any, rows: Sequence[int]) -> Any:
    """A plain ``session.run`` on host arrays (not IO binding), then the same detect()."""
    cls_preds, box_preds = wl.binding.session.run(None, {"images": _ssd_rows(rows)})
    with torch.inference_mode():
        return detect(
            torch.from_numpy(cls_preds),
            torch.from_numpy(box_preds),
            wl.anchors,
            (IMAGE_SIZE, IMAGE_SIZE),
        )


def _bert_onnx_reference(wl: Any, rows: Sequence[int]) -> Any:
    return torch.from_numpy(wl.binding.session.run(["logits"], _bert_rows(rows))[0])


REFERENCES: dict[str, Callable[[Any, Sequence[int]], Any]] = {
    "ssd_torch": _ssd_torch_reference,
    "bert_torch": _bert_torch_reference,
    "ssd_onnx": _ssd_onnx_reference,
    "bert_onnx": _bert_onnx_reference,
}


def _tensors(out: Any) -> list[torch.Tensor]:
    """Detections (ids, scores, boxes) or logits as a list of tensors."""
    return list(out) if isinstance(out, tuple) else [out]


def _assert_same(got: Any, want: Any) -> None:
    """Exactly equal: the same kernels on the same shapes (on the CPU) give the same bits."""
    for g, w in zip(_tensors(got), _tensors(want), strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def _rows(out: Any, index: int) -> list[torch.Tensor]:
    return [t[index] for t in _tensors(out)]


# -- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_a_query_equals_the_model_on_exactly_those_rows(
    path: str, request: pytest.FixtureRequest
) -> None:
    wl = request.getfixturevalue(path)
    got = wl.infer_samples([2, 0, 2])
    assert all(t.shape[0] == 3 for t in _tensors(got))
    _assert_same(got, REFERENCES[path](wl, [2, 0, 2]))
    for first, third in zip(_rows(got, 0), _rows(got, 2), strict=True):  # the repeated row
        torch.testing.assert_close(first, third, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("path", ["ssd_torch", "ssd_onnx"])
def test_the_first_staged_images_are_the_steps_batch(
    path: str, request: pytest.FixtureRequest
) -> None:
    wl = request.getfixturevalue(path)
    _assert_same(wl.infer_samples(range(BATCH)), wl.step())


@pytest.mark.parametrize("path", PATHS)
def test_query_lengths_vary(path: str, request: pytest.FixtureRequest) -> None:
    wl = request.getfixturevalue(path)
    results: dict[tuple[int, ...], list[Any]] = {}
    for query in ([1], [3, 3, 3], [0, 1, 2, 3], [1]):
        out = wl.infer_samples(query)
        assert all(t.shape[0] == len(query) for t in _tensors(out)), query
        _assert_same(out, REFERENCES[path](wl, query))
        results.setdefault(tuple(query), []).append(out)
    first, last = results[(1,)]
    _assert_same(last, first)


def test_bert_logits_do_not_depend_on_the_query_around_them(bert_torch: Any) -> None:
    """A sample's logits are the same alone or in a query of the whole library (no
    discrete post-processing here, so a tolerance is enough to compare batch sizes)."""
    everything = bert_torch.infer_samples(range(LIBRARY))
    for i in range(LIBRARY):
        torch.testing.assert_close(bert_torch.infer_samples([i])[0], everything[i])


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


def test_queries_before_staging_are_a_clear_error(tmp_path: Path) -> None:
    unstaged: list[Workload] = [
        SsdTorch(ssd_spec("torch")),
        BertTorch(bert_spec("torch"), SMALL_SETTINGS),
        SsdOnnx(ssd_spec("onnxruntime"), cache_dir=tmp_path),
        BertOnnx(bert_spec("onnxruntime"), cache_dir=tmp_path, settings=SMALL_SETTINGS),
    ]
    for wl in unstaged:
        with pytest.raises(RuntimeError, match="call stage_samples"):
            wl.infer_samples([0])


def test_training_runs_refuse_queries() -> None:
    for wl in (
        SsdTorch(ssd_spec("torch", mode="train")),
        BertTorch(bert_spec("torch", mode="train"), SMALL_SETTINGS),
    ):
        with pytest.raises(NotImplementedError, match="inference runs only.*'train'"):
            wl.stage_samples(2)
        with pytest.raises(NotImplementedError, match="inference runs only"):
            wl.infer_samples([0])
    # ONNX Runtime workloads are inference only: a training run is refused when built.
    with pytest.raises(ValueError, match="inference only"):
        SsdOnnx(ssd_spec("onnxruntime", mode="train"))


def test_bf16_queries_run_under_autocast() -> None:
    wl = _staged(BertTorch(bert_spec("torch", precision="bf16"), SMALL_SETTINGS))
    logits = wl.infer_samples([3, 1])
    assert logits.shape == (2, 2) and logits.dtype == torch.bfloat16
    assert torch.isfinite(logits.float()).all()


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_queries_on_the_gpu(backend: str, tmp_path: Path) -> None:
    """On CUDA: the query gathered on the device equals the model run on the same rows
    copied from the host (one batch size, so the same kernels), for both workloads."""
    import onnxruntime as ort

    if backend == "onnxruntime" and "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed")
    device = torch.device("cuda:0")
    rows = [2, 0, 2]
    if backend == "torch":
        ssd: Any = _staged(SsdTorch(ssd_spec(backend, device="cuda:0")))
        bert_wl: Any = _staged(BertTorch(bert_spec(backend, device="cuda:0"), SMALL_SETTINGS))
        assert ssd.details()["fp32_math"] == "tf32" and torch.backends.cudnn.allow_tf32
        assert bert_wl.details()["fp32_math"] == "fp32"
        assert not torch.backends.cuda.matmul.allow_tf32
        with torch.inference_mode():
            images = torch.from_numpy(_ssd_rows(rows)).to(device)
            cls_preds, box_preds, anchors = ssd.net(ssd._layout(images))
            want_ssd = detect(cls_preds, box_preds, anchors, (IMAGE_SIZE, IMAGE_SIZE))
            features = {n: torch.from_numpy(a).to(device) for n, a in _bert_rows(rows).items()}
            want_bert = bert_wl.model(**features).logits
    else:
        ssd = _staged(SsdOnnx(ssd_spec(backend, device="cuda:0"), cache_dir=tmp_path))
        gpu_spec = bert_spec(backend, device="cuda:0")
        bert_wl = _staged(BertOnnx(gpu_spec, cache_dir=tmp_path, settings=SMALL_SETTINGS))
        cls_np, box_np = ssd.binding.session.run(None, {"images": _ssd_rows(rows)})
        with torch.inference_mode():
            want_ssd = detect(
                torch.from_numpy(cls_np).to(device),
                torch.from_numpy(box_np).to(device),
                ssd.anchors,
                (IMAGE_SIZE, IMAGE_SIZE),
            )
        want_bert = torch.from_numpy(
            bert_wl.binding.session.run(["logits"], _bert_rows(rows))[0]
        ).to(device)
    got_ssd, got_bert = ssd.infer_samples(rows), bert_wl.infer_samples(rows)
    assert got_bert.device.type == "cuda" and got_ssd[0].device.type == "cuda"
    for got, want in zip(got_ssd, want_ssd, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_bert, want_bert, rtol=1e-4, atol=1e-4)
    for query in ([1], [3, 3, 3], [0, 1, 2, 3]):
        assert bert_wl.infer_samples(query).shape == (len(query), SMALL.num_labels)
        assert ssd.infer_samples(query)[0].shape == (len(query), 100)
