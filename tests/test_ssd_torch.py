"""Tests of the PyTorch port of GluonCV's ssd_512_resnet50_v1_voc.

Reference numbers (anchor count, first anchors, parameter counts) come from GluonCV 0.10.5 /
MXNet 1.9.1: ``get_model('ssd_512_resnet50_v1_voc', pretrained=False, pretrained_base=False)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torchvision

from bench.schema.spec import RunSpec
from data.synthetic import detection_batch
from models import torch_common
from models.ssd import common as ssd_common
from models.ssd.torch import PRETRAINED_FILE, SsdTorch
from models.ssd.torch_box import (
    decode_boxes,
    detect,
    encode_boxes,
    grouped_nms,
    match_anchors,
    multibox_loss,
    ssd_targets,
)
from models.ssd.torch_net import (
    FixedGammaBatchNorm2d,
    SSD512ResNet50,
    build_ssd512_resnet50,
    feature_shapes,
    generate_anchors,
    gluon_param_counts,
)

GLUON_FIRST_ANCHORS = [
    [8.0, 8.0, 51.2, 51.2],
    [8.0, 8.0, 72.40774, 72.40774],
    [8.0, 8.0, 72.40774, 36.20387],
    [8.0, 8.0, 36.20387, 72.40774],
    [24.0, 8.0, 51.2, 51.2],
]


@pytest.fixture(autouse=True)
def _torch_state() -> Iterator[None]:
    """Two threads and a fixed seed for each test; restore the caller's global state."""
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cpu_net() -> SSD512ResNet50:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_ssd512_resnet50("cpu")


def test_anchors_match_gluoncv_at_512() -> None:
    assert feature_shapes(512) == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    anchors = generate_anchors(feature_shapes(512))
    assert anchors.shape == (1, 6132, 4)
    torch.testing.assert_close(anchors[0, :5], torch.tensor(GLUON_FIRST_ANCHORS), rtol=0, atol=1e-4)
    # The last layer's last anchor: the single position of step 512, ratio 0.5 of size 450.6.
    last = torch.tensor([256.0, 256.0, 450.6 * math.sqrt(0.5), 450.6 / math.sqrt(0.5)])
    torch.testing.assert_close(anchors[0, -1], last)


def test_param_counts_match_gluoncv() -> None:
    with torch.device("meta"):
        net = SSD512ResNet50()
    counts = gluon_param_counts(net)
    assert counts == {
        "trainable": 36_468_974,
        "running_stats": 59_264,
        "anchors": 399_360,
        "total": 36_927_598,
    }


@pytest.mark.parametrize("size", [64, 96, 160, 512])
def test_output_shapes_and_anchor_count(size: int) -> None:
    with torch.device("meta"):
        net = SSD512ResNet50().eval()
        cls, box, anchors = net(torch.empty(2, 3, size, size))
    num = generate_anchors(feature_shapes(size)).shape[1]
    if size == 512:
        assert num == 6132
    assert cls.shape == (2, num, 21)
    assert box.shape == (2, num, 4)
    assert anchors.shape == (1, num, 4)


def test_expander_batchnorm_ignores_its_scale_like_mxnet() -> None:
    bn = FixedGammaBatchNorm2d(4).train()
    with torch.no_grad():
        bn.weight.fill_(3.0)
        bn.bias.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = bn(x)
    ref = torch.nn.functional.batch_norm(x, None, None, training=True, eps=1e-3)
    torch.testing.assert_close(out, ref + bn.bias.view(1, -1, 1, 1))
    out.sum().backward()
    assert bn.weight.grad is None and bn.bias.grad is not None
    assert "unit_scale" not in bn.state_dict()
    # One value per channel (a 1x1 map at batch 1): MXNet returns the shift, torch would raise.
    single = bn(torch.randn(1, 4, 1, 1))
    torch.testing.assert_close(single, bn.bias.detach().view(1, -1, 1, 1).expand_as(single))


