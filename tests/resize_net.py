"""A tiny network for the oneDNN-resizing check in test_train.py (a module of its own: paddle's
dynamic-to-static conversion needs the class at module level, and test modules import paddle
lazily)."""
from __future__ import annotations

import zlib  # noqa: F401

import paddle
import paddle.nn.functional as F


class ResizeNet(paddle.nn.Layer):
    """Resizes to a size (as PP-LiteSeg does) or by a scale factor that need not divide the
    input (where oneDNN rounds differently from Paddle)."""

    def __init__(self, by_scale: bool):
        super().__init__()
        self.conv = paddle.nn.Conv2D(3, 4, 3, padding=1)
        self.by_scale = by_scale

    def forward(self, x):
        y = self.conv(x)
        if self.by_scale:
            return F.interpolate(y, scale_factor=0.25, mode="bilinear")
        return F.interpolate(y[:, :, ::4, ::4], paddle.shape(x)[2:], mode="bilinear")
