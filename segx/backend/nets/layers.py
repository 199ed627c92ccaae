"""Building blocks shared by segx's own networks.

Every block keeps the sub-layer names PaddleSeg's blocks of the same name use (``_conv``,
``_batch_norm``, ``depthwise_conv``, ``piontwise_conv`` [sic], ``conv_bn_relu`` ...), so the
state-dict keys of a network built from them are those of PaddleSeg's checkpoints, and they
create their parameters in the same order (paddle's internal names ``conv2d_N.w_0`` follow it).

Conventions, as in PaddleSeg: convolutions default to ``padding='same'``; further keyword
arguments (``stride``, ``dilation``, ``groups``, ``bias_attr``, ``weight_attr``,
``data_format``) go to the convolution; the norm is BatchNorm, or SyncBatchNorm when training
on several GPUs (:func:`norm_layer`).
"""
from __future__ import annotations

import functools
import os

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

_PLAIN_BN_DEVICES = ("cpu", "xpu", "npu")


def _sync_wanted() -> bool:
    device = paddle.get_device()
    if device == "cpu" or any(d in device for d in _PLAIN_BN_DEVICES):
        return False  # SyncBatchNorm has no kernel there
    if os.environ.get("PADDLESEG_EXPORT_STAGE"):
        return False
    return paddle.distributed.ParallelEnv().nranks > 1


def norm_layer(channels: int, **kwargs) -> nn.Layer:
    """BatchNorm over ``channels``; SyncBatchNorm when running on several accelerator ranks.
    Both have the same parameter and buffer names, so checkpoints load into either."""
    cls = nn.SyncBatchNorm if _sync_wanted() else nn.BatchNorm2D
    return cls(channels, **kwargs)


@functools.lru_cache(maxsize=None)
def _activations() -> dict:
    """Lower-cased name -> class for every activation layer paddle.nn defines."""
    found = {}
    for name, obj in vars(nn.layer.activation).items():
        if isinstance(obj, type) and issubclass(obj, nn.Layer):
            found[name.lower()] = obj
    return found


class Activation(nn.Layer):
    """An activation chosen by lower-case name (``relu``, ``leakyrelu``, ``hardswish`` ...);
    None is the identity. The layer sits in ``act_func`` (PaddleSeg's name; matters for
    activations with parameters such as ``prelu``)."""

    def __init__(self, act: str | None = None):
        super().__init__()
        self._act = act
        if act is not None:
            table = _activations()
            if act not in table:
                raise KeyError(f"activation '{act}' is unknown; known: {', '.join(sorted(table))}")
            self.act_func = table[act]()

    def forward(self, x):
        return x if self._act is None else self.act_func(x)


def _data_format(kwargs: dict) -> str:
    return kwargs.get("data_format", "NCHW")


class ConvBN(nn.Layer):
    """Conv2D (``_conv``) then BatchNorm (``_batch_norm``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, padding="same",
                 **kwargs):
        super().__init__()
        self._conv = nn.Conv2D(in_channels, out_channels, kernel_size, padding=padding,
                               **kwargs)
        self._batch_norm = norm_layer(out_channels, data_format=_data_format(kwargs))

    def forward(self, x):
        return self._batch_norm(self._conv(x))


class ConvBNAct(nn.Layer):
    """Conv2D, BatchNorm, then the activation named ``act_type`` (``_act``; none if None)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, padding="same",
                 act_type: str | None = None, **kwargs):
        super().__init__()
        self._conv = nn.Conv2D(in_channels, out_channels, kernel_size, padding=padding,
                               **kwargs)
        self._batch_norm = norm_layer(out_channels, data_format=_data_format(kwargs))
        self._act_type = act_type
        if act_type is not None:
            self._act = Activation(act_type)

    def forward(self, x):
        x = self._batch_norm(self._conv(x))
        return x if self._act_type is None else self._act(x)


class ConvBNReLU(nn.Layer):
    """Conv2D, BatchNorm, ReLU (``_relu``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, padding="same",
                 **kwargs):
        super().__init__()
        self._conv = nn.Conv2D(in_channels, out_channels, kernel_size, padding=padding,
                               **kwargs)
        self._batch_norm = norm_layer(out_channels, data_format=_data_format(kwargs))
        self._relu = nn.ReLU()

    def forward(self, x):
        return self._relu(self._batch_norm(self._conv(x)))


class DepthwiseConvBN(nn.Layer):
    """Depthwise (groups = in_channels) ConvBN, in ``depthwise_conv``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, padding="same",
                 **kwargs):
        super().__init__()
        self.depthwise_conv = ConvBN(in_channels, out_channels, kernel_size, padding=padding,
                                     groups=in_channels, **kwargs)

    def forward(self, x):
        return self.depthwise_conv(x)


