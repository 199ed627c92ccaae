"""HRNet backbones (Wang et al., "Deep High-Resolution Representation Learning for Visual
Recognition", TPAMI 2020, arXiv:1908.07919), written for segx with PaddleSeg's parameter names.

Layout: two stride-2 3x3 conv stems (64 channels, stride 4 in all), a first stage of
bottleneck blocks (expansion 4) at that resolution, then three multi-resolution stages. Before
each of them a transition adapts the widths of the existing branches and opens one new branch
at half the resolution of the lowest one (a stride-2 3x3 conv of the lowest branch). A stage is
a sequence of modules; each module runs its own chain of basic blocks on every branch and then
fuses: every output branch ``i`` sums all input branches ``j``, a lower-resolution one through a
1x1 conv and a bilinear upsampling, a higher-resolution one through ``i - j`` stride-2 3x3 convs
(ReLU between them, none after the last), then a ReLU. The backbone returns one feature: the
four branches of the last stage upsampled to the highest resolution and concatenated.

Sublayer names (``st3.stage_st3_2.fuse_func.residual_st3_2_layer_3_1_2._conv.weight`` ...)
and creation order are PaddleSeg's, so its ImageNet and trained checkpoints load unchanged and
paddle's internal parameter names (optimizer-state keys) match too.
"""
from __future__ import annotations

import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from segx.backend.nets import BACKBONES
from segx.backend.nets.layers import ConvBN, ConvBNReLU, init_conv_weights

_PSA_REFUSED = ("use_psa=True: segx's HRNet has no polarized self-attention "
                "(set SEGX_NETWORKS=paddleseg for it)")


def _pad(same: bool):
    """'same' (paddle's asymmetric SAME padding, PaddleSeg's default) or a plain 1-pixel pad."""
    return "same" if same else 1


