"""SSD training and validation transforms, as GluonCV 0.10's ``SSDDefaultTrainTransform``
and ``SSDDefaultValTransform`` (``gluoncv/data/transforms/presets/ssd.py``), in numpy and
Pillow, every random draw taken from one ``numpy.random.Generator``.

Images are uint8 or float32 RGB arrays ``[H, W, 3]``; labels are arrays ``[N, 4+]`` in
GluonCV's order (``xmin, ymin, xmax, ymax`` in pixels, then class id and any extra columns,
which every step carries along untouched).

The training pipeline (each step as GluonCV does it):

1. photometric distortion (``experimental/image.py: random_color_distort``), on float32
   pixels that are not clipped back to [0, 255] afterwards: brightness +-32 (p 0.5), then
   either contrast, saturation, hue or saturation, hue, contrast (even odds), each with
   p 0.5 (contrast and saturation x[0.5, 1.5], hue a YIQ rotation of ``pi * U(-18, 18)``);
2. with p 0.5, expansion (``image.py: random_expand``): the image placed at a random
   offset on a canvas ``U(1, 4)`` times its size (same ratio on both sides) filled with
   the mean pixel (``mean * 255``); boxes translated;
3. IoU-constrained crop (``experimental/bbox.py: random_crop_with_constraints``): one
   candidate per constraint (IoU of the crop with every box >= 0.1, 0.3, 0.5, 0.7, 0.9, or
   <= 1), each found in at most 50 tries of scale ``U(0.3, 1)`` and aspect ratio ``U(max(1/2,
   s^2), min(2, 1/s^2))``, plus the whole image; candidates are drawn at random until one
   keeps a box (boxes whose centre falls outside are dropped, the rest clipped);
4. resize to ``width x height`` with a random interpolation: GluonCV draws OpenCV's
   nearest, bilinear, bicubic, area or Lanczos; here Pillow's nearest, bilinear, bicubic,
   box and Lanczos filters (so pixel values differ from OpenCV's; box geometry does not);
5. horizontal flip with p 0.5;
6. ``[3, H, W]`` float32 in [0, 1] (divided by 255), normalised by ImageNet mean and std.

One departure: where a crop trial's size equals the image's (probability zero for
continuous draws), GluonCV's ``random.randrange(0)`` would raise; here the offset is 0.

The validation transform resizes with MXNet's ``interp=9`` rule (bicubic when both sides
grow, area -- here box -- when both shrink, bilinear otherwise) and normalises.

Anchor matching is not done here: the workload computes SSD targets from the loaded boxes
(``models.ssd.torch_box.ssd_targets``), the work GluonCV's loader workers do with
``SSDTargetGenerator`` when given anchors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from data.synthetic import IMAGE_MEAN, IMAGE_STD

FloatArray: TypeAlias = npt.NDArray[np.floating]
#: A crop window: (x offset, y offset, width, height) in pixels.
Crop: TypeAlias = tuple[int, int, int, int]

#: GluonCV's default crop constraints (min IoU, max IoU); None is unbounded.
CROP_CONSTRAINTS: tuple[tuple[float | None, float | None], ...] = (
    (0.1, None),
    (0.3, None),
    (0.5, None),
    (0.7, None),
    (0.9, None),
    (None, 1.0),
)
#: OpenCV interpolation codes GluonCV draws from: nearest, linear, cubic, area, Lanczos.
INTERPOLATIONS = 5
_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])
_IYIQ = np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.107, 1.705]])
_GRAY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# --- boxes (GluonCV's gluoncv/data/transforms/bbox.py and utils/bbox.py) -----------------


def box_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """IoU of corner boxes ``a [N, 4+]`` and ``b [M, 4+]`` -> ``[N, M]``; areas are
    ``(x1 - x0) * (y1 - y0)`` (GluonCV's ``bbox_iou`` with offset 0)."""
    a = np.asarray(a)
    b = np.asarray(b)
    tl = np.maximum(a[:, None, :2], b[:, :2])
    br = np.minimum(a[:, None, 2:4], b[:, 2:4])
    inter = np.prod(br - tl, axis=2) * (tl < br).all(axis=2)
    area_a = np.prod(a[:, 2:4] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:4] - b[:, :2], axis=1)
    return np.asarray(inter / (area_a[:, None] + area_b - inter), dtype=np.float64)


