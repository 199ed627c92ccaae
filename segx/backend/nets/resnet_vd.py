"""ResNet-vd backbones (He et al., "Bag of Tricks for Image Classification with Convolutional
Neural Networks", CVPR 2019, the "D" tweak), written for segx with PaddleSeg's parameter names
and arguments, for dilated segmentation networks.

Layout:

* stem: three 3x3 conv-BN-ReLU (32, 32, 64 channels; the first with stride 2), then a 3x3
  stride-2 max pool;
* four stages of residual blocks, 64/128/256/512 wide (bottlenecks expand by 4 from 50 layers
  up); each stage's first block projects its shortcut with a 1x1 conv-BN, and where that block
  halves the resolution the projection is preceded by a 2x2 average pool (the "vd" shortcut)
  instead of striding the 1x1 conv;
* ``output_stride`` 8 replaces the strides of stages 3 and 4 by dilations 2 and 4, 16 only that
  of stage 4 by dilation 2 (32 keeps every stride); ``multi_grid`` multiplies the dilation of
  stage 4's blocks one by one.

The backbone returns the four stage outputs (``feat_channels`` wide). The stem's output is kept
in ``conv1_logit`` after a forward only when ``keep_conv1_logit`` is set (GSCNN's shape stream
reads it; PaddleSeg always keeps a copy, which holds a half-resolution 64-channel map alive
between calls). Sub-layers are named
``conv1_1``..``conv1_3`` and ``bb_<stage>_<block>`` (``conv0``..``conv2``, ``short``), as in
PaddleSeg, so its ImageNet and trained checkpoints load unchanged.
"""
from __future__ import annotations

import paddle.nn as nn

from segx.backend.nets import BACKBONES
from segx.backend.nets.layers import Activation, ConvBNAct

DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
          152: (3, 8, 36, 3), 200: (3, 12, 48, 3)}
WIDTHS = (64, 128, 256, 512)
STAGE_DILATIONS = {8: (1, 1, 2, 4), 16: (1, 1, 1, 2), 32: (1, 1, 1, 1)}
# a dilation pads its input by as much on every side: bounded so a config cannot ask for a
# feature map many times the image's size
MAX_DILATION = 256


class ResConvBN(ConvBNAct):
    """Bias-free conv, BN, optional activation, optionally after a 2x2 average pool
    (``avg_down``: the vd shortcut). Dilated convs must be 3x3; padding keeps the size."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1,
                 act: str | None = None, avg_down: bool = False, data_format: str = "NCHW"):
        if dilation != 1 and kernel != 3:
            raise ValueError(f"a dilated ResNet conv must be 3x3, not {kernel}x{kernel}")
        padding = dilation if dilation != 1 else (kernel - 1) // 2
        super().__init__(cin, cout, kernel, padding=padding, act_type=act, stride=stride,
                         dilation=dilation, bias_attr=False, data_format=data_format)
        self.avg_down = avg_down
        if avg_down:
            self._pool2d_avg = nn.AvgPool2D(kernel_size=2, stride=2, padding=0,
                                            ceil_mode=True, data_format=data_format)

    def forward(self, x):
        # the base class by name: paddle.jit.to_static rejects zero-argument super()
        return ConvBNAct.forward(self, self._pool2d_avg(x) if self.avg_down else x)


class _Residual(nn.Layer):
    """Shared tail of both block kinds: shortcut (identity or projection), add, ReLU."""

    def _make_shortcut(self, cin: int, cout: int, project: bool, avg_down: bool, fmt: str):
        self.shortcut = not project
        if project:
            self.short = ResConvBN(cin, cout, 1, avg_down=avg_down, data_format=fmt)
        self.relu = Activation("relu")

    def _finish(self, x, y):
        return self.relu((self.short(x) if not self.shortcut else x) + y)


class BasicBlock(_Residual):
    """Two 3x3 convs (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, dilation: int, project: bool,
                 avg_down: bool, data_format: str = "NCHW"):
        super().__init__()
        self.conv0 = ResConvBN(cin, width, 3, stride, dilation, "relu", data_format=data_format)
        self.conv1 = ResConvBN(width, width, 3, 1, dilation, None, data_format=data_format)
        self._make_shortcut(cin, width, project, avg_down, data_format)

    def forward(self, x):
        return self._finish(x, self.conv1(self.conv0(x)))


