"""LR-ASPP, the "lite reduced" segmentation head of MobileNetV3 (Howard et al., "Searching for
MobileNetV3", ICCV 2019, arXiv:1905.02244), written for segx with PaddleSeg's parameter names
and arguments.

The head works on the deepest chosen feature: a 1x1 ConvBNReLU branch (``conv_v``) multiplied
by a global gate (average pool, 1x1 conv, sigmoid; ``conv_w``), then a 1x1 conv (``conv_t``).
PaddleSeg's version then walks up the shallower chosen features, deep to shallow: the running
map is upsampled to the feature's size, concatenated with a 1x1 projection of the feature
(``convs.<i>``) and fused by a 1x1 ConvBNReLU (``conv_ups.<i>``). A 1x1 classifier
(``conv_out``) and a bilinear upsampling to the input size end it.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from segx.backend.nets import MODELS
from segx.backend.nets.layers import ConvBNReLU, resize, spatial_size

# use_gap=False: a fixed 49x49 average pool with strides (16, 20) instead of a global one
LOCAL_POOL = {"kernel_size": (49, 49), "stride": (16, 20)}


class LRASPPHead(nn.Layer):
    def __init__(self, indices, in_chs, mid_chs, out_ch: int, n_classes: int,
                 resize_mode: str, use_gap: bool, align_corners: bool = False):
        super().__init__()
        self.deepest = indices[-1]
        self.shallower = list(indices[-2::-1])  # deep to shallow
        self.convs = nn.LayerList()
        self.conv_ups = nn.LayerList()
        for idx, mid in zip(self.shallower, list(mid_chs)[::-1]):
            self.convs.append(nn.Conv2D(in_chs[idx], mid, 1, bias_attr=False))
            self.conv_ups.append(ConvBNReLU(out_ch + mid, out_ch, 1))
        top = in_chs[self.deepest]
        pool = nn.AdaptiveAvgPool2D(1) if use_gap else nn.AvgPool2D(**LOCAL_POOL)
        self.conv_w = nn.Sequential(pool, nn.Conv2D(top, out_ch, 1, bias_attr=False),
                                    nn.Sigmoid())
        self.conv_v = ConvBNReLU(top, out_ch, 1)
        self.conv_t = nn.Conv2D(out_ch, out_ch, 1, bias_attr=False)
        self.conv_out = nn.Conv2D(out_ch, n_classes, 1, bias_attr=False)
        self.mode, self.align_corners = resize_mode, align_corners

    def _up(self, x, like):
        return resize(x, spatial_size(like), self.mode, self.align_corners)

    def forward(self, feats):
        top = feats[self.deepest]
        y = self.conv_t(self.conv_v(top) * self._up(self.conv_w(top), top))
        for idx, proj, fuse in zip(self.shallower, self.convs, self.conv_ups):
            feat = feats[idx]
            y = fuse(paddle.concat([self._up(y, feat), proj(feat)], axis=1))
        return self.conv_out(y)


def _check_indices(backbone, indices, inter_chs) -> list:
    chans = list(getattr(backbone, "feat_channels", None) or [])
    indices = list(indices) if isinstance(indices, (list, tuple)) else []
    if not indices or not all(isinstance(i, int) and -len(chans) <= i < len(chans)
                              for i in indices):
        raise ValueError(f"backbone_indices={indices}: give indices into the backbone's "
                         f"{len(chans)} features")
    if len(indices) != len(list(inter_chs)) + 1:
        raise ValueError(f"backbone_indices needs one entry more than lraspp_head_inter_chs "
                         f"({len(indices)} and {len(list(inter_chs))} given)")
    return chans


@MODELS.add
class LRASPP(nn.Layer):
    """LR-ASPP; arguments and defaults as PaddleSeg's."""

    def __init__(self, num_classes: int, backbone: nn.Layer, backbone_indices=(0, 1, 3),
                 lraspp_head_inter_chs=(32, 64), lraspp_head_out_ch: int = 128,
                 resize_mode: str = "bilinear", use_gap: bool = True, pretrained=None):
        super().__init__()
        chans = _check_indices(backbone, backbone_indices, lraspp_head_inter_chs)
        self.backbone = backbone
        self.backbone_indices = list(backbone_indices)
        self.lraspp_head = LRASPPHead(self.backbone_indices, chans, lraspp_head_inter_chs,
                                      lraspp_head_out_ch, num_classes, resize_mode, use_gap)
        self.pretrained = pretrained

    def forward(self, x):
        y = self.lraspp_head(self.backbone(x))
        return [F.interpolate(y, paddle.shape(x)[2:], mode="bilinear", align_corners=False)]
