"""The served model answers as the in-process model does on the same samples: BERT's
logits (requests batched by Triton, so within a float tolerance) and SSD's detections after
the NMS (at a reduced 128x128 input to keep the test cheap on a CPU; one request at a time,
so each image runs in a batch of one on both sides)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from bench.run import registry
from bench.schema.spec import RunSpec
from bench.serve import launcher
from bench.serve.endpoint import Client, Endpoint
from tests.serve.conftest import free_ports, group_gone

SAMPLES = 6


def _served(spec: RunSpec, url: str, *, together: bool) -> list[dict[str, np.ndarray]]:
    """Each sample's outputs from the server, sent all at once (the server batches them) or
    one after another."""
    form = registry.served_form(spec.workload)
    arrays = form.sample_arrays(spec, SAMPLES)
    names = [t.name for t in form.signature(spec).outputs]

    async def ask() -> list[Any]:
        client = Client(Endpoint.parse(url))
        try:
            requests = [
                client.inputs({k: v[i : i + 1] for k, v in arrays.items()}) for i in range(SAMPLES)
            ]
            if together:
                return list(await asyncio.gather(*(client.infer(r) for r in requests)))
            return [await client.infer(r) for r in requests]
        finally:
            await client.close()

    return [{n: r.as_numpy(n)[0] for n in names} for r in asyncio.run(ask())]


def _in_process(spec: RunSpec, *, together: bool) -> list[Any]:
    workload = registry.workload_class(registry.lookup(spec.workload, spec.backend))(spec)
    workload.setup()
    workload.stage_samples(SAMPLES)
    if together:
        out = workload.infer_samples(range(SAMPLES))
        return [out[i].cpu().numpy() for i in range(SAMPLES)]
    return [[t[0].numpy() for t in workload.infer_samples([i])] for i in range(SAMPLES)]


def _serve(spec: RunSpec, max_batch: int) -> Any:
    config = launcher.make_config(spec, port=free_ports(), max_batch=max_batch)
    return launcher.running(config, timeout_s=300)


@pytest.mark.parametrize("backend", ["torch", pytest.param("onnxruntime", marks=pytest.mark.slow)])
def test_bert_logits_served_equal_in_process(backend: str) -> None:
    spec = RunSpec(workload="bert", backend=backend, device="cpu", seq_len=8, batch=4)
    with _serve(spec, max_batch=4) as server:
        remote = _served(spec, server.grpc_url, together=True)
    assert group_gone(server.proc.pid)
    local = _in_process(spec, together=True)
    for got, want in zip(remote, local, strict=True):
        assert got["logits"].shape == want.shape == (2,)
        np.testing.assert_allclose(got["logits"], want, rtol=1e-4, atol=1e-5)


def test_ssd_detections_served_equal_in_process() -> None:
    spec = RunSpec(workload="ssd", backend="torch", device="cpu", image_size=128, batch=2)
    with _serve(spec, max_batch=2) as server:
        remote = _served(spec, server.http_url, together=False)
    local = _in_process(spec, together=False)
    for got, (ids, scores, boxes) in zip(remote, local, strict=True):
        np.testing.assert_array_equal(got["ids"], ids)
        np.testing.assert_allclose(got["scores"], scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["boxes"], boxes, rtol=1e-5, atol=1e-4)
