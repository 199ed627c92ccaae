"""MobileNetV3-Large (Howard et al., "Searching for MobileNetV3", ICCV 2019, arXiv:1905.02244)
as a segmentation backbone, written for segx with PaddleSeg's tensor and parameter names, so
PaddleSeg's ImageNet start (``mobilenetv3_large_x1_0_ssld``) and its trained LR-ASPP models load
unchanged.

The network: a stride-2 3x3 stem (hardswish) and fifteen inverted-residual blocks. Each block
expands with a 1x1 conv, filters with a depthwise kxk conv (its stride and dilation), optionally
re-weights the channels by squeeze-and-excitation (average pool, 1x1 down by 4, ReLU, 1x1 up,
hard sigmoid with slope 0.2 and offset 0.5), and projects with a linear 1x1 conv; the input is
added back when the shape is kept. The backbone returns the outputs of blocks 2, 5, 11 and 14
(strides 4, 8, 16, 32; the ``_os8`` variant keeps stride 8 from block 6 on and dilates instead).
Its norms are paddle's ``nn.BatchNorm`` with no weight decay on their scale and shift.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.regularizer import L2Decay

from segx.backend.nets import BACKBONES

# one row per block: kernel, expanded width, output width, squeeze-excite, activation,
# stride, dilation
_LARGE = [
    (3, 16, 16, False, "relu", 1, 1), (3, 64, 24, False, "relu", 2, 1),
    (3, 72, 24, False, "relu", 1, 1), (5, 72, 40, True, "relu", 2, 1),
    (5, 120, 40, True, "relu", 1, 1), (5, 120, 40, True, "relu", 1, 1),
    (3, 240, 80, False, "hardswish", 2, 1), (3, 200, 80, False, "hardswish", 1, 1),
    (3, 184, 80, False, "hardswish", 1, 1), (3, 184, 80, False, "hardswish", 1, 1),
    (3, 480, 112, True, "hardswish", 1, 1), (3, 672, 112, True, "hardswish", 1, 1),
    (5, 672, 160, True, "hardswish", 2, 1), (5, 960, 160, True, "hardswish", 1, 1),
    (5, 960, 160, True, "hardswish", 1, 1),
]
# output stride 8: blocks 6 and 12 keep the resolution; later blocks dilate by 2, the last two
# by 4 (block 6 itself is not dilated)
_OS8_DILATION = [1] * 7 + [2] * 6 + [4] * 2
_LARGE_OS8 = [row[:5] + (1 if i in (6, 12) else row[5], _OS8_DILATION[i])
              for i, row in enumerate(_LARGE)]
LARGE_FEATURES = (2, 5, 11, 14)  # the blocks whose outputs are returned
STEM_WIDTH = 16


def round_width(width: float, step: int = 8) -> int:
    """``width`` rounded to the nearest multiple of ``step`` (at least ``step``), one step
    more when rounding lost over 10% (the MobileNet rule for scaled widths)."""
    rounded = max(step, int(width + step / 2) // step * step)
    return rounded + step if rounded < 0.9 * width else rounded


def _acts() -> dict:
    return {"relu": nn.ReLU, "hardswish": nn.Hardswish}


class ConvBNLayer(nn.Layer):
    """Conv (``conv``, no bias), BatchNorm without weight decay (``bn``), optional activation."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: str | None = None, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv2D(cin, cout, kernel, stride=stride,
                              padding=(kernel - 1) // 2 * dilation, groups=groups,
                              dilation=dilation, bias_attr=False)
        no_decay = paddle.ParamAttr(regularizer=L2Decay(0.0))
        self.bn = nn.BatchNorm(cout, param_attr=no_decay,
                               bias_attr=paddle.ParamAttr(regularizer=L2Decay(0.0)))
        self.act = None if act is None else _acts()[act]()

    def forward(self, x):
        x = self.bn(self.conv(x))
        return x if self.act is None else self.act(x)


class SEModule(nn.Layer):
    """Squeeze-and-excitation: channel weights from the pooled input (``conv1``, ``conv2``)."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2D(channels, channels // reduction, 1)
        self.conv2 = nn.Conv2D(channels // reduction, channels, 1)

    def forward(self, x):
        w = F.relu(self.conv1(F.adaptive_avg_pool2d(x, 1)))
        return x * F.hardsigmoid(self.conv2(w), slope=0.2, offset=0.5)


class ResidualUnit(nn.Layer):
    """Inverted residual: ``expand_conv``, ``bottleneck_conv`` (depthwise), ``mid_se``,
    ``linear_conv``."""

    def __init__(self, cin: int, mid: int, cout: int, kernel: int, stride: int, use_se: bool,
                 act: str, dilation: int = 1):
        super().__init__()
        self.residual = stride == 1 and cin == cout
        self.expand_conv = ConvBNLayer(cin, mid, 1, act=act)
        self.bottleneck_conv = ConvBNLayer(mid, mid, kernel, stride, groups=mid, act=act,
                                           dilation=dilation)
        self.mid_se = SEModule(mid) if use_se else None
        self.linear_conv = ConvBNLayer(mid, cout, 1)

    def forward(self, x):
        y = self.bottleneck_conv(self.expand_conv(x))
        if self.mid_se is not None:
            y = self.mid_se(y)
        y = self.linear_conv(y)
        return x + y if self.residual else y


class MobileNetV3(nn.Layer):
    """The stem (``conv``) and the blocks (``blocks.<i>``) of ``rows``, widths times
    ``scale``; returns the outputs of the blocks in ``out_index``."""

    def __init__(self, rows, out_index, in_channels: int = 3, scale: float = 1.0,
                 pretrained=None):
        super().__init__()
        self.out_index = list(out_index)
        self.pretrained = pretrained
        cin = round_width(STEM_WIDTH * scale)
        self.conv = ConvBNLayer(in_channels, cin, 3, stride=2, act="hardswish")
        blocks = []
        for kernel, mid, cout, se, act, stride, dilation in rows:
            cout = round_width(cout * scale)
            blocks.append(ResidualUnit(cin, round_width(mid * scale), cout, kernel, stride,
                                       se, act, dilation))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.feat_channels = [round_width(rows[i][2] * scale) for i in self.out_index]

    def forward(self, x):
        x = self.conv(x)
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.out_index:
                feats.append(x)
        return feats


@BACKBONES.add
def MobileNetV3_large_x1_0(in_channels: int = 3, pretrained=None):
    """MobileNetV3-Large at width 1.0, output stride 32; features of 24, 40, 112, 160 channels."""
    return MobileNetV3(_LARGE, LARGE_FEATURES, in_channels, 1.0, pretrained)


@BACKBONES.add
def MobileNetV3_large_x1_0_os8(in_channels: int = 3, pretrained=None):
    """MobileNetV3-Large at width 1.0 with output stride 8 (dilated last stages)."""
    return MobileNetV3(_LARGE_OS8, LARGE_FEATURES, in_channels, 1.0, pretrained)
