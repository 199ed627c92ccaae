"""Mix Transformer (MiT) backbones B0-B5 of SegFormer (Xie et al., "SegFormer: Simple and
Efficient Design for Semantic Segmentation with Transformers", NeurIPS 2021), written for segx
with PaddleSeg's parameter names and arguments.

Four stages, each: an overlapping patch embedding (a strided conv, 7x7/stride 4 for the first
stage, 3x3/stride 2 after, then LayerNorm), a number of transformer blocks on the token
sequence, and a LayerNorm; the tokens are folded back to an NCHW map after each stage, so the
backbone returns four feature maps at strides 4, 8, 16 and 32. A block is pre-norm attention
plus pre-norm Mix-FFN, each on a residual branch with stochastic depth:

* efficient self-attention: keys and values come from the tokens reduced by a conv of kernel
  and stride ``sr_ratio`` (then LayerNorm) when ``sr_ratio > 1``;
* Mix-FFN: linear, depthwise 3x3 conv over the token map, GELU, linear.

Stochastic depth rises linearly over all blocks from 0 to ``drop_path_rate``.

Initialisation (for training from scratch) follows PaddleSeg's final state: linear weights
truncated normal with std 0.02 and zero biases, LayerNorms 1 and 0, convs normal with std
sqrt(2 / fan_out) (fan_out = k*k*out/groups) and zero biases. The values drawn differ from
PaddleSeg's for the same seed (it re-initialises every sub-layer several times, consuming the
random stream differently); the distributions are the same.
"""
from __future__ import annotations

import math

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.nn import initializer as init

from segx.backend.nets import BACKBONES

LN_EPS = 1e-6  # the blocks' and stages' LayerNorms; the patch and reduction norms use 1e-5


class DropPath(nn.Layer):
    """Stochastic depth: in training, zero a whole sample's residual branch with probability
    ``p`` and scale the kept ones by 1/(1-p); identity in evaluation or when ``p`` is 0."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = paddle.to_tensor(np.float32(1.0) - np.float32(self.p), dtype=x.dtype)
        shape = [paddle.shape(x)[0]] + [1] * (x.ndim - 1)
        # drawn in float32 whatever x's dtype: the same random stream as PaddleSeg's
        mask = paddle.floor(keep + paddle.rand(shape, dtype="float32").astype(x.dtype))
        return x / keep * mask


def init_weights(layer: nn.Layer) -> None:
    """The MiT initialisation of one layer (see the module docstring)."""
    if isinstance(layer, nn.Linear):
        init.TruncatedNormal(std=0.02)(layer.weight)
        if layer.bias is not None:
            init.Constant(0.0)(layer.bias)
    elif isinstance(layer, nn.LayerNorm):
        init.Constant(1.0)(layer.weight)
        init.Constant(0.0)(layer.bias)
    elif isinstance(layer, nn.Conv2D):
        kh, kw = layer.weight.shape[2:]
        fan_out = kh * kw * layer.weight.shape[0] // layer._groups
        init.Normal(0.0, math.sqrt(2.0 / fan_out))(layer.weight)
        if layer.bias is not None:
            init.Constant(0.0)(layer.bias)


def tokens_to_map(x, h, w):
    """[B, H*W, C] tokens -> [B, C, H, W]."""
    return x.transpose([0, 2, 1]).reshape([0, 0, h, w])


def map_to_tokens(x):
    """[B, C, H, W] -> [B, H*W, C] tokens."""
    return x.flatten(2).transpose([0, 2, 1])


class OverlapPatchEmbed(nn.Layer):
    """Strided conv with overlapping windows, then LayerNorm over the tokens."""

    def __init__(self, img_size=224, patch_size=7, stride=4, in_chans=3, embed_dim=768):
        super().__init__()
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.H = self.W = img_size // patch_size
        self.num_patches = self.H * self.W
        self.proj = nn.Conv2D(in_chans, embed_dim, patch_size, stride=stride,
                              padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)  # paddle's default epsilon 1e-5, as PaddleSeg

    def forward(self, x):
        x = self.proj(x)
        hw = paddle.shape(x)[2:]
        return self.norm(map_to_tokens(x)), hw[0], hw[1]


class Attention(nn.Layer):
    """Multi-head self-attention with keys/values from spatially reduced tokens."""

    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0.0,
                 proj_drop=0.0, sr_ratio=1):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not a multiple of num_heads {num_heads}")
        self.dim, self.num_heads, self.sr_ratio = dim, num_heads, sr_ratio
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias_attr=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias_attr=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if sr_ratio > 1:
            self.sr = nn.Conv2D(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)  # epsilon 1e-5 here, 1e-6 in the blocks

    def forward(self, x, h, w):
        head_dim = self.dim // self.num_heads
        q = self.q(x).reshape([0, 0, self.num_heads, head_dim]).transpose([0, 2, 1, 3])
        source = x
        if self.sr_ratio > 1:
            source = self.norm(map_to_tokens(self.sr(tokens_to_map(x, h, w))))
        kv = self.kv(source).reshape([0, -1, 2, self.num_heads, head_dim])
        kv = kv.transpose([2, 0, 3, 1, 4])
        scores = paddle.matmul(q, kv[0].transpose([0, 1, 3, 2])) * self.scale
        weights = self.attn_drop(F.softmax(scores, axis=-1))
        out = paddle.matmul(weights, kv[1]).transpose([0, 2, 1, 3]).reshape([0, 0, self.dim])
        return self.proj_drop(self.proj(out))


class DWConv(nn.Layer):
    """Depthwise 3x3 conv applied to the token sequence folded back to a map."""

    def __init__(self, dim=768):
        super().__init__()
        self.dim = dim
        self.dwconv = nn.Conv2D(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x, h, w):
        return map_to_tokens(self.dwconv(tokens_to_map(x, h, w)))


class Mlp(nn.Layer):
    """Mix-FFN: linear, depthwise conv, GELU, linear (dropout after the GELU and the end)."""

    def __init__(self, in_features, hidden_features=None, out_features=None, drop=0.0):
        super().__init__()
        hidden = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out_features or in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x, h, w):
        x = self.drop(self.act(self.dwconv(self.fc1(x), h, w)))
        return self.drop(self.fc2(x))


class Block(nn.Layer):
    """Pre-norm attention and Mix-FFN, each a residual branch with stochastic depth."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, drop=0.0,
                 attn_drop=0.0, drop_path=0.0, sr_ratio=1):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, epsilon=LN_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_scale, attn_drop, drop, sr_ratio)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, epsilon=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x, h, w):
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


