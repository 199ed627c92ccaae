"""GSCNN (Takikawa et al., "Gated-SCNN: Gated Shape CNNs for Semantic Segmentation", ICCV 2019,
arXiv:1907.05740), written for segx with PaddleSeg's parameter names and arguments.

* Shape stream: the backbone's stem output (``conv1_logit``, 64 channels; the ResNet_vd
  backbone is asked to keep it) is upsampled to the input size and refined by three rounds of
  a residual block (``res1``..``res3``), a 1x1 conv halving the width (``d1``..``d3``: 32, 16,
  8) and a gated conv (``gate1``..``gate3``) whose gate reads a one-channel side output of
  backbone feature ``backbone_indices[1..3]`` (``dsn1``..``dsn3``); a 1x1 conv and a sigmoid
  (``fuse``) give the edge probability.
* The edge probability and the image's Canny edges (OpenCV, thresholds 10 and 100, on the
  input mapped from [-1, 1] to 0..255) are mixed by a 1x1 conv and a sigmoid (``cw``) into the
  attention the ASPP reads as an extra branch.
* ASPP (with image pooling and that edge branch, ``edge_conv``) on feature
  ``backbone_indices[3]``, then DeepLabV3+'s decoder with feature ``backbone_indices[0]``.

The network returns ``[logits, (logits, edge), edge, logits]`` in training and evaluation alike
(the four losses of its recipe read them), both upsampled (bilinear, ``align_corners`` as
given) to the input size. The Canny step runs on numpy, so GSCNN cannot be exported to a
static graph. Input values outside [-1, 1] are clipped for it (PaddleSeg casts them to uint8
unclipped, which wraps around); with the zoo's normalisation they do not occur.
"""
from __future__ import annotations

import cv2
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from segx.backend.nets import MODELS
from segx.backend.nets.deeplab import Decoder, _aspp_branch, _check_rates
from segx.backend.nets.layers import (ConvBNReLU, checked_indices, norm_layer, resize, resize_like,
                                      spatial_size)
from segx.backend.nets.resnet_vd import BasicBlock

CANNY_LOW, CANNY_HIGH = 10, 100
STEM_CHANNELS = 64


class GatedSpatailConv2d(nn.Layer):  # PaddleSeg's spelling
    """A conv whose input is scaled by (1 + a gate) computed from the input and a one-channel
    gating map: BN, 1x1 conv, ReLU, 1x1 conv to one channel, BN, sigmoid (``_gate_conv``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1, padding: int = 0, dilation: int = 1, groups: int = 1,
                 bias_attr=False):
        super().__init__()
        both = in_channels + 1
        self._gate_conv = nn.Sequential(
            norm_layer(both), nn.Conv2D(both, both, kernel_size=1), nn.ReLU(),
            nn.Conv2D(both, 1, kernel_size=1), norm_layer(1), nn.Sigmoid())
        self.conv = nn.Conv2D(in_channels, out_channels, kernel_size=kernel_size, stride=stride,
                              padding=padding, dilation=dilation, groups=groups,
                              bias_attr=bias_attr)

    def forward(self, features, gating):
        gate = self._gate_conv(paddle.concat([features, gating], axis=1))
        return self.conv(features * (gate + 1))


class ASPPModule(nn.Layer):
    """DeepLabV3's ASPP (plain convs) with one more branch: a one-channel edge map, resized to
    the feature and lifted by a 1x1 conv-BN-ReLU (``edge_conv``). Arguments as PaddleSeg's."""

    def __init__(self, aspp_ratios, in_channels: int, out_channels: int, align_corners: bool,
                 use_sep_conv: bool = False, image_pooling: bool = False):
        super().__init__()
        self.align_corners, self.image_pooling = align_corners, image_pooling
        self.aspp_blocks = nn.LayerList([
            _aspp_branch(r, in_channels, out_channels, use_sep_conv, "NCHW")
            for r in _check_rates(aspp_ratios)])
        branches = len(self.aspp_blocks) + 1
        if image_pooling:
            self.global_avg_pool = nn.Sequential(
                nn.AdaptiveAvgPool2D(output_size=(1, 1)),
                ConvBNReLU(in_channels, out_channels, 1, bias_attr=False))
            branches += 1
        self.edge_conv = ConvBNReLU(1, out_channels, 1, bias_attr=False)
        self.conv_bn_relu = ConvBNReLU(out_channels * branches, out_channels, 1)
        self.dropout = nn.Dropout(p=0.1)

    def forward(self, x, edge):
        outs = [branch(x) for branch in self.aspp_blocks]
        if self.image_pooling:
            outs.append(resize_like(self.global_avg_pool(x), x, align_corners=self.align_corners))
        outs.append(self.edge_conv(resize_like(edge, x, align_corners=self.align_corners)))
        return self.dropout(self.conv_bn_relu(paddle.concat(outs, axis=1)))


