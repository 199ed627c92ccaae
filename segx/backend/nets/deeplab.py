"""DeepLabV3 (Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation",
2017, arXiv:1706.05587) and DeepLabV3+ (Chen et al., "Encoder-Decoder with Atrous Separable
Convolution for Semantic Image Segmentation", ECCV 2018), written for segx with PaddleSeg's
parameter names and arguments.

* ASPP: parallel branches on the deepest feature, a 1x1 conv for rate 1 and a 3x3 conv dilated
  by each other rate (depthwise-separable in DeepLabV3+), plus an image-pooling branch (global
  average, bias-free 1x1 conv, upsampled back); concatenated, fused by a 1x1 conv, dropout 0.1.
* DeepLabV3: a 1x1 classifier on the ASPP output.
* DeepLabV3+ decoder: the low-level feature reduced to 48 channels by a 1x1 conv, the ASPP
  output upsampled to it and concatenated, two separable 3x3 convs (256), a 1x1 classifier.

Logits are upsampled (bilinear, ``align_corners`` as given) to the input size.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from segx.backend.nets import MODELS
from segx.backend.nets.layers import (ConvBNReLU, SeparableConvBNReLU, picked_channels, resize,
                                      spatial_size)
from segx.backend.nets.resnet_vd import MAX_DILATION

DECODER_LOW_CHANNELS = 48
DECODER_CHANNELS = 256


def _channel_axis(data_format: str) -> int:
    return 1 if data_format == "NCHW" else -1


def _aspp_branch(rate: int, cin: int, cout: int, separable: bool, fmt: str) -> nn.Layer:
    if rate == 1:
        return ConvBNReLU(cin, cout, 1, padding=0, dilation=1, data_format=fmt)
    conv = SeparableConvBNReLU if separable else ConvBNReLU
    return conv(cin, cout, 3, padding=rate, dilation=rate, data_format=fmt)


def _check_rates(aspp_ratios) -> list[int]:
    rates = list(aspp_ratios) if isinstance(aspp_ratios, (list, tuple)) else []
    if not rates or not all(isinstance(r, int) and not isinstance(r, bool)
                            and 1 <= r <= MAX_DILATION for r in rates):
        raise ValueError(f"aspp_ratios={aspp_ratios!r}: give a list of integers from 1 to "
                         f"{MAX_DILATION}")
    return rates


class ASPPModule(nn.Layer):
    """Atrous spatial pyramid pooling; arguments as PaddleSeg's."""

    def __init__(self, aspp_ratios, in_channels: int, out_channels: int, align_corners: bool,
                 use_sep_conv: bool = False, image_pooling: bool = False,
                 data_format: str = "NCHW"):
        super().__init__()
        self.align_corners, self.data_format = align_corners, data_format
        self.aspp_blocks = nn.LayerList([
            _aspp_branch(r, in_channels, out_channels, use_sep_conv, data_format)
            for r in _check_rates(aspp_ratios)])
        branches = len(self.aspp_blocks)
        self.image_pooling = image_pooling
        if image_pooling:
            self.global_avg_pool = nn.Sequential(
                nn.AdaptiveAvgPool2D(output_size=(1, 1), data_format=data_format),
                ConvBNReLU(in_channels, out_channels, 1, bias_attr=False,
                           data_format=data_format))
            branches += 1
        self.conv_bn_relu = ConvBNReLU(out_channels * branches, out_channels, 1,
                                       data_format=data_format)
        self.dropout = nn.Dropout(p=0.1)

    def forward(self, x):
        outs = [branch(x) for branch in self.aspp_blocks]
        if self.image_pooling:
            pooled = self.global_avg_pool(x)
            outs.append(resize(pooled, spatial_size(x, self.data_format),
                               align_corners=self.align_corners, data_format=self.data_format))
        fused = self.conv_bn_relu(paddle.concat(outs, axis=_channel_axis(self.data_format)))
        return self.dropout(fused)


