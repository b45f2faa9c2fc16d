"""SSD box operations as GluonCV 0.10 defines them, in PyTorch.

Boxes are corner boxes (xmin, ymin, xmax, ymax) in pixels unless a name says ``center``
(cx, cy, w, h). Everything is batched and free of host synchronisation except :func:`detect`,
whose NMS returns a data-dependent number of boxes (one ``torchvision.ops.nms`` call per batch,
see :func:`grouped_nms`). :func:`detect` is :func:`detection_candidates` (fixed shapes, no
synchronisation: a CUDA graph can hold it) followed by :func:`nms_detections`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
import torchvision

from models.ssd.common import BOX_STDS, NMS_TOPK, POST_NMS
from models.ssd.common import IOU_THRESHOLD as IOU_THRESH
from models.ssd.common import NEGATIVE_MINING_RATIO as NEG_RATIO
from models.ssd.common import NMS_THRESHOLD as NMS_THRESH
from models.ssd.common import SCORE_THRESHOLD as SCORE_THRESH

#: MXNet ``bipartite_matching`` threshold and GluonCV's tie epsilon.
_MATCH_EPS = 1e-12


def device_constant(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """``values`` as a 1-d tensor of ``like``'s dtype and device, written by fill kernels: a
    tensor made from host data would wait for its copy from pageable memory (a host
    synchronisation in every inference step), which a CUDA graph cannot capture."""
    out = like.new_empty(len(values))
    for index, value in enumerate(values):
        out[index] = value
    return out


def center_to_corner(boxes: torch.Tensor) -> torch.Tensor:
    cxcy, wh = boxes[..., :2], boxes[..., 2:]
    return torch.cat([cxcy - wh / 2, cxcy + wh / 2], dim=-1)


def corner_to_center(boxes: torch.Tensor) -> torch.Tensor:
    wh = boxes[..., 2:] - boxes[..., :2]
    return torch.cat([boxes[..., :2] + wh / 2, wh], dim=-1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of corner boxes ``a [..., P, 4]`` and ``b [..., Q, 4]`` -> ``[..., P, Q]``.

    Leading dimensions broadcast. Areas are ``(x1 - x0) * (y1 - y0)`` without GluonCV's
    optional +1; a pair with no union (two empty boxes) has IoU 0.
    """
    a = a.unsqueeze(-2)
    b = b.unsqueeze(-3)
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def match_anchors(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_valid: torch.Tensor,
    iou_thresh: float = IOU_THRESH,
) -> torch.Tensor:
    """GluonCV's SSD matcher: ``CompositeMatcher([BipartiteMatcher(share_max=False),
    MaximumMatcher(iou_thresh)])``.

    anchors: [A, 4] corner boxes; gt_boxes: [B, M, 4] corner boxes; gt_valid: [B, M] bool
    (False for padding rows). Returns matches [B, A] int64: the matched ground truth index,
    or -1.

    1. Greedy bipartite matching: repeatedly take the largest remaining IoU pair, so every
       ground truth gets its own best anchor (a second ground truth whose best anchor is taken
       gets its next best free one).
    2. An unmatched anchor whose best ground truth ``g`` has no better anchor than it
       (IoU ties with ``g``'s best, within 1e-12) is matched to ``g``.
    3. An anchor still unmatched is matched to its best ground truth if IoU >= ``iou_thresh``.
    """
    ious = box_iou(anchors, gt_boxes)  # [B, A, M]
    ious = torch.where(gt_valid.unsqueeze(1), ious, torch.full_like(ious, -1.0))
    batch, num_anchors, num_gt = ious.shape
    matches = torch.full((batch, num_anchors), -1, dtype=torch.long, device=ious.device)
    if num_gt == 0:
        return matches
    anchor_ids = torch.arange(num_anchors, device=ious.device)
    gt_ids = torch.arange(num_gt, device=ious.device)
    rows = torch.arange(batch, device=ious.device)
    work = ious.clone()
    for _ in range(num_gt):  # each round assigns at most one pair per image
        best, flat = work.reshape(batch, -1).max(dim=1)
        anchor, gt = flat // num_gt, flat % num_gt
        ok = best > _MATCH_EPS
        current = matches[rows, anchor]
        matches[rows, anchor] = torch.where(ok, gt, current)
        taken_anchor = (anchor_ids.unsqueeze(0) == anchor.unsqueeze(1)) & ok.unsqueeze(1)
        taken_gt = (gt_ids.unsqueeze(0) == gt.unsqueeze(1)) & ok.unsqueeze(1)
        work = work.masked_fill(taken_anchor.unsqueeze(2), -2.0)
        work = work.masked_fill(taken_gt.unsqueeze(1), -2.0)

    best_iou, best_gt = ious.max(dim=2)  # per anchor: [B, A]
    gt_best = ious.max(dim=1).values  # per ground truth: [B, M]
    ties = (best_iou + _MATCH_EPS >= gt_best.gather(1, best_gt)) & (best_iou > _MATCH_EPS)
    matches = torch.where((matches < 0) & ties, best_gt, matches)
    return torch.where((matches < 0) & (best_iou >= iou_thresh), best_gt, matches)


