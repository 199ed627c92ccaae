"""DANet, the dual attention network (Fu et al., "Dual Attention Network for Scene
Segmentation", CVPR 2019), written for segx with PaddleSeg's arguments, defaults and tensor
names.

Only the last feature ``backbone_indices`` selects is used (PaddleSeg's head reads the last of
the features it is given). From it two 3x3 ConvBNReLU branches a quarter as wide:

* position attention (``PAM``): each pixel gathers all pixels, weighted by a softmax over the
  dot products of 1x1-conv queries and keys (an eighth of the width), of a 1x1-conv value map;
* channel attention (``CAM``): each channel gathers all channels, weighted by a softmax of
  (the row's largest channel similarity minus each similarity);

each scaled by a learned ``gamma`` (starting at 0) and added to its input, then another 3x3
ConvBNReLU (``conv1`` after CAM, ``conv2`` after PAM). Their sum goes through 2-D dropout 0.1
and a 1x1 classifier (``cls_head``). Evaluation returns that logit map only; training adds, in
this order, a channel-branch logit, a position-branch logit and one from the backbone feature
(``aux_head``). As in PaddleSeg 2.8.0, the position-branch logit is computed by the
channel branch's classifier (``aux_head_cam``): ``aux_head_pam`` exists, so checkpoints keep
their tensors, but is never used.

Logits are upsampled to the input size with bilinear interpolation in paddle's
``align_mode=1`` (source = destination x scale, not the half-pixel rule of the other models).
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from segx.backend.nets import MODELS
from segx.backend.nets.layers import ConvBNReLU, max_keepdim, picked_channels


def _gate(layer: nn.Layer):
    """The learned residual weight of an attention module, starting at 0."""
    return layer.create_parameter(shape=[1], dtype="float32",
                                  default_initializer=nn.initializer.Constant(0.0))


class PAM(nn.Layer):
    """Position attention module (the class name gives ``gamma`` its paddle name, pam_N)."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.mid_channels, self.in_channels = in_channels // 8, in_channels
        self.query_conv = nn.Conv2D(in_channels, self.mid_channels, 1, 1)
        self.key_conv = nn.Conv2D(in_channels, self.mid_channels, 1, 1)
        self.value_conv = nn.Conv2D(in_channels, in_channels, 1, 1)
        self.gamma = _gate(self)

    def forward(self, x):
        shape = paddle.shape(x)
        queries = paddle.transpose(
            paddle.reshape(self.query_conv(x), [0, self.mid_channels, -1]), [0, 2, 1])
        keys = paddle.reshape(self.key_conv(x), [0, self.mid_channels, -1])
        weights = F.softmax(paddle.bmm(queries, keys), axis=-1)  # N, HW (query), HW (key)
        values = paddle.reshape(self.value_conv(x), [0, self.in_channels, -1])
        gathered = paddle.bmm(values, paddle.transpose(weights, [0, 2, 1]))
        gathered = paddle.reshape(gathered, [0, self.in_channels, shape[2], shape[3]])
        return self.gamma * gathered + x


class CAM(nn.Layer):
    """Channel attention module (the class name gives ``gamma`` its paddle name, cam_N)."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.gamma = _gate(self)

    def forward(self, x):
        shape = paddle.shape(x)
        flat = paddle.reshape(x, [0, self.channels, -1])  # N, C, HW
        sim = paddle.bmm(flat, paddle.transpose(flat, [0, 2, 1]))  # N, C, C
        weights = F.softmax(max_keepdim(sim, axis=-1) - sim, axis=-1)
        gathered = paddle.reshape(paddle.bmm(weights, flat),
                                  [0, self.channels, shape[2], shape[3]])
        return self.gamma * gathered + x


def _classifier(channels: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Dropout2D(0.1), nn.Conv2D(channels, num_classes, 1))


class DAHead(nn.Layer):
    def __init__(self, num_classes: int, in_channels):
        super().__init__()
        width = in_channels[-1]
        inner = width // 4
        self.channel_conv = ConvBNReLU(width, inner, 3)
        self.position_conv = ConvBNReLU(width, inner, 3)
        self.pam = PAM(inner)
        self.cam = CAM(inner)
        self.conv1 = ConvBNReLU(inner, inner, 3)
        self.conv2 = ConvBNReLU(inner, inner, 3)
        self.aux_head = _classifier(width, num_classes)
        self.aux_head_pam = _classifier(inner, num_classes)
        self.aux_head_cam = _classifier(inner, num_classes)
        self.cls_head = _classifier(inner, num_classes)

    def forward(self, feats):
        deep = feats[-1]
        by_channel = self.conv1(self.cam(self.channel_conv(deep)))
        by_position = self.conv2(self.pam(self.position_conv(deep)))
        logit = self.cls_head(by_position + by_channel)
        if not self.training:
            return [logit]
        return [logit, self.aux_head_cam(by_channel), self.aux_head_cam(by_position),
                self.aux_head(deep)]


@MODELS.add
class DANet(nn.Layer):
    """DANet; arguments and defaults as PaddleSeg's (``backbone_indices`` has no default;
    ``pretrained``: segx loads weights itself, so its builder accepts only None)."""

    def __init__(self, num_classes: int, backbone: nn.Layer, backbone_indices,
                 align_corners: bool = False, pretrained=None):
        super().__init__()
        chans = picked_channels(backbone, backbone_indices, None, "DANet")
        self.backbone = backbone
        self.backbone_indices = list(backbone_indices)
        self.head = DAHead(num_classes, chans)
        self.align_corners, self.pretrained = align_corners, pretrained

    def forward(self, x):
        feats = self.backbone(x)
        logits = self.head([feats[i] for i in self.backbone_indices])
        hw = paddle.shape(x)[2:]
        return [F.interpolate(t, hw, mode="bilinear", align_corners=self.align_corners,
                              align_mode=1) for t in logits]
