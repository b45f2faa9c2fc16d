"""GluonCV's own ``ssd_512_resnet50_v1_voc`` on MXNet, trained as GluonCV's train_ssd.py does."""

from __future__ import annotations

# isort: off
import models.mxnet_common  # noqa: F401 - first: sets OMP_NUM_THREADS before MXNet loads
# isort: on

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mxnet as mx
from gluoncv import model_zoo
from gluoncv.loss import SSDMultiBoxLoss
from gluoncv.model_zoo.ssd.target import SSDTargetGenerator
from mxnet import autograd, gluon

from bench.run.spec import RunSpec
from data.synthetic import detection_batch
from models.mxnet_common import MxnetWorkload, quiet_undecided_type
from models.samples import check_query, check_stage
from models.ssd import common as ssd

MODEL_NAME = "ssd_512_resnet50_v1_voc"


def build_network(image_size: int, pretrained: str | None, ctx: mx.Context) -> gluon.HybridBlock:
    """The GluonCV model, randomly initialised, or with weights from a local model cache.

    ``pretrained`` is a directory like GluonCV's ``~/.mxnet/models``; the file must be named
    ``ssd_512_resnet50_v1_voc-<hash>.params`` or ``ssd_512_resnet50_v1_voc.params``.
    Nothing is downloaded.
    """
    net = model_zoo.get_model(MODEL_NAME, pretrained=False, pretrained_base=False)
    if pretrained:
        net.load_parameters(str(_find_params(Path(pretrained))), ctx=ctx)
    else:
        net.initialize(ctx=ctx)  # GluonCV's defaults, as train_ssd.py uses for new layers
        net(mx.nd.zeros((1, 3, image_size, image_size), ctx=ctx))  # finish deferred init
        _reset_batchnorm_statistics(net)
    net.collect_params().reset_ctx(ctx)
    return net


def _reset_batchnorm_statistics(net: gluon.Block) -> None:
    """Standard BatchNorm state (mean 0, variance 1, scale 1, shift 0).

    The default initializer fills the expander BatchNorms' statistics (imported from a
    symbol) with uniform noise; a negative variance makes inference compute NaN.
    """
    values = {"moving_var": 1.0, "running_var": 1.0, "moving_mean": 0.0, "running_mean": 0.0}
    for name, param in net.collect_params().items():
        for suffix, value in values.items():
            if name.endswith(suffix):
                param.set_data(mx.nd.full(param.shape, value))


def _find_params(directory: Path) -> Path:
    found = sorted(directory.glob(f"{MODEL_NAME}*.params"))
    if not found:
        raise FileNotFoundError(
            f"no {MODEL_NAME}*.params in {directory}: put GluonCV's model file there "
            "(it is not downloaded)"
        )
    return found[0]