def translate_boxes(bbox: FloatArray, x_offset: float, y_offset: float) -> FloatArray:
    out = bbox.copy()
    out[:, :2] += (x_offset, y_offset)
    out[:, 2:4] += (x_offset, y_offset)
    return out


def flip_boxes(
    bbox: FloatArray, size: tuple[int, int], flip_x: bool = False, flip_y: bool = False
) -> FloatArray:
    """Boxes of an image of ``size`` (width, height) mirrored as the image is."""
    width, height = size
    out = bbox.copy()
    if flip_y:
        out[:, 1], out[:, 3] = height - bbox[:, 3], height - bbox[:, 1]
    if flip_x:
        out[:, 0], out[:, 2] = width - bbox[:, 2], width - bbox[:, 0]
    return out


def resize_boxes(
    bbox: FloatArray, in_size: tuple[int, int], out_size: tuple[int, int]
) -> npt.NDArray[np.float64]:
    """Boxes scaled from an image of ``in_size`` (width, height) to ``out_size``; float64
    as GluonCV's ``bbox.resize`` returns them."""
    out = bbox.astype(np.float64)
    x_scale = out_size[0] / in_size[0]
    y_scale = out_size[1] / in_size[1]
    out[:, (0, 2)] *= x_scale
    out[:, (1, 3)] *= y_scale
    return out


def crop_boxes(bbox: FloatArray, crop: Crop, allow_outside_center: bool = True) -> FloatArray:
    """Boxes of the crop window ``(x, y, width, height)``: clipped to it, moved to its
    origin; boxes left empty are dropped, and without ``allow_outside_center`` so are
    boxes whose centre is outside the window."""
    left, top, width, height = crop
    window = np.array((left, top, left + width, top + height))
    out = bbox.copy()
    keep: npt.NDArray[np.bool_] = np.ones(len(out), dtype=bool)
    if not allow_outside_center:
        centers = (bbox[:, :2] + bbox[:, 2:4]) / 2
        keep = np.asarray(np.logical_and(window[:2] <= centers, centers < window[2:]).all(axis=1))
    out[:, :2] = np.maximum(out[:, :2], window[:2])
    out[:, 2:4] = np.minimum(out[:, 2:4], window[2:4])
    out[:, :2] -= window[:2]
    out[:, 2:4] -= window[:2]
    keep &= (out[:, :2] < out[:, 2:4]).all(axis=1)
    return out[keep]


def _below(rng: np.random.Generator, n: int) -> int:
    """An integer in [0, n) (``random.randrange(n)``), or 0 when the range is empty."""
    return int(rng.integers(0, n)) if n > 0 else 0


def random_crop_with_constraints(
    bbox: FloatArray,
    size: tuple[int, int],
    rng: np.random.Generator,
    min_scale: float = 0.3,
    max_scale: float = 1.0,
    max_aspect_ratio: float = 2.0,
    constraints: Sequence[tuple[float | None, float | None]] = CROP_CONSTRAINTS,
    max_trial: int = 50,
) -> tuple[FloatArray, Crop]:
    """GluonCV's SSD crop sampler: returns the cropped boxes and the window ``(x, y, w, h)``.

    Draws, in order: per trial ``uniform(min_scale, max_scale)``, ``uniform`` aspect ratio,
    ``integers`` top, ``integers`` left; then one ``integers`` per candidate tried.
    """
    width, height = size
    candidates: list[Crop] = [(0, 0, width, height)]
    for min_iou, max_iou in constraints:
        low = -np.inf if min_iou is None else min_iou
        high = np.inf if max_iou is None else max_iou
        for _ in range(max_trial):
            scale = rng.uniform(min_scale, max_scale)
            ratio = rng.uniform(
                max(1 / max_aspect_ratio, scale * scale), min(max_aspect_ratio, 1 / (scale * scale))
            )
            crop_h = int(height * scale / np.sqrt(ratio))
            crop_w = int(width * scale * np.sqrt(ratio))
            crop_t = _below(rng, height - crop_h)
            crop_l = _below(rng, width - crop_w)
            if len(bbox) == 0:
                return bbox, (crop_l, crop_t, crop_w, crop_h)
            window = np.array([[crop_l, crop_t, crop_l + crop_w, crop_t + crop_h]])
            iou = box_iou(bbox, window)
            if low <= iou.min() and iou.max() <= high:
                candidates.append((crop_l, crop_t, crop_w, crop_h))
                break
    while candidates:
        crop = candidates.pop(int(rng.integers(0, len(candidates))))
        cropped = crop_boxes(bbox, crop, allow_outside_center=False)
        if cropped.size > 0:
            return cropped, crop
    return bbox, (0, 0, width, height)


