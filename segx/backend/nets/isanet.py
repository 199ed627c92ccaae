"""ISANet (Huang et al., "Interlaced Sparse Self-Attention for Semantic Segmentation", 2019,
arXiv:1907.12273), written for segx with PaddleSeg's parameter names and arguments.

* Head: a bias-free 3x3 ConvBNReLU from the deepest feature to a quarter of its width; the map
  is zero-padded (split evenly, the odd pixel after) to multiples of ``down_factor`` (Ph, Pw)
  and cut into a Qh x Qw grid of Ph x Pw blocks. Long-range attention runs over the pixels at
  the same place in every block (Qh x Qw each), then short-range attention inside each block;
  the padding is cut off, the result concatenated with the conv's output, fused by a bias-free
  1x1 ConvBNReLU, channel dropout and a 1x1 classifier.
* Each attention: query and key are two bias-free 1x1 ConvBNReLUs each to ``isa_channels``,
  the value a 1x1 conv with bias keeping the width, softmax of query-key products scaled by
  1/sqrt(``isa_channels``), then a bias-free 1x1 ConvBNReLU on the attended values.
* Auxiliary head (``enable_auxiliary_loss``) on the 1024-wide feature ``backbone_indices[0]``.

Logits are upsampled (bilinear, ``align_corners`` as given; otherwise the asymmetric mapping,
paddle's ``align_mode=1``, as PaddleSeg's ISANet does) to the input size.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from segx.backend.nets import MODELS
from segx.backend.nets.layers import (ContextSegModel, ConvBNReLU, context_aux_head,
                                      dropout_classifier, pick_two_features)


def _projection(cin: int, cout: int, depth: int) -> nn.Layer:
    """``depth`` bias-free 1x1 ConvBNReLUs (a Sequential when more than one)."""
    convs = [ConvBNReLU(cin if i == 0 else cout, cout, 1, bias_attr=False)
             for i in range(depth)]
    return convs[0] if depth == 1 else nn.Sequential(*convs)


class SelfAttentionBlock(nn.Layer):
    """Scaled dot-product self-attention over the pixels of ``x`` (see the module docstring)."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.in_channels, self.channels = in_channels, channels
        self.key_project = _projection(in_channels, channels, 2)
        self.query_project = _projection(in_channels, channels, 2)
        self.value_project = nn.Conv2D(in_channels, in_channels, 1)
        self.output_project = _projection(in_channels, in_channels, 1)

    def forward(self, x):
        shape = paddle.shape(x)
        query = self.query_project(x).flatten(2).transpose([0, 2, 1])
        key = self.key_project(x).flatten(2)
        value = self.value_project(x).flatten(2).transpose([0, 2, 1])
        weights = F.softmax(paddle.matmul(query, key) * (self.channels ** -0.5), axis=-1)
        context = paddle.matmul(weights, value).transpose([0, 2, 1])
        context = context.reshape([0, self.in_channels, shape[2], shape[3]])
        return self.output_project(context)


def _check_factor(down_factor) -> tuple[int, int]:
    factor = tuple(down_factor) if isinstance(down_factor, (list, tuple)) else ()
    if len(factor) != 2 or any(isinstance(f, bool) or not isinstance(f, int) or f < 1
                               for f in factor):
        raise ValueError(f"ISANet down_factor={down_factor!r}: give two positive integers "
                         "[Ph, Pw]")
    return factor


class ISAHead(nn.Layer):
    """ISANet's head on [low feature, deepest feature] (see the module docstring)."""

    def __init__(self, num_classes: int, in_channels, isa_channels: int, down_factor,
                 enable_auxiliary_loss: bool):
        super().__init__()
        self.in_channels = in_channels[-1]
        self.inter_channels = inter = self.in_channels // 4
        self.down_factor = _check_factor(down_factor)
        self.enable_auxiliary_loss = enable_auxiliary_loss
        self.in_conv = ConvBNReLU(self.in_channels, inter, 3, bias_attr=False)
        self.global_relation = SelfAttentionBlock(inter, isa_channels)
        self.local_relation = SelfAttentionBlock(inter, isa_channels)
        self.out_conv = ConvBNReLU(inter * 2, inter, 1, bias_attr=False)
        self.cls = dropout_classifier(inter, num_classes)
        self.aux = context_aux_head(num_classes, bias=False)

    def _padded(self, x):
        """``x`` zero-padded to multiples of the block size; returns it, the grid (Qh, Qw) and
        the top-left padding (shape tensors, so a static export keeps the sizes dynamic)."""
        ph, pw = self.down_factor
        h, w = paddle.shape(x)[2], paddle.shape(x)[3]
        qh, qw = (h + (ph - 1)) // ph, (w + (pw - 1)) // pw
        extra_h, extra_w = qh * ph - h, qw * pw - w
        top, left = extra_h // 2, extra_w // 2
        pads = paddle.stack([left, extra_w - left, top, extra_h - top]).reshape([-1]).astype("int32")
        return F.pad(x, pads), (qh, qw), (top, left)

    def _interlaced(self, x):
        c, (ph, pw) = self.inter_channels, self.down_factor
        padded, (qh, qw), (top, left) = self._padded(x)
        n = paddle.shape(x)[0]
        blocks = padded.reshape([n, c, qh, ph, qw, pw])
        far = blocks.transpose([0, 3, 5, 1, 2, 4]).reshape([-1, c, qh, qw])
        far = self.global_relation(far).reshape([n, ph, pw, c, qh, qw])
        near = far.transpose([0, 4, 5, 3, 1, 2]).reshape([-1, c, ph, pw])
        near = self.local_relation(near).reshape([n, qh, qw, c, ph, pw])
        whole = near.transpose([0, 3, 1, 4, 2, 5]).reshape([n, c, qh * ph, qw * pw])
        size = paddle.shape(x)
        return paddle.slice(whole, axes=[2, 3], starts=[top, left],
                            ends=[top + size[2], left + size[3]])

    def forward(self, feats):
        low, deep = feats
        x = self.in_conv(deep)
        out = self.out_conv(paddle.concat([self._interlaced(x), x], axis=1))
        logits = [self.cls(out)]
        return logits + [self.aux(low)] if self.enable_auxiliary_loss else logits


@MODELS.add
class ISANet(ContextSegModel):
    """ISANet; arguments and defaults as PaddleSeg's (``pretrained``: segx loads weights
    itself, so only None is accepted by segx's builder)."""

    align_mode = 1

    def __init__(self, num_classes: int, backbone: nn.Layer, backbone_indices=(2, 3),
                 isa_channels: int = 256, down_factor=(8, 8),
                 enable_auxiliary_loss: bool = True, align_corners: bool = False,
                 pretrained=None):
        super().__init__()
        widths = pick_two_features(backbone, backbone_indices, enable_auxiliary_loss, "ISANet")
        self.setup(backbone, backbone_indices, align_corners, pretrained)
        self.head = ISAHead(num_classes, widths, isa_channels, down_factor,
                            enable_auxiliary_loss)
