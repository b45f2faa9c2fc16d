"""GluonCV ``ssd_512_resnet50_v1_voc`` in PyTorch: the benchmark workload."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bench.metrics import Voc07MApMetric
from bench.schema.spec import RunSpec
from data.loaders import DetectionTensors
from data.synthetic import detection_batch
from data.voc import VOC_CLASSES
from models.samples import check_query, check_stage
from models.ssd import common as ssd
from models.ssd.torch_box import (
    Candidates,
    detection_candidates,
    multibox_loss,
    nms_detections,
    ssd_targets,
)
from models.ssd.torch_net import (
    SSD512ResNet50,
    build_ssd512_resnet50,
    feature_shapes,
    gluon_param_counts,
)
from models.torch_common import TorchWorkload, index_tensor

if TYPE_CHECKING:
    from models.torch_data import EvalData

#: File name expected in the ``--pretrained`` directory: a ``state_dict`` of SSD512ResNet50.
PRETRAINED_FILE = "ssd_512_resnet50_v1_voc.pt"


class SsdTorch(TorchWorkload):
    step_description = (
        "train: forward (autocast when fp16/bf16), GluonCV SSDMultiBoxLoss in fp32 (softmax CE "
        "with 3:1 hard negative mining + smooth-L1), backward, SGD update (fused on CUDA); "
        "anchor matching and box targets are computed once in setup, as GluonCV's data loader "
        "workers do, and are not timed. infer: forward + softmax, box decoding, class-wise NMS "
        "(IoU 0.45, top 400 in, 100 out). With include_h2d the host->device copy of the images "
        "(and, when training, of the targets) is inside the step. With CUDA graphs one replay "
        "holds the training step, or inference up to the NMS (which runs eagerly after it)."
    )
    #: The step of a run on a dataset (``spec.data``).
    data_step_description = (
        "each step waits for the loader's next batch (GluonCV's SSD train augmentation, or the "
        "validation transform for inference, in the loader's worker processes; the wait is "
        "timed into the data section) and copies it to the device (non-blocking from pinned "
        "memory on CUDA). train: anchor matching and box targets from the batch's boxes "
        "(ssd_targets, on the device, in the step: GluonCV's loader workers compute them on "
        "the host), then forward (autocast when fp16/bf16), GluonCV SSDMultiBoxLoss in fp32 "
        "(softmax CE with 3:1 hard negative mining + smooth-L1), backward, SGD update (fused "
        "on CUDA). infer: forward + softmax, box decoding, class-wise NMS (IoU 0.45, top 400 "
        "in, 100 out)."
    )

    def __init__(self, spec: RunSpec) -> None:
        super().__init__(spec)
        # The fp32 math mode ssd.INFO declares for this backend ("tf32"): convolutions
        # dominate, so it is cuDNN's switch that decides.
        self.fp32_math = ssd.INFO.fp32_math["torch"] if self.device.type == "cuda" else "fp32"
        if self.device.type == "cuda":
            torch.backends.cudnn.allow_tf32 = self.fp32_math == "tf32"
        self.library: torch.Tensor | None = None

    def setup(self) -> None:
        spec = self.spec
        net = build_ssd512_resnet50(self.device)
        if spec.pretrained:
            net.load_state_dict(load_pretrained(spec.pretrained))
        self.channels_last = self.device.type == "cuda"
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net: SSD512ResNet50 = net
        self.training = spec.mode == "train"
        net.train(self.training)
        #: The network as the step calls it: compiled (NMS stays eager), or the network.
        self.forward_net: Any = self.compile_module(net)

        self.image_hw = (spec.image_size, spec.image_size)
        anchors = net.anchors(feature_shapes(spec.image_size), self.device)
        self.anchors = anchors
        self.num_anchors = int(anchors.shape[1])
        self.positive_anchors: int | None = None
        if spec.data is not None:
            self.when_data_opens(self._open_stream)
        else:
            self._stage_batch(anchors)
        if self.training:
            self.optimizer = torch.optim.SGD(
                net.parameters(),
                lr=ssd.LEARNING_RATE,
                momentum=ssd.MOMENTUM,
                weight_decay=ssd.WEIGHT_DECAY,
                fused=self.device.type == "cuda",
            )
        self.prepare_execution()

    def _open_stream(self) -> None:
        """The loader over ``spec.data``."""
        from models.torch_data import ssd_stream

        spec = self.spec
        assert spec.data is not None
        self.batches = ssd_stream(
            spec.data,
            spec.mode,
            spec.image_size,
            batch_size=spec.batch,
            workers=spec.loader_workers,
            seed=spec.seed,
            ranks=self.rank_and_size,
            pin_memory=self.device.type == "cuda",
        )

    def _stage_batch(self, anchors: torch.Tensor) -> None:
        """The synthetic batch of a run without a dataset, and its training targets."""
        spec = self.spec
        batch = detection_batch(spec.batch, spec.image_size, seed=self.data_seed)
        if spec.include_h2d:
            # Keep the inputs on the host; step() copies them, like a data loader's output.
            self.host_images = self._host(torch.from_numpy(batch.images))
        else:
            self.images = self._layout(self.to_device(batch.images))
        if self.training:
            # GluonCV computes targets in its data loader workers: once here, outside the step.
            boxes, labels = self.to_device(batch.boxes), self.to_device(batch.labels)
            with torch.no_grad():
                self.cls_targets, self.box_targets = ssd_targets(anchors, boxes, labels)
            self.positive_anchors = int((self.cls_targets > 0).sum().item())
            if spec.include_h2d:
                self.host_cls_targets = self._host(self.cls_targets)
                self.host_box_targets = self._host(self.box_targets)

    def save_weights(self, directory: Path) -> list[str]:
        """The network's state dict (never the compiled or DDP wrapper's) as ``PRETRAINED_FILE``,
        on the host in contiguous (not channels-last) tensors, as ``load_pretrained`` reads."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        torch.save(state, directory / PRETRAINED_FILE)
        return [PRETRAINED_FILE]

    def details(self) -> dict[str, Any]:
        counts = gluon_param_counts(self.net)
        return {
            "parameters": counts["trainable"],
            "gluoncv_param_counts": counts,
            "anchors_per_image": self.num_anchors,
            "positive_anchors_in_batch": self.positive_anchors,
            "channels_last": self.channels_last,
            "pretrained": self.spec.pretrained is not None,
            "fp32_math": self.fp32_math,
        }

    def execution_details(self) -> dict[str, Any]:
        optimizer = getattr(self, "optimizer", None)
        return {
            **super().execution_details(),
            "channels_last": self.channels_last,
            "fused_optimizer": bool(optimizer is not None and optimizer.defaults.get("fused")),
        }

    def _layout(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def _host(self, tensor: torch.Tensor) -> torch.Tensor:
        host = self._layout(tensor.detach().cpu()) if tensor.dim() == 4 else tensor.cpu()
        return host.pin_memory() if self.device.type == "cuda" else host

    def _to_device(self, host: torch.Tensor) -> torch.Tensor:
        return host.to(self.device, non_blocking=True)

    def _inputs(self) -> torch.Tensor:
        if self.batches is not None:
            return self._layout(self._to_device(self.next_batch().images))
        if not self.spec.include_h2d:
            return self.images
        return self._layout(self._to_device(self.host_images))

    def _train_inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images, class targets and box targets of a training step: the loader's next batch
        with its targets computed on the device, or the staged batch (copied from the host
        with include_h2d)."""
        if self.batches is not None:
            batch = self.next_batch()
            images = self._layout(self._to_device(batch.images))
            boxes, labels = self._to_device(batch.boxes), self._to_device(batch.labels)
            with torch.no_grad():
                cls_t, box_t = ssd_targets(self.anchors, boxes, labels)
            return images, cls_t, box_t
        if self.spec.include_h2d:
            images = self._inputs()
            cls_t = self._to_device(self.host_cls_targets)
            box_t = self._to_device(self.host_box_targets)
            return images, cls_t, box_t
        return self.images, self.cls_targets, self.box_targets

    def graph_body(self) -> Any:
        """Train: forward, loss, backward, SGD (the loss); infer: forward and the NMS
        candidates. With a dataset, the next batch is taken here first."""
        if self.training:
            images, cls_t, box_t = self._train_inputs()
            with self.autocast():
                cls_preds, box_preds, _ = self.forward_net(images)
            loss, _, _ = multibox_loss(cls_preds, box_preds, cls_t, box_t)
            self.backward_and_step(loss, self.optimizer)
            return loss.detach()
        with torch.inference_mode():
            return self._candidates(self._inputs())

    def finish_step(self, out: Any) -> Any:
        """Inference: NMS of the candidates (its output size depends on the data)."""
        if self.training:
            return out
        with torch.inference_mode():
            return nms_detections(out)

    def _candidates(self, images: torch.Tensor) -> Candidates:
        """Inference up to the NMS: forward, softmax, box decoding, each image's best
        candidates (call in inference mode)."""
        with self.autocast():
            cls_preds, box_preds, anchors = self.forward_net(images)
            return detection_candidates(cls_preds, box_preds, anchors, self.image_hw)

    def _detect(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inference: forward, then softmax, box decoding and NMS (call in inference mode)."""
        return nms_detections(self._candidates(images))

    def make_eval_data(self, max_samples: int | None) -> EvalData:
        from models.torch_data import ssd_eval_data

        assert self.spec.data is not None
        return ssd_eval_data(
            self.spec.data,
            self.spec.image_size,
            batch_size=self.spec.batch,
            workers=self.spec.loader_workers,
            max_samples=max_samples,
            pin_memory=self.device.type == "cuda",
        )

    def evaluate(self, max_samples: int | None = None) -> dict[str, Any]:
        """VOC07 mAP (:class:`bench.metrics.Voc07MApMetric`) of the
        network's detections on the test split, in eval mode (the training flag restored
        after), scored as the MXNet path's ``evaluate`` scores them (see
        :func:`update_map`): the inference step's NMS (0.45, top 400 before it, 100 after)."""
        data = self.eval_data(max_samples)
        metric = Voc07MApMetric(class_names=VOC_CLASSES)
        samples = 0
        with self.eval_mode(self.net):
            for batch in data:
                images = self._layout(self._to_device(batch.images))
                ids, scores, boxes = (t.cpu().numpy() for t in self._detect(images))
                update_map(metric, ids, scores, boxes, batch, self.spec.image_size)
                samples += int(batch.images.shape[0])
        value = metric.result().mean
        if math.isnan(value):
            from models.torch_data import DataError

            raise DataError(
                f"no object that is not difficult in the {samples} images read from "
                f"{data.split}: VOC07 mAP is undefined"
            )
        return {"metric": "voc07_map", "value": value, "samples": samples, "split": data.split}

    def stage_samples(self, count: int) -> None:
        """``count`` seeded images on the device (the first ``spec.batch`` of them are the
        step's batch). ``include_h2d`` does not apply: the library stays on the device."""
        check_stage(self, count)
        images = detection_batch(count, self.spec.image_size, seed=self.spec.seed).images
        self.library = torch.from_numpy(images).to(self.device)

    def infer_samples(
        self, indices: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detections (ids, scores, boxes) for the staged images at ``indices``, gathered
        on the device. With cuDNN autotuning on (CUDA), the first query of each new batch
        size also pays for the algorithm search."""
        check_query(self, None if self.library is None else len(self.library), indices)
        assert self.library is not None
        with torch.inference_mode():
            images = self.library.index_select(0, index_tensor(indices, self.device))
            return self._detect(self._layout(images))


def update_map(
    metric: Voc07MApMetric,
    ids: np.ndarray,
    scores: np.ndarray,
    boxes: np.ndarray,
    batch: DetectionTensors,
    image_size: int,
) -> None:
    """Feed one batch to a VOC07 mAP metric as the MXNet path (and train_ssd.py's
    ``validate()``) does: the detected boxes (ids ``[B, K]``, scores ``[B, K]``, boxes
    ``[B, K, 4]``, padded with -1) clipped to ``[0, image_size]``, against the ground truth
    as the validation transform left it, both in the network's input pixels (no rescaling to
    the original image), difficult flags passed."""
    metric.update(
        np.clip(boxes, 0, image_size),
        ids,
        scores,
        batch.boxes.numpy(),
        batch.labels.numpy(),
        batch.difficult.numpy(),
    )


def load_pretrained(directory: str) -> dict[str, torch.Tensor]:
    """The state dict at ``directory/PRETRAINED_FILE``; FileNotFoundError naming it if absent."""
    path = os.path.join(directory, PRETRAINED_FILE)
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"pretrained directory {directory!r} does not exist; expected the PyTorch state "
            f"dict {path!r}"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights not found: expected the state dict {path!r}")
    return torch.load(path, map_location="cpu", weights_only=True)
