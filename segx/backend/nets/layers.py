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


class AdaptiveAvgPool2D(nn.AdaptiveAvgPool2D):
    """paddle's adaptive average pooling, written in a Paddle 3 (PIR) static graph (export) as
    two small matrix products, ``P_h @ x @ P_w^T``, whose bin-averaging matrices are built from
    the input's run-time size. The values are the same (bin ``i`` of ``n`` averages rows
    ``floor(i*H/n)`` to ``ceil((i+1)*H/n) - 1``), but the exported program converts to ONNX at
    any input size: paddle2onnx converts ``pool2d`` with adaptive sizes only at a fixed size
    ("Adaptive only support static input shape"). Paddle 2.6's programs keep paddle's op: its
    oneDNN inference computes the broadcast matmul wrongly (PP-LiteSeg-T logits off by 4.7e10).
    Same parameters (none) and names as paddle's layer; NCHW only."""

    def forward(self, x):
        # (not super(): dy2static rewrites this method, where a bare super() fails)
        return adaptive_avg_pool2d(x, self._output_size, self._data_format)


def adaptive_avg_pool2d(x, output_size, data_format: str = "NCHW"):
    """The function form of :class:`AdaptiveAvgPool2D` (matrix products in a PIR program).
    paddle2onnx's fixed-size conversion of paddle's op is wrong where the bins do not divide the
    size (ANN's 3 and 6 bins on a 16-pixel map: logits off by 625 of 2,300)."""
    if not paddle.framework.in_pir_mode() or data_format != "NCHW":
        return F.adaptive_avg_pool2d(x, output_size, data_format)
    bins = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    shape = paddle.shape(x)
    rows = _bin_matrix(shape[2], bins[0], x.dtype)
    cols = _bin_matrix(shape[3], bins[1], x.dtype)
    return paddle.matmul(paddle.matmul(rows, x), cols, transpose_y=True)


def _bin_matrix(length, bins: int, dtype):
    """The ``bins x length`` matrix averaging each adaptive-pooling bin of a ``length``-long
    axis (``length`` a shape tensor)."""
    pos = paddle.arange(length, dtype="float32").unsqueeze(0)
    idx = paddle.arange(bins, dtype="float32").unsqueeze(1)
    total = paddle.cast(length, "float32")
    start = paddle.floor(idx * total / float(bins))
    end = paddle.ceil((idx + 1.0) * total / float(bins))
    inside = paddle.logical_and(pos >= start, pos < end)
    return paddle.cast(paddle.cast(inside, "float32") / (end - start), dtype)


_SLOW_MAX_GRAD = not paddle.__version__.startswith("2.")  # (2.6's own kernel is the faster)


def max_keepdim(x, axis: int):
    """``paddle.max(x, axis, keepdim=True)`` with the same value and Paddle 2.6's gradient (each
    element equal to the maximum gets the full incoming gradient; Paddle 3 splits it among
    ties), computed as elementwise operations when a gradient is wanted on Paddle 3: Paddle 3.3's CPU
    ``max_grad`` takes about 48 ms where Paddle 2.6's took 0.6 (PP-LiteSeg-T's attention, 4 x 128
    x 128 crops: a training step 1.45x slower than on 2.6). ``x - x.detach()`` is exactly zero,
    so the value is the maximum to the bit."""
    if x.stop_gradient or not paddle.in_dynamic_mode() or not _SLOW_MAX_GRAD:
        return paddle.max(x, axis=axis, keepdim=True)
    top = paddle.max(x.detach(), axis=axis, keepdim=True)
    mask = paddle.cast(x.detach() == top, x.dtype)
    return top + paddle.sum((x - x.detach()) * mask, axis=axis, keepdim=True)


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


# --------------------------------------------------------------------------- pyramid pooling, flow
# Pyramid pooling as PSPNet defines it (Fast-SCNN's global pooling and SFNet's head use it).

# a pooled map of s x s bins per size: bounded so a config cannot ask for huge grids
MAX_BIN = 64
MAX_BINS = 8


def check_bin_sizes(bin_sizes, in_channels: int) -> list[int]:
    sizes = list(bin_sizes) if isinstance(bin_sizes, (list, tuple)) else []
    ok = 1 <= len(sizes) <= min(MAX_BINS, in_channels) and all(
        isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_BIN for s in sizes)
    if not ok:
        raise ValueError(f"bin_sizes={bin_sizes!r}: give 1 to {MAX_BINS} integers from 1 to "
                         f"{MAX_BIN}")
    return sizes


