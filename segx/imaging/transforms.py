"""Training and evaluation transforms on numpy/OpenCV/PIL: PaddleSeg 2.8's transform names,
arguments and defaults, without paddle.

A transform takes and returns a sample dict: ``img`` (H x W [x C]), ``gt_fields`` (the names of
the label-like arrays that move with the image, usually ``["label"]``), and ``trans_info`` (what
resizes and paddings did, for :func:`segx.imaging.tta.restore`). :class:`Compose` runs a list of
them and lays the image out as C x H x W.

The random ones draw from Python's ``random`` and numpy's global generator exactly as PaddleSeg's
do (the same calls, in the same order), so under the same seeds a sample comes out the same as
from PaddleSeg (tests/test_own_transforms.py compares them). Deliberate differences, each where
PaddleSeg's result is a defect: ``RandomPaddingCrop`` with ``category_max_ratio < 1`` crops the
image (PaddleSeg puts the label crop in its place), ``ScalePadding`` resizes labels with nearest
neighbour (PaddleSeg: bicubic, which invents class ids), ``ResizeByShort`` does not keep a
``max_size`` shortening for the next images, and configurations PaddleSeg fails on (a crop
bound of zero, a one-pixel-wide image in ``RandomAffine``) are handled or refused clearly.

Every output size is checked against :data:`segx.imaging.images.HARD_MAX_PIXELS` before memory
is taken for it, so a config cannot ask for more than the readers would ever decode.
"""
from __future__ import annotations

import inspect
import math
import random
from typing import Any, Callable, Sequence

import cv2
import numpy as np
from PIL import Image, ImageEnhance

from segx.imaging.images import HARD_MAX_PIXELS
from segx.utils.errors import ConfigError, DatasetError, did_you_mean

INTERP = {"NEAREST": cv2.INTER_NEAREST, "LINEAR": cv2.INTER_LINEAR, "CUBIC": cv2.INTER_CUBIC,
          "AREA": cv2.INTER_AREA, "LANCZOS4": cv2.INTER_LANCZOS4}
TRANSFORMS: dict[str, type] = {}


def register(cls: type) -> type:
    TRANSFORMS[cls.__name__] = cls
    return cls


# --------------------------------------------------------------------------- small pieces
def _channels(img: np.ndarray) -> int:
    return 1 if img.ndim == 2 else img.shape[2]


def _labels(data: dict) -> list:
    return list(data.get("gt_fields", []))


def check_size(width: float, height: float, what: str) -> tuple[int, int]:
    """``(width, height)`` as ints, refused when empty or above the pixel cap."""
    w, h = int(width), int(height)
    if w < 1 or h < 1 or w * h > HARD_MAX_PIXELS:
        raise ConfigError(f"{what} would make a {w}x{h} image (at most {HARD_MAX_PIXELS:,} "
                          "pixels, at least 1x1).", solution=f"change the arguments of {what}.")
    return w, h


def _pair(value: Any, name: str) -> tuple:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{name} must be a list of two numbers, not {value!r}")
    return tuple(value)


def _resize(img: np.ndarray, width: float, height: float, interp: int, what: str) -> np.ndarray:
    return cv2.resize(img, check_size(width, height, what), interpolation=interp)


def _resize_long(img: np.ndarray, long: float, interp: int, what: str) -> np.ndarray:
    scale = float(long) / float(max(img.shape[0], img.shape[1]))
    return _resize(img, round(img.shape[1] * scale), round(img.shape[0] * scale), interp, what)


def _resize_short(img: np.ndarray, short: float, interp: int, what: str) -> np.ndarray:
    scale = float(short) / float(min(img.shape[0], img.shape[1]))
    return _resize(img, round(img.shape[1] * scale), round(img.shape[0] * scale), interp, what)


def _pad_bottom_right(data: dict, rows: int, cols: int, im_value, label_value) -> dict:
    """Pad the image and every label below and to the right (constant values)."""
    check_size(data["img"].shape[1] + cols, data["img"].shape[0] + rows, "padding")
    fill = (im_value,) * _channels(data["img"])
    data["img"] = cv2.copyMakeBorder(data["img"], 0, rows, 0, cols, cv2.BORDER_CONSTANT,
                                     value=fill)
    for key in _labels(data):
        data[key] = cv2.copyMakeBorder(data[key], 0, rows, 0, cols, cv2.BORDER_CONSTANT,
                                       value=label_value)
    return data


