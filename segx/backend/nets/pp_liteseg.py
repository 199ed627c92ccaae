"""PP-LiteSeg (Peng et al., "PP-LiteSeg: A Superior Real-Time Semantic Segmentation Model",
2022, arXiv:2204.02681), written for segx with PaddleSeg's parameter names and arguments.

Structure, as the paper describes it:

* a simple pyramid pooling context module on the deepest backbone feature: adaptive average
  pools to each bin size, a 1x1 conv each, upsampled back and summed, then a 3x3 conv;
* a flexible decoder of Unified Attention Fusion Modules from deep to shallow: each upsamples
  the deeper (high) feature to the shallower (low) one, computes a spatial attention map
  ``a`` from the channel mean and max of both, and mixes ``low * a + high * (1 - a)``;
* a segmentation head (3x3 conv, 1x1 classifier) per decoder level; in training every level's
  logits are returned (deep supervision), in evaluation only the shallowest one.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from segx.backend.nets import MODELS
from segx.backend.nets.layers import AdaptiveAvgPool2D, ConvBN, ConvBNReLU, max_keepdim, resize


_resize = resize  # the final upsampling (a seam the tests plant differences in)


class PPContextModule(nn.Layer):
    """Pyramid pooling: pooled 1x1 branches summed at full size, then a 3x3 conv."""

    def __init__(self, cin: int, inter: int, cout: int, bin_sizes, align_corners: bool = False):
        super().__init__()
        self.stages = nn.LayerList([
            nn.Sequential(AdaptiveAvgPool2D(output_size=b), ConvBNReLU(cin, inter, 1))
            for b in bin_sizes])
        self.conv_out = ConvBNReLU(inter, cout, 3, padding=1)
        self.align_corners = align_corners

    def forward(self, x):
        hw = paddle.shape(x)[2:]
        total = None
        for stage in self.stages:
            y = resize(stage(x), hw, align_corners=self.align_corners)
            total = y if total is None else total + y
        return self.conv_out(total)


class UAFM_SpAtten(nn.Layer):
    """Unified attention fusion with a spatial attention map from channel mean and max."""

    def __init__(self, x_ch: int, y_ch: int, out_ch: int, ksize: int = 3,
                 resize_mode: str = "bilinear"):
        super().__init__()
        self.conv_x = ConvBNReLU(x_ch, y_ch, ksize, padding=ksize // 2, bias_attr=False)
        self.conv_out = ConvBNReLU(y_ch, out_ch, 3, padding=1, bias_attr=False)
        self.conv_xy_atten = nn.Sequential(ConvBNReLU(4, 2, 3, padding=1, bias_attr=False),
                                           ConvBN(2, 1, 3, padding=1, bias_attr=False))
        self._scale = self.create_parameter(
            shape=[1], dtype="float32",
            attr=paddle.ParamAttr(initializer=nn.initializer.Constant(1.0)))
        self._scale.stop_gradient = True
        self.resize_mode = resize_mode

    def forward(self, low, high):
        low = self.conv_x(low)
        high = resize(high, paddle.shape(low)[2:], mode=self.resize_mode)
        stats = []
        for t in (low, high):
            stats += [paddle.mean(t, axis=1, keepdim=True), max_keepdim(t, axis=1)]
        atten = F.sigmoid(self.conv_xy_atten(paddle.concat(stats, axis=1)))
        return self.conv_out(low * atten + high * (self._scale - atten))


_FUSIONS = {"UAFM_SpAtten": UAFM_SpAtten}


class PPLiteSegHead(nn.Layer):
    """Context module on the deepest feature, then one fusion module per level, deep first."""

    def __init__(self, backbone_out_chs, arm_out_chs, cm_bin_sizes, cm_out_ch: int,
                 arm_type: str, resize_mode: str):
        super().__init__()
        self.cm = PPContextModule(backbone_out_chs[-1], cm_out_ch, cm_out_ch, cm_bin_sizes)
        fusion = _FUSIONS[arm_type]
        deeper = list(arm_out_chs[1:]) + [cm_out_ch]
        self.arm_list = nn.LayerList([
            fusion(low, high, out, ksize=3, resize_mode=resize_mode)
            for low, high, out in zip(backbone_out_chs, deeper, arm_out_chs)])

    def forward(self, feats):
        high = self.cm(feats[-1])
        outs = [None] * len(feats)
        for i in range(len(feats) - 1, -1, -1):
            high = self.arm_list[i](feats[i], high)
            outs[i] = high
        return outs


class SegHead(nn.Layer):
    def __init__(self, in_chan: int, mid_chan: int, n_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(in_chan, mid_chan, 3, padding=1, bias_attr=False)
        self.conv_out = nn.Conv2D(mid_chan, n_classes, kernel_size=1, bias_attr=False)

    def forward(self, x):
        return self.conv_out(self.conv(x))


def _per_level(values, levels: int, what: str) -> list:
    values = list(values)
    if len(values) == 1:
        values = values * levels
    if len(values) != levels:
        raise ValueError(f"{what} has {len(values)} entries for {levels} backbone_indices")
    return values


@MODELS.add
class PPLiteSeg(nn.Layer):
    """PP-LiteSeg; arguments and defaults as PaddleSeg's (``pretrained``: segx loads weights
    itself, so only None is accepted by segx's builder)."""

    def __init__(self, num_classes: int, backbone: nn.Layer, backbone_indices=(2, 3, 4),
                 arm_type: str = "UAFM_SpAtten", cm_bin_sizes=(1, 2, 4), cm_out_ch: int = 128,
                 arm_out_chs=(64, 96, 128), seg_head_inter_chs=(64, 64, 64),
                 resize_mode: str = "bilinear", pretrained=None):
        super().__init__()
        chans = getattr(backbone, "feat_channels", None)
        indices = list(backbone_indices)
        if chans is None or len(indices) < 2 or max(indices) >= len(chans):
            raise ValueError("backbone_indices must pick at least 2 of the backbone's "
                             f"{len(chans or [])} features")
        if arm_type not in _FUSIONS:
            raise ValueError(f"arm_type='{arm_type}': segx implements {', '.join(_FUSIONS)} "
                             "(set SEGX_NETWORKS=paddleseg for others)")
        self.backbone, self.backbone_indices = backbone, indices
        arm_out_chs = _per_level(arm_out_chs, len(indices), "arm_out_chs")
        inter = _per_level(seg_head_inter_chs, len(indices), "seg_head_inter_chs")
        self.ppseg_head = PPLiteSegHead([chans[i] for i in indices], arm_out_chs, cm_bin_sizes,
                                        cm_out_ch, arm_type, resize_mode)
        self.seg_heads = nn.LayerList([SegHead(a, m, num_classes)
                                       for a, m in zip(arm_out_chs, inter)])
        self.pretrained = pretrained

    def forward(self, x):
        hw = paddle.shape(x)[2:]
        feats = self.backbone(x)
        fused = self.ppseg_head([feats[i] for i in self.backbone_indices])
        heads = zip(fused, self.seg_heads) if self.training else [(fused[0], self.seg_heads[0])]
        return [_resize(head(f), hw) for f, head in heads]
