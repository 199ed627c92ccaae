"""ShuffleNetV2 (Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture
Design", ECCV 2018, arXiv:1807.11164) as a segmentation backbone, written for segx with
PaddleSeg's tensor names and its explicit parameter names (``stage_2_1_conv1_weights``,
``..._bn_scale`` ...), so PaddleSeg's checkpoints load unchanged.

The network: a stride-2 3x3 stem and a stride-2 3x3 max pool, then three stages of 4, 8 and 4
units. A stage's first unit halves the resolution with two branches (depthwise 3x3 stride 2 then
1x1; 1x1, depthwise 3x3 stride 2, 1x1); every later unit keeps one half of the channels and
passes the other half through 1x1, depthwise 3x3, 1x1. The two halves are then interleaved
(a channel shuffle with two groups). Depthwise convs have no activation. Features: the pooled
stem and the end of each stage (strides 4, 8, 16, 32).
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from segx.backend.nets import BACKBONES

UNITS = (4, 8, 4)  # units per stage
WIDTHS = {1.0: (24, 116, 232, 464)}  # stem, stage 2, 3, 4 output channels
_ACTS = {"relu": F.relu, "swish": F.swish}


def interleave(a, b):
    """Channels a0, b0, a1, b1, ...: concatenation then a two-group channel shuffle."""
    return paddle.flatten(paddle.stack([a, b], axis=2), start_axis=1, stop_axis=2)


class ConvBNLayer(nn.Layer):
    """Conv (``_conv``, Kaiming-normal start, no bias) and BatchNorm (``_batch_norm``), their
    parameters named from ``name``; the activation ``act`` (None: none) after the norm."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int = 1,
                 act: str | None = None, name: str = ""):
        super().__init__()
        self._conv = nn.Conv2D(
            cin, cout, kernel, stride=stride, padding=(kernel - 1) // 2, groups=groups,
            weight_attr=paddle.ParamAttr(initializer=nn.initializer.KaimingNormal(),
                                         name=f"{name}_weights"),
            bias_attr=False)
        self._batch_norm = nn.BatchNorm(
            cout, param_attr=paddle.ParamAttr(name=f"{name}_bn_scale"),
            bias_attr=paddle.ParamAttr(name=f"{name}_bn_offset"),
            moving_mean_name=f"{name}_bn_mean", moving_variance_name=f"{name}_bn_variance")
        self._act_fn = None if act is None else _ACTS[act]

    def forward(self, x):
        x = self._batch_norm(self._conv(x))
        return x if self._act_fn is None else self._act_fn(x)


class InvertedResidual(nn.Layer):
    """A unit that keeps the size: the second half of the channels goes through
    ``_conv_pw``, ``_conv_dw``, ``_conv_linear``."""

    def __init__(self, channels: int, act: str, name: str):
        super().__init__()
        half, tag = channels // 2, f"stage_{name}"
        self._conv_pw = ConvBNLayer(half, half, 1, 1, act=act, name=f"{tag}_conv1")
        self._conv_dw = ConvBNLayer(half, half, 3, 1, groups=half, name=f"{tag}_conv2")
        self._conv_linear = ConvBNLayer(half, half, 1, 1, act=act, name=f"{tag}_conv3")

    def forward(self, x):
        kept, passed = paddle.split(x, 2, axis=1)
        return interleave(kept, self._conv_linear(self._conv_dw(self._conv_pw(passed))))


class InvertedResidualDS(nn.Layer):
    """A stage's first unit (stride 2): ``_conv_dw_1``/``_conv_linear_1`` on one branch,
    ``_conv_pw_2``/``_conv_dw_2``/``_conv_linear_2`` on the other."""

    def __init__(self, cin: int, cout: int, act: str, name: str):
        super().__init__()
        half, tag = cout // 2, f"stage_{name}"
        self._conv_dw_1 = ConvBNLayer(cin, cin, 3, 2, groups=cin, name=f"{tag}_conv4")
        self._conv_linear_1 = ConvBNLayer(cin, half, 1, 1, act=act, name=f"{tag}_conv5")
        self._conv_pw_2 = ConvBNLayer(cin, half, 1, 1, act=act, name=f"{tag}_conv1")
        self._conv_dw_2 = ConvBNLayer(half, half, 3, 2, groups=half, name=f"{tag}_conv2")
        self._conv_linear_2 = ConvBNLayer(half, half, 1, 1, act=act, name=f"{tag}_conv3")

    def forward(self, x):
        left = self._conv_linear_1(self._conv_dw_1(x))
        right = self._conv_linear_2(self._conv_dw_2(self._conv_pw_2(x)))
        return interleave(left, right)


class ShuffleNet(nn.Layer):
    """Stem ``_conv1`` + ``_max_pool``, then units named ``<stage>_<unit>`` (``2_1`` ... ``4_4``)."""

    def __init__(self, scale: float = 1.0, act: str = "relu", in_channels: int = 3,
                 pretrained=None):
        super().__init__()
        if scale not in WIDTHS or act not in _ACTS:
            raise ValueError(f"ShuffleNetV2 scale={scale}, act={act!r}: segx has scale "
                             f"{', '.join(map(str, WIDTHS))} with act {' or '.join(_ACTS)} "
                             "(SEGX_NETWORKS=paddleseg has the others)")
        widths = WIDTHS[scale]
        self.pretrained = pretrained
        self.feat_channels = list(widths)
        self._conv1 = ConvBNLayer(in_channels, widths[0], 3, 2, act=act, name="stage1_conv")
        self._max_pool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
        self._stages = []
        for s, units in enumerate(UNITS):
            stage = []
            for u in range(units):
                name = f"{s + 2}_{u + 1}"
                unit = (InvertedResidualDS(widths[s], widths[s + 1], act, name) if u == 0
                        else InvertedResidual(widths[s + 1], act, name))
                stage.append(self.add_sublayer(name, unit))
            self._stages.append(stage)

    def forward(self, x):
        x = self._max_pool(self._conv1(x))
        feats = [x]
        for stage in self._stages:
            for unit in stage:
                x = unit(x)
            feats.append(x)
        return feats


@BACKBONES.add
def ShuffleNetV2_x1_0(act: str = "relu", in_channels: int = 3, pretrained=None):
    """ShuffleNetV2 at width 1.0: features of 24, 116, 232 and 464 channels."""
    return ShuffleNet(1.0, act, in_channels, pretrained)