def _each(data: dict, image_fn: Callable, label_fn: Callable) -> dict:
    data["img"] = image_fn(data["img"])
    for key in _labels(data):
        data[key] = label_fn(data[key])
    return data


# --------------------------------------------------------------------------- Compose
class Compose:
    """Run ``transforms`` in order on a sample dict; the image comes out C x H x W.

    Args:
        transforms: the transform objects.
        to_rgb: swap a 3-channel image from BGR to RGB first (segx feeds RGB: it passes False).
        img_channels: the channels the image must have (1 for an H x W image).
    """

    def __init__(self, transforms: list, to_rgb: bool = True, img_channels: int = 3):
        if not isinstance(transforms, list):
            raise TypeError("transforms must be a list")
        self.transforms, self.to_rgb, self.img_channels = transforms, to_rgb, img_channels

    def __call__(self, data: dict) -> dict:
        img = data.get("img")
        if not isinstance(img, np.ndarray):
            raise DatasetError("a transform input has no image array.",
                               solution="feed decoded images (segx.imaging.images.read_image).")
        if _channels(img) != self.img_channels:
            raise DatasetError(f"an image has {_channels(img)} channels, the transforms expect "
                               f"{self.img_channels}.", solution="set img_channels or convert "
                               "the images.")
        if self.to_rgb and _channels(img) == 3:
            data["img"] = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        data.setdefault("trans_info", [])
        for key in _labels(data):  # a 1-bit label (bool) as ids 0/1: OpenCV takes no bool
            if data[key].dtype == np.bool_:
                data[key] = data[key].astype(np.uint8)
        for op in self.transforms:
            data = op(data)
        if data["img"].ndim == 2:
            data["img"] = data["img"][..., None]
        data["img"] = np.transpose(data["img"], (2, 0, 1))
        return data


# --------------------------------------------------------------------------- flips
@register
class RandomHorizontalFlip:
    """Mirror left-right with probability ``prob``."""

    def __init__(self, prob: float = 0.5):
        self.prob = prob

    def __call__(self, data: dict) -> dict:
        if random.random() < self.prob:
            data = _each(data, lambda a: a[:, ::-1], lambda a: a[:, ::-1])
        return data


@register
class RandomVerticalFlip:
    """Mirror top-bottom with probability ``prob``."""

    def __init__(self, prob: float = 0.1):
        self.prob = prob

    def __call__(self, data: dict) -> dict:
        if random.random() < self.prob:
            data = _each(data, lambda a: a[::-1], lambda a: a[::-1])
        return data


# --------------------------------------------------------------------------- resizing
@register
class Resize:
    """Resize to ``target_size`` (w, h); ``keep_ratio`` fits the image inside it instead;
    ``size_divisor`` rounds the size up to a multiple; ``interp`` an OpenCV mode or RANDOM."""

    def __init__(self, target_size=(512, 512), keep_ratio: bool = False,
                 size_divisor: int | None = None, interp: str = "LINEAR"):
        self.target_size = _pair(target_size, "target_size")
        if interp != "RANDOM" and interp not in INTERP:
            raise ValueError(f"interp must be one of {', '.join([*INTERP, 'RANDOM'])}")
        if size_divisor is not None and (not isinstance(size_divisor, int) or size_divisor < 1):
            raise ValueError("size_divisor must be None or a positive int")
        self.keep_ratio, self.size_divisor, self.interp = keep_ratio, size_divisor, interp

    def _size(self, img: np.ndarray) -> list:
        size = list(self.target_size)
        if self.keep_ratio:
            h, w = img.shape[0:2]
            scale = min(max(size) / max(w, h), min(size) / min(w, h))
            size = [round(w * scale), round(h * scale)]
        if self.size_divisor:
            size = [math.ceil(s / self.size_divisor) * self.size_divisor for s in size]
        return size

    def __call__(self, data: dict) -> dict:
        data["trans_info"].append(("resize", data["img"].shape[0:2]))
        mode = random.choice(list(INTERP)) if self.interp == "RANDOM" else self.interp
        w, h = self._size(data["img"])
        return _each(data, lambda a: _resize(a, w, h, INTERP[mode], "Resize"),
                     lambda a: _resize(a, w, h, cv2.INTER_NEAREST, "Resize"))