def encode_boxes(
    boxes: torch.Tensor, anchors: torch.Tensor, stds: tuple[float, ...] = BOX_STDS
) -> torch.Tensor:
    """Corner boxes [..., A, 4] -> GluonCV's normalised center offsets against center
    anchors [A, 4]: ``((gx - ax) / aw / s0, (gy - ay) / ah / s1, log(gw / aw) / s2, ...)``."""
    g = corner_to_center(boxes)
    std = device_constant(stds, anchors)
    xy = (g[..., :2] - anchors[..., :2]) / anchors[..., 2:]
    wh = torch.log(g[..., 2:] / anchors[..., 2:])
    return torch.cat([xy, wh], dim=-1) / std


def decode_boxes(
    codes: torch.Tensor, anchors: torch.Tensor, stds: tuple[float, ...] = BOX_STDS
) -> torch.Tensor:
    """Inverse of :func:`encode_boxes`: offsets [..., A, 4] -> corner boxes [..., A, 4]."""
    std = device_constant(stds, codes)
    codes = codes * std
    xy = codes[..., :2] * anchors[..., 2:] + anchors[..., :2]
    wh = torch.exp(codes[..., 2:]) * anchors[..., 2:]
    return torch.cat([xy - wh / 2, xy + wh / 2], dim=-1)


