"""DNLNet (Yin et al., "Disentangled Non-Local Neural Networks", ECCV 2020, arXiv:2006.06668),
written for segx with PaddleSeg's parameter names and arguments.

* Head: a bias-free 3x3 ConvBNReLU from the deepest feature to a quarter of its width (C), the
  disentangled non-local block, another bias-free 3x3 ConvBNReLU; with ``concat_input`` the
  deepest feature is concatenated and fused by a third; channel dropout, 1x1 classifier.
* Disentangled non-local block on C channels, C' = max(C // ``reduction``, 1): 1x1 convs with
  bias give the value g, query theta and key phi (C' each); query and key are whitened (their
  mean over the pixels subtracted); the pairwise term mixes the values by a pixel-pixel weight
  chosen by ``mode``:

  - ``embedded_gaussian``: softmax of query-key products, divided by sqrt(C') when
    ``use_scale`` and by ``temperature``;
  - ``dot_product``: the products divided by the number of pixels;
  - ``concatenation``: a bias-free 1x1 ConvBNReLU (``concat_project``) to one channel on each
    (query, key) pair, divided by the number of pixels (segx applies the conv's two halves
    to query and key separately and adds them, which equals the conv of the pairs without
    building the C' x pixels x pixels tensor);

  the unary term adds every pixel the values averaged by a softmax over the pixels of a 1x1
  conv (``conv_mask``) to one channel. Their sum goes through a bias-free 1x1 ConvBNReLU
  (``conv_out``) back to C and is added to the input. ``gaussian`` mode, which PaddleSeg
  2.8.0 accepts but cannot run, is refused when the model is built.
* Auxiliary head (``enable_auxiliary_loss``) on the 1024-wide feature ``backbone_indices[0]``.

Logits are upsampled (bilinear, ``align_corners`` as given; otherwise the asymmetric mapping,
paddle's ``align_mode=1``, as PaddleSeg's DNLNet does) to the input size.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from segx.backend.nets import MODELS
from segx.backend.nets.layers import (ContextSegModel, ConvBNReLU, context_aux_head,
                                      dropout_classifier, pick_two_features)

MODES = ("embedded_gaussian", "dot_product", "concatenation")


def _check(mode, reduction, temperature) -> None:
    if mode not in MODES:
        raise ValueError(f"DNLNet mode={mode!r}: give one of {', '.join(MODES)}"
                         + (" (PaddleSeg 2.8.0's gaussian mode fails when run)"
                            if mode == "gaussian" else ""))
    if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
        raise ValueError(f"DNLNet reduction={reduction!r}: give a positive integer")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not temperature > 0:
        raise ValueError(f"DNLNet temperature={temperature!r}: give a positive number")


def _centered(t, axis: int):
    """``t`` minus its mean along ``axis`` (the pixels): the whitening of query and key."""
    return t - t.mean(axis=axis, keepdim=True)


def _query_key_halves(weight):
    """The ``concat_project`` conv weight split into the part applied to the query channels
    and the part applied to the key channels (the order PaddleSeg concatenates them in)."""
    return paddle.split(weight, 2, axis=1)


class DisentangledNonLocal2D(nn.Layer):
    """The disentangled non-local block (see the module docstring)."""

    def __init__(self, temperature: float, in_channels: int, reduction: int = 2,
                 use_scale: bool = True, mode: str = "embedded_gaussian"):
        super().__init__()
        _check(mode, reduction, temperature)
        self.in_channels, self.reduction, self.use_scale = in_channels, reduction, use_scale
        self.mode, self.temperature = mode, temperature
        self.inter_channels = inner = max(in_channels // reduction, 1)
        self.g = nn.Conv2D(in_channels, inner, 1)
        self.conv_out = ConvBNReLU(inner, in_channels, 1, bias_attr=False)
        self.theta = nn.Conv2D(in_channels, inner, 1)
        self.phi = nn.Conv2D(in_channels, inner, 1)
        if mode == "concatenation":
            self.concat_project = ConvBNReLU(inner * 2, 1, 1, bias_attr=False)
        self.conv_mask = nn.Conv2D(in_channels, 1, 1)

    def _pixel_count(self, x):
        return paddle.prod(paddle.shape(x)[2:]).astype(x.dtype)

    def _concatenation(self, query, key):
        """Pairwise weight of the concatenation mode; query N x C' x L x 1, key N x C' x 1 x L."""
        proj = self.concat_project
        w_query, w_key = _query_key_halves(proj._conv.weight)
        scores = F.conv2d(query, w_query) + F.conv2d(key, w_key)  # N x 1 x L x L
        return proj._relu(proj._batch_norm(scores)).squeeze(1)

    def _pairwise(self, x):
        """The whitened query-key weight, N x L x L."""
        if self.mode == "concatenation":
            query = self.theta(x).flatten(2).unsqueeze(-1)
            key = self.phi(x).flatten(2).unsqueeze(-2)
            return self._concatenation(_centered(query, -2), _centered(key, -1)) \
                / self._pixel_count(x)
        query = self.theta(x).flatten(2).transpose([0, 2, 1])
        key = self.phi(x).flatten(2)
        scores = paddle.matmul(_centered(query, -2), _centered(key, -1))
        if self.mode == "dot_product":
            return scores / self._pixel_count(x)
        if self.use_scale:
            scores = scores / (self.inter_channels ** 0.5)
        return F.softmax(scores / self.temperature, axis=-1)

    def forward(self, x):
        shape = paddle.shape(x)
        values = self.g(x).flatten(2).transpose([0, 2, 1])  # N x L x C'
        mixed = paddle.matmul(self._pairwise(x), values)
        mask = F.softmax(self.conv_mask(x).flatten(2), axis=-1)  # N x 1 x L
        unary = paddle.matmul(mask, values)  # N x 1 x C'
        summed = (mixed + unary).transpose([0, 2, 1])
        summed = summed.reshape([0, self.inter_channels, shape[2], shape[3]])
        return x + self.conv_out(summed)


class DNLHead(nn.Layer):
    """DNLNet's head on [low feature, deepest feature] (see the module docstring)."""

    def __init__(self, num_classes: int, in_channels, reduction: int, use_scale: bool,
                 mode: str, temperature: float, concat_input: bool = True,
                 enable_auxiliary_loss: bool = True):
        super().__init__()
        deep = in_channels[-1]
        inter = deep // 4
        self.concat_input, self.enable_auxiliary_loss = concat_input, enable_auxiliary_loss
        self.dnl_block = DisentangledNonLocal2D(temperature, inter, reduction=reduction,
                                                use_scale=use_scale, mode=mode)
        self.conv0 = ConvBNReLU(deep, inter, 3, bias_attr=False)
        self.conv1 = ConvBNReLU(inter, inter, 3, bias_attr=False)
        self.cls = dropout_classifier(inter, num_classes)
        self.aux = context_aux_head(num_classes, bias=False)
        if concat_input:
            self.conv_cat = ConvBNReLU(deep + inter, inter, 3, bias_attr=False)

    def forward(self, feats):
        low, deep = feats
        out = self.conv1(self.dnl_block(self.conv0(deep)))
        if self.concat_input:
            out = self.conv_cat(paddle.concat([deep, out], axis=1))
        logits = [self.cls(out)]
        return logits + [self.aux(low)] if self.enable_auxiliary_loss else logits


@MODELS.add
class DNLNet(ContextSegModel):
    """DNLNet; arguments and defaults as PaddleSeg's (``pretrained``: segx loads weights
    itself, so only None is accepted by segx's builder)."""

    align_mode = 1

    def __init__(self, num_classes: int, backbone: nn.Layer, backbone_indices=(2, 3),
                 reduction: int = 2, use_scale: bool = True, mode: str = "embedded_gaussian",
                 temperature: float = 0.05, concat_input: bool = True,
                 enable_auxiliary_loss: bool = True, align_corners: bool = False,
                 pretrained=None):
        super().__init__()
        widths = pick_two_features(backbone, backbone_indices, enable_auxiliary_loss, "DNLNet")
        self.setup(backbone, backbone_indices, align_corners, pretrained)
        self.head = DNLHead(num_classes, widths, reduction, use_scale, mode, temperature,
                            concat_input, enable_auxiliary_loss)
