"""GCNet (Cao et al., "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
ICCVW 2019), written for segx with PaddleSeg's arguments, defaults and tensor names.

* Head on the deeper feature (``backbone_indices[1]``): a 3x3 ConvBNReLU to ``gc_channels``,
  a global context block, another 3x3 ConvBNReLU; concatenated after the feature itself and
  fused by a third 3x3 ConvBNReLU; dropout 0.1, a 1x1 classifier.
* Global context block: a 1x1 conv to one channel scores every pixel, a softmax over the pixels
  weighs them into one context vector; a bottleneck transform (1x1 conv to
  int(``gc_channels`` x ``ratio``), LayerNorm over (C, 1, 1), ReLU, 1x1 conv back) of it is
  added to every pixel.
* With ``enable_auxiliary_loss``, an auxiliary FCN head (``AuxLayer``, a quarter of the width)
  on the shallower feature gives a second logit map, in evaluation as in training.

Every logit map is upsampled (bilinear, ``align_corners`` as given) to the input size.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from segx.backend.nets import MODELS
from segx.backend.nets.layers import AuxLayer, ConvBNReLU, UpsampledHeadNet, picked_channels


def bottleneck_width(channels: int, ratio) -> int:
    ok = isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and 0 < ratio <= 1
    width = int(channels * ratio) if ok else 0
    if width < 1:
        raise ValueError(f"ratio={ratio!r}: give a number in (0, 1] that leaves at least one "
                         f"of the {channels} channels")
    return width


class GlobalContextBlock(nn.Layer):
    """Global context block (see the module docstring); adds its context to ``x``."""

    def __init__(self, gc_channels: int, in_channels: int, ratio: float):
        super().__init__()
        self.gc_channels = gc_channels
        self.conv_mask = nn.Conv2D(in_channels, 1, kernel_size=1)
        self.softmax = nn.Softmax(axis=2)
        width = bottleneck_width(in_channels, ratio)
        self.channel_add_conv = nn.Sequential(
            nn.Conv2D(in_channels, width, kernel_size=1),
            nn.LayerNorm(normalized_shape=[width, 1, 1]),
            nn.ReLU(),
            nn.Conv2D(width, in_channels, kernel_size=1))

    def context(self, x):
        """[N, C, 1, 1]: the pixels of ``x`` averaged with softmax weights from ``conv_mask``."""
        weights = self.softmax(paddle.reshape(self.conv_mask(x), [0, 1, -1]))  # N, 1, HW
        pixels = paddle.reshape(x, [0, self.gc_channels, -1])  # N, C, HW
        pooled = paddle.matmul(pixels.unsqueeze(1), weights.unsqueeze(-1))  # N, 1, C, 1
        return paddle.reshape(pooled, [0, self.gc_channels, 1, 1])

    def forward(self, x):
        return x + self.channel_add_conv(self.context(x))


class GCNetHead(nn.Layer):
    def __init__(self, num_classes: int, backbone_indices, backbone_channels,
                 gc_channels: int, ratio: float, enable_auxiliary_loss: bool = True):
        super().__init__()
        deep = backbone_channels[1]
        self.conv_bn_relu1 = ConvBNReLU(deep, gc_channels, 3, padding=1)
        self.gc_block = GlobalContextBlock(gc_channels, gc_channels, ratio)
        self.conv_bn_relu2 = ConvBNReLU(gc_channels, gc_channels, 3, padding=1)
        self.conv_bn_relu3 = ConvBNReLU(deep + gc_channels, gc_channels, 3, padding=1)
        self.dropout = nn.Dropout(p=0.1)
        self.conv = nn.Conv2D(gc_channels, num_classes, kernel_size=1)
        if enable_auxiliary_loss:
            low = backbone_channels[0]
            self.auxlayer = AuxLayer(low, low // 4, num_classes)
        self.backbone_indices = list(backbone_indices)
        self.enable_auxiliary_loss = enable_auxiliary_loss

    def forward(self, feats):
        low, deep = (feats[i] for i in self.backbone_indices)
        ctx = self.conv_bn_relu2(self.gc_block(self.conv_bn_relu1(deep)))
        fused = self.conv_bn_relu3(paddle.concat([deep, ctx], axis=1))
        logits = [self.conv(self.dropout(fused))]
        if self.enable_auxiliary_loss:
            logits.append(self.auxlayer(low))
        return logits


@MODELS.add
class GCNet(UpsampledHeadNet):
    """GCNet; arguments and defaults as PaddleSeg's (``pretrained``: segx loads weights
    itself, so its builder accepts only None)."""

    def __init__(self, num_classes: int, backbone: nn.Layer, backbone_indices=(2, 3),
                 gc_channels: int = 512, ratio: float = 0.25,
                 enable_auxiliary_loss: bool = True, align_corners: bool = False,
                 pretrained=None):
        super().__init__()
        chans = picked_channels(backbone, backbone_indices, 2, "GCNet")
        self.backbone = backbone
        self.head = GCNetHead(num_classes, backbone_indices, chans, gc_channels, ratio,
                              enable_auxiliary_loss)
        self.align_corners, self.pretrained = align_corners, pretrained