@register
class ResizeByLong:
    """Scale so that the long side is ``long_size``."""

    def __init__(self, long_size: int):
        self.long_size = long_size

    def __call__(self, data: dict) -> dict:
        data["trans_info"].append(("resize", data["img"].shape[0:2]))
        n = self.long_size
        return _each(data, lambda a: _resize_long(a, n, cv2.INTER_LINEAR, "ResizeByLong"),
                     lambda a: _resize_long(a, n, cv2.INTER_NEAREST, "ResizeByLong"))


@register
class ResizeByShort:
    """Scale so that the short side is ``short_size`` (a list: one of them, drawn once when
    built), unless the long side would pass ``max_size``: then the long side is ``max_size``."""

    def __init__(self, short_size, max_size: float = 1e10):
        self.short_size = random.choice(short_size) if isinstance(short_size, list) else short_size
        self.max_size = max_size

    def __call__(self, data: dict) -> dict:
        h, w = data["img"].shape[0:2]
        data["trans_info"].append(("resize", (h, w)))
        short = self.short_size
        if short / min(h, w) * max(h, w) > self.max_size:
            short = int((self.max_size / max(h, w)) * min(h, w))
        return _each(data, lambda a: _resize_short(a, short, cv2.INTER_LINEAR, "ResizeByShort"),
                     lambda a: _resize_short(a, short, cv2.INTER_NEAREST, "ResizeByShort"))


@register
class LimitLong:
    """Scale the long side down to ``max_long`` when longer, up to ``min_long`` when shorter."""

    def __init__(self, max_long: int | None = None, min_long: int | None = None):
        for name, value in (("max_long", max_long), ("min_long", min_long)):
            if value is not None and not isinstance(value, int):
                raise ValueError(f"{name} must be an int or None, not {value!r}")
        if max_long is not None and min_long is not None and min_long > max_long:
            raise ValueError(f"min_long ({min_long}) is above max_long ({max_long})")
        self.max_long, self.min_long = max_long, min_long

    def __call__(self, data: dict) -> dict:
        data["trans_info"].append(("resize", data["img"].shape[0:2]))
        long = target = max(data["img"].shape[0], data["img"].shape[1])
        if self.max_long is not None and long > self.max_long:
            target = self.max_long
        elif self.min_long is not None and long < self.min_long:
            target = self.min_long
        if target == long:
            return data
        return _each(data, lambda a: _resize_long(a, target, cv2.INTER_LINEAR, "LimitLong"),
                     lambda a: _resize_long(a, target, cv2.INTER_NEAREST, "LimitLong"))


@register
class ResizeRangeScaling:
    """Scale the long side to a length drawn uniformly from [min_value, max_value]."""

    def __init__(self, min_value: int = 400, max_value: int = 600):
        if min_value > max_value:
            raise ValueError(f"min_value ({min_value}) is above max_value ({max_value})")
        self.min_value, self.max_value = min_value, max_value

    def __call__(self, data: dict) -> dict:
        if self.min_value == self.max_value:
            long = self.max_value
        else:
            long = int(np.random.uniform(self.min_value, self.max_value) + 0.5)
        what = "ResizeRangeScaling"
        return _each(data, lambda a: _resize_long(a, long, cv2.INTER_LINEAR, what),
                     lambda a: _resize_long(a, long, cv2.INTER_NEAREST, what))


