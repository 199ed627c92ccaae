"""PSPNet (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017), written for segx with
PaddleSeg's arguments, defaults and tensor names.

* Pyramid pooling on the deeper feature (``backbone_indices[1]``): for each bin size s, an
  adaptive average pool to s x s and a 1x1 ConvBNReLU that cuts the width to
  in_channels / len(bin_sizes); each is upsampled back (bilinear) and the input followed by the
  pooled maps, largest bin first, are concatenated and fused by a 3x3 ConvBNReLU to
  ``pp_out_channels``.
* Then dropout 0.1 and a 1x1 classifier.
* With ``enable_auxiliary_loss``, an auxiliary FCN head (``AuxLayer``, a quarter of the width)
  on the shallower feature gives a second logit map, in evaluation as in training (PaddleSeg's
  output list; segx's prediction reads the first).

Every logit map is upsampled (bilinear, ``align_corners`` as given) to the input size.
"""
from __future__ import annotations

import paddle.nn as nn

from segx.backend.nets import MODELS
from segx.backend.nets.layers import AuxLayer, PPModule, UpsampledHeadNet, picked_channels

class PSPNetHead(nn.Layer):
    def __init__(self, num_classes: int, backbone_indices, backbone_channels,
                 pp_out_channels: int, bin_sizes, enable_auxiliary_loss: bool,
                 align_corners: bool):
        super().__init__()
        self.backbone_indices = list(backbone_indices)
        self.psp_module = PPModule(backbone_channels[1], pp_out_channels, bin_sizes,
                                   dim_reduction=True, align_corners=align_corners)
        self.dropout = nn.Dropout(p=0.1)
        self.conv = nn.Conv2D(pp_out_channels, num_classes, kernel_size=1)
        self.enable_auxiliary_loss = enable_auxiliary_loss
        if enable_auxiliary_loss:
            low = backbone_channels[0]
            self.auxlayer = AuxLayer(low, low // 4, num_classes)

    def forward(self, feats):
        low, deep = (feats[i] for i in self.backbone_indices)
        logits = [self.conv(self.dropout(self.psp_module(deep)))]
        if self.enable_auxiliary_loss:
            logits.append(self.auxlayer(low))
        return logits


@MODELS.add
class PSPNet(UpsampledHeadNet):
    """PSPNet; arguments and defaults as PaddleSeg's (``pretrained``: segx loads weights
    itself, so its builder accepts only None)."""

    def __init__(self, num_classes: int, backbone: nn.Layer, backbone_indices=(2, 3),
                 pp_out_channels: int = 1024, bin_sizes=(1, 2, 3, 6),
                 enable_auxiliary_loss: bool = True, align_corners: bool = False,
                 pretrained=None):
        super().__init__()
        chans = picked_channels(backbone, backbone_indices, 2, "PSPNet")
        self.backbone = backbone
        self.head = PSPNetHead(num_classes, backbone_indices, chans, pp_out_channels,
                               bin_sizes, enable_auxiliary_loss, align_corners)
        self.align_corners, self.pretrained = align_corners, pretrained
