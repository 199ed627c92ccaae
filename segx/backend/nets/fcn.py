"""FCN (Long, Shelhamer et al., "Fully Convolutional Networks for Semantic Segmentation", CVPR
2015, arXiv:1411.4038) as PaddleSeg's zoo uses it on HRNet: one backbone feature, a 1x1
conv-BN-ReLU, a 1x1 classifier, bilinear upsampling to the input size. Written for segx with
PaddleSeg's parameter names and arguments."""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from segx.backend.nets import MODELS
from segx.backend.nets.layers import ConvBNReLU
from segx.backend.nets.ocrnet import init_head


class FCNHead(nn.Layer):
    def __init__(self, num_classes: int, backbone_indices, backbone_channels, channels=None,
                 bias: bool = True):
        super().__init__()
        self.at = backbone_indices[0]
        cin = backbone_channels[0]
        mid = cin if channels is None else channels
        self.conv_1 = ConvBNReLU(cin, mid, 1, bias_attr=None if bias else False)
        self.cls = nn.Conv2D(mid, num_classes, 1, bias_attr=None if bias else False)
        init_head(self)

    def forward(self, feats):
        return [self.cls(self.conv_1(feats[self.at]))]


@MODELS.add
class FCN(nn.Layer):
    """FCN; arguments and defaults as PaddleSeg's (only the NCHW layout)."""

    def __init__(self, num_classes: int, backbone: nn.Layer, backbone_indices=(-1,),
                 channels=None, align_corners: bool = False, pretrained=None,
                 bias: bool = True, data_format: str = "NCHW"):
        super().__init__()
        if data_format != "NCHW":
            raise ValueError(f"data_format='{data_format}': FCN supports NCHW only")
        chans = list(getattr(backbone, "feat_channels", None) or [])
        indices = list(backbone_indices)
        if not indices or any(not -len(chans) <= i < len(chans) for i in indices):
            raise ValueError(f"backbone_indices must pick from the backbone's {len(chans)} "
                             "features")
        self.backbone = backbone
        self.head = FCNHead(num_classes, indices, [chans[i] for i in indices], channels,
                            bias)
        self.align_corners = align_corners
        self.pretrained = pretrained

    def forward(self, x):
        hw = paddle.shape(x)[2:]
        return [F.interpolate(t, hw, mode="bilinear", align_corners=self.align_corners)
                for t in self.head(self.backbone(x))]