def ssd_targets(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    iou_thresh: float = IOU_THRESH,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training targets as GluonCV's ``SSDDefaultTrainTransform`` makes them.

    anchors: [1, A, 4] or [A, 4] center anchors; gt_boxes [B, M, 4] corner boxes and
    gt_labels [B, M] with -1 padding. Returns ``cls_targets [B, A]`` int64 (0 background,
    label + 1 for a match: no anchor is ignored, negatives are mined in the loss) and
    ``box_targets [B, A, 4]`` (zeros where unmatched).
    """
    anchors = anchors.reshape(-1, 4).float()
    gt_boxes = gt_boxes.float()
    matches = match_anchors(center_to_corner(anchors), gt_boxes, gt_labels >= 0, iou_thresh)
    positive = matches >= 0
    index = matches.clamp(min=0)
    labels = gt_labels.gather(1, index)
    cls_targets = torch.where(positive, labels + 1, torch.zeros_like(labels))
    matched = gt_boxes.gather(1, index.unsqueeze(-1).expand(-1, -1, 4))
    # Unmatched anchors may pick a padding box (-1s); mask before the log sees it.
    matched = torch.where(positive.unsqueeze(-1), matched, center_to_corner(anchors))
    codes = encode_boxes(matched, anchors)
    box_targets = torch.where(positive.unsqueeze(-1), codes, torch.zeros_like(codes))
    return cls_targets, box_targets


def multibox_loss(
    cls_preds: torch.Tensor,
    box_preds: torch.Tensor,
    cls_targets: torch.Tensor,
    box_targets: torch.Tensor,
    neg_ratio: float = NEG_RATIO,
    rho: float = 1.0,
    lambd: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GluonCV ``SSDMultiBoxLoss``: returns ``(total, cls_loss, box_loss)`` scalars.

    Softmax cross-entropy on positives and on the ``neg_ratio`` x positives hardest negatives
    of each image, smooth-L1 (``rho``) on positive box offsets, both summed and divided by the
    number of positives in the whole batch (at least 1). GluonCV returns one value per image
    and back-propagates all of them, which equals back-propagating their sum returned here.
    Computed in float32 whatever the prediction dtype.
    """
    cls_preds = cls_preds.float()
    box_preds = box_preds.float()
    positive = cls_targets > 0
    ce = F.cross_entropy(cls_preds.transpose(1, 2), cls_targets, reduction="none")  # [B, A]
    with torch.no_grad():
        # Rank negatives by loss, largest first; positives rank after every negative.
        hardness = torch.where(positive, torch.full_like(ce, -1.0), ce)
        rank = hardness.argsort(dim=1, descending=True).argsort(dim=1)
        num_neg = positive.sum(dim=1, keepdim=True) * neg_ratio
        selected = positive | (rank < num_neg)
    num_pos = positive.sum().clamp(min=1).to(ce.dtype)
    cls_loss = (ce * selected).sum() / num_pos
    box = F.smooth_l1_loss(box_preds, box_targets, reduction="none", beta=rho)
    box_loss = (box * positive.unsqueeze(-1)).sum() / num_pos
    return cls_loss + lambd * box_loss, cls_loss, box_loss


class Candidates(NamedTuple):
    """Each image's ``nms_topk`` best (anchor, foreground class) pairs, sorted by score."""

    #: [B, K] scores, descending.
    scores: torch.Tensor
    #: [B, K, 4] decoded corner boxes.
    boxes: torch.Tensor
    #: [B, K] foreground class ids.
    ids: torch.Tensor
    #: [B, K] bool: score above the threshold.
    valid: torch.Tensor


def detect(
    cls_preds: torch.Tensor,
    box_preds: torch.Tensor,
    anchors: torch.Tensor,
    image_size: tuple[int, int] | None = None,
    score_thresh: float = SCORE_THRESH,
    nms_thresh: float = NMS_THRESH,
    nms_topk: int = NMS_TOPK,
    post_nms: int = POST_NMS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GluonCV SSD inference post-processing.

    Softmax, decode, then per image: every (anchor, foreground class) pair with score
    > ``score_thresh``, the ``nms_topk`` best of them, class-wise NMS at ``nms_thresh``, the
    ``post_nms`` best survivors. ``image_size`` (height, width), when given, clips the boxes
    to the image (GluonCV does not). Returns ``ids [N, K]`` int64, ``scores [N, K]`` and
    ``boxes [N, K, 4]`` float32 with K = ``post_nms``, sorted by score, padded with -1.
    """
    candidates = detection_candidates(
        cls_preds, box_preds, anchors, image_size, score_thresh, nms_topk
    )
    return nms_detections(candidates, nms_thresh, post_nms)


def detection_candidates(
    cls_preds: torch.Tensor,
    box_preds: torch.Tensor,
    anchors: torch.Tensor,
    image_size: tuple[int, int] | None = None,
    score_thresh: float = SCORE_THRESH,
    nms_topk: int = NMS_TOPK,
) -> Candidates:
    """The first part of :func:`detect`: softmax, decode, clip and each image's ``nms_topk``
    best pairs. Every shape is fixed by the inputs' and nothing waits for the device."""
    batch, num_anchors, num_classes = cls_preds.shape
    fg = num_classes - 1
    scores = torch.softmax(cls_preds.float(), dim=-1)[..., 1:]  # [B, A, C]
    boxes = decode_boxes(box_preds.float(), anchors.reshape(1, -1, 4).float())
    if image_size is not None:
        height, width = image_size
        limit = device_constant((width, height, width, height), boxes)
        boxes = torch.minimum(boxes.clamp(min=0), limit)

    k = min(nms_topk, num_anchors * fg)
    flat = scores.reshape(batch, -1)
    top_scores, top_index = flat.topk(k, dim=1)  # sorted, descending
    cand_boxes = boxes.gather(1, (top_index // fg).unsqueeze(-1).expand(-1, -1, 4))
    return Candidates(top_scores, cand_boxes, top_index % fg, top_scores > score_thresh)


def nms_detections(
    candidates: Candidates, nms_thresh: float = NMS_THRESH, post_nms: int = POST_NMS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rest of :func:`detect`: class-wise NMS of the candidates and the ``post_nms`` best
    survivors, padded with -1."""
    top_scores, cand_boxes, cand_ids, valid = candidates
    batch = top_scores.shape[0]
    device = top_scores.device
    # Invalid candidates stay in (their score is lowest, so they never suppress a valid box):
    # it keeps every shape fixed up to the NMS.
    nms_scores = torch.where(valid, top_scores, top_scores - 2.0)
    kept = grouped_nms(cand_boxes, nms_scores, cand_ids, nms_thresh) & valid
    # Candidates are score-sorted per image, so the survivors' order is their rank.
    slot = kept.cumsum(dim=1) - 1
    take = kept & (slot < post_nms)
    slot = torch.where(take, slot, torch.full_like(slot, post_nms))  # extra column, dropped
    out_ids = torch.full((batch, post_nms + 1), -1, dtype=torch.long, device=device)
    out_scores = torch.full((batch, post_nms + 1), -1.0, device=device)
    out_boxes = torch.full((batch, post_nms + 1, 4), -1.0, device=device)
    out_ids.scatter_(1, slot, torch.where(take, cand_ids, -1))
    out_scores.scatter_(1, slot, torch.where(take, top_scores, -1.0))
    box_slot = slot.unsqueeze(-1).expand(-1, -1, 4)
    out_boxes.scatter_(1, box_slot, torch.where(take.unsqueeze(-1), cand_boxes, -1.0))
    return out_ids[:, :post_nms], out_scores[:, :post_nms], out_boxes[:, :post_nms]


def grouped_nms(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Class-wise NMS of every image of a batch in one ``torchvision.ops.nms`` call.

    boxes ``[B, K, 4]`` corner boxes, scores ``[B, K]``, classes ``[B, K]`` (integers).
    Returns ``[B, K]`` bool: the boxes that survive NMS against the higher-scoring boxes of
    their own image and class (IoU > ``iou_threshold`` suppresses).

    ``torchvision.ops.batched_nms`` is not used: above a box count that depends on the device
    (``boxes.numel()`` over 4,000 on the CPU; over 20,000 on CUDA before torchvision 0.22,
    100,000 since) it switches to a loop of one NMS per class with host synchronisations, so
    the work (and its dependence on the host CPU) would change with the batch size. Here every
    batch size does the same work: boxes are moved apart so that no two groups can overlap --
    along x by class, along y by image, in steps of the extent of all boxes plus 1 -- and a
    single NMS runs on the moved copies (the coordinate trick of ``batched_nms``, on two axes
    so that the offsets, and the float32 rounding they cause, stay small: at most
    ``max(classes, images) x extent``). Non-finite coordinates are left as they are (they
    never suppress, as in a per-class NMS); the extent is that of the finite ones.
    """
    batch, k = scores.shape
    coords = boxes.float()  # the offsets need float32's precision at least
    finite = torch.isfinite(coords)
    low = torch.where(finite, coords, torch.zeros_like(coords)).amin()
    high = torch.where(finite, coords, torch.zeros_like(coords)).amax()
    step = high - low + 1.0
    image = torch.arange(batch, device=coords.device, dtype=coords.dtype).unsqueeze(1)
    dx = classes.to(coords.dtype) * step
    dy = image.expand(batch, k) * step
    shift = torch.stack([dx, dy, dx, dy], dim=-1)
    moved = (coords - low) + shift
    keep = torchvision.ops.nms(moved.reshape(-1, 4), scores.reshape(-1).float(), iou_threshold)
    kept = torch.zeros(batch * k, dtype=torch.bool, device=boxes.device)
    kept[keep] = True
    return kept.reshape(batch, k)