# --- images -------------------------------------------------------------------------------


def random_color_distort(
    image: npt.ArrayLike,
    rng: np.random.Generator,
    brightness_delta: float = 32,
    contrast_low: float = 0.5,
    contrast_high: float = 1.5,
    saturation_low: float = 0.5,
    saturation_high: float = 1.5,
    hue_delta: float = 18,
) -> npt.NDArray[np.float32]:
    """GluonCV's photometric distortion on an RGB image; float32 out, not clipped."""
    img = np.array(image, dtype=np.float32)

    def contrast(img: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if rng.uniform(0, 1) > 0.5:
            img *= np.float32(rng.uniform(contrast_low, contrast_high))
        return img

    def saturation(img: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if rng.uniform(0, 1) > 0.5:
            alpha = np.float32(rng.uniform(saturation_low, saturation_high))
            gray = (img * _GRAY).sum(axis=2, keepdims=True) * (np.float32(1) - alpha)
            img *= alpha
            img += gray
        return img

    def hue(img: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if rng.uniform(0, 1) > 0.5:
            alpha = rng.uniform(-hue_delta, hue_delta)
            u, w = np.cos(alpha * np.pi), np.sin(alpha * np.pi)
            rotation = np.array([[1.0, 0.0, 0.0], [0.0, u, -w], [0.0, w, u]])
            t = (_IYIQ @ rotation @ _YIQ).T.astype(np.float32)
            img = img @ t
        return img

    if rng.uniform(0, 1) > 0.5:
        img += np.float32(rng.uniform(-brightness_delta, brightness_delta))
    if rng.integers(0, 2):
        return hue(saturation(contrast(img)))
    return contrast(hue(saturation(img)))


def expand_image(
    image: npt.ArrayLike,
    x_offset: int,
    y_offset: int,
    width: int,
    height: int,
    fill: Sequence[float] | float = 0.0,
) -> npt.NDArray[np.float32]:
    """The image pasted at ``(x_offset, y_offset)`` on a ``width x height`` canvas of
    ``fill`` (one value, or one per channel)."""
    src = np.asarray(image, dtype=np.float32)
    h, w, c = src.shape
    if x_offset < 0 or y_offset < 0 or x_offset + w > width or y_offset + h > height:
        raise ValueError(
            f"a {w}x{h} image does not fit at ({x_offset}, {y_offset}) in {width}x{height}"
        )
    canvas = np.empty((height, width, c), dtype=np.float32)
    canvas[...] = np.asarray(fill, dtype=np.float32)
    canvas[y_offset : y_offset + h, x_offset : x_offset + w] = src
    return canvas


def random_expand(
    image: npt.ArrayLike,
    rng: np.random.Generator,
    max_ratio: float = 4.0,
    fill: Sequence[float] | float = 0.0,
) -> tuple[npt.NDArray[np.float32], tuple[int, int, int, int]]:
    """GluonCV's ``random_expand`` (same ratio on both sides): the canvas and
    ``(x offset, y offset, canvas width, canvas height)``. Draws ratio, y, x."""
    src = np.asarray(image, dtype=np.float32)
    h, w = src.shape[:2]
    if max_ratio <= 1:
        return src, (0, 0, w, h)
    ratio = rng.uniform(1, max_ratio)
    out_h, out_w = int(h * ratio), int(w * ratio)
    y = int(rng.integers(0, out_h - h + 1))
    x = int(rng.integers(0, out_w - w + 1))
    return expand_image(src, x, y, out_w, out_h, fill), (x, y, out_w, out_h)


def _pil_filter(interp: int) -> int:
    from PIL import Image

    filters = (
        Image.Resampling.NEAREST,
        Image.Resampling.BILINEAR,
        Image.Resampling.BICUBIC,
        Image.Resampling.BOX,
        Image.Resampling.LANCZOS,
    )
    if not 0 <= interp < len(filters):
        raise ValueError(f"interpolation must be 0..{len(filters) - 1}, not {interp}")
    return int(filters[interp])


def auto_interpolation(in_size: tuple[int, int], out_size: tuple[int, int]) -> int:
    """MXNet's ``interp=9``: cubic (2) to enlarge both sides, area (3) to shrink both,
    bilinear (1) otherwise. Sizes are (width, height)."""
    (w, h), (nw, nh) = in_size, out_size
    if nh > h and nw > w:
        return 2
    if nh < h and nw < w:
        return 3
    return 1


def resize_image(
    image: npt.ArrayLike, width: int, height: int, interp: int = 1
) -> npt.NDArray[np.float32]:
    """Resize an ``[H, W, C]`` image (each channel as a float32 Pillow image, so values
    outside [0, 255] survive) with interpolation code ``interp`` (0-4, OpenCV's order)."""
    from PIL import Image

    src = np.asarray(image, dtype=np.float32)
    resample = _pil_filter(interp)
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(src[..., c])).resize(
                (width, height), resample=resample
            ),
            dtype=np.float32,
        )
        for c in range(src.shape[2])
    ]
    return np.stack(channels, axis=-1)