def test_matching_hand_made_case() -> None:
    anchors = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # 0: exactly gt 0
            [0.0, 0.0, 10.0, 9.0],  # 1: IoU 0.9 with gt 0 -> matched by threshold
            [20.0, 20.0, 30.0, 30.0],  # 2: exactly gt 1
            [21.0, 20.0, 31.0, 30.0],  # 3: IoU 90/110 with gt 1
            [50.0, 50.0, 60.0, 60.0],  # 4: overlaps nothing
            [0.0, 0.0, 4.0, 4.0],  # 5: IoU 0.16 with gt 0 -> background
        ]
    )
    gt = torch.tensor(
        [
            [[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [-1.0, -1.0, -1.0, -1.0]],
            # Anchor 0 is the best for both (IoU 1 and 0.81); anchor 1 ties (0.9) for both.
            [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 9.0, 9.0], [-1.0, -1.0, -1.0, -1.0]],
        ]
    )
    valid = torch.tensor([[True, True, False], [True, True, False]])
    matches = match_anchors(anchors, gt, valid)
    assert matches[0].tolist() == [0, 0, 1, 1, -1, -1]
    # Bipartite: (anchor 0, gt 0) first, then the best free pair (anchor 1, gt 1).
    assert matches[1].tolist() == [0, 1, -1, -1, -1, -1]


def test_matching_forces_best_anchor_below_threshold() -> None:
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [30.0, 30.0, 40.0, 40.0], [0.0, 0.0, 6.0, 6.0]])
    # gt 0 owns anchor 0 (IoU 1). gt 1's best anchor is also 0 (0.81); it gets anchor 2
    # (IoU 36/81 = 0.44 < 0.5) because bipartite matching gives every ground truth an anchor.
    gt = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 9.0, 9.0]]])
    matches = match_anchors(anchors, gt, torch.tensor([[True, True]]))
    assert matches.tolist() == [[0, -1, 1]]
    # A padded ground truth never matches, even if it is the only one.
    none = match_anchors(anchors, gt, torch.tensor([[False, False]]))
    assert none.tolist() == [[-1, -1, -1]]


