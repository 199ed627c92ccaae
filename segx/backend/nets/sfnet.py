"""SFNet (Li et al., "Semantic Flow for Fast and Accurate Scene Parsing", ECCV 2020,
arXiv:2002.10120), written for segx with PaddleSeg's parameter names and arguments.

* A pyramid pooling module (``ppm``) on the deepest feature starts a top-down pyramid.
* Going up one level, the level's feature is reduced to the pyramid width by a 1x1 conv-BN-ReLU
  (``fpn_in``); a flow alignment module (``fpn_out_align``) predicts a two-channel semantic
  flow from both maps (each halved by a 1x1 conv, the coarse one upsampled) and warps the
  coarse map onto the fine grid with it; the sum is the level's new map, smoothed by a 3x3
  conv-BN-ReLU (``fpn_out``) for the fusion and, with ``enable_auxiliary_loss``, read by an
  auxiliary head (``dsn``).
* Every pyramid level is upsampled to the finest, concatenated and classified (``conv_last``).

The pyramid is 128 wide on ResNet-18 and 256 otherwise. Training with the auxiliary heads
gives their logits first (coarsest level first), the main logits last; all are upsampled
(bilinear, ``align_corners`` as given) to the input size. Evaluation gives the main logits
only (PaddleSeg's gives the auxiliary ones too, first, so that its prediction, which reads the
first output, is the coarsest auxiliary head's; the zoo's SFNets have no auxiliary heads).
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from segx.backend.nets import MODELS
from segx.backend.nets.layers import (AuxLayer, ConvBNReLU, PPModule, checked_indices, flow_warp,
                                      norm_layer, resize, resize_like, spatial_size)

PPM_BINS = (1, 2, 3, 6)


def pyramid_width(backbone: nn.Layer) -> int:
    """SFNet's pyramid width: 128 on a ResNet-18, 256 on anything else."""
    return 128 if getattr(backbone, "layers", None) == 18 else 256


class AlignedModule(nn.Layer):
    """Flow alignment: warps the coarse map ``high`` onto the grid of the fine map ``low`` by a
    flow predicted from both (each reduced to ``outplane`` channels)."""

    def __init__(self, inplane: int, outplane: int, kernel_size: int = 3):
        super().__init__()
        self.down_h = nn.Conv2D(inplane, outplane, 1, bias_attr=False)
        self.down_l = nn.Conv2D(inplane, outplane, 1, bias_attr=False)
        self.flow_make = nn.Conv2D(outplane * 2, 2, kernel_size=kernel_size, padding=1,
                                   bias_attr=False)

    def forward(self, pair):
        low, high = pair
        size = spatial_size(low)
        coarse = resize(self.down_h(high), size, align_corners=True)
        flow = self.flow_make(paddle.concat([coarse, self.down_l(low)], axis=1))
        return flow_warp(high, flow, size)


class SFNetHead(nn.Layer):
    """The pyramid with flow alignment (see the module docstring); arguments as PaddleSeg's."""

    def __init__(self, inplane: int, num_class: int, fpn_inplanes, fpn_dim: int = 256,
                 enable_auxiliary_loss: bool = False):
        super().__init__()
        self.enable_auxiliary_loss = enable_auxiliary_loss
        self.ppm = PPModule(inplane, fpn_dim, PPM_BINS, dim_reduction=True, align_corners=True)
        self.fpn_in = nn.LayerList([
            nn.Sequential(nn.Conv2D(c, fpn_dim, 1), norm_layer(fpn_dim), nn.ReLU())
            for c in fpn_inplanes[:-1]])
        smooth, align, aux = [], [], []
        for _ in fpn_inplanes[:-1]:  # created level by level: paddle names follow the order
            smooth.append(nn.Sequential(ConvBNReLU(fpn_dim, fpn_dim, 3, bias_attr=False)))
            align.append(AlignedModule(fpn_dim, fpn_dim // 2))
            if enable_auxiliary_loss:
                aux.append(nn.Sequential(AuxLayer(fpn_dim, fpn_dim, num_class)))
        self.fpn_out, self.fpn_out_align = nn.LayerList(smooth), nn.LayerList(align)
        if enable_auxiliary_loss:
            self.dsn = nn.LayerList(aux)
        self.conv_last = nn.Sequential(
            ConvBNReLU(len(fpn_inplanes) * fpn_dim, fpn_dim, 3, bias_attr=False),
            nn.Conv2D(fpn_dim, num_class, kernel_size=1))

    def forward(self, feats):
        top = self.ppm(feats[-1])
        levels, aux = [top], []
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.fpn_in[i](feats[i])
            top = lateral + self.fpn_out_align[i]([lateral, top])
            levels.append(self.fpn_out[i](top))
            if self.enable_auxiliary_loss and self.training:
                aux.append(self.dsn[i](top))
        finest = levels[-1]
        fused = [finest] + [resize_like(m, finest, align_corners=True) for m in levels[-2::-1]]
        return aux + [self.conv_last(paddle.concat(fused, axis=1))]


@MODELS.add
class SFNet(nn.Layer):
    """SFNet; arguments and defaults as PaddleSeg's (``pretrained``: segx loads weights itself,
    so only None is accepted by segx's builder)."""

    def __init__(self, num_classes: int, backbone: nn.Layer, backbone_indices,
                 enable_auxiliary_loss: bool = False, align_corners: bool = False,
                 pretrained=None):
        super().__init__()
        self.backbone = backbone
        self.backbone_indices = checked_indices(backbone, backbone_indices, "SFNet", at_least=2)
        self.in_channels = [backbone.feat_channels[i] for i in self.backbone_indices]
        self.align_corners, self.pretrained = align_corners, pretrained
        self.enable_auxiliary_loss = enable_auxiliary_loss
        self.head = SFNetHead(self.in_channels[-1], num_classes, self.in_channels,
                              pyramid_width(backbone), enable_auxiliary_loss)

    def forward(self, x):
        feats = self.backbone(x)
        logits = self.head([feats[i] for i in self.backbone_indices])
        return [resize_like(t, x, align_corners=self.align_corners) for t in logits]
