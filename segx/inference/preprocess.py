"""Inference pre-processing without paddle: the transforms an ``inference.yml`` lists, on numpy.

Exported models carry their pre-processing (``Deploy.transforms``, PaddleSeg's names and
arguments). These are the deterministic ones PaddleSeg offers for evaluation and inference,
computed exactly as PaddleSeg 2.8 does (tests compare them), so a deployed model predicts with
numpy and OpenCV only; other names are segx's training transforms
(:mod:`segx.imaging.transforms`, PaddleSeg's names, no paddle either). Each returns the image
and records what it did in ``trans_info``, which :func:`segx.imaging.tta.restore` undoes on the
output.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import cv2
import numpy as np

from segx.imaging import transforms as own
from segx.utils.errors import ConfigError, did_you_mean

_INTERP = {"NEAREST": cv2.INTER_NEAREST, "LINEAR": cv2.INTER_LINEAR, "CUBIC": cv2.INTER_CUBIC,
           "AREA": cv2.INTER_AREA, "LANCZOS4": cv2.INTER_LANCZOS4}


def _resize_to(img: np.ndarray, w: int, h: int, interp: int = cv2.INTER_LINEAR) -> np.ndarray:
    return cv2.resize(img, own.check_size(w, h, "a resize of Deploy.transforms"),
                      interpolation=interp)


def _scaled(img: np.ndarray, scale: float) -> tuple[int, int]:
    return int(round(img.shape[1] * scale)), int(round(img.shape[0] * scale))


class Normalize:
    """``(x / 255 - mean) / std``; as the last transform it also lays the image out as
    C x H x W, in one multiply-add per channel (:meth:`to_chw`, ten times faster than the three
    passes and the transposed copy; the same values to 1e-7)."""

    def __init__(self, mean=(0.5,), std=(0.5,)):
        self.mean, self.std = np.array(mean), np.array(std)
        if np.prod(self.std) == 0:
            raise ConfigError(f"Normalize std={list(std)} has a zero.", solution="fix the std.")

    def __call__(self, img, info):
        img = img.astype(np.float32, copy=False) / 255.0
        img -= self.mean
        img /= self.std
        return img

    def to_chw(self, img: np.ndarray) -> np.ndarray:
        channels = 1 if img.ndim == 2 else img.shape[2]
        scale = np.broadcast_to(1.0 / (255.0 * self.std), (channels,)).astype(np.float32)
        bias = np.broadcast_to(-self.mean / self.std, (channels,)).astype(np.float32)
        out = np.empty((channels, *img.shape[:2]), np.float32)
        for c in range(channels):
            plane = img if img.ndim == 2 else img[..., c]
            np.multiply(plane, scale[c], out=out[c], casting="unsafe")
            out[c] += bias[c]
        return out


def normalize(mean=(0.5,), std=(0.5,)):
    return Normalize(mean, std)


def resize(target_size=(512, 512), keep_ratio=False, size_divisor=None, interp="LINEAR"):
    if interp not in _INTERP:
        raise ConfigError(f"Resize interp='{interp}' is not one of {', '.join(_INTERP)}.",
                          solution="use LINEAR for inference.")

    def op(img, info):
        info.append(("resize", img.shape[0:2]))
        size = list(target_size)
        if keep_ratio:
            h, w = img.shape[0:2]
            scale = min(max(size) / max(w, h), min(size) / min(w, h))
            size = [round(w * scale), round(h * scale)]
        if size_divisor:
            size = [math.ceil(i / size_divisor) * size_divisor for i in size]
        return _resize_to(img, size[0], size[1], _INTERP[interp])
    return op


def resize_by_long(long_size):
    def op(img, info):
        info.append(("resize", img.shape[0:2]))
        return _resize_to(img, *_scaled(img, long_size / max(img.shape[:2])))
    return op


def resize_by_short(short_size, max_size=1e10):
    def op(img, info):
        h, w = img.shape[0:2]
        info.append(("resize", (h, w)))
        short = short_size
        if short / min(h, w) * max(h, w) > max_size:
            short = int((max_size / max(h, w)) * min(h, w))
        return _resize_to(img, *_scaled(img, short / min(h, w)))
    return op


def limit_long(max_long=None, min_long=None):
    def op(img, info):
        info.append(("resize", img.shape[0:2]))
        long_edge = max(img.shape[:2])
        target = long_edge
        if max_long is not None and long_edge > max_long:
            target = max_long
        elif min_long is not None and long_edge < min_long:
            target = min_long
        return img if target == long_edge else _resize_to(img, *_scaled(img, target / long_edge))
    return op


def padding(target_size, im_padding_value=127.5, label_padding_value=255):  # noqa: ARG001
    tw, th = (target_size, target_size) if isinstance(target_size, int) else target_size

    def op(img, info):
        info.append(("padding", img.shape[0:2]))
        h, w = img.shape[:2]
        if th < h or tw < w:
            raise ConfigError(f"an image of {w}x{h} is larger than Padding target_size "
                              f"{tw}x{th}.", solution="resize before padding in the transforms.")
        own.check_size(tw, th, "Padding")
        return cv2.copyMakeBorder(img, 0, th - h, 0, tw - w, cv2.BORDER_CONSTANT,
                                  value=(im_padding_value,) * (1 if img.ndim == 2 else img.shape[2]))
    return op


TRANSFORMS: dict[str, Callable[..., Callable]] = {
    "Normalize": normalize, "Resize": resize, "ResizeByLong": resize_by_long,
    "ResizeByShort": resize_by_short, "LimitLong": limit_long, "Padding": padding}


def _op(spec: dict, where: str) -> Callable:
    """One transform: the fast numpy version above, or segx's training transform of that name
    (:mod:`segx.imaging.transforms`, PaddleSeg's names; no paddle either)."""
    name = spec.pop("type", None)
    if name not in TRANSFORMS:
        if name not in own.TRANSFORMS:
            known = {*TRANSFORMS, *own.TRANSFORMS}
            raise ConfigError(f"{where}: '{name}' is not a transform segx knows."
                              + did_you_mean(str(name), known),
                              solution=f"use one of {', '.join(sorted(known))}.")
        transform = own.build_transform({"type": name, **spec}, where)

        def sample_op(img, info):
            return transform({"img": img, "trans_info": info, "gt_fields": []})["img"]
        return sample_op
    try:
        return TRANSFORMS[name](**spec)
    except TypeError as exc:
        raise ConfigError(f"{where}: {name}: {exc}.",
                          solution=f"check the arguments of {name}.") from None


def preprocessor(specs: list[dict[str, Any]] | None, where: str = "Deploy.transforms"
                 ) -> Callable[[np.ndarray], tuple[np.ndarray, list]]:
    """A function RGB H x W x 3 uint8 -> (3 x h x w float32, trans_info) for ``specs``."""
    ops = [_op(dict(spec), f"{where}.{i}") for i, spec in enumerate(specs or [])]
    last = ops.pop() if ops and isinstance(ops[-1], Normalize) else None

    def prepare(rgb: np.ndarray) -> tuple[np.ndarray, list]:
        # other transforms work on float32, as PaddleSeg's do (a resize of uint8 would round)
        img, info = (rgb.astype(np.float32) if ops or last is None else rgb), []
        for op in ops:
            img = op(img, info)
        if last is not None:
            return last.to_chw(img), info
        if img.ndim == 2:
            img = img[..., None]
        return np.ascontiguousarray(img.transpose(2, 0, 1)), info
    return prepare