def canny_edges(x):
    """The Canny edges (0 or 1, float32, N x 1 x H x W, no gradient) of a batch normalised to
    [-1, 1], each image mapped back to 0..255 first."""
    pixels = (x.numpy().transpose([0, 2, 3, 1]) * 0.5 + 0.5) * 255
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    edges = np.stack([cv2.Canny(np.ascontiguousarray(im), CANNY_LOW, CANNY_HIGH)
                      for im in pixels])[:, None]
    out = paddle.to_tensor((edges / 255.0).astype(np.float32))
    out.stop_gradient = True
    return out


class GSCNNHead(nn.Layer):
    """Shape stream, fusion, ASPP and decoder (see the module docstring)."""

    def __init__(self, num_classes: int, backbone_indices, backbone_channels, aspp_ratios,
                 aspp_out_channels: int, align_corners: bool):
        super().__init__()
        self.backbone_indices, self.align_corners = list(backbone_indices), align_corners
        chans = [backbone_channels[i] for i in self.backbone_indices]
        self.dsn1, self.dsn2, self.dsn3 = (nn.Conv2D(c, 1, kernel_size=1) for c in chans[1:])
        for k, width in enumerate((STEM_CHANNELS, 32, 16), start=1):
            self.add_sublayer(f"res{k}", BasicBlock(width, width, 1, 1, project=False,
                                                    avg_down=False))
            self.add_sublayer(f"d{k}", nn.Conv2D(width, width // 2, kernel_size=1))
            self.add_sublayer(f"gate{k}", GatedSpatailConv2d(width // 2, width // 2))
        self.fuse = nn.Conv2D(8, 1, kernel_size=1, bias_attr=False)
        self.cw = nn.Conv2D(2, 1, kernel_size=1, bias_attr=False)
        self.aspp = ASPPModule(aspp_ratios, chans[3], aspp_out_channels, align_corners,
                               image_pooling=True)
        self.decoder = Decoder(num_classes, chans[0], align_corners,
                               aspp_channels=aspp_out_channels)

    def _full(self, t, size):
        return resize(t, size, align_corners=self.align_corners)

    def shape_stream(self, stem, sides, size):
        """The edge probability at ``size`` from the stem output and three side features."""
        s = self._full(stem, size)
        for k, side in enumerate(sides, start=1):
            s = self._full(getattr(self, f"res{k}")(s), size)
            gating = self._full(getattr(self, f"dsn{k}")(side), size)
            s = getattr(self, f"gate{k}")(getattr(self, f"d{k}")(s), gating)
        return F.sigmoid(self._full(self.fuse(s), size))

    def forward(self, x, feats, stem):
        size = spatial_size(x)
        picked = [feats[i] for i in self.backbone_indices]
        edge = self.shape_stream(stem, picked[1:], size)
        attention = F.sigmoid(self.cw(paddle.concat([edge, canny_edges(x)], axis=1)))
        return [self.decoder(self.aspp(picked[3], attention), picked[0]), edge]


@MODELS.add
class GSCNN(nn.Layer):
    """GSCNN on a ResNet_vd backbone; arguments and defaults as PaddleSeg's (``aspp_ratios``
    (1, 12, 24, 36) suit output stride 8, (1, 6, 12, 18) stride 16; ``pretrained``: segx loads
    weights itself, so only None is accepted by segx's builder)."""

    def __init__(self, num_classes: int, backbone: nn.Layer, backbone_indices=(0, 1, 2, 3),
                 aspp_ratios=(1, 6, 12, 18), aspp_out_channels: int = 256,
                 align_corners: bool = False, pretrained=None):
        super().__init__()
        if not hasattr(backbone, "keep_conv1_logit"):
            raise ValueError(f"GSCNN needs a ResNet_vd backbone (its shape stream reads the "
                             f"stem's output), not {type(backbone).__name__}")
        indices = checked_indices(backbone, backbone_indices, "GSCNN", needed=4)
        backbone.keep_conv1_logit = True
        self.backbone = backbone
        self.head = GSCNNHead(num_classes, indices, backbone.feat_channels, aspp_ratios,
                              aspp_out_channels, align_corners)
        self.align_corners, self.pretrained = align_corners, pretrained

    def forward(self, x):
        feats = self.backbone(x)
        seg, edge = [resize_like(t, x, align_corners=self.align_corners)
                     for t in self.head(x, feats, self.backbone.conv1_logit)]
        return [seg, (seg, edge), edge, seg]