class BottleneckBlock(_Residual):
    """1x1 reduce, 3x3 (strided / dilated), 1x1 expand by 4 (ResNet-50 and deeper)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, dilation: int, project: bool,
                 avg_down: bool, data_format: str = "NCHW"):
        super().__init__()
        self.conv0 = ResConvBN(cin, width, 1, act="relu", data_format=data_format)
        self.conv1 = ResConvBN(width, width, 3, stride, dilation, "relu",
                               data_format=data_format)
        self.conv2 = ResConvBN(width, width * 4, 1, data_format=data_format)
        self._make_shortcut(cin, width * 4, project, avg_down, data_format)

    def forward(self, x):
        return self._finish(x, self.conv2(self.conv1(self.conv0(x))))


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_args(layers: int, output_stride: int, multi_grid) -> None:
    if layers not in DEPTHS:
        raise ValueError(f"ResNet_vd layers={layers}: choose one of {sorted(DEPTHS)}")
    if output_stride not in STAGE_DILATIONS:
        raise ValueError(f"ResNet_vd output_stride={output_stride}: choose one of "
                         f"{sorted(STAGE_DILATIONS)}")
    last = DEPTHS[layers][3]
    if not isinstance(multi_grid, (list, tuple)) or len(multi_grid) < last or not all(
            _positive_int(g) and g * 4 <= MAX_DILATION for g in multi_grid[:last]):
        raise ValueError(f"ResNet_vd multi_grid={multi_grid!r}: give {last} or more positive "
                         f"integers (one per block of the last stage), each at most "
                         f"{MAX_DILATION // 4}")


class ResNet_vd(nn.Layer):
    """ResNet-vd; arguments and defaults as PaddleSeg's (``pretrained``: segx loads weights
    itself, so only None is accepted by segx's builder), plus segx's ``keep_conv1_logit``
    (keep the stem's output in ``conv1_logit`` after each forward; GSCNN turns it on)."""

    def __init__(self, layers: int = 50, output_stride: int = 8, multi_grid=(1, 1, 1),
                 in_channels: int = 3, pretrained=None, data_format: str = "NCHW",
                 keep_conv1_logit: bool = False):
        super().__init__()
        _check_args(layers, output_stride, multi_grid)
        self.layers, self.data_format, self.pretrained = layers, data_format, pretrained
        self.conv1_logit, self.keep_conv1_logit = None, bool(keep_conv1_logit)
        block = BottleneckBlock if layers >= 50 else BasicBlock
        self.feat_channels = [w * block.expansion for w in WIDTHS]
        self.conv1_1 = ResConvBN(in_channels, 32, 3, 2, act="relu", data_format=data_format)
        self.conv1_2 = ResConvBN(32, 32, 3, 1, act="relu", data_format=data_format)
        self.conv1_3 = ResConvBN(32, 64, 3, 1, act="relu", data_format=data_format)
        self.pool2d_max = nn.MaxPool2D(kernel_size=3, stride=2, padding=1,
                                       data_format=data_format)
        self.stage_list = []  # plain lists: the blocks are registered as bb_<stage>_<block>
        cin = 64
        for s, count in enumerate(DEPTHS[layers]):
            blocks = []
            for i in range(count):
                dilation = STAGE_DILATIONS[output_stride][s] * (multi_grid[i] if s == 3 else 1)
                stride = 2 if i == 0 and s != 0 and dilation == 1 else 1
                blk = block(cin, WIDTHS[s], stride, dilation, project=i == 0,
                            avg_down=i == 0 and s != 0 and stride != 1, data_format=data_format)
                blocks.append(self.add_sublayer(f"bb_{s}_{i}", blk))
                cin = WIDTHS[s] * block.expansion
            self.stage_list.append(blocks)

    def forward(self, x):
        y = self.conv1_3(self.conv1_2(self.conv1_1(x)))
        if self.keep_conv1_logit:
            self.conv1_logit = y
        y = self.pool2d_max(y)
        feats = []
        for blocks in self.stage_list:
            for blk in blocks:
                y = blk(y)
            feats.append(y)
        return feats


@BACKBONES.add
def ResNet18_vd(**kwargs):
    return ResNet_vd(layers=18, **kwargs)


@BACKBONES.add
def ResNet50_vd(**kwargs):
    return ResNet_vd(layers=50, **kwargs)


@BACKBONES.add
def ResNet101_vd(**kwargs):
    return ResNet_vd(layers=101, **kwargs)
