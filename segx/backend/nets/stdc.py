"""STDC backbones (Fan et al., "Rethinking BiSeNet For Real-time Semantic Segmentation",
CVPR 2021), written for segx with PaddleSeg's parameter names.

Layout: two stride-2 3x3 conv stems (base/2, then base channels) and three stages of
"short-term dense concatenate" blocks. Each block runs ``block_num`` convs in a chain whose
widths halve (out/2, out/4, ..., with the last two equal) and concatenates every link's output
to ``out`` channels; a stage's first block halves the resolution with a depthwise 3x3 conv
after its first link and a 3x3 average pool on the first link's output. Stage widths are 4, 8
and 16 times ``base``; the backbone returns the feature after each stem and each stage
(strides 2, 4, 8, 16, 32).

Parameter names (``features.<i>.conv_list.<j>.conv.weight``, ``.avd_layer.0.weight`` ...)
match PaddleSeg's, so its ImageNet and trained checkpoints load unchanged.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from segx.backend.nets import BACKBONES
from segx.backend.nets.layers import init_conv_weights


def _attr(lr: float):
    return paddle.ParamAttr(learning_rate=lr)


class ConvBNRelu(nn.Layer):
    """Bias-free conv (padding keeps the size at stride 1), BatchNorm, ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, lr: float = 1.0):
        super().__init__()
        self.conv = nn.Conv2D(cin, cout, kernel, stride=stride, padding=kernel // 2,
                              weight_attr=_attr(lr), bias_attr=False)
        self.bn = nn.BatchNorm2D(cout, weight_attr=_attr(lr), bias_attr=_attr(lr))
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


def link_widths(cout: int, links: int) -> list[int]:
    """Output widths of a block's chained convs: cout/2, cout/4, ... and the last repeated,
    so that they add up to ``cout``."""
    return [cout >> (i + 1) for i in range(links - 1)] + [cout >> (links - 1)]


class CatBottleneck(nn.Layer):
    """One STDC block: chained convs whose outputs are concatenated."""

    def __init__(self, cin: int, cout: int, links: int, stride: int, lr: float = 1.0):
        super().__init__()
        if links < 2:
            raise ValueError(f"block_num={links}: an STDC block needs at least 2 convs")
        widths = link_widths(cout, links)
        inputs = [cin] + widths[:-1]
        self.stride = stride
        # the list is registered before the stride-2 layers but filled after them: PaddleSeg's
        # state-dict order and parameter creation order (optimizer states key on the latter)
        self.conv_list = nn.LayerList()
        if stride == 2:
            half = widths[0]
            self.avd_layer = nn.Sequential(
                nn.Conv2D(half, half, 3, stride=2, padding=1, groups=half,
                          weight_attr=_attr(lr), bias_attr=False),
                nn.BatchNorm2D(half, weight_attr=_attr(lr), bias_attr=_attr(lr)))
            self.skip = nn.AvgPool2D(kernel_size=3, stride=2, padding=1)
        for i, (a, b) in enumerate(zip(inputs, widths)):
            self.conv_list.append(ConvBNRelu(a, b, kernel=1 if i == 0 else 3, lr=lr))

    def forward(self, x):
        first = self.conv_list[0](x)
        down = self.stride == 2
        h = self.avd_layer(first) if down else first
        pieces = [self.skip(first) if down else first]
        for conv in self.conv_list[1:]:
            h = conv(h)
            pieces.append(h)
        return paddle.concat(pieces, axis=1)


class STDCNet(nn.Layer):
    """The STDC backbone; ``layers`` gives the block count of each of the three stages."""

    def __init__(self, base: int = 64, layers=(4, 5, 3), block_num: int = 4, type: str = "cat",
                 relative_lr: float = 1.0, in_channels: int = 3, pretrained=None):
        super().__init__()
        if type != "cat":
            raise ValueError(f"type='{type}': segx's STDC implements the 'cat' blocks only "
                             "(set SEGX_NETWORKS=paddleseg for others)")
        self.layers = list(layers)
        self.feat_channels = [base // 2, base, base * 4, base * 8, base * 16]
        blocks = [ConvBNRelu(in_channels, base // 2, 3, 2, relative_lr),
                  ConvBNRelu(base // 2, base, 3, 2, relative_lr)]
        prev = base
        for stage, count in enumerate(self.layers):
            width = (base * 4) << stage
            for j in range(count):
                blocks.append(CatBottleneck(prev if j == 0 else width, width, block_num,
                                            2 if j == 0 else 1, relative_lr))
            prev = width
        self.features = nn.Sequential(*blocks)
        self.pretrained = pretrained
        init_conv_weights(self)

    def forward(self, x):
        feats = []
        ends = {1, 2}  # after each stem: blocks 0 and 1
        total = 2
        for count in self.layers:
            total += count
            ends.add(total)
        for i, block in enumerate(self.features):
            x = block(x)
            if i + 1 in ends:
                feats.append(x)
        return feats


@BACKBONES.add
def STDC1(block_num: int = 4, type: str = "cat", relative_lr: float = 1.0,
          in_channels: int = 3, pretrained=None):
    """STDC1: stages of 2, 2, 2 blocks."""
    return STDCNet(64, (2, 2, 2), block_num, type, relative_lr, in_channels, pretrained)


@BACKBONES.add
def STDC2(block_num: int = 4, type: str = "cat", relative_lr: float = 1.0,
          in_channels: int = 3, pretrained=None):
    """STDC2: stages of 4, 5, 3 blocks."""
    return STDCNet(64, (4, 5, 3), block_num, type, relative_lr, in_channels, pretrained)
