"""SSD-512 ResNet-50 through ONNX Runtime: the PyTorch port's network exported to ONNX,
with the same post-processing as the PyTorch path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.synthetic import detection_batch
from models.onnx_common import Binding, OnnxWorkload, convert_fp16
from models.ssd import common as ssd
from models.ssd.torch import load_pretrained
from models.ssd.torch_box import detect
from models.ssd.torch_net import SSD512ResNet50, build_ssd512_resnet50, feature_shapes


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
        session = self.session(self.model_path)
        size = spec.image_size

        def make_inputs(seed: int) -> dict[str, np.ndarray]:
            return {"images": detection_batch(2, size, seed=seed).images}

        def reference(model: torch.nn.Module, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
            return [t.numpy() for t in model(torch.from_numpy(inputs["images"]))]

        self.verify(session, source, make_inputs, reference)
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
        self.binding = Binding(session, self.device, {"images": images}, outputs)
        self.images = self.binding.inputs["images"]

    def step(self) -> Any:
        if self.spec.include_h2d:
            self.images.copy_(self.host_images, non_blocking=True)
        self.binding.run()
        out = self.binding.outputs
        size = (self.spec.image_size, self.spec.image_size)
        with torch.inference_mode():
            return detect(out["cls_preds"], out["box_preds"], self.anchors, size)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def flops_per_sample(self) -> tuple[float | None, str]:
        return ssd.forward_flops_per_sample(self.spec.image_size)
