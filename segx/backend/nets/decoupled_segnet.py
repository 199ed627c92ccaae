"""DecoupledSegNet (Li et al., "Improving Semantic Segmentation via Decoupled Body and Edge
Supervision", ECCV 2020, arXiv:2007.10035), written for segx with PaddleSeg's parameter names
and arguments.

* ASPP (DeepLabV3's, with image pooling) on the deep feature ``backbone_indices[1]``.
* Body/edge split (``squeeze_body_edge``): the ASPP map is squeezed by two stride-2 depthwise
  conv-BN-ReLUs, upsampled back, and a flow predicted from both warps the map onto itself:
  the warped map is the body, what it leaves behind (map minus body) the edge.
* Edge branch: the edge, upsampled to the low-level feature ``backbone_indices[0]`` (reduced to
  48 channels, ``bot_fine``) and fused with it by a 1x1 conv (``edge_fusion``), gives a
  one-channel edge probability (``edge_out`` then a sigmoid).
* Body branch: a 3x3 conv-BN-ReLU and 1x1 classifier (``dsn_seg_body``).
* Final: fused edge plus upsampled body, concatenated with the upsampled ASPP map, two 3x3
  conv-BN-ReLUs and a 1x1 classifier (``final_seg``).

Evaluation returns the final logits; training returns final, body and edge, and the pair
(final, edge) for the edge-attention loss; all upsampled (bilinear, ``align_corners`` as given)
to the input size. The widths PaddleSeg fixes at 256 follow ``aspp_out_channels`` here (256 by
default, where the two are the same network; PaddleSeg's fails for any other width).
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from segx.backend.nets import MODELS
from segx.backend.nets.deeplab import ASPPModule
from segx.backend.nets.layers import (ConvBNReLU, checked_indices, flow_warp, resize, resize_like,
                                      spatial_size)

FINE_CHANNELS = 48


class SqueezeBodyEdge(nn.Layer):
    """Splits a map into body (flow-warped onto itself) and edge (the rest)."""

    def __init__(self, inplane: int, align_corners: bool = False):
        super().__init__()
        self.align_corners = align_corners
        self.down = nn.Sequential(*[
            ConvBNReLU(inplane, inplane, kernel_size=3, groups=inplane, stride=2)
            for _ in range(2)])
        self.flow_make = nn.Conv2D(inplane * 2, 2, kernel_size=3, padding="same",
                                   bias_attr=False)

    def forward(self, x):
        size = spatial_size(x)
        squeezed = resize(self.down(x), size, align_corners=self.align_corners)
        body = flow_warp(x, self.flow_make(paddle.concat([x, squeezed], axis=1)), size)
        return body, x - body


def _classifier(cin: int, width: int, cout: int, convs: int = 1) -> nn.Sequential:
    """``convs`` bias-free 3x3 ConvBNReLUs (the first from ``cin``), then a 1x1 bias-free conv."""
    layers = [ConvBNReLU(cin if i == 0 else width, width, 3, bias_attr=False)
              for i in range(convs)]
    return nn.Sequential(*layers, nn.Conv2D(width, cout, 1, bias_attr=False))


class DecoupledSegNetHead(nn.Layer):
    """Everything after the backbone (see the module docstring); arguments as PaddleSeg's."""

    def __init__(self, num_classes: int, backbone_indices, backbone_channels, aspp_ratios,
                 aspp_out_channels: int, align_corners: bool):
        super().__init__()
        width = aspp_out_channels
        self.backbone_indices, self.align_corners = list(backbone_indices), align_corners
        self.aspp = ASPPModule(aspp_ratios, backbone_channels[backbone_indices[1]], width,
                               align_corners, image_pooling=True)
        self.bot_fine = nn.Conv2D(backbone_channels[backbone_indices[0]], FINE_CHANNELS, 1,
                                  bias_attr=False)
        self.squeeze_body_edge = SqueezeBodyEdge(width, align_corners=align_corners)
        self.edge_fusion = nn.Conv2D(width + FINE_CHANNELS, width, 1, bias_attr=False)
        self.sigmoid_edge = nn.Sigmoid()
        self.edge_out = _classifier(width, FINE_CHANNELS, 1)
        self.dsn_seg_body = _classifier(width, width, num_classes)
        self.final_seg = _classifier(2 * width, width, num_classes, convs=2)

    def _up(self, x, ref):
        return resize_like(x, ref, align_corners=self.align_corners)

    def forward(self, feats):
        fine = feats[self.backbone_indices[0]]
        aspp = self.aspp(feats[self.backbone_indices[1]])
        body, edge = self.squeeze_body_edge(aspp)
        edge = self.edge_fusion(paddle.concat([self._up(edge, fine), self.bot_fine(fine)],
                                              axis=1))
        edge_prob = self.sigmoid_edge(self.edge_out(edge))
        body_logit = self.dsn_seg_body(body)
        merged = paddle.concat([self._up(aspp, fine), edge + self._up(body, fine)], axis=1)
        return [self.final_seg(merged), body_logit, edge_prob]


@MODELS.add
class DecoupledSegNet(nn.Layer):
    """DecoupledSegNet; arguments and defaults as PaddleSeg's (``aspp_ratios`` (1, 12, 24, 36)
    suit output stride 8, (1, 6, 12, 18) stride 16; ``pretrained``: segx loads weights
    itself, so only None is accepted by segx's builder)."""

    def __init__(self, num_classes: int, backbone: nn.Layer, backbone_indices=(0, 3),
                 aspp_ratios=(1, 6, 12, 18), aspp_out_channels: int = 256,
                 align_corners: bool = False, pretrained=None):
        super().__init__()
        indices = checked_indices(backbone, backbone_indices, "DecoupledSegNet", needed=2)
        self.backbone = backbone
        self.head = DecoupledSegNetHead(num_classes, indices, backbone.feat_channels,
                                        aspp_ratios, aspp_out_channels, align_corners)
        self.align_corners, self.pretrained = align_corners, pretrained

    def forward(self, x):
        seg, body, edge = [resize_like(t, x, align_corners=self.align_corners)
                           for t in self.head(self.backbone(x))]
        return [seg, body, edge, (seg, edge)] if self.training else [seg]