@register
class ResizeStepScaling:
    """Scale by a factor from [min, max]: one of the steps ``scale_step_size`` apart, or any
    value when the step is 0."""

    def __init__(self, min_scale_factor: float = 0.75, max_scale_factor: float = 1.25,
                 scale_step_size: float = 0.25):
        if min_scale_factor > max_scale_factor:
            raise ValueError(f"min_scale_factor ({min_scale_factor}) is above "
                             f"max_scale_factor ({max_scale_factor})")
        self.min_scale_factor, self.max_scale_factor = min_scale_factor, max_scale_factor
        self.scale_step_size = scale_step_size

    def _factor(self) -> float:
        low, high, step = self.min_scale_factor, self.max_scale_factor, self.scale_step_size
        if low == high:
            return low
        if step == 0:
            return np.random.uniform(low, high)
        factors = np.linspace(low, high, int((high - low) / step + 1)).tolist()
        np.random.shuffle(factors)
        return factors[0]

    def __call__(self, data: dict) -> dict:
        factor = self._factor()
        w = int(round(factor * data["img"].shape[1]))
        h = int(round(factor * data["img"].shape[0]))
        return _each(data, lambda a: _resize(a, w, h, cv2.INTER_LINEAR, "ResizeStepScaling"),
                     lambda a: _resize(a, w, h, cv2.INTER_NEAREST, "ResizeStepScaling"))


@register
class Normalize:
    """``(img / 255 - mean) / std`` in float32."""

    def __init__(self, mean=(0.5,), std=(0.5,)):
        self.mean, self.std = np.array(mean), np.array(std)
        if self.std.size == 0 or np.prod(self.std) == 0:
            raise ValueError(f"std={list(std)} has a zero")

    def __call__(self, data: dict) -> dict:
        img = data["img"].astype(np.float32, copy=False) / 255.0
        img -= self.mean
        img /= self.std
        data["img"] = img
        return data


# --------------------------------------------------------------------------- padding, cropping
@register
class Padding:
    """Pad below and to the right up to ``target_size`` (w, h); a larger image is refused."""

    def __init__(self, target_size, im_padding_value: float = 127.5,
                 label_padding_value: int = 255):
        self.target_size = _pair(target_size, "target_size")
        self.im_padding_value, self.label_padding_value = im_padding_value, label_padding_value

    def __call__(self, data: dict) -> dict:
        data["trans_info"].append(("padding", data["img"].shape[0:2]))
        h, w = data["img"].shape[0:2]
        tw, th = self.target_size
        if th < h or tw < w:
            raise ConfigError(f"an image of {w}x{h} is larger than Padding target_size "
                              f"{tw}x{th}.", solution="resize before padding in the transforms.")
        return _pad_bottom_right(data, int(th - h), int(tw - w), self.im_padding_value,
                                 self.label_padding_value)


@register
class PaddingByAspectRatio:
    """Pad below or to the right until width / height is ``aspect_ratio``."""

    def __init__(self, aspect_ratio: float = 1, im_padding_value: float = 127.5,
                 label_padding_value: int = 255):
        if not aspect_ratio > 0:
            raise ValueError(f"aspect_ratio must be above 0, not {aspect_ratio!r}")
        self.aspect_ratio = aspect_ratio
        self.im_padding_value, self.label_padding_value = im_padding_value, label_padding_value

    def __call__(self, data: dict) -> dict:
        h, w = data["img"].shape[0:2]
        if w / h == self.aspect_ratio:
            return data
        if w / h > self.aspect_ratio:
            h = int(w / self.aspect_ratio)
        else:
            w = int(h * self.aspect_ratio)
        return Padding((w, h), self.im_padding_value, self.label_padding_value)(data)