def to_normalized_chw(
    image: npt.ArrayLike,
    mean: Sequence[float] = IMAGE_MEAN,
    std: Sequence[float] = IMAGE_STD,
) -> npt.NDArray[np.float32]:
    """``[H, W, 3]`` pixels in [0, 255] -> ``[3, H, W]`` float32, ``(x / 255 - mean) / std``
    (``mx.nd.image.to_tensor`` then ``normalize``)."""
    chw = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / np.float32(255)
    m = np.asarray(mean, dtype=np.float32)[:, None, None]
    s = np.asarray(std, dtype=np.float32)[:, None, None]
    return np.ascontiguousarray((chw - m) / s, dtype=np.float32)


# --- the presets --------------------------------------------------------------------------


class SsdTrainTransform:
    """``SSDDefaultTrainTransform`` without anchors: ``(image, label, rng)`` -> normalised
    ``[3, height, width]`` float32 image and float32 label ``[M, 4+]`` (M <= N)."""

    def __init__(
        self,
        width: int = 512,
        height: int = 512,
        mean: Sequence[float] = IMAGE_MEAN,
        std: Sequence[float] = IMAGE_STD,
    ) -> None:
        self.width, self.height = width, height
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(
        self, image: npt.ArrayLike, label: npt.ArrayLike, rng: np.random.Generator
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        bbox = np.array(label, dtype=np.float32).reshape(-1, np.shape(label)[-1])
        img = random_color_distort(image, rng)
        if rng.uniform(0, 1) > 0.5:
            img, (x, y, _, _) = random_expand(img, rng, fill=[m * 255 for m in self.mean])
            bbox = translate_boxes(bbox, x, y)
        h, w = img.shape[:2]
        bbox, (x, y, cw, ch) = random_crop_with_constraints(bbox, (w, h), rng)
        img = img[y : y + ch, x : x + cw]
        h, w = img.shape[:2]
        img = resize_image(img, self.width, self.height, int(rng.integers(0, INTERPOLATIONS)))
        boxes: FloatArray = resize_boxes(bbox, (w, h), (self.width, self.height))
        if rng.uniform(0, 1) < 0.5:
            img = img[:, ::-1]
            boxes = flip_boxes(boxes, (self.width, self.height), flip_x=True)
        return to_normalized_chw(img, self.mean, self.std), boxes.astype(np.float32)


class SsdValTransform:
    """``SSDDefaultValTransform``: resize (``interp=9``) and normalise; no randomness
    (``rng`` is accepted and ignored, so both transforms are called alike)."""

    def __init__(
        self,
        width: int = 512,
        height: int = 512,
        mean: Sequence[float] = IMAGE_MEAN,
        std: Sequence[float] = IMAGE_STD,
    ) -> None:
        self.width, self.height = width, height
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(
        self,
        image: npt.ArrayLike,
        label: npt.ArrayLike,
        rng: np.random.Generator | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        src = np.asarray(image)
        bbox = np.array(label, dtype=np.float32).reshape(-1, np.shape(label)[-1])
        h, w = src.shape[:2]
        interp = auto_interpolation((w, h), (self.width, self.height))
        img = resize_image(src, self.width, self.height, interp)
        boxes = resize_boxes(bbox, (w, h), (self.width, self.height))
        return to_normalized_chw(img, self.mean, self.std), boxes.astype(np.float32)
