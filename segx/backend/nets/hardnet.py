"""FC-HarDNet-70 (Chao et al., "HarDNet: A Low Memory Traffic Network", ICCV 2019,
arXiv:1909.00948), written for segx with PaddleSeg's parameter names and arguments.

A harmonic dense block of ``n`` layers: layer ``k`` (from 1) reads the concatenation of the
outputs of layers ``k - 2**j`` for every ``2**j`` dividing ``k`` (layer 0 is the block's input),
oldest first; its width is the growth rate times ``grmul`` once per such ``j > 0``, rounded to
an even number. The block outputs the concatenation of its odd layers and its last one.

The model: a four-conv stem (stride 2), an encoder of blocks, each followed by a 1x1
ConvBNReLU and (but the last) a 2x2 average pool, the block outputs kept as skips; a decoder
that, from deep to shallow, upsamples to the skip, concatenates it, halves the width with a 1x1
ConvBNReLU and runs a block; a 1x1 classifier and bilinear upsampling to the input size.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from segx.backend.nets import MODELS
from segx.backend.nets.layers import ConvBNReLU, resize, spatial_size

MAX_LAYERS = 64  # layers per harmonic block (the zoo uses at most 8); not a setting


def harmonic_links(n_layers: int, base: int, growth: int, grmul: float):
    """(widths, links): the width of the block input (index 0) and of each layer, and for
    each layer (index k >= 1) the indices of the maps it reads."""
    widths, links = [base], [[]]
    for k in range(1, n_layers + 1):
        width, sources = float(growth), []
        for j in range(10):
            if k % (1 << j) == 0:
                sources.insert(0, k - (1 << j))
                if j > 0:
                    width *= grmul
        widths.append(int(int(width + 1) / 2) * 2)
        links.append(sources)
    return widths, links


class HarDBlock(nn.Layer):
    """Harmonic dense block; its layers are ``layers.<i>`` (3x3 ConvBNReLU, no bias)."""

    def __init__(self, base_channels: int, growth_rate: int, grmul: float, n_layers: int):
        super().__init__()
        widths, self.links = harmonic_links(n_layers, base_channels, growth_rate, grmul)
        self.layers = nn.LayerList([
            ConvBNReLU(sum(widths[s] for s in self.links[k]), widths[k], 3, bias_attr=False)
            for k in range(1, n_layers + 1)])
        self.kept = [k for k in range(1, n_layers + 1) if k % 2 == 1 or k == n_layers]
        self.out_channels = sum(widths[k] for k in self.kept)

    def forward(self, x):
        maps = [x]
        for layer, sources in zip(self.layers, self.links[1:]):  # (no enumerate start: export)
            ins = [maps[s] for s in sources]
            maps.append(layer(ins[0] if len(ins) == 1 else paddle.concat(ins, axis=1)))
        return paddle.concat([maps[k] for k in self.kept], axis=1)


class Encoder(nn.Layer):
    """``blks``: block, 1x1 ConvBNReLU and (but after the last block) a 2x2 average pool, in
    order; the block outputs but the last are the skips."""

    def __init__(self, cin: int, ch_list, gr, grmul: float, n_layers):
        super().__init__()
        self.blks = nn.LayerList()
        self.skip_at, self.skip_channels = [], []
        last = len(n_layers) - 1
        for i, depth in enumerate(n_layers):
            block = HarDBlock(cin, gr[i], grmul, depth)
            self.blks.append(block)
            self.skip_channels.append(block.out_channels)
            if i < last:
                self.skip_at.append(len(self.blks) - 1)
            self.blks.append(ConvBNReLU(block.out_channels, ch_list[i], 1, bias_attr=False))
            if i < last:
                self.blks.append(nn.AvgPool2D(kernel_size=2, stride=2))
            cin = ch_list[i]
        self.out_channels = cin

    def forward(self, x):
        skips = []
        for i, layer in enumerate(self.blks):
            x = layer(x)
            if i in self.skip_at:
                skips.append(x)
        return x, skips


class Decoder(nn.Layer):
    """Per level, deepest first: ``conv1x1_up.<i>`` then ``dense_blocks_up.<i>``."""

    def __init__(self, cin: int, skip_channels, gr, grmul: float, n_layers,
                 align_corners: bool = False):
        super().__init__()
        self.dense_blocks_up = nn.LayerList()
        self.conv1x1_up = nn.LayerList()
        for i in reversed(range(len(skip_channels) - 1)):
            joined = cin + skip_channels[i]
            self.conv1x1_up.append(ConvBNReLU(joined, joined // 2, 1, bias_attr=False))
            block = HarDBlock(joined // 2, gr[i], grmul, n_layers[i])
            self.dense_blocks_up.append(block)
            cin = block.out_channels
        self.out_channels = cin
        self.align_corners = align_corners

    def forward(self, x, skips):
        for conv, block, skip in zip(self.conv1x1_up, self.dense_blocks_up, skips[::-1]):
            x = resize(x, spatial_size(skip), align_corners=self.align_corners)
            x = block(conv(paddle.concat([x, skip], axis=1)))
        return x


def _check(stem_channels, ch_list, gr, n_layers) -> None:
    blocks = len(n_layers)
    if len(stem_channels) != 4:
        raise ValueError(f"stem_channels={list(stem_channels)}: give 4 widths")
    if blocks < 1 or len(ch_list) < blocks or len(gr) < blocks:
        raise ValueError(f"n_layers has {blocks} blocks: ch_list and gr need at least as "
                         f"many entries ({len(ch_list)} and {len(gr)} given)")
    if not all(isinstance(n, int) and 1 <= n <= MAX_LAYERS for n in n_layers):
        raise ValueError(f"n_layers={list(n_layers)}: each from 1 to {MAX_LAYERS}")


@MODELS.add
class HarDNet(nn.Layer):
    """FC-HarDNet; arguments and defaults as PaddleSeg's."""

    def __init__(self, num_classes: int, in_channels: int = 3,
                 stem_channels=(16, 24, 32, 48), ch_list=(64, 96, 160, 224, 320),
                 grmul: float = 1.7, gr=(10, 16, 18, 24, 32), n_layers=(4, 4, 8, 8, 8),
                 align_corners: bool = False, pretrained=None):
        super().__init__()
        _check(stem_channels, ch_list, gr, n_layers)
        widths = [in_channels] + list(stem_channels)
        self.stem = nn.Sequential(*[
            ConvBNReLU(widths[i], widths[i + 1], 3, stride=2 if i == 2 else 1, bias_attr=False)
            for i in range(4)])
        self.encoder = Encoder(widths[-1], ch_list, gr, grmul, n_layers)
        self.decoder = Decoder(self.encoder.out_channels, self.encoder.skip_channels, gr,
                               grmul, n_layers, align_corners)
        self.cls_head = nn.Conv2D(self.decoder.out_channels, num_classes, 1)
        self.align_corners = align_corners
        self.pretrained = pretrained

    def forward(self, x):
        feats, skips = self.encoder(self.stem(x))
        logit = self.cls_head(self.decoder(feats, skips))
        return [F.interpolate(logit, paddle.shape(x)[2:], mode="bilinear",
                              align_corners=self.align_corners)]