class Decoder(nn.Layer):
    """DeepLabV3+ decoder (see the module docstring)."""

    def __init__(self, num_classes: int, in_channels: int, align_corners: bool,
                 data_format: str = "NCHW", aspp_channels: int = 256):
        super().__init__()
        self.align_corners, self.data_format = align_corners, data_format
        self.conv_bn_relu1 = ConvBNReLU(in_channels, DECODER_LOW_CHANNELS, 1,
                                        data_format=data_format)
        self.conv_bn_relu2 = SeparableConvBNReLU(DECODER_LOW_CHANNELS + aspp_channels,
                                                 DECODER_CHANNELS, 3, padding=1,
                                                 data_format=data_format)
        self.conv_bn_relu3 = SeparableConvBNReLU(DECODER_CHANNELS, DECODER_CHANNELS, 3,
                                                 padding=1, data_format=data_format)
        self.conv = nn.Conv2D(DECODER_CHANNELS, num_classes, 1, data_format=data_format)

    def forward(self, x, low):
        low = self.conv_bn_relu1(low)
        x = resize(x, spatial_size(low, self.data_format), align_corners=self.align_corners,
                   data_format=self.data_format)
        x = paddle.concat([x, low], axis=_channel_axis(self.data_format))
        return self.conv(self.conv_bn_relu3(self.conv_bn_relu2(x)))


class DeepLabV3PHead(nn.Layer):
    """Separable ASPP on feature ``backbone_indices[1]``, decoder with ``backbone_indices[0]``."""

    def __init__(self, num_classes: int, backbone_indices, backbone_channels, aspp_ratios,
                 aspp_out_channels: int, align_corners: bool, data_format: str = "NCHW"):
        super().__init__()
        self.aspp = ASPPModule(aspp_ratios, backbone_channels[1], aspp_out_channels,
                               align_corners, use_sep_conv=True, image_pooling=True,
                               data_format=data_format)
        self.decoder = Decoder(num_classes, backbone_channels[0], align_corners,
                               data_format=data_format, aspp_channels=aspp_out_channels)
        self.backbone_indices = backbone_indices

    def forward(self, feats):
        low, deep = (feats[i] for i in self.backbone_indices)
        return [self.decoder(self.aspp(deep), low)]


class DeepLabV3Head(nn.Layer):
    """Plain ASPP on feature ``backbone_indices[0]``, then a 1x1 classifier (``cls``)."""

    def __init__(self, num_classes: int, backbone_indices, backbone_channels, aspp_ratios,
                 aspp_out_channels: int, align_corners: bool):
        super().__init__()
        self.aspp = ASPPModule(aspp_ratios, backbone_channels[0], aspp_out_channels,
                               align_corners, use_sep_conv=False, image_pooling=True)
        self.cls = nn.Conv2D(aspp_out_channels, num_classes, 1)
        self.backbone_indices = backbone_indices

    def forward(self, feats):
        return [self.cls(self.aspp(feats[self.backbone_indices[0]]))]


class _DeepLabBase(nn.Layer):
    def _upsample_all(self, logits, x):
        hw = spatial_size(x, self.data_format)
        return [resize(t, hw, align_corners=self.align_corners, data_format=self.data_format)
                for t in logits]

    def forward(self, x):
        return self._upsample_all(self.head(self.backbone(x)), x)


@MODELS.add
class DeepLabV3P(_DeepLabBase):
    """DeepLabV3+; arguments and defaults as PaddleSeg's (``aspp_ratios`` (1, 12, 24, 36) suit
    output stride 8, (1, 6, 12, 18) stride 16; ``pretrained``: segx loads weights itself, so
    only None is accepted by segx's builder)."""

    def __init__(self, num_classes: int, backbone: nn.Layer, backbone_indices=(0, 3),
                 aspp_ratios=(1, 6, 12, 18), aspp_out_channels: int = 256,
                 align_corners: bool = False, pretrained=None, data_format: str = "NCHW"):
        super().__init__()
        chans = picked_channels(backbone, backbone_indices, 2, "DeepLabV3P")
        self.backbone = backbone
        self.head = DeepLabV3PHead(num_classes, list(backbone_indices), chans, aspp_ratios,
                                   aspp_out_channels, align_corners, data_format=data_format)
        self.align_corners, self.pretrained, self.data_format = \
            align_corners, pretrained, data_format


@MODELS.add
class DeepLabV3(_DeepLabBase):
    """DeepLabV3; arguments and defaults as PaddleSeg's (NCHW only, as there)."""

    def __init__(self, num_classes: int, backbone: nn.Layer, backbone_indices=(3,),
                 aspp_ratios=(1, 6, 12, 18), aspp_out_channels: int = 256,
                 align_corners: bool = False, pretrained=None):
        super().__init__()
        chans = picked_channels(backbone, backbone_indices, 1, "DeepLabV3")
        self.backbone = backbone
        self.head = DeepLabV3Head(num_classes, list(backbone_indices), chans, aspp_ratios,
                                  aspp_out_channels, align_corners)
        self.align_corners, self.pretrained, self.data_format = \
            align_corners, pretrained, "NCHW"