class SsdGluon(MxnetWorkload):
    step_description = (
        "train: forward, GluonCV SSDMultiBoxLoss (hard negatives 3:1, smooth L1; it reads "
        "the positive count back to the host), backward, SGD lr 0.001 momentum 0.9 wd 0.0005; "
        "matching targets precomputed once with SSDTargetGenerator (GluonCV computes them in "
        "the data loader). infer: forward with GluonCV's box decoding and class-wise NMS 0.45, "
        "top 100. Hybridized with static_alloc/static_shape. With include_h2d the step copies "
        "the images (and, when training, the targets) from pinned host memory, staged in "
        "float32 in setup."
    )

    def __init__(self, spec: RunSpec, learning_rate: float = ssd.LEARNING_RATE) -> None:
        super().__init__(spec)
        self.learning_rate = learning_rate
        self.library: mx.nd.NDArray | None = None

    def setup(self) -> None:
        with quiet_undecided_type():
            self._setup()

    def _setup(self) -> None:
        spec = self.spec
        self.net = build_network(spec.image_size, spec.pretrained, self.ctx)
        self.net.hybridize(static_alloc=True, static_shape=True)
        host = detection_batch(spec.batch, spec.image_size, seed=spec.seed)
        self.images = self.to_device(host.images)
        if spec.include_h2d:
            # Page-locked on GPU runs and already float32: step() only copies.
            self.host_images = self.stage_on_host(host.images)
        if spec.mode == "train":
            self._setup_training(host)

    def _setup_training(self, host: Any) -> None:
        with autograd.train_mode():
            _, _, anchors = self.net(mx.nd.zeros((1, 3, *self.images.shape[2:]), ctx=self.ctx))
        gt_boxes = mx.nd.array(host.boxes, ctx=self.ctx)
        gt_ids = mx.nd.array(host.labels[..., None].astype("float32"), ctx=self.ctx)
        generator = SSDTargetGenerator(
            iou_thresh=ssd.IOU_THRESHOLD, stds=ssd.BOX_STDS, negative_mining_ratio=-1
        )
        cls_targets, box_targets = [], []
        for i in range(host.boxes.shape[0]):
            ct, bt, _ = generator(anchors, None, gt_boxes[i : i + 1], gt_ids[i : i + 1])
            cls_targets.append(ct)
            box_targets.append(bt)
        self.cls_targets = mx.nd.concat(*cls_targets, dim=0)
        self.box_targets = mx.nd.concat(*box_targets, dim=0)
        if self.spec.include_h2d:  # copied in the step, as PyTorch's path does
            self.host_cls_targets = self.stage_on_host(self.cls_targets)
            self.host_box_targets = self.stage_on_host(self.box_targets)
        self.loss_fn = SSDMultiBoxLoss(negative_mining_ratio=ssd.NEGATIVE_MINING_RATIO)
        self.trainer = gluon.Trainer(
            self.net.collect_params(),
            "sgd",
            {"learning_rate": self.learning_rate, "wd": ssd.WEIGHT_DECAY, "momentum": ssd.MOMENTUM},
        )
        if self.amp is not None:
            self.amp.init_trainer(self.trainer)

    def _input(self) -> mx.nd.NDArray:
        if self.spec.include_h2d:
            return self.copy_to_device(self.host_images)
        return self.images

    def _targets(self) -> tuple[mx.nd.NDArray, mx.nd.NDArray]:
        if self.spec.include_h2d:
            return (
                self.copy_to_device(self.host_cls_targets),
                self.copy_to_device(self.host_box_targets),
            )
        return self.cls_targets, self.box_targets

    def step(self) -> Any:
        x = self._input()
        if self.spec.mode == "infer":
            return self.net(x)
        cls_targets, box_targets = self._targets()
        with autograd.record():
            cls_preds, box_preds, _ = self.net(x)
            sum_loss, _, _ = self.loss_fn(cls_preds, box_preds, cls_targets, box_targets)
            if self.amp is not None:
                with self.amp.scale_loss(sum_loss, self.trainer) as scaled:
                    autograd.backward(scaled)
            else:
                autograd.backward(sum_loss)
        self.trainer.step(1)
        return sum_loss[0]

    def stage_samples(self, count: int) -> None:
        """``count`` seeded images in the run's context (the first ``spec.batch`` are the
        step's batch). ``include_h2d`` does not apply."""
        check_stage(self, count)
        self.library = self.to_device(
            detection_batch(count, self.spec.image_size, seed=self.spec.seed).images
        )

    def infer_samples(self, indices: Sequence[int]) -> Any:
        """GluonCV's detections (ids, scores, boxes) for the staged images at ``indices``,
        gathered with ``nd.take``.

        The network is hybridized with static_alloc/static_shape: a query whose batch size
        differs from the previous call's makes MXNet infer shapes and plan memory again
        (results stay correct; that call pays for the planning)."""
        staged = None if self.library is None else int(self.library.shape[0])
        check_query(self, staged, indices)
        assert self.library is not None
        return self.net(mx.nd.take(self.library, self.index_array(indices), axis=0))

    def details(self) -> dict[str, Any]:
        return {
            "parameters": trainable_parameters(self.net),
            "gluoncv_param_counts": parameter_counts(self.net),
            "fp32_math": self.fp32_math,
        }


def parameter_counts(net: gluon.Block) -> dict[str, int]:
    """``collect_params()`` split as the PyTorch port reports it. Shapes are only known
    after the first forward (deferred initialisation)."""
    counts = {"trainable": 0, "running_stats": 0, "anchors": 0}
    for name, param in net.collect_params().items():
        size = int(math.prod(param.shape))
        if param.grad_req != "null":
            counts["trainable"] += size
        elif "anchor" in name:
            counts["anchors"] += size
        else:
            counts["running_stats"] += size
    counts["total"] = sum(counts.values())
    return counts


def trainable_parameters(net: gluon.Block) -> int:
    return parameter_counts(net)["trainable"]