@register
class RandomPaddingCrop:
    """A random ``crop_size`` (w, h) window, after padding below/right what is smaller.

    With ``category_max_ratio`` < 1, up to ``loop_times`` windows are drawn until one holds at
    least two classes and no class over that share of its counted pixels."""

    def __init__(self, crop_size=(512, 512), im_padding_value: float = 127.5,
                 label_padding_value: int = 255, category_max_ratio: float = 1.0,
                 ignore_index: int = 255, loop_times: int = 10):
        crop_w, crop_h = _pair(crop_size, "crop_size")
        if category_max_ratio <= 0:
            raise ValueError(f"category_max_ratio must be above 0, not {category_max_ratio}")
        if loop_times <= 0:
            raise ValueError(f"loop_times must be above 0, not {loop_times}")
        self.crop_w, self.crop_h = check_size(crop_w, crop_h, "RandomPaddingCrop")
        self.im_padding_value, self.label_padding_value = im_padding_value, label_padding_value
        self.category_max_ratio, self.ignore_index = category_max_ratio, ignore_index
        self.loop_times = loop_times

    def _window(self, h: int, w: int) -> tuple[slice, slice]:
        top = np.random.randint(0, max(h - self.crop_h, 0) + 1)
        left = np.random.randint(0, max(w - self.crop_w, 0) + 1)
        return slice(top, top + self.crop_h), slice(left, left + self.crop_w)

    def _mixed(self, label: np.ndarray) -> bool:
        ids, counts = np.unique(label, return_counts=True)
        counts = counts[ids != self.ignore_index]
        return len(counts) > 1 and np.max(counts) / np.sum(counts) < self.category_max_ratio

    def __call__(self, data: dict) -> dict:
        h, w = data["img"].shape[0:2]
        if (h, w) == (self.crop_h, self.crop_w):
            return data
        rows, cols = max(self.crop_h - h, 0), max(self.crop_w - w, 0)
        if rows or cols:
            data = _pad_bottom_right(data, rows, cols, self.im_padding_value,
                                     self.label_padding_value)
        h, w = data["img"].shape[0:2]
        window = self._window(h, w)
        if self.category_max_ratio < 1.0 and "label" in data:
            for _ in range(self.loop_times):
                if self._mixed(data["label"][window]):
                    break
                window = self._window(h, w)
        return _each(data, lambda a: a[window], lambda a: a[window])


@register
class RandomCenterCrop:
    """Crop a random window keeping at least ``retain_ratio`` (w, h) of each side."""

    def __init__(self, retain_ratio=(0.5, 0.5)):
        self.retain_ratio = _pair(retain_ratio, "retain_ratio")
        if not all(0 <= r <= 1 for r in self.retain_ratio):
            raise ValueError(f"retain_ratio must be in [0, 1], not {list(retain_ratio)}")

    def __call__(self, data: dict) -> dict:
        keep_w, keep_h = self.retain_ratio
        if keep_w == 1.0 and keep_h == 1.0:
            return data
        h, w = data["img"].shape[0:2]
        # PaddleSeg draws from a float bound and fails on one below 1: no draw, nothing cut
        bound_w, bound_h = w * (1 - keep_w), h * (1 - keep_h)
        cut_w = np.random.randint(bound_w) if int(bound_w) > 0 else 0
        cut_h = np.random.randint(bound_h) if int(bound_h) > 0 else 0
        left = np.random.randint(cut_w) if cut_w else 0
        top = np.random.randint(cut_h) if cut_h else 0
        rows, cols = slice(top, h + top - cut_h), slice(left, w + left - cut_w)
        return _each(data, lambda a: a[rows, cols], lambda a: a[rows, cols])


@register
class ScalePadding:
    """Pad to a centred square, then resize to ``target_size`` (w, h): the image bicubic (as
    uint8), the label nearest-neighbour."""

    def __init__(self, target_size=(512, 512), im_padding_value: float = 127.5,
                 label_padding_value: int = 255):
        self.target_size = check_size(*_pair(target_size, "target_size"), "ScalePadding")
        self.im_padding_value, self.label_padding_value = im_padding_value, label_padding_value

    def _square(self, img: np.ndarray, fill: float) -> np.ndarray:
        h, w = img.shape[0:2]
        side = max(h, w)
        check_size(side, side, "ScalePadding")
        out = np.zeros((side, side, *img.shape[2:])) + fill
        if h > w:
            start = int((h - w) / 2)
            out[:, start:start + w] = img
        else:
            start = int((w - h) / 2)
            out[start:start + h, :] = img
        return np.uint8(out)

    def __call__(self, data: dict) -> dict:
        w, h = self.target_size
        data["img"] = cv2.resize(self._square(data["img"], self.im_padding_value), (w, h),
                                 interpolation=cv2.INTER_CUBIC)
        if "label" in data.get("gt_fields", []):
            data["label"] = cv2.resize(self._square(data["label"], self.label_padding_value),
                                       (w, h), interpolation=cv2.INTER_NEAREST)
        return data


