"""Attention U-Net (Oktay et al., "Attention U-Net: Learning Where to Look for the Pancreas",
MIDL 2018, arXiv:1804.03999) as PaddleSeg builds it, written for segx with PaddleSeg's
arguments and tensor names.

* Encoder: U-Net's (two 3x3 conv-BN-ReLU at 64, four pool + two conv steps), widths 64, 128,
  256, 512, 1024.
* Four decoder steps, deepest first: 2x bilinear upsampling and a 3x3 conv-BN-ReLU halving the
  width (``upN``); an attention gate (``attN``) that weighs the skip by a sigmoid map computed
  from 1x1 conv-BN projections of the upsampled map and of the skip (summed, ReLU, 1x1 conv-BN
  to one channel); the gated skip concatenated before the upsampled map; two 3x3 conv-BN-ReLU
  (``up_convN``).
* A 1x1 classifier with bias.

The decoder's norms are always plain BatchNorm (the encoder's follow segx's shared blocks).
Height and width must be multiples of 16.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from segx.backend.nets import MODELS
from segx.backend.nets.unet import PlainEncoder, check_channels

WIDTHS = (64, 128, 256, 512, 1024)


def conv_bn(cin: int, cout: int, kernel: int) -> list:
    """A conv with bias (padding keeps the size) and a plain BatchNorm."""
    return [nn.Conv2D(cin, cout, kernel, stride=1, padding=kernel // 2), nn.BatchNorm2D(cout)]


class Gate(nn.Layer):
    """The attention gate: ``W_g`` (from the decoder), ``W_x`` (from the skip), ``psi``."""

    def __init__(self, g_channels: int, x_channels: int, mid_channels: int):
        super().__init__()
        self.W_g = nn.Sequential(*conv_bn(g_channels, mid_channels, 1))
        self.W_x = nn.Sequential(*conv_bn(x_channels, mid_channels, 1))
        self.psi = nn.Sequential(*conv_bn(mid_channels, 1, 1), nn.Sigmoid())
        self.relu = nn.ReLU()

    def forward(self, g, x):
        weight = self.psi(self.relu(self.W_g(g) + self.W_x(x)))
        return x * weight


class Up(nn.Layer):
    """2x bilinear upsampling, then a 3x3 conv-BN-ReLU (in ``up``)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"),
                                *conv_bn(cin, cout, 3), nn.ReLU())

    def forward(self, x):
        return self.up(x)


class Fuse(nn.Layer):
    """Two 3x3 conv-BN-ReLU (in ``conv``)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Sequential(*conv_bn(cin, cout, 3), nn.ReLU(),
                                  *conv_bn(cout, cout, 3), nn.ReLU())

    def forward(self, x):
        return self.conv(x)


def _gate_widths(level: int) -> tuple:
    """(gate's g/x width, its inner width) for decoder level 5..2."""
    width = WIDTHS[level - 2]
    return width, (WIDTHS[level - 3] if level > 2 else width // 2)


@MODELS.add
class AttentionUNet(nn.Layer):
    """Attention U-Net; arguments and defaults as PaddleSeg's. One output in training and
    evaluation."""

    def __init__(self, num_classes: int, in_channels: int = 3, pretrained=None):
        super().__init__()
        check_channels("num_classes", num_classes)
        self.encoder = PlainEncoder(check_channels("in_channels", in_channels), WIDTHS)
        for level in (5, 4, 3, 2):
            width, inner = _gate_widths(level)
            setattr(self, f"up{level}", Up(WIDTHS[level - 1], width))
            setattr(self, f"att{level}", Gate(width, width, inner))
            setattr(self, f"up_conv{level}", Fuse(WIDTHS[level - 1], width))
        self.conv_1x1 = nn.Conv2D(WIDTHS[0], num_classes, kernel_size=1, stride=1, padding=0)
        self.pretrained = pretrained

    def forward(self, x):
        d, skips = self.encoder(x)
        for level, skip in zip((5, 4, 3, 2), reversed(skips)):
            d = getattr(self, f"up{level}")(d)
            gated = getattr(self, f"att{level}")(g=d, x=skip)
            d = getattr(self, f"up_conv{level}")(paddle.concat([gated, d], axis=1))
        return [self.conv_1x1(d)]
