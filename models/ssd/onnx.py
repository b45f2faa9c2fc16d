"""SSD-512 ResNet-50 through ONNX Runtime: the PyTorch port's network exported to ONNX,
with the same post-processing as the PyTorch path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.synthetic import detection_batch
from models.onnx_common import OnnxWorkload, convert_fp16
from models.samples import check_query, check_stage
from models.ssd import common as ssd
from models.ssd.torch import load_pretrained
from models.ssd.torch_box import detect
from models.ssd.torch_net import SSD512ResNet50, build_ssd512_resnet50, feature_shapes
from models.torch_common import index_tensor


class _RawPredictions(torch.nn.Module):
    """The network without its constant anchor output: class and box predictions."""

    def __init__(self, net: SSD512ResNet50) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cls_preds, box_preds, _ = self.net(images)
        return cls_preds, box_preds


class SsdOnnx(OnnxWorkload):
    step_description = (
        "infer: the network (class and box predictions) in ONNX Runtime through IO binding, "
        "then the PyTorch path's own post-processing on the same device (softmax, box "
        "decoding, class-wise NMS 0.45, top 100), so the step does the same work as the "
        "PyTorch path's. Exported from the PyTorch port (same seeded weights) and checked "
        "against it before timing."
    )
    input_names = ("images",)
    output_names = ("cls_preds", "box_preds")
    step_queues_device_work = True  # the post-processing, in torch on the run's device
    #: The images staged by ``stage_samples()``.
    library: torch.Tensor | None = None

    def declared_fp32_math(self) -> str:
        return ssd.INFO.fp32_math["onnxruntime"]

    def source_model(self) -> torch.nn.Module:
        torch.manual_seed(self.spec.seed)
        net = build_ssd512_resnet50("cpu")
        if self.spec.pretrained:
            net.load_state_dict(load_pretrained(self.spec.pretrained))
        return _RawPredictions(net.eval())

    def export_inputs(self) -> tuple[torch.Tensor, ...]:
        return (torch.zeros(1, 3, self.spec.image_size, self.spec.image_size),)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {name: {0: "batch"} for name in (*self.input_names, *self.output_names)}

    def model_variant(self) -> dict[str, Any]:
        return {**super().model_variant(), "image_size": self.spec.image_size}

    def postprocess(self, model_path: Path) -> Path:
        return convert_fp16(model_path) if self.spec.precision == "fp16" else model_path

    def setup(self) -> None:
        spec = self.spec
        self.model_path, source = self.prepare_model()
        size = spec.image_size

        def make_inputs(seed: int) -> dict[str, np.ndarray]:
            return {"images": detection_batch(2, size, seed=seed).images}

        def reference(model: torch.nn.Module, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
            return [t.numpy() for t in model(torch.from_numpy(inputs["images"]))]

        batch = detection_batch(spec.batch, size, seed=spec.seed)
        self.host_images = torch.from_numpy(batch.images)
        if self.device.type == "cuda" and spec.include_h2d:
            self.host_images = self.host_images.pin_memory()
        images = self.host_images.to(self.device)
        shapes = feature_shapes(size)
        self.anchors = source.net.anchors(shapes, self.device)
        count = int(self.anchors.shape[1])
        outputs = {
            "cls_preds": torch.empty(spec.batch, count, ssd.NUM_CLASSES + 1, device=self.device),
            "box_preds": torch.empty(spec.batch, count, 4, device=self.device),
        }
        self.start(source, make_inputs, reference, {"images": images}, outputs)
        self.images = self.binding.inputs["images"]

    def step(self) -> Any:
        if self.spec.include_h2d:
            self.images.copy_(self.host_images, non_blocking=True)
        self.binding.run(inputs_written=self.spec.include_h2d)
        return self._detect(self.binding.outputs)

    def _detect(
        self, out: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The PyTorch path's post-processing of the session's outputs."""
        size = (self.spec.image_size, self.spec.image_size)
        with torch.inference_mode():
            return detect(out["cls_preds"], out["box_preds"], self.anchors, size)

    def stage_samples(self, count: int) -> None:
        """``count`` seeded images on the device as a torch tensor (the first ``spec.batch``
        are the step's batch). ``include_h2d`` does not apply."""
        check_stage(self, count)
        images = detection_batch(count, self.spec.image_size, seed=self.spec.seed).images
        self.library = torch.from_numpy(images).to(self.device)

    def infer_samples(
        self, indices: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detections for the staged images at ``indices``: gathered with torch on the
        device, run through IO binding with per-call tensors (the query's batch size is
        known only now; see ``run_batch``), then post-processed as in ``step()``."""
        check_query(self, None if self.library is None else len(self.library), indices)
        assert self.library is not None
        with torch.inference_mode():
            images = self.library.index_select(0, index_tensor(indices, self.device))
            n, count = len(indices), int(self.anchors.shape[1])
            outputs = {
                "cls_preds": torch.empty(n, count, ssd.NUM_CLASSES + 1, device=self.device),
                "box_preds": torch.empty(n, count, 4, device=self.device),
            }
        return self._detect(self.run_batch({"images": images}, outputs))