# --------------------------------------------------------------------------- photometric
@register
class RandomNoise:
    """With probability ``prob``, add Gaussian noise of a standard deviation drawn from
    [0, max_sigma), clipped to [0, 255]."""

    def __init__(self, prob: float = 0.5, max_sigma: float = 10.0):
        self.prob, self.max_sigma = prob, max_sigma

    def __call__(self, data: dict) -> dict:
        if random.random() < self.prob:
            sigma = random.random() * self.max_sigma
            img = np.array(data["img"], dtype=np.float32)
            img += np.random.normal(0, sigma, img.shape)
            data["img"] = np.clip(img, 0, 255, out=img)
        return data


_BLURS = ("gaussian", "median", "blur", "random")


def _blur(img: np.ndarray, kind: str, k: int) -> np.ndarray:
    if kind == "random":
        pick = random.random()
        kind = "gaussian" if pick < 0.3 else "median" if pick < 0.6 else "blur"
    if kind == "median":
        return cv2.medianBlur(img, k)
    if kind == "blur":
        return cv2.blur(img, (k, k))
    return cv2.GaussianBlur(img, (k, k), 0, 0)


@register
class RandomBlur:
    """With probability about ``prob`` (one in ``int(1 / prob)``), blur by an odd kernel of
    3 to 9 pixels; ``blur_type`` gaussian, median, blur or random. The image comes out float32
    (a blurred one passes through uint8)."""

    def __init__(self, prob: float = 0.1, blur_type: str = "gaussian"):
        if blur_type not in _BLURS:
            raise ValueError(f"blur_type must be one of {', '.join(_BLURS)}, not {blur_type!r}")
        self.prob, self.blur_type = prob, blur_type

    def __call__(self, data: dict) -> dict:
        n = 0 if self.prob <= 0 else 1 if self.prob >= 1 else int(1.0 / self.prob)
        if n > 0 and np.random.randint(0, n) == 0:
            k = min(np.random.randint(3, 10) | 1, 9)
            data["img"] = _blur(np.array(data["img"], dtype="uint8"), self.blur_type, k)
        data["img"] = np.array(data["img"], dtype="float32")
        return data


def _hue_shift(im: Image.Image, delta: float) -> Image.Image:
    hsv = np.array(im.convert("HSV"))
    hsv[:, :, 0] = hsv[:, :, 0] + delta
    return Image.frombuffer("HSV", im.size, np.ascontiguousarray(hsv), "raw", "HSV", 0,
                            1).convert("RGB")


_ENHANCERS = {"brightness": ImageEnhance.Brightness, "contrast": ImageEnhance.Contrast,
              "saturation": ImageEnhance.Color, "sharpness": ImageEnhance.Sharpness}


@register
class RandomDistort:
    """Brightness, contrast, saturation, sharpness and (colour images) hue changes, in a random
    order, each with its probability and a factor drawn from ``1 -+ range`` (hue: a shift drawn
    from ``-+hue_range``)."""

    def __init__(self, brightness_range=0.5, brightness_prob=0.5, contrast_range=0.5,
                 contrast_prob=0.5, saturation_range=0.5, saturation_prob=0.5, hue_range=18,
                 hue_prob=0.5, sharpness_range=0.5, sharpness_prob=0):
        self.ranges = {"brightness": brightness_range, "contrast": contrast_range,
                       "saturation": saturation_range, "sharpness": sharpness_range}
        self.probs = {"brightness": brightness_prob, "contrast": contrast_prob,
                      "saturation": saturation_prob, "sharpness": sharpness_prob,
                      "hue": hue_prob}
        self.hue_range = hue_range

    def _apply(self, kind: str, im: Image.Image) -> Image.Image:
        if kind == "hue":
            return _hue_shift(im, np.random.uniform(-self.hue_range, self.hue_range))
        spread = self.ranges[kind]
        return _ENHANCERS[kind](im).enhance(np.random.uniform(1 - spread, 1 + spread))

    def __call__(self, data: dict) -> dict:
        kinds = ["brightness", "contrast", "saturation", "sharpness"]
        if data["img"].ndim > 2:
            kinds.append("hue")
        random.shuffle(kinds)
        im = Image.fromarray(data["img"].astype("uint8"))
        for kind in kinds:
            if np.random.uniform(0, 1) < self.probs[kind]:
                im = self._apply(kind, im)
        data["img"] = np.asarray(im).astype("float32")
        return data


