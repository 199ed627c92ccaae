"""SeaFormer (Wan et al., "SeaFormer: Squeeze-enhanced Axial Transformer for Mobile Semantic
Segmentation", ICLR 2023), written for segx on paddle because paddleseg 2.8.0 lacks it.

Structure, as the paper describes it:

* five MobileNetV2 stages (the first with a stride-2 stem); the last ``len(depths)`` stages are
  each followed by a stack of SeaFormer blocks;
* a SeaFormer block is squeeze-enhanced axial attention plus a conv MLP, both residual. The
  attention squeezes Q/K/V along each axis (row means, column means) with learnable axial
  positional embeddings, attends along each axis at O(H + W) cost and broadcasts the results
  back; a depthwise-conv "detail enhancement" branch on concat(Q, K, V) is gated by the
  attention output through a hard sigmoid;
* the light segmentation head fuses the 1/8 feature with each deeper feature by multiplying a
  1x1 embedding of the local feature with the hard-sigmoid of the upsampled global feature.

Registered as backbones ``SeaFormer_{tiny,small,base,large}`` and model ``SeaFormerSeg``.
"""
from __future__ import annotations

import math
import re

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from segx.backend.nets import BACKBONES, MODELS

# Stage recipes (kernel, expansion, out channels, stride) and widths from the paper's variants.
_VARIANTS = {
    "tiny": dict(
        cfgs=[[[3, 1, 16, 1], [3, 4, 16, 2], [3, 3, 16, 1]], [[5, 3, 32, 2], [5, 3, 32, 1]],
              [[3, 3, 64, 2], [3, 3, 64, 1]], [[5, 3, 128, 2]], [[3, 6, 160, 2]]],
        channels=[16, 16, 32, 64, 128, 160], emb_dims=[128, 160], key_dims=[16, 24],
        depths=[2, 2], num_heads=4, mlp_ratios=[2, 4]),
    "small": dict(
        cfgs=[[[3, 1, 16, 1], [3, 4, 24, 2], [3, 3, 24, 1]], [[5, 3, 48, 2], [5, 3, 48, 1]],
              [[3, 3, 96, 2], [3, 3, 96, 1]], [[5, 4, 160, 2]], [[3, 6, 192, 2]]],
        channels=[16, 24, 48, 96, 160, 192], emb_dims=[160, 192], key_dims=[16, 24],
        depths=[3, 3], num_heads=6, mlp_ratios=[2, 4]),
    "base": dict(
        cfgs=[[[3, 1, 16, 1], [3, 4, 32, 2], [3, 3, 32, 1]], [[5, 3, 64, 2], [5, 3, 64, 1]],
              [[3, 3, 128, 2], [3, 3, 128, 1]], [[5, 4, 192, 2]], [[3, 6, 256, 2]]],
        channels=[16, 32, 64, 128, 192, 256], emb_dims=[192, 256], key_dims=[16, 24],
        depths=[4, 4], num_heads=8, mlp_ratios=[2, 4]),
    "large": dict(
        cfgs=[[[3, 3, 32, 1], [3, 4, 64, 2], [3, 4, 64, 1]], [[5, 4, 128, 2], [5, 4, 128, 1]],
              [[3, 4, 192, 2], [3, 4, 192, 1]], [[5, 4, 256, 2]], [[3, 6, 320, 2]]],
        channels=[32, 64, 128, 192, 256, 320], emb_dims=[192, 256, 320], key_dims=[16, 20, 24],
        depths=[3, 3, 3], num_heads=8, mlp_ratios=[2, 4, 6]),
}


def _divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without losing more than 10%."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ConvBN(nn.Sequential):
    """Bias-free conv followed by BatchNorm; ``bn_zero`` starts the branch as identity-free."""

    def __init__(self, cin, cout, k=1, stride=1, groups=1, bn_zero=False):
        bn = nn.BatchNorm2D(cout, weight_attr=nn.initializer.Constant(0.0 if bn_zero else 1.0))
        fan_out = k * k * cout // groups
        conv = nn.Conv2D(cin, cout, k, stride, k // 2, groups=groups, bias_attr=False,
                         weight_attr=nn.initializer.Normal(0.0, math.sqrt(2.0 / fan_out)))
        super().__init__(conv, bn)


class HardSigmoid(nn.Layer):
    def forward(self, x):
        return F.relu6(x + 3.0) / 6.0