def test_targets_labels_and_codes() -> None:
    anchors = torch.tensor([[[50.0, 50.0, 20.0, 40.0], [200.0, 200.0, 20.0, 20.0]]])
    gt = torch.tensor([[[45.0, 40.0, 65.0, 80.0], [-1.0, -1.0, -1.0, -1.0]]])
    labels = torch.tensor([[6, -1]])
    cls_t, box_t = ssd_targets(anchors, gt, labels)
    assert cls_t.tolist() == [[7, 0]]
    # gt center (55, 60, 20, 40): ((55-50)/20/0.1, (60-50)/40/0.1, log 1 / 0.2, log 1 / 0.2)
    torch.testing.assert_close(box_t, torch.tensor([[[2.5, 2.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]))


def test_encode_decode_round_trip() -> None:
    anchors = torch.rand(50, 4) * torch.tensor([500.0, 500.0, 200.0, 200.0]) + torch.tensor(
        [0.0, 0.0, 10.0, 10.0]
    )
    xy = torch.rand(3, 50, 2) * 400
    boxes = torch.cat([xy, xy + torch.rand(3, 50, 2) * 100 + 5], dim=-1)
    codes = encode_boxes(boxes, anchors)
    torch.testing.assert_close(decode_boxes(codes, anchors), boxes, rtol=1e-5, atol=1e-3)


def test_nms_removes_overlapping_duplicate() -> None:
    anchors = torch.tensor(
        [
            [
                [50.0, 50.0, 40.0, 40.0],
                [52.0, 50.0, 40.0, 40.0],
                [51.0, 50.0, 40.0, 40.0],
                [200.0, 200.0, 40.0, 40.0],
            ]
        ]
    )
    cls = torch.zeros(1, 4, 21)
    # anchor: (class, logit); class ids are foreground ids, so logit column is id + 1.
    for a, (c, logit) in enumerate([(5, 10.0), (5, 9.0), (7, 8.0), (5, 7.0)]):
        cls[0, a, c + 1] = logit
    ids, scores, boxes = detect(cls, torch.zeros(1, 4, 4), anchors, image_size=(256, 256))
    # Anchor 1 overlaps anchor 0 (same class, IoU 0.9) and goes; anchor 2 overlaps too but is
    # another class, so it stays.
    assert ids[0, :4].tolist() == [5, 7, 5, -1]
    assert (scores[0, :3] > 0.98).all() and scores[0, 3].item() == -1
    assert torch.all(scores[0, :2] >= scores[0, 1:3])
    torch.testing.assert_close(boxes[0, 0], torch.tensor([30.0, 30.0, 70.0, 70.0]))
    torch.testing.assert_close(boxes[0, 2], torch.tensor([180.0, 180.0, 220.0, 220.0]))
    assert (boxes[0, 3:] == -1).all()


def _random_predictions(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class logits [B, 6132, 21] and box offsets [B, 6132, 4] as an untrained 512 px SSD
    gives them: every image has its 400 candidates above the score threshold."""
    gen = torch.Generator().manual_seed(seed)
    cls = torch.randn(batch, 6132, 21, generator=gen) * 2
    return cls, torch.randn(batch, 6132, 4, generator=gen) * 0.5


#: Box elements (boxes x 4) that torchvision's batched_nms switches to a per-class loop above:
#: on the CPU, and on CUDA before torchvision 0.22 (100,000 since).
TORCHVISION_LOOP_ABOVE = {"cpu": 4_000, "cuda before 0.22": 20_000}


def test_detect_runs_one_nms_for_the_whole_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """At batch 16 and 512 px, 16 x 400 candidates x 4 = 25,600 box elements: above the
    thresholds where torchvision's batched_nms loops over classes with host syncs. detect()
    must not use batched_nms at all, and must run torchvision's NMS kernel exactly once per
    call, whatever the device (the spies see what our code calls, not torchvision's choice)."""
    boxes_ops = torchvision.ops.boxes

    def forbidden(*args: object, **kwargs: object) -> torch.Tensor:
        raise AssertionError("detect() reached torchvision's batched_nms")

    for name in ("batched_nms", "_batched_nms_vanilla", "_batched_nms_coordinate_trick"):
        monkeypatch.setattr(boxes_ops, name, forbidden)
    kernel = torch.ops.torchvision.nms
    calls: list[int] = []

    def counting_nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> torch.Tensor:
        calls.append(int(boxes.shape[0]))
        return kernel(boxes, scores, iou)

    monkeypatch.setattr(torch.ops.torchvision, "nms", counting_nms)
    anchors = generate_anchors(feature_shapes(512))
    for batch in (1, 8, 16):
        calls.clear()
        cls, box = _random_predictions(batch, seed=batch)
        ids, _, _ = detect(cls, box, anchors, image_size=(512, 512))
        assert (ids >= 0).any()
        assert calls == [batch * ssd_common.NMS_TOPK], (batch, calls)
    assert 16 * ssd_common.NMS_TOPK * 4 == 25_600 > max(TORCHVISION_LOOP_ABOVE.values())


@pytest.mark.parametrize("image_size", [(512, 512), None])
def test_detections_do_not_depend_on_the_batch(image_size: tuple[int, int] | None) -> None:
    """Image by image, a batch of 16 gives the detections of each image alone: the same image
    repeated 16 times, and 16 different images (with and without clipping to the image)."""
    anchors = generate_anchors(feature_shapes(512))
    cls, box = _random_predictions(16, seed=3)
    alone = detect(cls[:1], box[:1], anchors, image_size)
    repeated = detect(cls[:1].expand(16, -1, -1), box[:1].expand(16, -1, -1), anchors, image_size)
    assert (alone[0] >= 0).sum() > 50  # NMS had work to do: many survivors, many suppressed
    for got, want in zip(repeated, alone, strict=True):
        assert torch.equal(got, want.expand_as(got))
    batched = detect(cls, box, anchors, image_size)
    for i in range(16):
        single = detect(cls[i : i + 1], box[i : i + 1], anchors, image_size)
        for got, want in zip(batched, single, strict=True):
            assert torch.equal(got[i], want[0]), i


def _per_class_nms(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou: float
) -> torch.Tensor:
    """Reference: one torchvision NMS per (image, class)."""
    kept = torch.zeros(scores.shape, dtype=torch.bool)
    for i in range(scores.shape[0]):
        for c in classes[i].unique():
            (index,) = torch.where(classes[i] == c)
            keep = torchvision.ops.nms(boxes[i, index], scores[i, index], iou)
            kept[i, index[keep]] = True
    return kept


def test_grouped_nms_equals_nms_per_image_and_class() -> None:
    gen = torch.Generator().manual_seed(0)
    # Crowded boxes, some partly outside the image (negative corners), 3 images, 4 classes.
    xy = torch.rand(3, 300, 2, generator=gen) * 50 - 20
    boxes = torch.cat([xy, xy + 10 + torch.rand(3, 300, 2, generator=gen) * 40], dim=-1)
    scores = torch.rand(3, 300, generator=gen)
    classes = torch.randint(0, 4, (3, 300), generator=gen)
    kept = grouped_nms(boxes, scores, classes, 0.45)
    want = _per_class_nms(boxes, scores, classes, 0.45)
    assert torch.equal(kept, want)
    # Many boxes are suppressed, and far fewer would survive without the groups.
    ungrouped = torchvision.ops.nms(boxes.reshape(-1, 4), scores.reshape(-1), 0.45)
    assert len(ungrouped) < int(kept.sum()) < 0.6 * kept.numel()
    # A non-finite box neither suppresses nor widens the others' spacing.
    boxes[0, 0] = torch.tensor([float("-inf"), 0.0, float("inf"), 10.0])
    assert torch.equal(grouped_nms(boxes, scores, classes, 0.45)[1:], want[1:])


def test_inference_outputs_are_well_formed(cpu_net: SSD512ResNet50) -> None:
    size = 128
    images = torch.from_numpy(detection_batch(2, size, seed=1).images)
    cpu_net.eval()
    with torch.inference_mode():
        ids, scores, boxes = detect(*cpu_net(images), image_size=(size, size))
    assert ids.shape == (2, 100) and scores.shape == (2, 100) and boxes.shape == (2, 100, 4)
    valid = ids >= 0
    assert valid.any()
    assert torch.all(scores[:, :-1] >= scores[:, 1:])
    assert torch.all(scores[~valid] == -1) and torch.all(boxes[~valid] == -1)
    assert torch.all(scores[valid] > 0.01) and torch.all(ids[valid] < 20)
    kept = boxes[valid]
    assert torch.all((kept >= 0) & (kept <= size))
    assert torch.all(kept[:, 2:] >= kept[:, :2])


def test_loss_falls_on_fixed_batch(cpu_net: SSD512ResNet50) -> None:
    size = 128
    batch = detection_batch(2, size, seed=0)
    images = torch.from_numpy(batch.images)
    net = cpu_net.train()
    anchors = net.anchors(feature_shapes(size), images.device)
    cls_t, box_t = ssd_targets(
        anchors, torch.from_numpy(batch.boxes), torch.from_numpy(batch.labels)
    )
    assert (cls_t > 0).sum() >= 2
    # From a random trunk lr 0.001 with momentum oscillates for a while (GluonCV starts from
    # ImageNet weights); 1e-4 falls steadily.
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    losses = []
    for _ in range(8):
        cls, box, _ = net(images)
        loss, cls_loss, box_loss = multibox_loss(cls, box, cls_t, box_t)
        assert torch.isclose(loss, cls_loss + box_loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.9 * losses[0], losses


def test_hard_negative_mining_counts() -> None:
    # One positive in 10 anchors: the loss counts it plus the 3 highest-loss negatives.
    cls = torch.zeros(1, 10, 3)
    cls[0, :, 1] = torch.arange(10, dtype=torch.float32)  # negative loss grows with index
    cls_t = torch.zeros(1, 10, dtype=torch.long)
    cls_t[0, 0] = 2
    box = torch.zeros(1, 10, 4)
    _, cls_loss, box_loss = multibox_loss(cls, box, cls_t, torch.zeros(1, 10, 4))
    ce = torch.nn.functional.cross_entropy(cls[0], torch.tensor([2] + [0] * 9), reduction="none")
    expected = ce[0] + ce[7:].sum()
    torch.testing.assert_close(cls_loss, expected)
    assert box_loss.item() == 0.0


@pytest.mark.parametrize("mode", ["train", "infer"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_workload_end_to_end_cpu(mode: str, precision: str) -> None:
    spec = RunSpec(
        workload="ssd",
        backend="torch",
        mode=mode,
        batch=1,
        image_size=128,
        device="cpu",
        iters=1,
        precision=precision,
    )
    workload = SsdTorch(spec)
    workload.setup()
    out = workload.step()
    workload.sync()
    if mode == "train":
        assert out.dim() == 0 and torch.isfinite(out) and not out.requires_grad
        assert workload.net.training
    else:
        ids, scores, boxes = out
        assert ids.shape == (1, 100) and scores.shape == (1, 100) and boxes.shape == (1, 100, 4)
        assert not workload.net.training


def test_workload_include_h2d_and_flops() -> None:
    spec = RunSpec(
        workload="ssd",
        mode="train",
        batch=1,
        image_size=128,
        device="cpu",
        iters=1,
        include_h2d=True,
    )
    workload = SsdTorch(spec)
    workload.setup()
    assert torch.isfinite(workload.step())
    flops, reason = ssd_common.INFO.flops(spec)
    assert flops == count_forward_flops(128) == 2_794_424_320
    assert "analytic" in reason and "128x128" in reason
    details = workload.details()
    assert details["anchors_per_image"] == 390 and details["positive_anchors_in_batch"] > 0
    assert details["parameters"] == 36_468_974


def test_pretrained_missing_raises(tmp_path) -> None:
    missing_dir = tmp_path / "nowhere"
    spec = RunSpec(workload="ssd", image_size=128, device="cpu", pretrained=str(missing_dir))
    with pytest.raises(FileNotFoundError, match=PRETRAINED_FILE) as info:
        SsdTorch(spec).setup()
    assert str(missing_dir) in str(info.value)
    spec = spec.replace(pretrained=str(tmp_path))  # the directory exists, the file does not
    with pytest.raises(FileNotFoundError, match=PRETRAINED_FILE):
        SsdTorch(spec).setup()


def test_pretrained_loads_state_dict(tmp_path, cpu_net: SSD512ResNet50) -> None:
    torch.save(cpu_net.state_dict(), tmp_path / PRETRAINED_FILE)
    spec = RunSpec(workload="ssd", image_size=128, device="cpu", pretrained=str(tmp_path))
    workload = SsdTorch(spec)
    workload.setup()
    torch.testing.assert_close(
        workload.net.class_predictors[0].weight, cpu_net.class_predictors[0].weight
    )


@pytest.mark.parametrize("size", [512, 320])
def test_analytic_flops_equal_the_flop_counter(size: int) -> None:
    """The framework-free count every path reports equals torch's count on the port."""
    analytic, _ = ssd_common.forward_flops_per_sample(size)
    assert analytic == count_forward_flops(size)
    if size == 512:
        assert analytic == 44_664_924_160


def test_fp32_math_on_cuda_is_tf32_as_declared(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU SsdTorch turns cuDNN's TF32 on, as ssd.INFO declares for torch; on the CPU it
    leaves the switch alone. (No GPU needed: only the device selection is faked.)"""
    cudnn = torch.backends.cudnn
    monkeypatch.setattr(cudnn, "benchmark", cudnn.benchmark)  # restored after the test
    monkeypatch.setattr(cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(torch_common, "build_refusal", lambda device: None)
    cpu = SsdTorch(RunSpec(workload="ssd", device="cpu", image_size=128))
    assert cpu.fp32_math == "fp32" and cudnn.allow_tf32 is False
    spec = RunSpec(workload="ssd", device="cuda:0", image_size=128)
    gpu = SsdTorch(spec)
    assert cudnn.allow_tf32 is True
    assert gpu.fp32_math == ssd_common.INFO.fp32_math["torch"] == "tf32"
    assert ssd_common.INFO.uses_tf32(spec)


def count_forward_flops(image_size: int) -> float:
    """Forward FLOPs of the network for one image, counted on the meta device (the check on
    the analytic count that every path reports)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        net = SSD512ResNet50().eval()
        x = torch.empty(1, 3, image_size, image_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x)
    return float(counter.get_total_flops())