class SqueezeExcite(nn.Layer):
    """Channel gate: global average, a 1/16 bottleneck of two linear layers, a sigmoid."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        mid = int(channels / reduction)
        self.pool2d_gap = nn.AdaptiveAvgPool2D(1)
        self.squeeze = nn.Linear(channels, mid, weight_attr=_uniform(channels))
        self.excitation = nn.Linear(mid, channels, weight_attr=_uniform(mid))
        self.channels = channels

    def forward(self, x):
        w = paddle.reshape(self.pool2d_gap(x), [-1, self.channels])
        w = F.sigmoid(self.excitation(F.relu(self.squeeze(w))))
        return x * paddle.reshape(w, [-1, self.channels, 1, 1])


def _uniform(fan_in: int):
    bound = 1.0 / math.sqrt(float(fan_in))
    return paddle.ParamAttr(initializer=nn.initializer.Uniform(-bound, bound))


class Bottleneck(nn.Layer):
    """1x1 -> 3x3 -> 1x1 (x4 widths) residual block of the first stage."""

    def __init__(self, cin: int, width: int, project: bool, has_se: bool, same: bool):
        super().__init__()
        self.conv1 = ConvBNReLU(cin, width, 1, bias_attr=False)
        self.conv2 = ConvBNReLU(width, width, 3, padding=_pad(same), bias_attr=False)
        self.conv3 = ConvBN(width, width * 4, 1, bias_attr=False)
        if project:
            self.conv_down = ConvBN(cin, width * 4, 1, bias_attr=False)
        self.se = SqueezeExcite(width * 4) if has_se else None
        self.project = project

    def forward(self, x):
        y = self.conv3(self.conv2(self.conv1(x)))
        if self.se is not None:
            y = self.se(y)
        return F.relu(y + (self.conv_down(x) if self.project else x))


class Basic(nn.Layer):
    """Two 3x3 convs with an identity shortcut (the branches' block)."""

    def __init__(self, cin: int, cout: int, has_se: bool, same: bool):
        super().__init__()
        self.conv1 = ConvBNReLU(cin, cout, 3, padding=_pad(same), bias_attr=False)
        self.conv2 = ConvBN(cout, cout, 3, padding=_pad(same), bias_attr=False)
        self.se = SqueezeExcite(cout) if has_se else None

    def forward(self, x):
        y = self.conv2(self.conv1(x))
        if self.se is not None:
            y = self.se(y)
        return F.relu(y + x)


class FirstStage(nn.Layer):
    """Bottleneck blocks at stride 4; the first one projects its shortcut."""

    def __init__(self, cin: int, width: int, blocks: int, has_se: bool, same: bool):
        super().__init__()
        self.blocks = []
        for i in range(blocks):
            block = Bottleneck(cin if i == 0 else width * 4, width, i == 0, has_se, same)
            self.blocks.append(self.add_sublayer(f"bb_layer2_{i + 1}", block))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class Transition(nn.Layer):
    """Adapts existing branches whose width changes (3x3 conv) and opens the new ones from the
    lowest-resolution input (stride-2 3x3 conv); ``None`` passes a branch through."""

    def __init__(self, widths_in, widths_out, tag: str, same: bool):
        super().__init__()
        self.convs = []
        for i, cout in enumerate(widths_out):
            conv = None
            if i >= len(widths_in):
                conv = ConvBNReLU(widths_in[-1], cout, 3, stride=2, padding=_pad(same),
                                  bias_attr=False)
            elif widths_in[i] != cout:
                conv = ConvBNReLU(widths_in[i], cout, 3, padding=_pad(same), bias_attr=False)
            if conv is not None:
                self.add_sublayer(f"transition_{tag}_layer_{i + 1}", conv)
            self.convs.append(conv)

    def forward(self, xs):
        outs = []
        for i, conv in enumerate(self.convs):
            x = xs[min(i, len(xs) - 1)]
            outs.append(x if conv is None else conv(x))
        return outs


class Branches(nn.Layer):
    """A chain of basic blocks on each resolution branch."""

    def __init__(self, blocks, widths_in, widths, has_se: bool, tag: str, same: bool):
        super().__init__()
        self.chains = []
        for b, width in enumerate(widths):
            chain = []
            for k in range(blocks[b]):
                block = Basic(widths_in[b] if k == 0 else width, width, has_se, same)
                name = f"bb_{tag}_branch_layer_{b + 1}_{k + 1}"
                chain.append(self.add_sublayer(name, block))
            self.chains.append(chain)

    def forward(self, xs):
        outs = []
        for x, chain in zip(xs, self.chains):
            for block in chain:
                x = block(x)
            outs.append(x)
        return outs


class Fuse(nn.Layer):
    """Exchange between branches: output ``i`` is the ReLU of the sum over every input ``j``,
    upsampled (``j > i``: 1x1 conv first) or strided down (``j < i``: ``i - j`` 3x3 convs)."""

    def __init__(self, widths, outputs: int, tag: str, align_corners: bool, same: bool):
        super().__init__()
        self.paths = {}
        for i in range(outputs):
            for j, cin in enumerate(widths):
                if j > i:
                    conv = ConvBN(cin, widths[i], 1, bias_attr=False)
                    self.paths[i, j] = [self.add_sublayer(
                        f"residual_{tag}_layer_{i + 1}_{j + 1}", conv)]
                elif j < i:
                    self.paths[i, j] = self._down_path(widths, i, j, tag, same)
        self.outputs, self.branches = outputs, len(widths)
        self.align_corners = align_corners

    def _down_path(self, widths, i: int, j: int, tag: str, same: bool) -> list:
        # the intermediate convs keep branch j's width (PaddleSeg's choice); the last one maps
        # to branch i's width and has no ReLU
        convs, cin = [], widths[j]
        for k in range(i - j):
            last = k == i - j - 1
            kind, cout = (ConvBN, widths[i]) if last else (ConvBNReLU, widths[j])
            conv = kind(cin, cout, 3, stride=2, padding=_pad(same), bias_attr=False)
            convs.append(self.add_sublayer(f"residual_{tag}_layer_{i + 1}_{j + 1}_{k + 1}",
                                           conv))
            cin = cout
        return convs

    def forward(self, xs):
        outs = []
        for i in range(self.outputs):
            total = xs[i]
            hw = paddle.shape(total)[-2:]
            for j in range(self.branches):
                if j == i:
                    continue
                y = xs[j]
                for conv in self.paths[i, j]:
                    y = conv(y)
                if j > i:
                    y = F.interpolate(y, hw, mode="bilinear", align_corners=self.align_corners)
                total = total + y
            outs.append(F.relu(total))
        return outs


class HRModule(nn.Layer):
    """One module of a stage: per-branch blocks, then the fusion."""

    def __init__(self, widths, blocks, has_se: bool, tag: str, align_corners: bool,
                 same: bool):
        super().__init__()
        self.branches_func = Branches(blocks, widths, widths, has_se, tag, same)
        self.fuse_func = Fuse(widths, len(widths), tag, align_corners, same)

    def forward(self, xs):
        return self.fuse_func(self.branches_func(xs))


class Stage(nn.Layer):
    def __init__(self, widths, modules: int, blocks, has_se: bool, tag: str,
                 align_corners: bool, same: bool):
        super().__init__()
        self.mods = [self.add_sublayer(
            f"stage_{tag}_{m + 1}",
            HRModule(widths, blocks, has_se, f"{tag}_{m + 1}", align_corners, same))
            for m in range(modules)]

    def forward(self, xs):
        for mod in self.mods:
            xs = mod(xs)
        return xs


class HRNet(nn.Layer):
    """The HRNet backbone. ``stages`` holds, for stages 1-4, (modules, blocks per branch,
    widths per branch); PaddleSeg's defaults (``padding_same``, ``align_corners`` ...)."""

    def __init__(self, stages, in_channels: int = 3, has_se: bool = False,
                 align_corners: bool = False, padding_same: bool = True,
                 use_psa: bool = False, pretrained=None):
        super().__init__()
        if use_psa:
            raise ValueError(_PSA_REFUSED)
        (_, (b1,), (w1,)), *multi = stages
        same = padding_same
        self.align_corners = align_corners
        self.feat_channels = [sum(multi[-1][2])]
        self.conv_layer1_1 = ConvBNReLU(in_channels, 64, 3, stride=2, padding=_pad(same),
                                        bias_attr=False)
        self.conv_layer1_2 = ConvBNReLU(64, 64, 3, stride=2, padding=_pad(same),
                                        bias_attr=False)
        self.la1 = FirstStage(64, w1, b1, has_se, same)
        widths = [w1 * 4]
        for n, (modules, blocks, out) in enumerate(multi, start=1):
            setattr(self, f"tr{n}", Transition(widths, out, f"tr{n}", same))
            setattr(self, f"st{n + 1}", Stage(out, modules, blocks, has_se, f"st{n + 1}",
                                              align_corners, same))
            widths = list(out)
        self.pretrained = pretrained
        init_conv_weights(self)

    def forward(self, x):
        x = self.la1(self.conv_layer1_2(self.conv_layer1_1(x)))
        xs = [x]
        for n in (1, 2, 3):
            xs = getattr(self, f"st{n + 1}")(getattr(self, f"tr{n}")(xs))
        hw = paddle.shape(xs[0])[2:]
        ups = [F.interpolate(t, hw, mode="bilinear", align_corners=self.align_corners)
               for t in xs[1:]]
        return [paddle.concat([xs[0]] + ups, axis=1)]


def _hrnet(width: int, **kwargs) -> HRNet:
    """The standard HRNet-W<width>: branch widths width * (1, 2, 4, 8), four blocks per branch,
    1 / 4 / 3 modules in stages 2 / 3 / 4."""
    widths = [width << b for b in range(4)]
    stages = [(1, (4,), (64,)), (1, (4, 4), widths[:2]), (4, (4, 4, 4), widths[:3]),
              (3, (4, 4, 4, 4), widths)]
    return HRNet(stages, **kwargs)


@BACKBONES.add
def HRNet_W18(in_channels: int = 3, has_se: bool = False, align_corners: bool = False,
              padding_same: bool = True, use_psa: bool = False, pretrained=None):
    """HRNet-W18: branches of 18, 36, 72 and 144 channels."""
    return _hrnet(18, in_channels=in_channels, has_se=has_se, align_corners=align_corners,
                  padding_same=padding_same, use_psa=use_psa, pretrained=pretrained)


@BACKBONES.add
def HRNet_W48(in_channels: int = 3, has_se: bool = False, align_corners: bool = False,
              padding_same: bool = True, use_psa: bool = False, pretrained=None):
    """HRNet-W48: branches of 48, 96, 192 and 384 channels."""
    return _hrnet(48, in_channels=in_channels, has_se=has_se, align_corners=align_corners,
                  padding_same=padding_same, use_psa=use_psa, pretrained=pretrained)