class InvertedResidual(nn.Layer):
    """MobileNetV2 block: 1x1 expand, kxk depthwise, 1x1 project; residual when shapes match."""

    def __init__(self, cin, cout, k, stride, expand):
        super().__init__()
        hidden = int(round(cin * expand))
        layers = [] if expand == 1 else [ConvBN(cin, hidden), nn.ReLU()]
        layers += [ConvBN(hidden, hidden, k, stride, groups=hidden), nn.ReLU(), ConvBN(hidden, cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MV2Stage(nn.Layer):
    def __init__(self, rows, cin, stem):
        super().__init__()
        layers = [ConvBN(3, cin, 3, 2), nn.ReLU()] if stem else []
        for k, t, c, s in rows:
            cout = _divisible(c)
            layers.append(InvertedResidual(cin, cout, k, s, t))
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x):
        return self.layers(x)


class AxialPositionEmbedding(nn.Layer):
    """A learnt 1-D embedding of 16 positions, resampled to the squeezed axis length."""

    def __init__(self, dim, length=16):
        super().__init__()
        self.pos = self.create_parameter([1, dim, length],
                                         default_initializer=nn.initializer.Normal(0.0, 1.0))

    def forward(self, x):  # x: [B, C, N]
        n = paddle.shape(x)[2:3]
        return x + F.interpolate(self.pos, size=n, mode="linear", align_corners=False,
                                 data_format="NCW")


class SqueezeAxialAttention(nn.Layer):
    def __init__(self, dim, key_dim, num_heads, attn_ratio=2):
        super().__init__()
        self.heads, self.key_dim = num_heads, key_dim
        self.scale = key_dim ** -0.5
        nh_kd = key_dim * num_heads
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        self.to_q, self.to_k = ConvBN(dim, nh_kd), ConvBN(dim, nh_kd)
        self.to_v = ConvBN(dim, self.dh)
        self.row_q, self.row_k = AxialPositionEmbedding(nh_kd), AxialPositionEmbedding(nh_kd)
        self.col_q, self.col_k = AxialPositionEmbedding(nh_kd), AxialPositionEmbedding(nh_kd)
        self.row_proj = nn.Sequential(nn.ReLU6(), ConvBN(self.dh, self.dh, bn_zero=True))
        self.col_proj = nn.Sequential(nn.ReLU6(), ConvBN(self.dh, self.dh, bn_zero=True))
        self.proj = nn.Sequential(nn.ReLU6(), ConvBN(self.dh, dim, bn_zero=True))
        # detail enhancement: depthwise 3x3 over concat(q, k, v), then 1x1 back to dim
        self.detail = nn.Sequential(ConvBN(2 * self.dh, 2 * self.dh, 3, groups=2 * self.dh),
                                    nn.ReLU6(), ConvBN(2 * self.dh, dim))
        self.gate = HardSigmoid()

    def _axis(self, q, k, v, pos_q, pos_k):
        """Attend along one squeezed axis; q, k: [B, nh*kd, N], v: [B, dh, N] -> [B, dh, N]."""
        n = paddle.shape(q)[2]
        q = pos_q(q).reshape([0, self.heads, self.key_dim, n]).transpose([0, 1, 3, 2])
        k = pos_k(k).reshape([0, self.heads, self.key_dim, n])
        v = v.reshape([0, self.heads, self.d, n]).transpose([0, 1, 3, 2])
        attn = F.softmax(paddle.matmul(q, k) * self.scale, axis=-1)
        return paddle.matmul(attn, v).transpose([0, 1, 3, 2]).reshape([0, self.dh, n])

    def forward(self, x):
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        detail = self.detail(paddle.concat([q, k, v], axis=1))
        rows = self._axis(q.mean(-1), k.mean(-1), v.mean(-1), self.row_q, self.row_k)
        cols = self._axis(q.mean(-2), k.mean(-2), v.mean(-2), self.col_q, self.col_k)
        rows = self.row_proj(rows.unsqueeze(-1))  # [B, dh, H, 1]
        cols = self.col_proj(cols.unsqueeze(-2))  # [B, dh, 1, W]
        return self.gate(self.proj(v + rows + cols)) * detail


class DropPath(nn.Layer):
    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = 1 - self.p
        mask = paddle.floor(keep + paddle.rand([paddle.shape(x)[0], 1, 1, 1], dtype=x.dtype))
        return x / keep * mask


class SeaFormerBlock(nn.Layer):
    def __init__(self, dim, key_dim, num_heads, mlp_ratio, drop_path):
        super().__init__()
        self.attn = SqueezeAxialAttention(dim, key_dim, num_heads)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(ConvBN(dim, hidden),
                                 nn.Conv2D(hidden, hidden, 3, 1, 1, groups=hidden),
                                 nn.ReLU6(), ConvBN(hidden, dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        x = x + self.drop_path(self.attn(x))
        return x + self.drop_path(self.mlp(x))


class SeaFormer(nn.Layer):
    """SeaFormer backbone; returns the 1/8 feature and each transformer stage's output."""

    def __init__(self, cfgs, channels, emb_dims, key_dims, depths, num_heads, mlp_ratios,
                 drop_path_rate=0.1, pretrained=None):
        super().__init__()
        self.stages = nn.LayerList(
            [MV2Stage(rows, channels[i], stem=i == 0) for i, rows in enumerate(cfgs)])
        self.first_trans = len(cfgs) - len(depths)
        self.trans = nn.LayerList()
        for i, depth in enumerate(depths):
            rates = [drop_path_rate * j / max(depth - 1, 1) for j in range(depth)]
            self.trans.append(nn.Sequential(*[
                SeaFormerBlock(emb_dims[i], key_dims[i], num_heads, mlp_ratios[i], r)
                for r in rates]))
        self.feat_channels = [self.stages[1].out_channels] + list(emb_dims)
        if pretrained:
            from segx.backend import load_pretrained
            load_pretrained(self, pretrained)

    def forward(self, x):
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i == 1:
                outs.append(x)
            if i >= self.first_trans:
                x = self.trans[i - self.first_trans](x)
                outs.append(x)
        return outs


def _register_variant(name: str):
    def build(**kwargs):
        return SeaFormer(**{**_VARIANTS[name], **kwargs})
    build.__name__ = f"SeaFormer_{name}"
    BACKBONES.add(build)


for _name in _VARIANTS:
    _register_variant(_name)


class FusionBlock(nn.Layer):
    """local (high-res) x hard-sigmoid(global (low-res), upsampled)."""

    def __init__(self, local_ch, global_ch, out_ch):
        super().__init__()
        self.local = ConvBN(local_ch, out_ch)
        self.glob = ConvBN(global_ch, out_ch)
        self.gate = HardSigmoid()

    def forward(self, x_local, x_global):
        gate = F.interpolate(self.gate(self.glob(x_global)), size=paddle.shape(x_local)[2:],
                             mode="bilinear", align_corners=False)
        return self.local(x_local) * gate


@MODELS.add
class SeaFormerSeg(nn.Layer):
    """SeaFormer backbone + light head.

    Args:
        num_classes: output classes.
        backbone: a SeaFormer backbone.
        head_channels: channels of the fused feature (must equal ``embed_dims[-1]``).
        embed_dims: output channels of each fusion step.
        in_index: which backbone outputs the head uses (the first is the detail feature).
        is_dw: depthwise fuse conv.
        dropout_ratio: dropout before the classifier.
        align_corners: for the final upsampling.
        pretrained: a local full-model checkpoint.
    """

    def __init__(self, num_classes, backbone, head_channels, embed_dims, in_index=(0, 1, 2),
                 is_dw=True, dropout_ratio=0.1, align_corners=False, pretrained=None):
        super().__init__()
        if embed_dims[-1] != head_channels:
            raise ValueError(f"head_channels ({head_channels}) must equal embed_dims[-1] "
                             f"({embed_dims[-1]})")
        self.backbone = backbone
        self.in_index = list(in_index)
        chans = [backbone.feat_channels[i] for i in self.in_index]
        self.fuse = nn.LayerList([
            FusionBlock(chans[0] if i == 0 else embed_dims[i - 1], chans[i + 1], d)
            for i, d in enumerate(embed_dims)])
        self.linear_fuse = nn.Sequential(
            nn.Conv2D(head_channels, head_channels, 1, groups=head_channels if is_dw else 1,
                      bias_attr=False),
            nn.BatchNorm2D(head_channels), nn.ReLU())
        self.dropout = nn.Dropout2D(dropout_ratio)
        self.cls = nn.Conv2D(head_channels, num_classes, 1)
        self.align_corners = align_corners
        if pretrained:
            from segx.backend import load_pretrained
            load_pretrained(self, pretrained)

    def forward(self, x):
        feats = self.backbone(x)
        feats = [feats[i] for i in self.in_index]
        y = feats[0]
        for i, fuse in enumerate(self.fuse):
            y = fuse(y, feats[i + 1])
        y = self.cls(self.dropout(self.linear_fuse(y)))
        return [F.interpolate(y, size=paddle.shape(x)[2:], mode="bilinear",
                              align_corners=self.align_corners)]


# --------------------------------------------------------------------------- PaddleSeg's names
# segx's layers are named by their structure (``stages.1.layers.0.conv.0.0.weight``); PaddleSeg
# and PaddleX name the same tensors differently (``smb2.layer1.conv.0._conv.weight``). segx
# writes SeaFormer weights under PaddleSeg's names, so PaddleX reads them, and reads either.
_CB = {"0": "_conv", "1": "_batch_norm"}  # a ConvBN: segx's Sequential(conv, bn) items
_AXIS = {"row_q": "pos_emb_rowq", "row_k": "pos_emb_rowk", "col_q": "pos_emb_columnq",
         "col_k": "pos_emb_columnk"}
_PROJ = {"row_proj": "proj_encode_row", "col_proj": "proj_encode_column", "proj": "proj"}
_RULES = [
    (r"stages\.0\.layers\.0\.([01])\.(\w+)", lambda m: f"smb1.stem_block.0.{_CB[m[1]]}.{m[2]}"),
    (r"stages\.(\d+)\.layers\.(\d+)\.conv\.(\d+)\.([01])\.(\w+)",
     lambda m: f"smb{int(m[1]) + 1}.layer{int(m[2]) + (-1 if m[1] == '0' else 1)}.conv."
               f"{m[3]}.{_CB[m[4]]}.{m[5]}"),
    (r"trans\.(\d+)\.(\d+)\.(.+)",
     lambda m: f"trans{int(m[1]) + 1}.transformer_blocks.{m[2]}.{_block(m[3])}"),
    (r"fuse\.(\d+)\.(local|glob)\.([01])\.(\w+)",
     lambda m: f"fuse{int(m[1]) + 1}.{'local_embedding' if m[2] == 'local' else 'global_act'}"
               f".{_CB[m[3]]}.{m[4]}"),
    (r"linear_fuse\.([01])\.(\w+)", lambda m: f"linear_fuse.{_CB[m[1]]}.{m[2]}"),
    (r"cls\.(weight|bias)", lambda m: f"cls_seg.{m[1]}"),
]
_BLOCK = [
    (r"attn\.(to_[qkv])\.([01])\.(\w+)", lambda m: f"attn.{m[1]}.{_CB[m[2]]}.{m[3]}"),
    (r"attn\.(row_q|row_k|col_q|col_k)\.pos", lambda m: f"attn.{_AXIS[m[1]]}.pos_embed"),
    (r"attn\.(row_proj|col_proj|proj)\.1\.([01])\.(\w+)",
     lambda m: f"attn.{_PROJ[m[1]]}.1.{_CB[m[2]]}.{m[3]}"),
    (r"attn\.detail\.([02])\.([01])\.(\w+)",
     lambda m: f"attn.{'dwconv' if m[1] == '0' else 'pwconv'}.{_CB[m[2]]}.{m[3]}"),
    (r"mlp\.([03])\.([01])\.(\w+)",
     lambda m: f"mlp.{'fc1' if m[1] == '0' else 'fc2'}.{_CB[m[2]]}.{m[3]}"),
    (r"mlp\.1\.(weight|bias)", lambda m: f"mlp.dwconv.{m[1]}"),
]


def _apply(rules, text: str) -> str | None:
    for pattern, make in rules:
        m = re.fullmatch(pattern, text)
        if m:
            return make(m)
    return None


def _block(rest: str) -> str:
    return _apply(_BLOCK, rest) or rest


def paddleseg_name(name: str) -> str:
    """PaddleSeg's name of one of segx's SeaFormer tensors (``backbone.`` and other prefixes
    kept); other names unchanged."""
    parts = name.split(".")
    for i in range(len(parts)):
        found = _apply(_RULES, ".".join(parts[i:]))
        if found:
            return ".".join(parts[:i] + [found])
    return name


def has_seaformer(layer: nn.Layer) -> bool:
    return any(isinstance(sub, (SeaFormer, SeaFormerSeg)) for sub in layer.sublayers(True))


def to_paddleseg(state: dict) -> dict:
    """A SeaFormer state dict under PaddleSeg's names (what PaddleX reads)."""
    return {paddleseg_name(k): v for k, v in state.items()}


def to_native(layer: nn.Layer, state: dict) -> dict:
    """``state`` with PaddleSeg's SeaFormer names (whole model, or backbone only without the
    ``backbone.`` prefix) turned into ``layer``'s own; segx's own names pass unchanged."""
    table = {paddleseg_name(k): k for k in layer.state_dict()}
    out = {}
    for key, value in state.items():
        if key in table:
            key = table[key]
        elif f"backbone.{key}" in table and f"backbone.{key}" != table[f"backbone.{key}"]:
            key = table[f"backbone.{key}"][len("backbone."):]
        out[key] = value
    return out
