"""U-Net (Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015, arXiv:1505.04597) as PaddleSeg's zoo builds it, written for segx
with PaddleSeg's arguments and tensor names.

* Encoder: two 3x3 conv-BN-ReLU at 64 channels, then four steps of 2x2 max pooling and two
  3x3 conv-BN-ReLU (64->128->256->512->512); the map before each pooling is kept as a skip.
* Decoder: four steps that bring the map up to its skip's size (bilinear resize with
  ``align_corners``, or with ``use_deconv`` a 2x2 stride-2 transposed conv to half the step's
  output width), concatenate the skip after it, and apply two 3x3 conv-BN-ReLU
  (512->256->128->64->64).
* A 3x3 classifier with bias; PaddleSeg keeps it under two names, ``cls`` and ``conv`` (the
  same layer, so a checkpoint holds its tensors twice).

Without ``use_deconv`` any input size of at least 16x16 works; with it, height and width must
be multiples of 16 (the transposed conv doubles the size exactly).
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from segx.backend.nets import MODELS
from segx.backend.nets.layers import ConvBNReLU, resize_like

ENCODER_WIDTHS = (64, 128, 256, 512, 512)
DECODER_WIDTHS = (256, 128, 64, 64)


def check_channels(name: str, value) -> int:
    """``value`` as a channel count, or a ValueError naming the argument."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4096:
        raise ValueError(f"{name}={value!r}: give an integer from 1 to 4096")
    return value


def check_flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r}: give true or false")
    return value


def two_convs(cin: int, cout: int) -> list:
    """Two 3x3 ConvBNReLU, ``cin`` -> ``cout`` -> ``cout``."""
    return [ConvBNReLU(cin, cout, 3), ConvBNReLU(cout, cout, 3)]


class PlainEncoder(nn.Layer):
    """``double_conv`` at full size, then ``down_sample_list``: one (pool, conv, conv) step per
    following width of ``widths``. Returns the deepest map and the skips, shallowest first."""

    def __init__(self, in_channels: int, widths):
        super().__init__()
        self.double_conv = nn.Sequential(*two_convs(in_channels, widths[0]))
        self.down_sample_list = nn.LayerList([
            nn.Sequential(nn.MaxPool2D(kernel_size=2, stride=2), *two_convs(cin, cout))
            for cin, cout in zip(widths[:-1], widths[1:])])

    def forward(self, x):
        x = self.double_conv(x)
        skips = []
        for step in self.down_sample_list:
            skips.append(x)
            x = step(x)
        return x, skips


class UpStep(nn.Layer):
    """Upsample to the skip (resize, or ``deconv``), concatenate, ``double_conv``."""

    def __init__(self, cin: int, cout: int, align_corners: bool, use_deconv: bool):
        super().__init__()
        self.align_corners, self.use_deconv = align_corners, use_deconv
        if use_deconv:
            self.deconv = nn.Conv2DTranspose(cin, cout // 2, kernel_size=2, stride=2,
                                             padding=0)
            merged = cin + cout // 2
        else:
            merged = 2 * cin
        self.double_conv = nn.Sequential(*two_convs(merged, cout))

    def forward(self, x, skip):
        x = self.deconv(x) if self.use_deconv else \
            resize_like(x, skip, align_corners=self.align_corners)
        return self.double_conv(paddle.concat([x, skip], axis=1))


class PlainDecoder(nn.Layer):
    def __init__(self, align_corners: bool, use_deconv: bool):
        super().__init__()
        cins = (ENCODER_WIDTHS[-1],) + DECODER_WIDTHS[:-1]
        self.up_sample_list = nn.LayerList([
            UpStep(cin, cout, align_corners, use_deconv)
            for cin, cout in zip(cins, DECODER_WIDTHS)])

    def forward(self, x, skips):
        for step, skip in zip(self.up_sample_list, reversed(skips)):
            x = step(x, skip)
        return x


@MODELS.add
class UNet(nn.Layer):
    """U-Net; arguments and defaults as PaddleSeg's (``pretrained``: segx loads weights
    itself, so its builder accepts only None). One output in training and evaluation."""

    def __init__(self, num_classes: int, align_corners: bool = False,
                 use_deconv: bool = False, in_channels: int = 3, pretrained=None):
        super().__init__()
        check_channels("num_classes", num_classes)
        self.encode = PlainEncoder(check_channels("in_channels", in_channels), ENCODER_WIDTHS)
        self.decode = PlainDecoder(check_flag("align_corners", align_corners),
                                   check_flag("use_deconv", use_deconv))
        self.cls = self.conv = nn.Conv2D(DECODER_WIDTHS[-1], num_classes, kernel_size=3,
                                         stride=1, padding=1)
        self.pretrained = pretrained

    def forward(self, x):
        deep, skips = self.encode(x)
        return [self.cls(self.decode(deep, skips))]
