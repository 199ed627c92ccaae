"""BiSeNet V2 (Yu et al., "BiSeNet V2: Bilateral Network with Guided Aggregation for Real-time
Semantic Segmentation", IJCV 2021, arXiv:2004.02147), written for segx with PaddleSeg's
parameter names and arguments.

* Detail branch (``db``): eight 3x3 ConvBNReLU, wide (64, 64, 128) and shallow, stride 8.
* Semantic branch (``sb``): a stem (3x3 stride 2, then a 1x1/3x3-stride-2 path beside a 3x3
  max pool, concatenated and fused), gather-and-expansion layers (stride 2: two depthwise
  convs on the main path and a depthwise + 1x1 shortcut; stride 1: depthwise expansion with an
  identity shortcut; expansion 6) down to stride 32, and a context embedding (global pool,
  BatchNorm, 1x1 ConvBNReLU added to the input, 3x3 conv).
* Guided aggregation (``bga``): each branch gates the other (sigmoid), at the detail
  resolution and at the semantic one, summed and fused by a 3x3 ConvBN.
* Heads: 3x3 ConvBNReLU, dropout 0.1, 1x1 classifier; the main head on the aggregation, and
  in training four auxiliary heads on the semantic branch's stage outputs. Every output is
  upsampled bilinearly to the input size.
Convolutions start Kaiming-normal, norms at scale 1 and shift 0.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from segx.backend.nets import MODELS
from segx.backend.nets.layers import (
    ConvBN, ConvBNReLU, DepthwiseConvBN, norm_layer, resize, spatial_size)

DETAIL_WIDTHS = (64, 64, 128)
EXPAND = 6
AGGREGATE = 128  # the aggregation's width (= the semantic branch's last width)


class StemBlock(nn.Layer):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, 3, stride=2)
        self.left = nn.Sequential(ConvBNReLU(cout, cout // 2, 1),
                                  ConvBNReLU(cout // 2, cout, 3, stride=2))
        self.right = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
        self.fuse = ConvBNReLU(cout * 2, cout, 3)

    def forward(self, x):
        x = self.conv(x)
        return self.fuse(paddle.concat([self.left(x), self.right(x)], axis=1))


class ContextEmbeddingBlock(nn.Layer):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn = norm_layer(cin)
        self.conv_1x1 = ConvBNReLU(cin, cout, 1)
        self.conv_3x3 = nn.Conv2D(cout, cout, 3, 1, 1)

    def forward(self, x):
        pooled = self.bn(F.adaptive_avg_pool2d(x, 1))
        return self.conv_3x3(self.conv_1x1(pooled) + x)


class GatherAndExpansionLayer1(nn.Layer):
    """Stride 1: 3x3 ConvBNReLU, depthwise expansion, 1x1 ConvBN (``conv.0..2``) + input."""

    def __init__(self, cin: int, cout: int, expand: int):
        super().__init__()
        wide = cin * expand
        self.conv = nn.Sequential(ConvBNReLU(cin, cin, 3), DepthwiseConvBN(cin, wide, 3),
                                  ConvBN(wide, cout, 1))

    def forward(self, x):
        return F.relu(self.conv(x) + x)


class GatherAndExpansionLayer2(nn.Layer):
    """Stride 2: main path ``branch_1`` (two depthwise convs, the first strided) and the
    shortcut ``branch_2`` (strided depthwise, 1x1)."""

    def __init__(self, cin: int, cout: int, expand: int):
        super().__init__()
        wide = cin * expand
        self.branch_1 = nn.Sequential(
            ConvBNReLU(cin, cin, 3), DepthwiseConvBN(cin, wide, 3, stride=2),
            DepthwiseConvBN(wide, wide, 3), ConvBN(wide, cout, 1))
        self.branch_2 = nn.Sequential(DepthwiseConvBN(cin, cin, 3, stride=2),
                                      ConvBN(cin, cout, 1))

    def forward(self, x):
        return F.relu(self.branch_1(x) + self.branch_2(x))


def _detail_branch(cin: int, widths) -> nn.Sequential:
    """Stages of 2, 3 and 3 ConvBNReLU, each starting with stride 2 (``convs.0..7``)."""
    convs = []
    for width, depth in zip(widths, (2, 3, 3)):
        convs.append(ConvBNReLU(cin, width, 3, stride=2))
        convs += [ConvBNReLU(width, width, 3) for _ in range(depth - 1)]
        cin = width
    return nn.Sequential(*convs)


def _ge_stage(cin: int, cout: int, depth: int) -> nn.Sequential:
    return nn.Sequential(GatherAndExpansionLayer2(cin, cout, EXPAND),
                         *[GatherAndExpansionLayer1(cout, cout, EXPAND) for _ in range(depth - 1)])


class DetailBranch(nn.Layer):
    def __init__(self, cin: int, widths):
        super().__init__()
        self.convs = _detail_branch(cin, widths)

    def forward(self, x):
        return self.convs(x)


class SemanticBranch(nn.Layer):
    """Returns the stem's and each stage's output and the context embedding."""

    def __init__(self, cin: int, widths):
        super().__init__()
        c1, c3, c4, c5 = widths
        self.stem = StemBlock(cin, c1)
        self.stage3 = _ge_stage(c1, c3, 2)
        self.stage4 = _ge_stage(c3, c4, 2)
        self.stage5_4 = _ge_stage(c4, c5, 4)
        self.ce = ContextEmbeddingBlock(c5, c5)

    def forward(self, x):
        feats = [self.stem(x)]
        for stage in (self.stage3, self.stage4, self.stage5_4):
            feats.append(stage(feats[-1]))
        return feats + [self.ce(feats[-1])]


class BGA(nn.Layer):
    """Bilateral guided aggregation of the detail (``dfm``) and semantic (``sfm``) maps."""

    def __init__(self, width: int, align_corners: bool):
        super().__init__()
        self.align_corners = align_corners
        self.db_branch_keep = nn.Sequential(DepthwiseConvBN(width, width, 3),
                                            nn.Conv2D(width, width, 1))
        self.db_branch_down = nn.Sequential(ConvBN(width, width, 3, stride=2),
                                            nn.AvgPool2D(kernel_size=3, stride=2, padding=1))
        self.sb_branch_keep = nn.Sequential(DepthwiseConvBN(width, width, 3),
                                            nn.Conv2D(width, width, 1), nn.Sigmoid())
        self.sb_branch_up = ConvBN(width, width, 3)
        self.conv = ConvBN(width, width, 3)

    def forward(self, dfm, sfm):
        detail = self.db_branch_keep(dfm)
        gate_up = resize(self.sb_branch_up(sfm), spatial_size(detail),
                         align_corners=self.align_corners)
        detail = detail * F.sigmoid(gate_up)
        semantic = self.db_branch_down(dfm) * self.sb_branch_keep(sfm)
        semantic = resize(semantic, spatial_size(detail), align_corners=self.align_corners)
        return self.conv(detail + semantic)


class SegHead(nn.Layer):
    def __init__(self, cin: int, mid: int, num_classes: int):
        super().__init__()
        self.conv_3x3 = nn.Sequential(ConvBNReLU(cin, mid, 3), nn.Dropout(0.1))
        self.conv_1x1 = nn.Conv2D(mid, num_classes, 1, 1)

    def forward(self, x):
        return self.conv_1x1(self.conv_3x3(x))


def _kaiming_start(model: nn.Layer) -> None:
    normal, one, zero = (nn.initializer.KaimingNormal(), nn.initializer.Constant(1.0),
                         nn.initializer.Constant(0.0))
    for sub in model.sublayers():
        if isinstance(sub, nn.Conv2D):
            normal(sub.weight)
        elif isinstance(sub, (nn.BatchNorm, nn.BatchNorm2D, nn.SyncBatchNorm)):
            one(sub.weight), zero(sub.bias)


@MODELS.add
class BiSeNetV2(nn.Layer):
    """BiSeNet V2; arguments and defaults as PaddleSeg's (``lambd`` scales the semantic
    branch's first two widths)."""

    def __init__(self, num_classes: int, lambd: float = 0.25, align_corners: bool = False,
                 in_channels: int = 3, pretrained=None):
        super().__init__()
        if not 0 < lambd <= 4:
            raise ValueError(f"lambd={lambd}: give a number above 0 and at most 4")
        c1, c3, c4, c5 = int(64 * lambd), int(128 * lambd), 64, AGGREGATE
        if c1 < 2:
            raise ValueError(f"lambd={lambd} leaves the semantic stem under 2 channels")
        self.db = DetailBranch(in_channels, DETAIL_WIDTHS)
        self.sb = SemanticBranch(in_channels, (c1, c3, c4, c5))
        self.bga = BGA(AGGREGATE, align_corners)
        self.aux_head1 = SegHead(c1, c1, num_classes)
        self.aux_head2 = SegHead(c3, c3, num_classes)
        self.aux_head3 = SegHead(c4, c4, num_classes)
        self.aux_head4 = SegHead(c5, c5, num_classes)
        self.head = SegHead(AGGREGATE, AGGREGATE, num_classes)
        self.align_corners = align_corners
        self.pretrained = pretrained
        _kaiming_start(self)

    def forward(self, x):
        *stages, context = self.sb(x)
        logits = [self.head(self.bga(self.db(x), context))]
        if self.training:
            heads = (self.aux_head1, self.aux_head2, self.aux_head3, self.aux_head4)
            logits += [head(feat) for head, feat in zip(heads, stages)]
        hw = spatial_size(x)
        return [resize(t, hw, align_corners=self.align_corners) for t in logits]
