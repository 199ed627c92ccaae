"""ANN, the asymmetric non-local network (Zhu et al., "Asymmetric Non-local Neural Networks for
Semantic Segmentation", ICCV 2019), written for segx with PaddleSeg's arguments, defaults and
tensor names.

Both attention modules let every pixel of a query map attend to a few pooled positions only:
keys and values are adaptive-average-pooled to 1x1, 3x3, 6x6 and 8x8 grids (110 positions),
and the similarity is scaled by 1/sqrt(key channels) before a softmax over them.

* AFNB (fusion) on the two features: queries from the deeper one (``backbone_indices[1]``),
  keys and values from the shallower one; the attended values, projected back to the deeper
  width (``W``), are concatenated before the deeper feature and fused by a 1x1 ConvBN, then
  dropout 0.05.
* Context: a 3x3 ConvBNReLU to ``inter_channels``, then APNB, the same attention within that
  map (one ConvBNReLU, ``f_key``, serves as ``f_query`` too), its output concatenated before
  the map and fused by a 1x1 ConvBNReLU, dropout 0.05.
* A 1x1 classifier (``cls``); with ``enable_auxiliary_loss`` an auxiliary FCN head (half the
  width, dropout 0.05; always built, as in PaddleSeg) on the shallower feature gives a second
  logit map, in evaluation as in training.

Every logit map is upsampled (bilinear, ``align_corners`` as given) to the input size.

``psp_size``: PaddleSeg 2.8.0 takes the argument but its attention modules always pool at
(1, 3, 6, 8); segx refuses any other value rather than silently doing the same.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from segx.backend.nets import MODELS
from segx.backend.nets.layers import (AuxLayer, ConvBN, ConvBNReLU, UpsampledHeadNet,
                                      adaptive_avg_pool2d, picked_channels)

POOL_SIZES = (1, 3, 6, 8)
ATTENTION_DROPOUT = 0.05


def _check_psp_size(psp_size) -> None:
    if not isinstance(psp_size, (list, tuple)) or tuple(psp_size) != POOL_SIZES:
        raise ValueError(f"psp_size={psp_size!r}: only {list(POOL_SIZES)} is supported "
                         "(PaddleSeg 2.8.0's attention always pools at these sizes); remove "
                         "the key")


def pooled_positions(x):
    """[N, C, 110]: ``x`` average-pooled to each grid of POOL_SIZES, flattened, side by side."""
    channels = x.shape[1]
    grids = [paddle.reshape(adaptive_avg_pool2d(x, s), [0, channels, -1]) for s in POOL_SIZES]
    return paddle.concat(grids, axis=-1)


def attend(query, key, value, key_channels: int, value_channels: int, like):
    """Each query pixel's softmax-weighted sum of the pooled values; the result has the
    spatial size of ``like``. query: [N, Ck, H, W]; key: [N, Ck, P]; value: [N, Cv, P]."""
    q = paddle.transpose(paddle.reshape(query, [0, key_channels, -1]), [0, 2, 1])
    sim = F.softmax((key_channels ** -0.5) * paddle.matmul(q, key), axis=-1)  # N, HW, P
    out = paddle.transpose(paddle.matmul(sim, paddle.transpose(value, [0, 2, 1])), [0, 2, 1])
    hw = paddle.shape(like)
    return paddle.reshape(out, [0, value_channels, hw[2], hw[3]])


class CrossPyramidAttention(nn.Layer):
    """Queries from the high-level map, pooled keys and values from the low-level one."""

    def __init__(self, low_channels: int, high_channels: int, key_channels: int,
                 value_channels: int, out_channels: int):
        super().__init__()
        self.key_channels, self.value_channels = key_channels, value_channels
        self.f_key = ConvBNReLU(low_channels, key_channels, 1)
        self.f_query = ConvBNReLU(high_channels, key_channels, 1)
        self.f_value = nn.Conv2D(low_channels, value_channels, 1)
        self.W = nn.Conv2D(value_channels, out_channels, 1)

    def forward(self, low, high):
        ctx = attend(self.f_query(high), pooled_positions(self.f_key(low)),
                     pooled_positions(self.f_value(low)), self.key_channels,
                     self.value_channels, high)
        return self.W(ctx)


class SelfPyramidAttention(nn.Layer):
    """Queries, pooled keys and values from one map; queries and keys share ``f_key``."""

    def __init__(self, in_channels: int, out_channels: int, key_channels: int,
                 value_channels: int):
        super().__init__()
        self.key_channels, self.value_channels = key_channels, value_channels
        self.f_key = ConvBNReLU(in_channels, key_channels, 1)
        self.f_query = self.f_key  # one layer under both names, as PaddleSeg's checkpoints hold
        self.f_value = nn.Conv2D(in_channels, value_channels, 1)
        self.W = nn.Conv2D(value_channels, out_channels, 1)

    def forward(self, x):
        ctx = attend(self.f_query(x), pooled_positions(self.f_key(x)),
                     pooled_positions(self.f_value(x)), self.key_channels,
                     self.value_channels, x)
        return self.W(ctx)


class AFNB(nn.Layer):
    """Asymmetric fusion non-local block (see the module docstring)."""

    def __init__(self, low_channels: int, high_channels: int, key_value_channels: int):
        super().__init__()
        self.stages = nn.LayerList([CrossPyramidAttention(
            low_channels, high_channels, key_value_channels, key_value_channels,
            high_channels)])
        self.conv_bn = ConvBN(2 * high_channels, high_channels, 1)
        self.dropout = nn.Dropout(p=ATTENTION_DROPOUT)

    def forward(self, low, high):
        ctx = self.stages[0](low, high)
        return self.dropout(self.conv_bn(paddle.concat([ctx, high], axis=1)))


class APNB(nn.Layer):
    """Asymmetric pyramid non-local block (see the module docstring)."""

    def __init__(self, channels: int, key_value_channels: int):
        super().__init__()
        self.stages = nn.LayerList([SelfPyramidAttention(
            channels, channels, key_value_channels, key_value_channels)])
        self.conv_bn = ConvBNReLU(2 * channels, channels, 1)
        self.dropout = nn.Dropout(p=ATTENTION_DROPOUT)

    def forward(self, x):
        ctx = self.stages[0](x)
        return self.dropout(self.conv_bn(paddle.concat([ctx, x], axis=1)))


class ANNHead(nn.Layer):
    def __init__(self, num_classes: int, backbone_indices, backbone_channels,
                 key_value_channels: int, inter_channels: int,
                 enable_auxiliary_loss: bool = True):
        super().__init__()
        low, high = backbone_channels
        self.fusion = AFNB(low, high, key_value_channels)
        self.context = nn.Sequential(ConvBNReLU(high, inter_channels, 3, padding=1),
                                     APNB(inter_channels, key_value_channels))
        self.cls = nn.Conv2D(inter_channels, num_classes, kernel_size=1)
        self.auxlayer = AuxLayer(low, low // 2, num_classes, dropout_prob=ATTENTION_DROPOUT)
        self.backbone_indices = list(backbone_indices)
        self.enable_auxiliary_loss = enable_auxiliary_loss

    def forward(self, feats):
        low, high = (feats[i] for i in self.backbone_indices)
        logits = [self.cls(self.context(self.fusion(low, high)))]
        if self.enable_auxiliary_loss:
            logits.append(self.auxlayer(low))
        return logits


@MODELS.add
class ANN(UpsampledHeadNet):
    """ANN; arguments and defaults as PaddleSeg's (``psp_size``: see the module docstring;
    ``pretrained``: segx loads weights itself, so its builder accepts only None)."""

    def __init__(self, num_classes: int, backbone: nn.Layer, backbone_indices=(2, 3),
                 key_value_channels: int = 256, inter_channels: int = 512,
                 psp_size=POOL_SIZES, enable_auxiliary_loss: bool = True,
                 align_corners: bool = False, pretrained=None):
        super().__init__()
        chans = picked_channels(backbone, backbone_indices, 2, "ANN")
        _check_psp_size(psp_size)
        self.backbone = backbone
        self.head = ANNHead(num_classes, backbone_indices, chans, key_value_channels,
                            inter_channels, enable_auxiliary_loss)
        self.align_corners, self.pretrained = align_corners, pretrained
