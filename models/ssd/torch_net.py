"""PyTorch port of GluonCV's ``ssd_512_resnet50_v1_voc`` network and its anchors.

The layout follows GluonCV 0.10 so that its trained weights can be mapped one to one:

* ResNet-50 v1 as GluonCV builds it: the stride sits on the first 1x1 conv of a downsampling
  bottleneck, the two 1x1 body convs have a bias, the 3x3 conv and the projection do not.
* Features at the end of stage 3 (1024 ch, stride 16) and stage 4 (2048 ch, stride 32), then
  GluonCV's ``FeatureExpander``: per filter count a 1x1 transition conv and a 3x3 stride-2 conv,
  each followed by BatchNorm and ReLU. Those BatchNorms are MXNet symbol defaults: eps 1e-3 and
  ``fix_gamma=True`` (the scale is stored but the forward pass always uses 1).
* One 3x3 class and one 3x3 box predictor per feature map; predictions go NCHW -> NHWC and are
  flattened so that the anchor index is ``(y * W + x) * A + a`` with classes innermost.

Anchors are (cx, cy, w, h) in pixels with GluonCV's fixed steps, so at another input size they
are the crop of GluonCV's precomputed anchor table, not anchors rescaled to the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.ssd.common import (  # shared with the other framework paths
    ANCHOR_RATIOS,
    EXPANDER_FILTERS,
    NUM_CLASSES,
    RESNET50_STAGES,
    anchors_per_position,
    conv_out_size,
)

ANCHOR_SIZES = (51.2, 102.4, 189.4, 276.4, 363.52, 450.6, 492.0)
ANCHOR_STEPS = (16, 32, 64, 128, 256, 512)
ANCHOR_OFFSET = 0.5
#: GluonCV precomputes each layer's anchors for a 128x128 map, halving per layer, at least 16.
ANCHOR_ALLOC_SIZE = 128
#: ResNet-50 v1: blocks per stage and output channels per stage.
RESNET50_LAYERS = tuple(blocks for blocks, _, _ in RESNET50_STAGES)
RESNET50_CHANNELS = tuple(channels for _, channels, _ in RESNET50_STAGES)


class Bottleneck(nn.Module):
    """GluonCV ``BottleneckV1``."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        mid = channels // 4
        self.conv1 = nn.Conv2d(in_channels, mid, 1, stride=stride, bias=True)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, channels, 1, bias=True)
        self.bn3 = nn.BatchNorm2d(channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = F.relu(self.bn2(self.conv2(y)), inplace=True)
        y = self.bn3(self.conv3(y))
        return F.relu(y + residual, inplace=True)


class ResNet50V1(nn.Module):
    """GluonCV ``resnet50_v1`` trunk; returns the stage 3 and stage 4 outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        stages = []
        for index, (blocks, channels) in enumerate(
            zip(RESNET50_LAYERS, RESNET50_CHANNELS, strict=True)
        ):
            stride = 1 if index == 0 else 2
            layer = [Bottleneck(in_channels, channels, stride)]
            layer += [Bottleneck(channels, channels, 1) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layer))
            in_channels = channels
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))
        c3 = self.layer3(self.layer2(self.layer1(x)))
        c4 = self.layer4(c3)
        return c3, c4


class FixedGammaBatchNorm2d(nn.BatchNorm2d):
    """MXNet symbol ``BatchNorm`` defaults: eps 1e-3 and ``fix_gamma=True``.

    The scale parameter is kept (GluonCV stores and counts it) but is frozen and ignored by the
    forward pass, exactly as MXNet does: it gets no gradient and has no effect on outputs.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, eps=1e-3, momentum=0.1)
        self.weight.requires_grad_(False)
        # The scale actually applied. Not None: CUDA's batch_norm backward with a bias but no
        # weight returns an empty bias gradient. Not persistent: the state dict stays GluonCV's.
        self.register_buffer("unit_scale", torch.ones(num_features), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)
            if x.shape[0] * x.shape[2] * x.shape[3] == 1:
                return self._single_value(x)
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.unit_scale,
            self.bias,
            self.training,
            self.momentum,
            self.eps,
        )

    def _single_value(self, x: torch.Tensor) -> torch.Tensor:
        """One value per channel (a 1x1 map at batch 1, as at 512): torch refuses it, MXNet
        normalises it to 0 (batch variance 0) and so returns the shift; do the same."""
        momentum = self.momentum if self.momentum is not None else 0.1
        with torch.no_grad():
            mean = x.detach().reshape(-1).to(self.running_mean.dtype)
            self.running_mean.mul_(1.0 - momentum).add_(mean, alpha=momentum)
            self.running_var.mul_(1.0 - momentum)  # the batch variance is 0
        return x * 0 + self.bias.to(x.dtype).view(1, -1, 1, 1)


