"""GluonCV's own ``ssd_512_resnet50_v1_voc`` on MXNet, trained as GluonCV's train_ssd.py does,
on one context or, with ``spec.gpus``, on several in one process (train_ssd.py's ``--gpus``),
and evaluated (VOC07 mAP on a test split) as its ``validate()`` does."""

from __future__ import annotations

# isort: off
import models.mxnet_env  # noqa: F401 - first: sets OMP_NUM_THREADS before MXNet loads
# isort: on

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import mxnet as mx
import numpy as np
from gluoncv import model_zoo
from gluoncv.loss import SSDMultiBoxLoss
from gluoncv.model_zoo.ssd.target import SSDTargetGenerator
from mxnet import autograd, gluon

from bench.metrics import Voc07MApMetric
from bench.schema.spec import RunSpec
from data.synthetic import detection_batch
from models import gluon_data
from models.mxnet_common import KVSTORE, MxnetWorkload, kvstore_details, quiet_undecided_type
from models.samples import check_query, check_stage
from models.ssd import common as ssd

MODEL_NAME = "ssd_512_resnet50_v1_voc"


def build_network(
    image_size: int, pretrained: str | None, ctx: mx.Context | Sequence[mx.Context]
) -> gluon.HybridBlock:
    """The GluonCV model, randomly initialised, or with weights from a local model cache,
    with the same copy of its parameters on each of ``ctx``.

    ``pretrained`` is a directory like GluonCV's ``~/.mxnet/models``; the file must be named
    ``ssd_512_resnet50_v1_voc-<hash>.params`` or ``ssd_512_resnet50_v1_voc.params``.
    Nothing is downloaded.
    """
    contexts = [ctx] if isinstance(ctx, mx.Context) else list(ctx)
    net = model_zoo.get_model(MODEL_NAME, pretrained=False, pretrained_base=False)
    if pretrained:
        net.load_parameters(str(_find_params(Path(pretrained))), ctx=contexts)
    else:
        # GluonCV's defaults, as train_ssd.py uses for new layers; drawn once on the host and
        # copied to every context
        net.initialize(ctx=contexts)
        net(mx.nd.zeros((1, 3, image_size, image_size), ctx=contexts[0]))  # deferred init
        _reset_batchnorm_statistics(net)
    net.collect_params().reset_ctx(contexts)
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
        "float32 in setup. With several contexts (gpus) each runs its share of the global "
        "batch; in training the loss is normalized by the positives of the whole batch, the "
        "device kvstore sums the gradients and SGD updates once on it (on every context with "
        "fp16, where AMP checks for overflow first), as GluonCV's train_ssd.py; BatchNorm uses "
        "each context's own batch statistics."
    )
    #: The step of a run on a dataset (``spec.data``), in place of the above.
    data_step_description = (
        "train: the loader's next batch (waited for and timed), images and GluonCV's "
        "class and box targets (SSDDefaultTrainTransform with the network's anchors, in the "
        "loader workers, as train_ssd.py), each context's share copied to it; then as the "
        "synthetic step: forward, SSDMultiBoxLoss over the positives of the whole batch, "
        "backward, SGD lr 0.001 momentum 0.9 wd 0.0005 through the device kvstore. infer: "
        "the loader's next batch of SSDDefaultValTransform images, forward with box decoding "
        "and class-wise NMS 0.45, top 100. Hybridized with static_alloc/static_shape; every "
        "batch is full (last_batch rollover)."
    )

    def __init__(self, spec: RunSpec, learning_rate: float = ssd.LEARNING_RATE) -> None:
        super().__init__(spec)
        self.learning_rate = learning_rate
        self.library: mx.nd.NDArray | None = None

    def setup(self) -> None:
        with quiet_undecided_type():
            self._setup()
        self.capture_cuda_graphs()

    def _setup(self) -> None:
        spec = self.spec
        self.net = build_network(spec.image_size, spec.pretrained, self.contexts)
        self.hybridize(self.net)
        if spec.data is not None:
            self.when_data_opens(self._setup_data)
            return
        host = detection_batch(self.global_batch, spec.image_size, seed=spec.seed)
        #: Each context's share of the images.
        self.image_shares = self.split(host.images)
        if spec.include_h2d:
            # Page-locked on GPU runs and already float32: step() only copies.
            self.host_images = self.stage_shares_on_host(host.images)
        if spec.mode == "train":
            self._setup_training(host)

    @property
    def images(self) -> mx.nd.NDArray:
        """The first context's share of the images (all of them on one context)."""
        return self.image_shares[0]

    def _anchors(self) -> mx.nd.NDArray:
        """The network's anchors, from a forward of a zero image in train mode (as
        train_ssd.py makes them for its loader)."""
        size = self.spec.image_size
        with autograd.train_mode():
            _, _, anchors = self.net(mx.nd.zeros((1, 3, size, size), ctx=self.ctx))
        return anchors

    def _setup_data(self) -> None:
        """The loader over ``spec.data`` (see models.gluon_data.ssd_stream) and, to train,
        the trainer. GluonCV's augmentations and the loader's shuffle draw from numpy's
        global generator: seeded here, so a run without workers repeats."""
        spec = self.spec
        assert spec.data is not None
        if spec.scenario == "evaluate":
            self.eval_data(spec.eval_samples)  # the test split is all the run reads
            return
        training = spec.mode == "train"
        with quiet_undecided_type():
            anchors = self._anchors() if training else None
        np.random.seed(spec.seed)
        self.batches = gluon_data.ssd_stream(
            spec.data,
            spec.mode,
            spec.image_size,
            self.global_batch,
            spec.loader_workers,
            anchors,
        )
        if training:
            self._setup_trainer()

    def _setup_training(self, host: Any) -> None:
        anchors = self._anchors()
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
        all_cls = mx.nd.concat(*cls_targets, dim=0)
        all_box = mx.nd.concat(*box_targets, dim=0)
        #: Each context's share of the targets.
        self.cls_targets, self.box_targets = self.split(all_cls), self.split(all_box)
        if self.spec.include_h2d:  # copied in the step, as PyTorch's path does
            self.host_cls_targets = self.stage_shares_on_host(all_cls)
            self.host_box_targets = self.stage_shares_on_host(all_box)
        self._setup_trainer()

    def _setup_trainer(self) -> None:
        self.loss_fn = SSDMultiBoxLoss(negative_mining_ratio=ssd.NEGATIVE_MINING_RATIO)
        # As train_ssd.py: the device kvstore (none is made for one context), the optimizer
        # on the kvstore by MXNet's default, except with AMP, whose overflow check has to
        # come before any update.
        self.trainer = gluon.Trainer(
            self.net.collect_params(),
            "sgd",
            {"learning_rate": self.learning_rate, "wd": ssd.WEIGHT_DECAY, "momentum": ssd.MOMENTUM},
            kvstore=KVSTORE,
            update_on_kvstore=False if self.amp is not None else None,
        )
        if self.amp is not None:
            self.amp.init_trainer(self.trainer)

    def _inputs(self) -> list[mx.nd.NDArray]:
        if self.spec.include_h2d:
            return [self.copy_to_device(h) for h in self.host_images]
        return self.image_shares

    def _targets(self) -> tuple[list[mx.nd.NDArray], list[mx.nd.NDArray]]:
        if self.spec.include_h2d:
            return (
                [self.copy_to_device(h) for h in self.host_cls_targets],
                [self.copy_to_device(h) for h in self.host_box_targets],
            )
        return self.cls_targets, self.box_targets

    def step(self) -> Any:
        """Infer: the detections, a list of each context's with several. Train: the
        per-sample loss, a list of each context's share with several."""
        if self.spec.data is not None:
            return self._data_step()
        images = self._inputs()
        if self.spec.mode == "infer":
            return self.one_or_all([self.net(x) for x in images])
        cls_targets, box_targets = self._targets()
        return self._train(images, cls_targets, box_targets)

    def _data_step(self) -> Any:
        """The step on the loader's next batch: each context's share copied to it."""
        batch = self.next_batch()
        images = self.split(batch[0])
        if self.spec.mode == "infer":
            return self.one_or_all([self.net(x) for x in images])
        return self._train(images, self.split(batch[1]), self.split(batch[2]))

    def _train(
        self,
        images: list[mx.nd.NDArray],
        cls_targets: list[mx.nd.NDArray],
        box_targets: list[mx.nd.NDArray],
    ) -> Any:
        """Forward, loss, backward and update on each context's share."""
        with autograd.record():
            cls_preds, box_preds = [], []
            for x in images:
                cls_pred, box_pred, _ = self.net(x)
                cls_preds.append(cls_pred)
                box_preds.append(box_pred)
            # normalized by the positive anchors of all contexts: the summed gradients are
            # the whole batch's, and the step does not divide by a batch size again
            sum_loss, _, _ = self.loss_fn(cls_preds, box_preds, cls_targets, box_targets)
            if self.amp is not None:
                with self.amp.scale_loss(sum_loss, self.trainer) as scaled:
                    autograd.backward(scaled)
            else:
                autograd.backward(sum_loss)
        self.trainer.step(1)
        return self.one_or_all(sum_loss)

    def step_waits_for_device(self) -> str | None:
        """Training: GluonCV's ``SSDMultiBoxLoss`` reads each share's count of positive
        anchors on the host (``asscalar``) to normalize the loss, in every step."""
        if self.spec.mode != "train":
            return None
        loss = "GluonCV's SSD loss reads the positive anchor count on the host (asscalar)"
        amp = super().step_waits_for_device()
        return f"{loss}; {amp}" if amp else loss

    def make_eval_data(self, max_samples: int | None) -> gluon_data.EvalData:
        spec = self.spec
        assert spec.data is not None
        return gluon_data.ssd_eval_data(
            spec.data, spec.image_size, self.global_batch, spec.loader_workers, max_samples
        )

    def evaluate(self, max_samples: int | None = None) -> dict[str, Any]:
        """VOC07 mAP (:class:`bench.metrics.Voc07MApMetric`) of the
        network's detections on the test split, fed as train_ssd.py's ``validate()`` feeds
        GluonCV's ``VOC07MApMetric`` (see :func:`update_map`); each batch split across the
        contexts. Its NMS is GluonCV's default, which is what ``validate()`` sets (0.45, top
        400 before it, 100 after)."""
        data = self.eval_data(max_samples)
        metric = Voc07MApMetric(class_names=self.net.classes)
        samples = 0
        with self._inference_graph():
            for images, labels in data:
                ids, scores, boxes = self.detect(images)
                update_map(metric, ids, scores, boxes, labels.asnumpy(), images.shape[2])
                samples += int(images.shape[0])
        value = metric.result().mean
        if math.isnan(value):
            raise gluon_data.DataError(
                f"no object that is not difficult in the {samples} images read from "
                f"{data.split}: VOC07 mAP is undefined"
            )
        return {"metric": "voc07_map", "value": value, "samples": samples, "split": data.split}

    def detect(self, images: mx.nd.NDArray) -> tuple[np.ndarray, ...]:
        """The network's detections (ids ``[B, N, 1]``, scores ``[B, N, 1]``, corner boxes
        ``[B, N, 4]`` in input pixels) for a host batch of any size, split across the
        contexts, in inference mode, on the host."""
        outputs = []
        with autograd.predict_mode():
            for share in self.split_uneven(images):
                outputs.append([a.asnumpy() for a in self.net(share)])
        return tuple(np.concatenate(parts) for parts in zip(*outputs, strict=True))

    @contextlib.contextmanager
    def _inference_graph(self) -> Iterator[None]:
        """GluonCV's SSD picks its outputs by autograd's training flag (training: class and
        box predictions and anchors; else decoded detections) as its graph is traced, and a
        hybridized block keeps the graph it traced. A training run therefore drops its graph
        before evaluating and again after (re-hybridizing, as train_ssd.py does around its
        validation), so each mode traces its own; an inference run's graph already fits."""
        if self.spec.mode != "train":
            yield
            return
        self.hybridize(self.net)
        try:
            yield
        finally:
            self.hybridize(self.net)

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

    def save_weights(self, directory: Path) -> list[str]:
        """``save_parameters`` as ``<MODEL_NAME>.params``, the name ``_find_params`` reads."""
        name = f"{MODEL_NAME}.params"
        self.net.save_parameters(str(directory / name))
        return [name]

    def details(self) -> dict[str, Any]:
        details: dict[str, Any] = {
            "parameters": trainable_parameters(self.net),
            "gluoncv_param_counts": parameter_counts(self.net),
            "fp32_math": self.fp32_math,
        }
        if self.spec.gpus is not None and self.spec.mode == "train":
            details["trainer"] = kvstore_details(self.trainer)
        return details

    def multi_device_details(self) -> dict[str, Any]:
        details = super().multi_device_details()
        if self.spec.mode == "train":
            # GluonCV's SyncBatchNorm (train_ssd.py --syncbn) is not used
            details["batch_norm"] = "per-context batch statistics"
        return details


def update_map(
    metric: Any,
    ids: np.ndarray,
    scores: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    image_size: int,
) -> None:
    """Feed one batch to a VOC07 mAP metric (this harness's or GluonCV's: the same
    arguments) as train_ssd.py's ``validate()`` does: the detected boxes clipped to
    ``[0, image_size]``, against the ground truth as ``SSDDefaultValTransform`` left it,
    both in the network's input pixels (no rescaling to the original image size, as in
    GluonCV's validation and eval_ssd.py); labels are ``[B, M, 5 or 6]`` rows of corners,
    class and difficult flag, padded with -1."""
    metric.update(
        np.clip(boxes, 0, image_size),
        ids,
        scores,
        labels[..., 0:4],
        labels[..., 4:5],
        labels[..., 5:6] if labels.shape[-1] > 5 else None,
    )


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
