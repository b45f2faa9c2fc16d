"""The served form of each workload: its tensors on the Open Inference Protocol, the seeded
sample library a client sends (the same samples the in-process runs stage), and the
callable a server binds, which runs the in-process workload's own inference path.

Importing this module imports no framework (numpy only); :func:`infer_fn` imports torch
where the workload's path holds its samples as torch tensors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.run.workload import Workload
from bench.schema.spec import RunSpec
from data.synthetic import detection_batch, text_batch
from models.bert import config as bert
from models.ssd import common as ssd

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: type[np.generic]
    #: One sample's shape (the batch dimension is the server's).
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Signature:
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]


#: BERT's features in the order the in-process paths feed them.
BERT_FEATURES = ("input_ids", "token_type_ids", "attention_mask")
#: Detections per image after the NMS (models.ssd: the best 100, padded with -1).
SSD_DETECTIONS = ssd.POST_NMS
#: The null workload served: one number in, the same number out.
NULL_TENSOR = "x"


def signature(spec: RunSpec) -> Signature:
    """The served model's inputs and outputs for ``spec``'s workload and shape."""
    if spec.workload == "bert":
        seq = (spec.seq_len,)
        return Signature(
            inputs=tuple(Tensor(n, np.int64, seq) for n in BERT_FEATURES),
            outputs=(Tensor("logits", np.float32, (bert.BERT_BASE.num_labels,)),),
        )
    if spec.workload == "ssd":
        size = spec.image_size
        return Signature(
            inputs=(Tensor("images", np.float32, (3, size, size)),),
            outputs=(
                Tensor("ids", np.int64, (SSD_DETECTIONS,)),
                Tensor("scores", np.float32, (SSD_DETECTIONS,)),
                Tensor("boxes", np.float32, (SSD_DETECTIONS, 4)),
            ),
        )
    return Signature(
        inputs=(Tensor(NULL_TENSOR, np.float32, (1,)),),
        outputs=(Tensor("y", np.float32, (1,)),),
    )


def sample_arrays(spec: RunSpec, count: int) -> Arrays:
    """The ``count`` seeded samples the in-process paths stage for ``spec``
    (``stage_samples``), as host arrays keyed by input name."""
    if spec.workload == "bert":
        shape = bert.BERT_BASE
        text = text_batch(
            count,
            spec.seq_len,
            vocab_size=shape.vocab_size,
            num_labels=shape.num_labels,
            seed=spec.seed,
        )
        return {n: getattr(text, n) for n in BERT_FEATURES}
    if spec.workload == "ssd":
        images = detection_batch(count, spec.image_size, seed=spec.seed).images
        return {"images": images}
    return {NULL_TENSOR: np.arange(count, dtype=np.float32)[:, None]}


def infer_fn(workload: Workload, service_s: float = 0.0) -> Callable[[Arrays], Arrays]:
    """A callable over a batch of host arrays that runs ``workload``'s own
    ``infer_samples`` (set up, inference): the batch becomes its staged library and every
    sample of it is queried, so the served answers are the in-process answers.
    ``service_s``: the null workload's fixed time per batch (a sleeper for tests)."""
    spec = workload.spec
    names = [t.name for t in signature(spec).outputs]
    if spec.workload == "null":

        def sleeper(inputs: Arrays) -> Arrays:
            x = inputs[NULL_TENSOR]
            workload.stage_samples(len(x))
            workload.infer_samples(range(len(x)))
            if service_s > 0:
                time.sleep(service_s)
            return {"y": x.astype(np.float32)}

        return sleeper

    import torch  # the torch and onnxruntime paths hold their samples as torch tensors

    device = torch.device(spec.device)

    def stage(inputs: Arrays) -> int:
        lib: Any
        if spec.workload == "bert" and hasattr(workload, "stage_arrays"):
            workload.stage_arrays(inputs)  # PyTorch: the mask's form is decided on the host
            return len(inputs["input_ids"])
        if spec.workload == "bert":
            lib = {
                n: torch.from_numpy(np.ascontiguousarray(inputs[n])).to(device)
                for n in BERT_FEATURES
            }
            count = len(inputs["input_ids"])
        else:
            lib = torch.from_numpy(np.ascontiguousarray(inputs["images"])).to(device)
            count = len(inputs["images"])
        workload.library = lib  # type: ignore[attr-defined]
        return count

    def infer(inputs: Arrays) -> Arrays:
        count = stage(inputs)
        out = workload.infer_samples(range(count))
        tensors = out if isinstance(out, tuple) else (out,)
        with torch.inference_mode():
            arrays = [t.detach().float().cpu().numpy() for t in tensors]
        result = dict(zip(names, arrays, strict=True))
        if "ids" in result:
            result["ids"] = result["ids"].astype(np.int64)
        return result

    return infer