class ExpanderStage(nn.Module):
    """One ``FeatureExpander`` step: 1x1 transition, then a 3x3 stride-2 conv."""

    def __init__(self, in_channels: int, filters: int, min_depth: int = 128) -> None:
        super().__init__()
        trans = max(min_depth, filters)  # GluonCV: max(min_depth, round(f * reduce_ratio=1))
        self.trans_conv = nn.Conv2d(in_channels, trans, 1, bias=False)
        self.trans_bn = FixedGammaBatchNorm2d(trans)
        self.conv = nn.Conv2d(trans, filters, 3, stride=2, padding=1, bias=False)
        self.bn = FixedGammaBatchNorm2d(filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.trans_bn(self.trans_conv(x)), inplace=True)
        return F.relu(self.bn(self.conv(x)), inplace=True)


class SSD512ResNet50(nn.Module):
    """The detector; ``forward`` returns GluonCV's training outputs.

    Returns ``(cls_preds [N, A, C+1], box_preds [N, A, 4], anchors [1, A, 4])``; use
    :func:`models.ssd.torch_box.detect` for GluonCV's inference outputs.
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.backbone = ResNet50V1()
        expander = []
        in_channels = RESNET50_CHANNELS[-1]
        for filters in EXPANDER_FILTERS:
            expander.append(ExpanderStage(in_channels, filters))
            in_channels = filters
        self.expander = nn.ModuleList(expander)
        feature_channels = list(RESNET50_CHANNELS[2:]) + list(EXPANDER_FILTERS)
        self.num_anchors = [anchors_per_position(r) for r in ANCHOR_RATIOS]
        self.class_predictors = nn.ModuleList(
            nn.Conv2d(c, a * (num_classes + 1), 3, padding=1)
            for c, a in zip(feature_channels, self.num_anchors, strict=True)
        )
        self.box_predictors = nn.ModuleList(
            nn.Conv2d(c, a * 4, 3, padding=1)
            for c, a in zip(feature_channels, self.num_anchors, strict=True)
        )
        self._anchor_cache: dict[tuple[tuple[int, int], ...], torch.Tensor] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GluonCV-like random init (its real training starts from an ImageNet trunk)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                # MXNet Xavier(gaussian, out, magnitude 2) == Kaiming normal on fan_out.
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for conv in [*self.class_predictors, *self.box_predictors]:
            # MXNet Xavier(uniform, avg, magnitude 2): bound sqrt(2 / mean(fan_in, fan_out)).
            nn.init.xavier_uniform_(conv.weight, gain=math.sqrt(2.0 / 3.0))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        c3, c4 = self.backbone(x)
        feats = [c3, c4]
        for stage in self.expander:
            feats.append(stage(feats[-1]))
        return feats

    def anchors(
        self, feature_shapes: Sequence[tuple[int, int]], device: torch.device
    ) -> torch.Tensor:
        """Anchors [1, A, 4] for these feature map sizes, cached per sizes and device."""
        key = tuple((int(h), int(w)) for h, w in feature_shapes)
        cached = self._anchor_cache.get(key)
        if cached is None or cached.device != device:
            cached = generate_anchors(key).to(device)
            self._anchor_cache[key] = cached
        return cached

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.features(x)
        n = x.shape[0]
        c = self.num_classes + 1
        cls_preds = [
            p(f).permute(0, 2, 3, 1).reshape(n, -1, c)
            for f, p in zip(feats, self.class_predictors, strict=True)
        ]
        box_preds = [
            p(f).permute(0, 2, 3, 1).reshape(n, -1, 4)
            for f, p in zip(feats, self.box_predictors, strict=True)
        ]
        anchors = self.anchors([tuple(f.shape[-2:]) for f in feats], x.device)
        return torch.cat(cls_preds, dim=1), torch.cat(box_preds, dim=1), anchors


def layer_anchors(index: int, height: int, width: int) -> torch.Tensor:
    """One layer's anchors [H * W * A, 4] as (cx, cy, w, h), in GluonCV's order."""
    size_min = ANCHOR_SIZES[index]
    size_max = math.sqrt(ANCHOR_SIZES[index] * ANCHOR_SIZES[index + 1])
    shapes = [(size_min, size_min), (size_max, size_max)]
    for ratio in ANCHOR_RATIOS[index][1:]:
        root = math.sqrt(ratio)
        shapes.append((size_min * root, size_min / root))
    step = ANCHOR_STEPS[index]
    wh = torch.tensor(shapes, dtype=torch.float64, device="cpu")  # [A, 2]
    cy = (torch.arange(height, dtype=torch.float64, device="cpu") + ANCHOR_OFFSET) * step
    cx = (torch.arange(width, dtype=torch.float64, device="cpu") + ANCHOR_OFFSET) * step
    grid_y, grid_x = torch.meshgrid(cy, cx, indexing="ij")
    centers = torch.stack([grid_x, grid_y], dim=-1).reshape(-1, 1, 2)  # [H*W, 1, 2]
    num = wh.shape[0]
    anchors = torch.cat([centers.expand(-1, num, 2), wh.expand(centers.shape[0], num, 2)], -1)
    return anchors.reshape(-1, 4)


def generate_anchors(feature_shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """All layers' anchors [1, A, 4] float32 (computed in float64 like GluonCV's numpy)."""
    parts = [layer_anchors(i, h, w) for i, (h, w) in enumerate(feature_shapes)]
    return torch.cat(parts).to(torch.float32).unsqueeze(0)


def feature_shapes(image_size: int) -> list[tuple[int, int]]:
    """Feature map sizes the network produces for a square input (stride 16, 32, then /2)."""
    out = conv_out_size
    size = out(out(image_size, 7, 2, 3), 3, 2, 1)  # stem conv and max pool
    size = out(out(size, 1, 2, 0), 1, 2, 0)  # stages 2 and 3 (stride-2 1x1 conv)
    sizes = [size, out(size, 1, 2, 0)]  # stage 3, stage 4
    for _ in EXPANDER_FILTERS:
        sizes.append(out(sizes[-1], 3, 2, 1))
    return [(s, s) for s in sizes]


def gluon_param_counts(model: SSD512ResNet50) -> dict[str, int]:
    """Parameter counts as GluonCV's ``collect_params`` reports them.

    ``trainable``: every weight and bias, including the frozen expander BatchNorm scales that
    MXNet keeps with ``grad_req='write'``; ``running_stats``: BatchNorm running mean and
    variance (not ``num_batches_tracked``); ``anchors``: the constant anchor tables GluonCV
    stores at allocation size 128, 64, 32, 16, 16, 16; ``total``: their sum.
    """
    trainable = sum(p.numel() for p in model.parameters())
    running = sum(
        m.running_mean.numel() + m.running_var.numel()
        for m in model.modules()
        if isinstance(m, nn.BatchNorm2d)
    )
    anchors = 0
    alloc = ANCHOR_ALLOC_SIZE
    for num in model.num_anchors:
        anchors += alloc * alloc * num * 4
        alloc = max(alloc // 2, 16)
    return {
        "trainable": trainable,
        "running_stats": running,
        "anchors": anchors,
        "total": trainable + running + anchors,
    }


def build_ssd512_resnet50(device: torch.device | str | None = None) -> SSD512ResNet50:
    """The randomly initialised network, built directly on ``device``."""
    with torch.device(device if device is not None else "cpu"):
        return SSD512ResNet50()
