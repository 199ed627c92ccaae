"""EMANet (Li et al., "Expectation-Maximization Attention Networks for Semantic Segmentation",
ICCV 2019, arXiv:1907.13426), written for segx with PaddleSeg's parameter names and arguments.

* Head: a 3x3 ConvBNReLU from the deepest feature to ``ema_channels``, a 1x1 conv, the EM
  attention unit, ReLU, a 1x1 ConvBNReLU, added back to the first conv's output (ReLU), a 3x3
  ConvBNReLU to ``gc_channels``; with ``concat_input`` the deepest feature is concatenated and
  fused by another 3x3 ConvBNReLU; channel dropout and a 1x1 classifier.
* EM attention unit: ``num_bases`` unit-length bases (buffer ``mu``, shared over the batch).
  ``stage_num`` rounds, without gradient, of: responsibilities = softmax over the bases of
  pixel-base dot products; each base = the responsibility-weighted (L1-normalised over pixels)
  mean of the pixels, scaled to unit length. The output is the bases mixed back by the last
  responsibilities (so, as in PaddleSeg, no gradient flows through the unit). In training
  mode the buffer moves towards the batch's mean bases (unit length) by ``momentum``, averaged
  over the ranks when training on several.
* Auxiliary head (``enable_auxiliary_loss``) on the 1024-wide feature ``backbone_indices[0]``.

Logits are upsampled (bilinear, ``align_corners`` as given, half-pixel otherwise) to the input.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from segx.backend.nets import MODELS
from segx.backend.nets.layers import (ContextSegModel, ConvBNReLU, context_aux_head,
                                      dropout_classifier, pick_two_features)


def _positive(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"EMANet {name}={value!r}: give a positive integer")
    return value


class EMAU(nn.Layer):
    """The EM attention unit over ``c`` channels with ``k`` bases (see the module docstring)."""

    def __init__(self, c: int, k: int, stage_num: int = 3, momentum: float = 0.1):
        super().__init__()
        self.c, self.stage_num, self.momentum = c, _positive(stage_num, "stage_num"), momentum
        start = self.create_parameter(
            shape=[1, c, _positive(k, "num_bases")],
            default_initializer=nn.initializer.KaimingNormal(k))
        self.register_buffer("mu", F.normalize(paddle.to_tensor(start), axis=1, p=2))

    def _em_rounds(self, pixels, bases):
        """(bases, responsibilities) after ``stage_num`` EM rounds; pixels N x C x L."""
        with paddle.no_grad():
            pixels_t = pixels.transpose([0, 2, 1])
            for _ in range(self.stage_num):
                resp = F.softmax(paddle.bmm(pixels_t, bases), axis=2)  # N x L x K
                bases = F.normalize(paddle.bmm(pixels, F.normalize(resp, axis=1, p=1)),
                                    axis=1, p=2)
        return bases, resp

    def _move_buffer(self, bases):
        batch_mean = F.normalize(bases.mean(axis=0, keepdim=True), axis=1, p=2)
        moved = self.mu * (1 - self.momentum) + batch_mean * self.momentum
        ranks = paddle.distributed.get_world_size()
        if ranks > 1:
            paddle.distributed.all_reduce(moved)
            moved = moved / ranks
        self.mu = moved

    def forward(self, x):
        shape = paddle.shape(x)
        pixels = x.flatten(2)
        bases, resp = self._em_rounds(pixels, self.mu.tile([shape[0], 1, 1]))
        out = paddle.matmul(bases, resp.transpose([0, 2, 1]))
        out = out.reshape([0, self.c, shape[2], shape[3]])
        if self.training:
            self._move_buffer(bases)
        return out


class EMAHead(nn.Layer):
    """EMANet's head on [low feature, deepest feature] (see the module docstring)."""

    def __init__(self, num_classes: int, in_channels, ema_channels: int, gc_channels: int,
                 num_bases: int, stage_num: int, momentum: float, concat_input: bool = True,
                 enable_auxiliary_loss: bool = True):
        super().__init__()
        deep = in_channels[-1]
        self.concat_input, self.enable_auxiliary_loss = concat_input, enable_auxiliary_loss
        self.emau = EMAU(ema_channels, num_bases, stage_num, momentum=momentum)
        self.ema_in_conv = ConvBNReLU(deep, ema_channels, 3)
        self.ema_mid_conv = nn.Conv2D(ema_channels, ema_channels, 1)
        self.ema_out_conv = ConvBNReLU(ema_channels, ema_channels, 1)
        self.bottleneck = ConvBNReLU(ema_channels, gc_channels, 3)
        self.cls = dropout_classifier(gc_channels, num_classes)
        self.aux = context_aux_head(num_classes, bias=True)
        if concat_input:
            self.conv_cat = ConvBNReLU(deep + gc_channels, gc_channels, 3)

    def forward(self, feats):
        low, deep = feats
        entry = self.ema_in_conv(deep)
        recon = self.ema_out_conv(F.relu(self.emau(self.ema_mid_conv(entry))))
        out = self.bottleneck(F.relu(entry + recon))
        if self.concat_input:
            out = self.conv_cat(paddle.concat([deep, out], axis=1))
        logits = [self.cls(out)]
        return logits + [self.aux(low)] if self.enable_auxiliary_loss else logits


@MODELS.add
class EMANet(ContextSegModel):
    """EMANet; arguments and defaults as PaddleSeg's (``pretrained``: segx loads weights
    itself, so only None is accepted by segx's builder)."""

    def __init__(self, num_classes: int, backbone: nn.Layer, backbone_indices=(2, 3),
                 ema_channels: int = 512, gc_channels: int = 256, num_bases: int = 64,
                 stage_num: int = 3, momentum: float = 0.1, concat_input: bool = True,
                 enable_auxiliary_loss: bool = True, align_corners: bool = False,
                 pretrained=None):
        super().__init__()
        widths = pick_two_features(backbone, backbone_indices, enable_auxiliary_loss, "EMANet")
        self.setup(backbone, backbone_indices, align_corners, pretrained)
        self.head = EMAHead(num_classes, widths, ema_channels, gc_channels, num_bases,
                            stage_num, momentum, concat_input, enable_auxiliary_loss)
