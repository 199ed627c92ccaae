"""Losses written for segx: PaddleSeg's arguments, defaults and values, with every dtype cast
spelled out so that Paddle 3's strict type promotion (no float32 x int64) accepts them."""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from segx.backend.nets import LOSSES

EPS = 1e-8


@LOSSES.add
class CrossEntropyLoss(nn.Layer):
    """Pixel-wise cross entropy, averaged over the pixels that count.

    Args:
        weight: one rescaling weight per class (None: all 1).
        ignore_index: label value that contributes nothing (255).
        top_k_percent_pixels: in (0, 1]; below 1 only the hardest share of pixels is averaged.
        avg_non_ignore: average over non-ignored pixels only (True) or over all pixels.
        data_format: ``NCHW`` or ``NHWC`` logits.

    The value is ``sum(w_i * ce_i) / sum(w_i)`` over the counted pixels, where ``w_i`` is the
    weight of pixel i's class (1 without ``weight``); exactly PaddleSeg's, including its
    ``1e-8`` in the denominator.
    """

    def __init__(self, weight=None, ignore_index: int = 255, top_k_percent_pixels: float = 1.0,
                 avg_non_ignore: bool = True, data_format: str = "NCHW"):
        super().__init__()
        self.ignore_index = ignore_index
        self.top_k_percent_pixels = top_k_percent_pixels
        self.avg_non_ignore = avg_non_ignore
        self.data_format = data_format
        self.weight = None if weight is None else paddle.to_tensor(weight, dtype="float32")

    def forward(self, logit, label, semantic_weights=None):
        classes = logit.shape[1 if self.data_format == "NCHW" else -1]
        if self.weight is not None and classes != len(self.weight):
            raise ValueError(f"CrossEntropyLoss has {len(self.weight)} class weights but the "
                             f"network gives {classes} classes")
        if self.data_format == "NCHW":
            logit = paddle.transpose(logit, [0, 2, 3, 1])
        label = label.astype("int64")
        per_pixel = F.cross_entropy(logit, label, ignore_index=self.ignore_index,
                                    reduction="none", weight=self.weight).astype("float32")
        if per_pixel.ndim > label.ndim:
            per_pixel = paddle.squeeze(per_pixel, axis=-1)
        if self.avg_non_ignore:
            counted = (label != self.ignore_index).astype("float32")
        else:
            counted = paddle.ones(label.shape, dtype="float32")
        counted.stop_gradient = True
        per_pixel = per_pixel * counted
        if semantic_weights is not None:
            per_pixel = per_pixel * semantic_weights.astype("float32")
        pixel_weight = self._pixel_weight(label, counted, classes)
        return self._average(per_pixel, counted, pixel_weight)

    def _pixel_weight(self, label, counted, classes: int):
        """Each pixel's class weight (float32; 1 without class weights)."""
        if self.weight is None:
            return paddle.ones(label.shape, dtype="float32")
        safe = label * counted.astype("int64")  # ignored pixels point at class 0
        return paddle.sum(F.one_hot(safe, classes) * self.weight, axis=-1)

    def _average(self, per_pixel, counted, pixel_weight):
        pixel_weight.stop_gradient = True
        if self.top_k_percent_pixels == 1.0:
            return paddle.mean(per_pixel) / (paddle.mean(counted * pixel_weight) + EPS)
        flat = per_pixel.reshape([-1])
        k = int(self.top_k_percent_pixels * flat.numel())
        hardest, where = paddle.topk(flat, k)
        chosen = paddle.gather(pixel_weight.reshape([-1]), where)
        return hardest.mean() / (paddle.mean(chosen) + EPS)