def drop_path_rates(rate: float, total: int) -> list[float]:
    """Per-block stochastic-depth probabilities, 0 to ``rate`` evenly (paddle's float32
    values, as PaddleSeg computes them)."""
    return [float(v) for v in paddle.linspace(0.0, rate, total).numpy()]


class MixVisionTransformer(nn.Layer):
    """The MiT backbone; ``feat_channels`` are ``embed_dims``. Stage ``i`` (1-4) holds
    ``patch_embed{i}``, ``block{i}`` (a LayerList) and ``norm{i}`` (PaddleSeg's names)."""

    def __init__(self, img_size=224, patch_size=16, in_channels=3, num_classes=1000,
                 embed_dims=(64, 128, 256, 512), num_heads=(1, 2, 4, 8), mlp_ratios=(4, 4, 4, 4),
                 qkv_bias=False, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0,
                 drop_path_rate=0.0, depths=(3, 4, 6, 3), sr_ratios=(8, 4, 2, 1),
                 pretrained=None):
        super().__init__()
        self.num_classes, self.pretrained = num_classes, pretrained
        self.depths, self.feat_channels = list(depths), list(embed_dims)
        chans = [in_channels] + list(embed_dims)
        # all four patch embeddings first, then each stage's blocks and norm: PaddleSeg's
        # creation order, which fixes paddle's internal parameter names
        sizes = [img_size, img_size // 4, img_size // 8, img_size // 16]
        for i in range(4):
            setattr(self, f"patch_embed{i + 1}", OverlapPatchEmbed(
                sizes[i], 7 if i == 0 else 3, 4 if i == 0 else 2, chans[i], chans[i + 1]))
        rates = iter(drop_path_rates(drop_path_rate, sum(depths)))
        for i in range(4):
            setattr(self, f"block{i + 1}", nn.LayerList([
                Block(embed_dims[i], num_heads[i], mlp_ratios[i], qkv_bias, qk_scale, drop_rate,
                      attn_drop_rate, next(rates), sr_ratios[i]) for _ in range(depths[i])]))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(embed_dims[i], epsilon=LN_EPS))
        self.apply(init_weights)

    def forward(self, x):
        outs = []
        for i in range(1, 5):
            x, h, w = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"block{i}"):
                x = block(x, h, w)
            x = tokens_to_map(getattr(self, f"norm{i}")(x), h, w)
            outs.append(x)
        return outs


_WIDE = dict(embed_dims=(64, 128, 320, 512))
_VARIANTS = {
    "B0": dict(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    "B1": dict(_WIDE, depths=(2, 2, 2, 2)),
    "B2": dict(_WIDE, depths=(3, 4, 6, 3)),
    "B3": dict(_WIDE, depths=(3, 4, 18, 3)),
    "B4": dict(_WIDE, depths=(3, 8, 27, 3)),
    "B5": dict(_WIDE, depths=(3, 6, 40, 3)),
}


def _variant(size: str, options: dict) -> MixVisionTransformer:
    """A MiT-``size`` backbone: the variant's widths and depths, and what all share."""
    return MixVisionTransformer(patch_size=4, num_heads=(1, 2, 5, 8), mlp_ratios=(4, 4, 4, 4),
                                qkv_bias=True, sr_ratios=(8, 4, 2, 1), drop_rate=0.0,
                                drop_path_rate=0.1, **_VARIANTS[size], **options)


def _register(size: str):
    def build(img_size=224, in_channels=3, num_classes=1000, qk_scale=None,
              attn_drop_rate=0.0, pretrained=None):
        return _variant(size, dict(img_size=img_size, in_channels=in_channels,
                                   num_classes=num_classes, qk_scale=qk_scale,
                                   attn_drop_rate=attn_drop_rate, pretrained=pretrained))
    build.__name__ = build.__qualname__ = f"MixVisionTransformer_{size}"
    build.__doc__ = f"MiT-{size}: embed_dims {_VARIANTS[size]['embed_dims']}, " \
                    f"depths {_VARIANTS[size]['depths']}, stochastic depth up to 0.1."
    return BACKBONES.add(build)


MixVisionTransformer_B0, MixVisionTransformer_B1, MixVisionTransformer_B2, \
    MixVisionTransformer_B3, MixVisionTransformer_B4, MixVisionTransformer_B5 = \
    (_register(s) for s in _VARIANTS)