# --------------------------------------------------------------------------- geometric
def _warp(data: dict, matrix: np.ndarray, size: tuple, im_value, label_value,
          as_uint8: bool = False) -> dict:
    """Warp the image (bilinear) and every label (nearest) by ``matrix`` onto ``size`` (w, h)."""
    size = check_size(*size, "an affine transform")
    fill = (im_value,) * _channels(data["img"])
    prep = np.uint8 if as_uint8 else (lambda a: a)
    data["img"] = cv2.warpAffine(prep(data["img"]), matrix, size, flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    for key in _labels(data):
        data[key] = cv2.warpAffine(prep(data[key]), matrix, size, flags=cv2.INTER_NEAREST,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=label_value)
    return data


@register
class RandomRotation:
    """Rotate by an angle drawn from [-max_rotation, max_rotation] degrees about the centre,
    on a canvas grown to hold the whole rotated image."""

    def __init__(self, max_rotation: float = 15, im_padding_value: float = 127.5,
                 label_padding_value: int = 255):
        self.max_rotation = max_rotation
        self.im_padding_value, self.label_padding_value = im_padding_value, label_padding_value

    def __call__(self, data: dict) -> dict:
        if self.max_rotation <= 0:
            return data
        h, w = data["img"].shape[0:2]
        angle = np.random.uniform(-self.max_rotation, self.max_rotation)
        cx, cy = w // 2, h // 2
        matrix = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
        cos, sin = np.abs(matrix[0, 0]), np.abs(matrix[0, 1])
        new_w, new_h = int(h * sin + w * cos), int(h * cos + w * sin)
        matrix[0, 2] += new_w / 2 - cx
        matrix[1, 2] += new_h / 2 - cy
        return _warp(data, matrix, (new_w, new_h), self.im_padding_value,
                     self.label_padding_value)


@register
class RandomScaleAspect:
    """Crop a window of a random share of the area (at least ``min_scale``) and aspect ratio
    (between ``aspect_ratio`` and its inverse), then scale it back to the image size; up to
    ten windows are drawn until one fits."""

    def __init__(self, min_scale: float = 0.5, aspect_ratio: float = 0.33):
        self.min_scale, self.aspect_ratio = min_scale, aspect_ratio

    def _window(self, h: int, w: int) -> tuple[slice, slice] | None:
        for _ in range(10):
            area = h * w * np.random.uniform(self.min_scale, 1.0)
            ratio = np.random.uniform(self.aspect_ratio, 1.0 / self.aspect_ratio)
            dw, dh = int(np.sqrt(area * 1.0 * ratio)), int(np.sqrt(area * 1.0 / ratio))
            if np.random.randint(10) < 5:
                dw, dh = dh, dw
            if 0 < dh < h and 0 < dw < w:
                top = np.random.randint(0, h - dh)
                left = np.random.randint(0, w - dw)
                return slice(top, top + dh), slice(left, left + dw)
        return None

    def __call__(self, data: dict) -> dict:
        if self.min_scale == 0 or self.aspect_ratio == 0:
            return data
        h, w = data["img"].shape[0:2]
        window = self._window(h, w)
        if window is None:
            return data
        rows, cols = window
        return _each(data,
                     lambda a: cv2.resize(a[rows, cols], (w, h), interpolation=cv2.INTER_LINEAR),
                     lambda a: cv2.resize(a[rows, cols], (w, h), interpolation=cv2.INTER_NEAREST))


@register
class RandomAffine:
    """A random rotation (``-+max_rotation`` degrees), scale (``min/max_scale_factor`` times
    the fit to ``size``) and shift (``-+translation_offset`` pixels) of the image onto a
    ``size`` (w, h) canvas; image and labels pass through uint8."""

    def __init__(self, size=(224, 224), translation_offset: float = 0, max_rotation: float = 15,
                 min_scale_factor: float = 0.75, max_scale_factor: float = 1.25,
                 im_padding_value: float = 128, label_padding_value: int = 255):
        self.size = check_size(*_pair(size, "size"), "RandomAffine")
        self.translation_offset, self.max_rotation = translation_offset, max_rotation
        self.min_scale_factor, self.max_scale_factor = min_scale_factor, max_scale_factor
        self.im_padding_value, self.label_padding_value = im_padding_value, label_padding_value

    def _matrix(self, img_h: int, img_w: int) -> np.ndarray:
        w, h = self.size
        x_shift = (random.random() - 0.5) * 2 * self.translation_offset
        y_shift = (random.random() - 0.5) * 2 * self.translation_offset
        to_centre = np.array([[1.0, 0, (w - (img_w - 1)) / 2.0],
                              [0, 1.0, (h - (img_h - 1)) / 2.0], [0, 0, 1.0]])
        angle = random.random() * 2 * self.max_rotation - self.max_rotation
        scale = random.random() * (self.max_scale_factor - self.min_scale_factor) \
            + self.min_scale_factor
        scale *= np.mean([float(w) / max(img_w - 1, 1), float(h) / max(img_h - 1, 1)])
        a = scale * math.cos(angle / 180.0 * math.pi)
        b = scale * math.sin(angle / 180.0 * math.pi)
        cx, cy = w / 2.0 + x_shift, h / 2.0 + y_shift
        spin = np.array([[a, b, (1 - a) * cx - b * cy], [-b, a, b * cx + (1 - a) * cy],
                         [0, 0, 1.0]])
        return spin.dot(to_centre)[0:2, :]

    def __call__(self, data: dict) -> dict:
        matrix = self._matrix(*data["img"].shape[0:2])
        return _warp(data, matrix, self.size, self.im_padding_value, self.label_padding_value,
                     as_uint8=True)


# --------------------------------------------------------------------------- label edges
def mask_to_binary_edge(mask: np.ndarray, radius: float, num_classes: int) -> np.ndarray:
    """1 x H x W uint8: 1 where a pixel lies within ``radius`` of the boundary of a class
    region among ``0 .. num_classes - 1`` (the image border counts as a boundary).

    PaddleSeg's definition (per class, the distance to the nearest pixel on the other side of
    the class mask, padded by one pixel of "not this class"); classes absent from the mask
    add nothing."""
    if radius < 1:
        raise ValueError("radius must be at least 1")
    mask = mask.squeeze()
    edge = np.zeros(mask.shape, dtype=bool)
    for cls in range(num_classes):
        inside = np.pad((mask == cls).astype(np.uint8), 1)
        if not inside.any():
            continue
        dist = (cv2.distanceTransform(inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
                + cv2.distanceTransform(1 - inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE))
        edge |= dist[1:-1, 1:-1] <= radius
    return edge[None].astype(np.uint8)


# --------------------------------------------------------------------------- building
def build_transform(spec: Any, where: str):
    """One transform from ``{type: Name, arg: value, ...}``; bad names and arguments are a
    one-line ConfigError naming ``where``."""
    if not isinstance(spec, dict) or not spec.get("type"):
        raise ConfigError(f"{where} must be a mapping with a 'type'.",
                          solution=f"set {where}.type, for example RandomHorizontalFlip.")
    name, args = spec["type"], {k: v for k, v in spec.items() if k != "type"}
    if name not in TRANSFORMS:
        raise ConfigError(f"{where}.type='{name}' is not a transform segx knows."
                          + did_you_mean(str(name), TRANSFORMS),
                          solution=f"use one of {', '.join(sorted(TRANSFORMS))}.")
    cls = TRANSFORMS[name]
    params = inspect.signature(cls).parameters
    unknown = [k for k in args if k not in params]
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: {name} has no argument '{unknown[0]}'."
                          + did_you_mean(str(unknown[0]), params),
                          solution=f"valid arguments: {', '.join(params)}.")
    try:
        return cls(**args)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.message}", solution=exc.solution) from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"{where}: cannot build {name} ({exc}).",
                          solution=f"check the arguments under {where}.") from None


def build_transforms(specs: Sequence | None, where: str, to_rgb: bool = False) -> Compose:
    """A :class:`Compose` of ``[{type: ...}, ...]`` (segx feeds RGB images: no channel swap)."""
    if specs is not None and not isinstance(specs, (list, tuple)):
        raise ConfigError(f"{where} must be a list of transforms.",
                          solution=f"write {where} as a list of {{type: ...}} mappings.")
    return Compose([build_transform(s, f"{where}.{i}") for i, s in enumerate(specs or [])],
                   to_rgb=to_rgb)
