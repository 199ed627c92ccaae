"""Multi-scale, flip and sliding-window inference around any ``N x 3 x H x W -> N x C x H x W``
scoring function (the dynamic-graph model in evaluate, the exported engine in predict)."""
from __future__ import annotations

from typing import Callable, Sequence

import cv2
import numpy as np

Scorer = Callable[[np.ndarray], np.ndarray]


def resize_scores(scores: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of N x C x h' x w' maps (or an N x 3 image batch) to h x w."""
    out = []
    for s in scores:
        hwc = cv2.resize(np.ascontiguousarray(s.transpose(1, 2, 0)), (w, h),
                         interpolation=cv2.INTER_LINEAR)
        out.append(hwc.reshape(h, w, -1).transpose(2, 0, 1))
    return np.stack(out)


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


def scores(run: Scorer, batch: np.ndarray, scales: Sequence[float] = (1.0,),
           flip_h: bool = False, flip_v: bool = False, crop: Sequence[int] | None = None,
           stride: Sequence[int] | None = None, probabilities: bool = False) -> np.ndarray:
    """Class scores for ``batch``.

    With one scale, no flip and no window: ``run(batch)`` as it is (logits). Otherwise the mean,
    over scales and flips, of the softmax (``probabilities=True``: ``run`` already gives them).
    """
    if list(scales) == [1.0] and not flip_h and not flip_v and not crop:
        return run(batch)
    n, _, h, w = batch.shape
    total = None
    flips = [None] + ([3] if flip_h else []) + ([2] if flip_v else [])
    for s in scales:
        xs = batch if s == 1.0 else resize_scores(batch, max(int(h * s + .5), 1),
                                                  max(int(w * s + .5), 1))
        for axis in flips:
            xi = xs if axis is None else np.ascontiguousarray(np.flip(xs, axis))
            out = _windows(run, xi, crop, stride or crop) if crop else run(xi)
            if axis is not None:
                out = np.flip(out, axis)
            if not probabilities:
                out = _softmax(out)
            if out.shape[2:] != (h, w):
                out = resize_scores(out, h, w)
            total = out if total is None else total + out
    return total
