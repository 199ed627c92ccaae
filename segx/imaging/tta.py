"""Test-time augmentation and the geometry around inference, for every engine.

Multi-scale, flip and sliding-window inference wrap any ``N x 3 x H x W -> N x C x H x W``
scoring function (the dynamic-graph model in evaluate, an exported engine in predict); their
settings travel together as one :class:`TTA`. :func:`restore` undoes the pre-processing's
resizes and paddings on the output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from segx.utils.errors import ConfigError

Scorer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class TTA:
    """Test-time augmentation settings: scales, flips and a sliding window ([w, h])."""

    scales: tuple[float, ...] = (1.0,)
    flip_horizontal: bool = False
    flip_vertical: bool = False
    crop_size: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ConfigError(f"scales={list(self.scales)} must be positive factors.",
                              solution="use for example scales=[0.75, 1.0, 1.25].")
        if self.stride and not self.crop_size:
            raise ConfigError("a sliding-window stride is set but crop_size is not.",
                              solution="set both for sliding-window inference, e.g. "
                                       "crop_size=[512, 512] and stride=[384, 384].")
        for key in ("crop_size", "stride"):
            v = getattr(self, key)
            if v is None:
                continue
            if len(v) != 2 or any(not isinstance(x, int) or isinstance(x, bool) or x <= 0
                                  for x in v):
                raise ConfigError(f"{key}={list(v)} must be two positive integers [w, h].",
                                  solution=f"write {key}=[512, 512].")
            object.__setattr__(self, key, tuple(v))
        if self.crop_size and not self.stride:
            object.__setattr__(self, "stride", self.crop_size)
        if self.crop_size and any(s > c for s, c in zip(self.stride, self.crop_size)):
            raise ConfigError(f"stride={list(self.stride)} is larger than crop_size="
                              f"{list(self.crop_size)}: pixels between windows would get no "
                              "score.", solution="use a stride at most the crop size, e.g. 3/4 "
                                                 "of it for overlapping windows.")

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> "TTA":
        """From a config section holding scales/flip_horizontal/flip_vertical/crop_size/stride."""
        return cls(tuple(section.get("scales") or (1.0,)), bool(section.get("flip_horizontal")),
                   bool(section.get("flip_vertical")), section.get("crop_size"),
                   section.get("stride"))

    @property
    def active(self) -> bool:
        """Whether anything beyond one plain forward pass is asked for."""
        return self.scales != (1.0,) or self.flip_horizontal or self.flip_vertical \
            or self.crop_size is not None

    def as_dict(self) -> dict:
        return {"scales": list(self.scales), "flip_horizontal": self.flip_horizontal,
                "flip_vertical": self.flip_vertical,
                "crop_size": list(self.crop_size) if self.crop_size else None,
                "stride": list(self.stride) if self.stride else None}


NO_TTA = TTA()


def resize_scores(scores: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of N x C x h' x w' maps (or an N x 3 image batch) to h x w."""
    out = []
    for s in scores:
        hwc = cv2.resize(np.ascontiguousarray(s.transpose(1, 2, 0)), (w, h),
                         interpolation=cv2.INTER_LINEAR)
        out.append(hwc.reshape(h, w, -1).transpose(2, 0, 1))
    return np.stack(out)


def resize_nearest(ids: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour resize of the last two axes (class-id maps, any leading axes)."""
    rows = (np.arange(h) * ids.shape[-2] / h).astype(int)
    cols = (np.arange(w) * ids.shape[-1] / w).astype(int)
    return ids[..., rows[:, None], cols]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _windows(run: Scorer, x: np.ndarray, crop: Sequence[int], stride: Sequence[int]):
    """Windows of ``crop`` (w, h) every ``stride`` (w, h); overlapping scores averaged."""
    _, _, h, w = x.shape
    cw, ch = min(crop[0], w), min(crop[1], h)
    ys = sorted({min(y, h - ch) for y in range(0, max(h - ch, 0) + stride[1], stride[1])})
    xs = sorted({min(v, w - cw) for v in range(0, max(w - cw, 0) + stride[0], stride[0])})
    total = count = None
    for y0 in ys:
        for x0 in xs:
            out = run(np.ascontiguousarray(x[:, :, y0:y0 + ch, x0:x0 + cw]))
            if total is None:
                total = np.zeros((x.shape[0], out.shape[1], h, w), np.float32)
                count = np.zeros((1, 1, h, w), np.float32)
            total[:, :, y0:y0 + ch, x0:x0 + cw] += out
            count[:, :, y0:y0 + ch, x0:x0 + cw] += 1
    return total / count


def scores(run: Scorer, batch: np.ndarray, tta: TTA = NO_TTA,
           probabilities: bool = False) -> np.ndarray:
    """Class scores for ``batch``.

    Without augmentation: ``run(batch)`` as it is (logits). Otherwise the mean, over scales and
    flips, of the softmax (``probabilities=True``: ``run`` already gives probabilities).
    """
    if not tta.active:
        return run(batch)
    n, _, h, w = batch.shape
    total, views = None, 0
    flips = [None] + ([3] if tta.flip_horizontal else []) + ([2] if tta.flip_vertical else [])
    for s in tta.scales:
        xs = batch if s == 1.0 else resize_scores(batch, max(int(h * s + .5), 1),
                                                  max(int(w * s + .5), 1))
        for axis in flips:
            xi = xs if axis is None else np.ascontiguousarray(np.flip(xs, axis))
            out = _windows(run, xi, tta.crop_size, tta.stride) if tta.crop_size else run(xi)
            if axis is not None:
                out = np.flip(out, axis)
            if not probabilities:
                out = _softmax(out)
            if out.shape[2:] != (h, w):
                out = resize_scores(out, h, w)
            total = out if total is None else total + out
            views += 1
    return total / views


def restore(score: np.ndarray, trans_info: list, nearest: bool = False) -> np.ndarray:
    """Undo the pre-processing's resizes and paddings on one C x h x w (or h x w) map."""
    for item in reversed(trans_info):
        kind = item[0][0] if isinstance(item[0], list) else item[0]
        h, w = item[1]
        if kind == "resize":
            if score.ndim == 2 or nearest:
                score = resize_nearest(score, h, w)
            else:
                score = resize_scores(score[None], h, w)[0]
        elif kind == "padding":
            score = score[..., :h, :w]
    return score
