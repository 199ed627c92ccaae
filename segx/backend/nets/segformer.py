"""SegFormer (Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with
Transformers", NeurIPS 2021), written for segx with PaddleSeg's parameter names and arguments.

The all-MLP decoder: each of the backbone's four feature maps is projected per pixel to
``embedding_dim`` channels by a linear layer (``linear_c1`` .. ``linear_c4``), the deeper three
are upsampled to the stride-4 map's size, the four are concatenated (deepest first) and fused
by a bias-free 1x1 ConvBNReLU (``linear_fuse``); after 2-D dropout (p 0.1) a 1x1 conv
(``linear_pred``) gives the class logits, upsampled bilinearly to the input size. The same
single output is returned in training and evaluation. The decoder keeps paddle's default
initialisation (PaddleSeg re-initialises only the backbone).
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from segx.backend.nets import MODELS
from segx.backend.nets.layers import ConvBNReLU, resize, spatial_size
from segx.backend.nets.mix_transformer import map_to_tokens, tokens_to_map


class MLP(nn.Layer):
    """Per-pixel linear projection of a feature map, kept as tokens (``proj``)."""

    def __init__(self, input_dim: int = 2048, embed_dim: int = 768):
        super().__init__()
        self.proj = nn.Linear(input_dim, embed_dim)

    def forward(self, x):
        return self.proj(map_to_tokens(x))


@MODELS.add
class SegFormer(nn.Layer):
    """SegFormer; arguments and defaults as PaddleSeg's (``pretrained``: segx loads weights
    itself, so only None is accepted through a config)."""

    def __init__(self, num_classes: int, backbone: nn.Layer, embedding_dim: int,
                 align_corners: bool = False, pretrained=None):
        super().__init__()
        self.num_classes, self.backbone = num_classes, backbone
        self.align_corners, self.pretrained = align_corners, pretrained
        c1, c2, c3, c4 = backbone.feat_channels
        # created deepest first, as PaddleSeg does (paddle's internal names follow the order)
        self.linear_c4 = MLP(c4, embedding_dim)
        self.linear_c3 = MLP(c3, embedding_dim)
        self.linear_c2 = MLP(c2, embedding_dim)
        self.linear_c1 = MLP(c1, embedding_dim)
        self.dropout = nn.Dropout2D(0.1)
        self.linear_fuse = ConvBNReLU(4 * embedding_dim, embedding_dim, 1, bias_attr=False)
        self.linear_pred = nn.Conv2D(embedding_dim, num_classes, 1)

    def forward(self, x):
        feats = self.backbone(x)
        target = spatial_size(feats[0])
        maps = []
        for feat, proj in zip(feats[::-1], (self.linear_c4, self.linear_c3, self.linear_c2,
                                            self.linear_c1)):
            hw = spatial_size(feat)
            y = tokens_to_map(proj(feat), hw[0], hw[1])
            maps.append(y if feat is feats[0] else
                        resize(y, target, align_corners=self.align_corners))
        fused = self.linear_fuse(paddle.concat(maps, axis=1))
        logit = self.linear_pred(self.dropout(fused))
        return [resize(logit, spatial_size(x), align_corners=self.align_corners)]