class PPModule(nn.Layer):
    """PSPNet's pyramid pooling: for each bin size an adaptive average pool and a 1x1
    ConvBNReLU (``stages.<i>.1``; to ``in_channels // len(bin_sizes)`` channels when
    ``dim_reduction``), each upsampled back; the input and the branches (deepest bin first)
    are concatenated and fused by a 3x3 ConvBNReLU (``conv_bn_relu2``)."""

    def __init__(self, in_channels: int, out_channels: int, bin_sizes=(1, 2, 3, 6),
                 dim_reduction: bool = True, align_corners: bool = False):
        super().__init__()
        bin_sizes = check_bin_sizes(bin_sizes, in_channels)
        branch = in_channels // len(bin_sizes) if dim_reduction else in_channels
        self.stages = nn.LayerList([
            nn.Sequential(AdaptiveAvgPool2D(output_size=(b, b)),
                          ConvBNReLU(in_channels, branch, 1))
            for b in bin_sizes])
        self.conv_bn_relu2 = ConvBNReLU(in_channels + branch * len(bin_sizes), out_channels,
                                        3, padding=1)
        self.align_corners = align_corners

    def forward(self, x):
        hw = spatial_size(x)
        pooled = [resize(stage(x), hw, align_corners=self.align_corners)
                  for stage in self.stages]
        return self.conv_bn_relu2(paddle.concat([x] + pooled[::-1], axis=1))


def flow_warp(x, flow, size):
    """Resample ``x`` on a grid of ``size`` ([h, w], a shape tensor) moved by ``flow``.

    The grid starts as the identity in normalised coordinates (-1..1 across each axis,
    ``align_corners`` convention); ``flow`` (N, 2, h, w; x then y offset) is divided by (w, h)
    and added to it, and ``x`` is sampled there bilinearly with zeros outside (SFNet's and
    DecoupledSegNet's warp). Every operand is float32: the shape is cast before it divides."""
    h, w = size[0], size[1]
    rows, cols = paddle.meshgrid(paddle.linspace(-1.0, 1.0, h, dtype="float32"),
                                 paddle.linspace(-1.0, 1.0, w, dtype="float32"))
    identity = paddle.stack([cols, rows], axis=-1).unsqueeze(0)
    scale = paddle.flip(paddle.cast(size, "float32"), axis=[0]).reshape([1, 1, 1, 2])
    scale.stop_gradient = True
    grid = identity + paddle.transpose(flow, [0, 2, 3, 1]) / scale
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


# --------------------------------------------------------------------------- heads on a backbone
# Helpers of the context-module networks on a ResNet (PSPNet, ANN, DANet, GCNet).

def checked_indices(backbone: nn.Layer, indices, model: str, needed: int | None = None,
                    at_least: int = 1) -> list:
    """``indices`` as a list of valid indexes into the backbone's ``feat_channels``: exactly
    ``needed`` of them, or at least ``at_least``. A bad choice is a ValueError naming
    ``model`` (the builder turns it into a one-line config error)."""
    chans = list(getattr(backbone, "feat_channels", None) or [])
    picks = list(indices) if isinstance(indices, (list, tuple)) else []
    count_ok = len(picks) == needed if needed is not None else len(picks) >= at_least
    if not count_ok or not all(isinstance(i, int) and not isinstance(i, bool)
                               and -len(chans) <= i < len(chans) for i in picks):
        want = f"{needed} index(es)" if needed is not None else f"{at_least} or more indices"
        raise ValueError(f"{model} backbone_indices={indices!r}: give {want} into the "
                         f"backbone's {len(chans)} features")
    return picks


def picked_channels(backbone: nn.Layer, indices, needed: int | None, model: str) -> list:
    """The widths of the backbone features ``indices`` select (checked by
    :func:`checked_indices`: ``needed`` of them, or any positive number when None)."""
    chans = list(getattr(backbone, "feat_channels", None) or [])
    return [chans[i] for i in checked_indices(backbone, indices, model, needed)]


class UpsampledHeadNet(nn.Layer):
    """Backbone, head (a list of logits from the features :meth:`head_inputs` passes: all of
    them here), every logit resized bilinearly to the input's size with ``self.align_corners``
    and ``self.align_mode`` (0 half-pixel, 1 asymmetric; only matters without align_corners)."""

    align_mode = 0

    def head_inputs(self, feats: list) -> list:
        return feats

    def forward(self, x):
        size = spatial_size(x)
        return [F.interpolate(t, size, mode="bilinear", align_corners=self.align_corners,
                              align_mode=self.align_mode)
                for t in self.head(self.head_inputs(self.backbone(x)))]


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
    widths = picked_channels(backbone, indices, 2, model)
    if aux and widths[0] != CONTEXT_AUX_IN:
        raise ValueError(f"{model} enable_auxiliary_loss: the auxiliary head takes a "
                         f"{CONTEXT_AUX_IN}-channel feature but backbone_indices[0] gives "
                         f"{widths[0]}; pick another index or set enable_auxiliary_loss: false")
    return widths


class ContextSegModel(UpsampledHeadNet):
    """:class:`UpsampledHeadNet` whose head takes the two features ``backbone_indices`` picks.
    Subclasses set ``head`` (and ``align_mode``)."""

    def setup(self, backbone: nn.Layer, backbone_indices, align_corners: bool, pretrained):
        self.backbone = backbone
        self.backbone_indices = list(backbone_indices)
        self.align_corners, self.pretrained = align_corners, pretrained

    def head_inputs(self, feats: list) -> list:
        return [feats[i] for i in self.backbone_indices]
