"""Tiny networks for the export checks in test_train.py (a module of their own: paddle's
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


class AttentionNet(paddle.nn.Layer):
    """ANN's attention pattern (reshape, transpose, matmul against pooled keys), which Paddle
    Inference 2.6's reshape_transpose_matmul fusion gets wrong."""

    def __init__(self):
        super().__init__()
        self.query = paddle.nn.Conv2D(3, 8, 1)
        self.key = paddle.nn.Conv2D(3, 8, 1)
        self.value = paddle.nn.Conv2D(3, 8, 1)
        self.out = paddle.nn.Conv2D(8, 3, 1)

    @staticmethod
    def _pooled(x):
        return paddle.concat([paddle.reshape(F.adaptive_avg_pool2d(x, s), (0, 8, -1))
                              for s in (1, 3, 6)], axis=-1)

    def forward(self, x):
        query = paddle.transpose(paddle.reshape(self.query(x), (0, 8, -1)), (0, 2, 1))
        sim = F.softmax(paddle.matmul(query, self._pooled(self.key(x))) * 8 ** -0.5, axis=-1)
        value = paddle.transpose(self._pooled(self.value(x)), (0, 2, 1))
        context = paddle.transpose(paddle.matmul(sim, value), (0, 2, 1))
        shape = paddle.shape(x)
        return self.out(paddle.reshape(context, [0, 8, shape[2], shape[3]]))
