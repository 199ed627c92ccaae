"""U-Net++ (Zhou et al., "UNet++: A Nested U-Net Architecture for Medical Image
Segmentation", DLMIA 2018, arXiv:1807.10165) as PaddleSeg builds it, written for segx with
PaddleSeg's arguments and tensor names.

Nodes X(i, j): column 0 is the encoder (a double conv-BN-ReLU per level, widths 32, 64, 128,
256, 512, 2x2 max pooling between levels); node X(i, j>0) upsamples X(i+1, j-1) by 2
(bilinear + 1x1 conv, or with ``use_deconv`` a 2x2 stride-2 transposed conv) to X(i, 0)'s
width, concatenates X(i, 0) .. X(i, j-1) after it, and applies a double conv-BN-ReLU
(``up_cat{i}_{j}``). Four 1x1 classifiers read X(0, 1) .. X(0, 4); with ``is_ds`` (deep
supervision, PaddleSeg's default and the zoo's) the output is their mean, otherwise the last
one. One output in training and evaluation. Height and width must be multiples of 16.

Initialisation as PaddleSeg's: Kaiming-normal conv weights (and SyncBatchNorm weights when
several GPU ranks train); the transposed convs keep paddle's default.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from segx.backend.nets import MODELS
from segx.backend.nets.layers import norm_layer
from segx.backend.nets.unet import check_channels, check_flag

WIDTHS = (32, 64, 128, 256, 512)
DEPTH = 4  # levels below the top


class DoubleConv(nn.Layer):
    """Two 3x3 conv (bias) + norm + ReLU, in ``conv``."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2D(cin, cout, 3, 1, 1), norm_layer(cout), nn.ReLU(),
                                  nn.Conv2D(cout, cout, 3, 1, 1), norm_layer(cout), nn.ReLU())

    def forward(self, x):
        return self.conv(x)


class Node(nn.Layer):
    """A nested node: ``up`` brings the deeper map to this level, ``conv`` fuses it with the
    ``inputs - 1`` maps of the same level."""

    def __init__(self, deep: int, width: int, inputs: int, use_deconv: bool,
                 align_corners: bool):
        super().__init__()
        if use_deconv:
            self.up = nn.Conv2DTranspose(deep, width, kernel_size=2, stride=2, padding=0)
        else:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=align_corners),
                nn.Conv2D(deep, width, 1, 1, 0))
        self.conv = DoubleConv(inputs * width, width)

    def forward(self, deeper, *same_level):
        return self.conv(paddle.concat([self.up(deeper), *same_level], axis=1))


def _init(model: nn.Layer) -> None:
    kaiming = nn.initializer.KaimingNormal()
    for sub in model.sublayers():
        if isinstance(sub, (nn.Conv2D, nn.SyncBatchNorm)):
            kaiming(sub.weight)


@MODELS.add
class UNetPlusPlus(nn.Layer):
    """U-Net++; arguments and defaults as PaddleSeg's (``pretrained``: segx loads weights
    itself, so its builder accepts only None)."""

    def __init__(self, num_classes: int, in_channels: int = 3, use_deconv: bool = False,
                 align_corners: bool = False, pretrained=None, is_ds: bool = True):
        super().__init__()
        check_channels("num_classes", num_classes)
        check_flag("use_deconv", use_deconv), check_flag("align_corners", align_corners)
        self.pretrained, self.is_ds = pretrained, check_flag("is_ds", is_ds)
        self.pool = nn.MaxPool2D(kernel_size=2, stride=2)
        cins = (check_channels("in_channels", in_channels),) + WIDTHS[:-1]
        for i, (cin, cout) in enumerate(zip(cins, WIDTHS)):
            setattr(self, f"conv{i}_0", DoubleConv(cin, cout))
        for j in range(1, DEPTH + 1):
            for i in range(DEPTH + 1 - j):
                setattr(self, f"up_cat{i}_{j}", Node(WIDTHS[i + 1], WIDTHS[i], j + 1,
                                                     use_deconv, align_corners))
        for j in range(1, DEPTH + 1):
            setattr(self, f"out_{j}", nn.Conv2D(WIDTHS[0], num_classes, 1, 1, 0))
        _init(self)

    def _grid(self, x) -> list:
        """Row 0 of the node grid: X(0, 0) .. X(0, 4)."""
        rows = [[self.conv0_0(x)]]
        for i in range(1, DEPTH + 1):
            rows.append([getattr(self, f"conv{i}_0")(self.pool(rows[-1][0]))])
        for j in range(1, DEPTH + 1):
            for i in range(DEPTH + 1 - j):
                node = getattr(self, f"up_cat{i}_{j}")
                rows[i].append(node(rows[i + 1][j - 1], *rows[i][:j]))
        return rows[0]

    def forward(self, x):
        top = self._grid(x)
        if not self.is_ds:
            return [self.out_4(top[DEPTH])]
        logits = [getattr(self, f"out_{j}")(top[j]) for j in range(1, DEPTH + 1)]
        return [(logits[0] + logits[1] + logits[2] + logits[3]) / 4]