class SeparableConvBNReLU(nn.Layer):
    """Depthwise ConvBN keeping the width (``depthwise_conv``), then a 1x1 ConvBNReLU to
    ``out_channels`` (``piontwise_conv``, PaddleSeg's spelling) with bias ``pointwise_bias``.
    ``kwargs`` (dilation, bias_attr ...) go to the depthwise conv only."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, padding="same",
                 pointwise_bias=None, **kwargs):
        super().__init__()
        self.depthwise_conv = ConvBN(in_channels, in_channels, kernel_size, padding=padding,
                                     groups=in_channels, **kwargs)
        self.piontwise_conv = ConvBNReLU(in_channels, out_channels, 1, groups=1,
                                         data_format=_data_format(kwargs),
                                         bias_attr=pointwise_bias)

    def forward(self, x):
        return self.piontwise_conv(self.depthwise_conv(x))


class AuxLayer(nn.Layer):
    """Auxiliary head for a deep-supervision loss: 3x3 ConvBNReLU to ``inter_channels``
    (``conv_bn_relu``), dropout, 1x1 conv with bias to ``out_channels`` (``conv``)."""

    def __init__(self, in_channels: int, inter_channels: int, out_channels: int,
                 dropout_prob: float = 0.1, **kwargs):
        super().__init__()
        self.conv_bn_relu = ConvBNReLU(in_channels, inter_channels, 3, padding=1, **kwargs)
        self.dropout = nn.Dropout(p=dropout_prob)
        self.conv = nn.Conv2D(inter_channels, out_channels, kernel_size=1)

    def forward(self, x):
        return self.conv(self.dropout(self.conv_bn_relu(x)))


def resize(x, size, mode: str = "bilinear", align_corners: bool = False,
           data_format: str = "NCHW"):
    """Resize ``x`` to ``size`` ([h, w], a list or a shape tensor). ``align_corners`` only
    applies to the linear modes (paddle refuses it for ``nearest``)."""
    if mode in ("nearest", "area"):
        return F.interpolate(x, size, mode=mode, data_format=data_format)
    return F.interpolate(x, size, mode=mode, align_corners=align_corners,
                         data_format=data_format)


def spatial_size(x, data_format: str = "NCHW"):
    """The [h, w] of ``x`` as a shape tensor (works when exported with dynamic sizes)."""
    return paddle.shape(x)[2:] if data_format == "NCHW" else paddle.shape(x)[1:3]


def resize_like(x, ref, mode: str = "bilinear", align_corners: bool = False,
                data_format: str = "NCHW"):
    """Resize ``x`` to the spatial size of ``ref``."""
    return resize(x, spatial_size(ref, data_format), mode, align_corners, data_format)


def init_conv_weights(layer: nn.Layer, std: float = 0.001) -> None:
    """Draw every conv weight inside ``layer`` from N(0, ``std``) (PaddleSeg's start for the
    HRNet and STDC backbones); biases and norms keep their defaults."""
    normal = nn.initializer.Normal(mean=0.0, std=std)
    for sub in layer.sublayers():
        if isinstance(sub, nn.Conv2D):
            normal(sub.weight)


# --- h20ctxb: context-module heads (EMANet, ISANet, DNLNet) --------------------------------

CONTEXT_AUX_IN = 1024  # PaddleSeg's context heads read a fixed 1024-wide stage (ResNet-50/101's third)


def dropout_classifier(in_channels: int, num_classes: int, p: float = 0.1) -> nn.Sequential:
    """Channel dropout then a 1x1 conv with bias (keys ``1.weight``/``1.bias`` in a Sequential)."""
    return nn.Sequential(nn.Dropout2D(p=p), nn.Conv2D(in_channels, num_classes, 1))


def context_aux_head(num_classes: int, bias: bool) -> nn.Sequential:
    """The auxiliary FCN head of the context networks: 3x3 ConvBNReLU from 1024 to 256 channels
    (its conv biased or not, per network), channel dropout, 1x1 classifier."""
    return nn.Sequential(
        ConvBNReLU(CONTEXT_AUX_IN, 256, 3, **({} if bias else {"bias_attr": False})),
        nn.Dropout2D(p=0.1), nn.Conv2D(256, num_classes, 1))


def pick_two_features(backbone: nn.Layer, indices, aux: bool, model: str) -> list:
    """The widths of the backbone features ``indices`` names (a low one for the auxiliary head,
    a deep one for the context head); ValueError naming the setting when they do not fit."""
    chans = list(getattr(backbone, "feat_channels", None) or [])
    picked = list(indices) if isinstance(indices, (list, tuple)) else []
    if len(picked) != 2 or any(isinstance(i, bool) or not isinstance(i, int)
                               or not -len(chans) <= i < len(chans) for i in picked):
        raise ValueError(f"{model} backbone_indices={indices!r}: give 2 indexes into the "
                         f"backbone's {len(chans)} features")
    widths = [chans[i] for i in picked]
    if aux and widths[0] != CONTEXT_AUX_IN:
        raise ValueError(f"{model} enable_auxiliary_loss: the auxiliary head takes a "
                         f"{CONTEXT_AUX_IN}-channel feature but backbone_indices[0] gives "
                         f"{widths[0]}; pick another index or set enable_auxiliary_loss: false")
    return widths


class ContextSegModel(nn.Layer):
    """Backbone, a head on two of its features, each head output upsampled (bilinear) to the
    input size. Subclasses set ``head`` and ``align_mode`` (0 half-pixel, 1 asymmetric; only
    matters when ``align_corners`` is False)."""

    align_mode = 0

    def setup(self, backbone: nn.Layer, backbone_indices, align_corners: bool, pretrained):
        self.backbone = backbone
        self.backbone_indices = list(backbone_indices)
        self.align_corners, self.pretrained = align_corners, pretrained

    def forward(self, x):
        feats = self.backbone(x)
        outs = self.head([feats[i] for i in self.backbone_indices])
        size = paddle.shape(x)[2:]
        return [F.interpolate(t, size, mode="bilinear", align_corners=self.align_corners,
                              align_mode=self.align_mode) for t in outs]
