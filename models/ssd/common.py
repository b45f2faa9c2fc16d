"""SSD-512 ResNet-50 v1 facts shared by every framework path (no framework import here):
the workshop's hyperparameters, GluonCV's anchor and NMS settings, and FLOPs."""

from __future__ import annotations

from bench.run.workload import ShapeLabels, WorkloadInfo
from bench.schema.spec import RunSpec

NUM_CLASSES = 20
#: The workshop's SSD settings (SageMaker object detection lab).
LEARNING_RATE = 0.001
MOMENTUM = 0.9
WEIGHT_DECAY = 0.0005
IOU_THRESHOLD = 0.5
NMS_THRESHOLD = 0.45
NMS_TOPK = 400
POST_NMS = 100
NEGATIVE_MINING_RATIO = 3.0
BOX_STDS = (0.1, 0.1, 0.2, 0.2)
#: VOC07+12 trainval images: one epoch of the lab.
EPOCH_SAMPLES = 16_551
#: File name of the PyTorch port's weights in a ``--pretrained`` directory (a state dict).
TORCH_CHECKPOINT = "ssd_512_resnet50_v1_voc.pt"

SCORE_THRESHOLD = 0.01

#: ResNet-50 v1: (blocks, output channels, stride of the first block) per stage.
RESNET50_STAGES = ((3, 256, 1), (4, 512, 2), (6, 1024, 2), (3, 2048, 2))
EXPANDER_FILTERS = (512, 512, 256, 256)
#: Anchor aspect ratios per feature map, as ``ssd_512_resnet50_v1_voc`` declares them.
ANCHOR_RATIOS: tuple[tuple[float, ...], ...] = (
    ((1.0, 2.0, 0.5),) + ((1.0, 2.0, 0.5, 3.0, 1.0 / 3.0),) * 3 + ((1.0, 2.0, 0.5),) * 2
)


def anchors_per_position(ratios: tuple[float, ...]) -> int:
    """Two square anchors (size_min and sqrt(size_min * size_max)) plus one per extra ratio."""
    return 2 + len(ratios) - 1


#: Anchors per position on each of the six feature maps.
ANCHORS_PER_POSITION = tuple(anchors_per_position(r) for r in ANCHOR_RATIOS)


def _conv(cin: int, cout: int, k: int, out_hw: int) -> int:
    return 2 * cin * cout * k * k * out_hw * out_hw


def conv_out_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output side of a convolution or pooling window over a square input of side ``size``."""
    return (size + 2 * pad - kernel) // stride + 1


def forward_flops_per_sample(image_size: int) -> tuple[float, str]:
    """Convolution FLOPs (2 per multiply-add) of one image's forward pass, by walking the
    architecture. Batch norm, ReLU, pooling, bias adds, decoding and NMS are left out."""
    flops = 0
    size = conv_out_size(image_size, 7, 2, 3)
    flops += _conv(3, 64, 7, size)
    size = conv_out_size(size, 3, 2, 1)  # max pool
    channels = 64
    features = []
    for blocks, out, stride in RESNET50_STAGES:
        mid = out // 4
        for b in range(blocks):
            s = stride if b == 0 else 1
            size_out = conv_out_size(size, 1, s, 0)
            flops += _conv(channels, mid, 1, size_out)  # stride on the first 1x1 (v1)
            flops += _conv(mid, mid, 3, size_out)
            flops += _conv(mid, out, 1, size_out)
            if b == 0:
                flops += _conv(channels, out, 1, size_out)  # projection shortcut
            channels, size = out, size_out
        features.append((channels, size))
    features = features[2:]  # stage 3 and stage 4 outputs
    for f in EXPANDER_FILTERS:
        flops += _conv(channels, f, 1, size)
        size = conv_out_size(size, 3, 2, 1)
        flops += _conv(f, f, 3, size)
        channels = f
        features.append((channels, size))
    for (ch, hw), anchors in zip(features, ANCHORS_PER_POSITION, strict=True):
        flops += _conv(ch, anchors * (NUM_CLASSES + 1), 3, hw)
        flops += _conv(ch, anchors * 4, 3, hw)
    return float(flops), f"analytic: convolutions of the network at {image_size}x{image_size}"


def _flops(spec: RunSpec) -> tuple[float | None, str]:
    return forward_flops_per_sample(spec.image_size)


INFO = WorkloadInfo(
    name="ssd",
    flops=_flops,
    shape=ShapeLabels(field="image_size", tag="i{0}", column="{0}px", title="{0}x{0}"),
    epoch_samples=EPOCH_SAMPLES,
    epoch_dataset="VOC07+12 trainval",
    # Convolutions dominate. PyTorch: cuDNN runs fp32 convolutions on TF32 tensor cores
    # (SsdTorch sets torch.backends.cudnn.allow_tf32). MXNet 1.9 (CUDA 11, cuDNN 8): TF32 is
    # its default on Ampere and newer (cuDNN's default math mode; MXNet's own test_utils say
    # so); the workload leaves NVIDIA_TF32_OVERRIDE unset to keep it. ONNX Runtime's CUDA
    # provider: use_tf32 (on by default since 1.18), set explicitly. Every backend then does
    # the same fp32 math.
    fp32_math={"torch": "tf32", "mxnet": "tf32", "onnxruntime": "tf32"},
    # the PyTorch port's state dict (ONNX Runtime exports from it); GluonCV's model file
    checkpoint={
        "torch": ((TORCH_CHECKPOINT,),),
        "onnxruntime": ((TORCH_CHECKPOINT,),),
        "mxnet": (("ssd_512_resnet50_v1_voc*.params",),),
    },
    data_check="data.checks:check_detection_run",
    served="models.ssd.served:SERVED",
    datasets={"voc": "data.sources:VOC"},
)
