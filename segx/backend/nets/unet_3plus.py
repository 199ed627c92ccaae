"""U-Net 3+ (Huang et al., "UNet 3+: A Full-Scale Connected UNet for Medical Image
Segmentation", ICASSP 2020, arXiv:2004.08790) as PaddleSeg builds it, written for segx with
PaddleSeg's arguments and tensor names.

* Encoder: levels 1..5 of widths 64, 128, 256, 512, 1024, each two 3x3 conv (+ BatchNorm when
  ``is_batchnorm``) + ReLU, 2x2 max pooling (floor) between levels.
* Decoder levels 4, 3, 2, 1 (``hd4`` .. ``hd1``): every one of the five maps is brought to the
  level's size (shallower encoder maps by max pooling with ceil, the level's own encoder map
  as is, deeper decoder maps and the deepest encoder map by bilinear upsampling), each reduced
  to 64 channels by a 3x3 conv-BN-ReLU, the five concatenated (320) and fused by another.
* Output: a 3x3 classifier on ``hd1``; with ``is_deepsup``, five (a 3x3 classifier on each
  decoder level and the deepest map, upsampled to the input size; ``deepsup``); with
  ``is_CGM`` (which implies deep supervision) each of those is multiplied by the class (0 or
  1) a small branch on the deepest map predicts (``cls``: dropout 0.5, 1x1 conv to 2,
  global max pooling, sigmoid, argmax).

The norms are paddle's ``nn.BatchNorm`` as in PaddleSeg (never SyncBatchNorm). Conv and norm
weights start Kaiming-normal. Height and width must be multiples of 16.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from segx.backend.nets import MODELS
from segx.backend.nets.unet import check_channels, check_flag

WIDTHS = (64, 128, 256, 512, 1024)
CAT = WIDTHS[0]  # each of the five maps a decoder level concatenates
FUSED = CAT * len(WIDTHS)


def conv_bn_relu(cin: int, cout: int, norm: bool = True) -> list:
    return [nn.Conv2D(cin, cout, 3, 1, 1), *([nn.BatchNorm(cout)] if norm else []), nn.ReLU()]


class EncoderBlock(nn.Layer):
    """Two 3x3 conv (+ norm) + ReLU, in ``conv1`` and ``conv2``."""

    def __init__(self, cin: int, cout: int, norm: bool):
        super().__init__()
        self.conv1 = nn.Sequential(*conv_bn_relu(cin, cout, norm))
        self.conv2 = nn.Sequential(*conv_bn_relu(cout, cout, norm))

    def forward(self, x):
        return self.conv2(self.conv1(x))


class Encoder(nn.Layer):
    def __init__(self, in_channels: int, norm: bool):
        super().__init__()
        self.conv1 = EncoderBlock(in_channels, WIDTHS[0], norm)
        for level in range(2, 6):
            setattr(self, f"poolconv{level}", nn.Sequential(
                nn.MaxPool2D(kernel_size=2),
                EncoderBlock(WIDTHS[level - 2], WIDTHS[level - 1], norm)))

    def forward(self, x):
        maps = [self.conv1(x)]
        for level in range(2, 6):
            maps.append(getattr(self, f"poolconv{level}")(maps[-1]))
        return maps


def _source_name(source: int, level: int) -> str:
    """PaddleSeg's name of the branch bringing map ``source`` (1..5) to decoder ``level``."""
    if source < level:
        return f"h{source}_PT_hd{level}_cbr"
    if source == level:
        return f"h{source}_Cat_hd{level}_cbr"
    return f"hd{source}_UT_hd{level}_cbr"


def _to_level(x, source: int, level: int):
    if source < level:
        k = 2 ** (level - source)
        return F.max_pool2d(x, kernel_size=k, stride=k, ceil_mode=True)
    if source > level:
        return F.interpolate(x, scale_factor=2 ** (source - level), mode="bilinear")
    return x


class Decoder(nn.Layer):
    def __init__(self):
        super().__init__()
        for level in (4, 3, 2, 1):
            for source in range(1, 6):
                cin = WIDTHS[source - 1] if source <= level or source == 5 else FUSED
                setattr(self, _source_name(source, level),
                        nn.Sequential(*conv_bn_relu(cin, CAT)))
            setattr(self, f"cbr{level}d_1", nn.Sequential(*conv_bn_relu(FUSED, FUSED)))

    def forward(self, enc):
        maps = {s: enc[s - 1] for s in range(1, 6)}  # level -> map: encoder, then decoder
        for level in (4, 3, 2, 1):
            parts = [getattr(self, _source_name(s, level))(_to_level(maps[s], s, level))
                     for s in range(1, 6)]
            maps[level] = getattr(self, f"cbr{level}d_1")(paddle.concat(parts, axis=1))
        return [maps[s] for s in range(1, 6)]


class DeepSup(nn.Layer):
    """A 3x3 classifier per level (``convupN`` with its upsampling to full size; ``outconv1``)."""

    def __init__(self, num_classes: int):
        super().__init__()
        for level in (5, 4, 3, 2):
            cin = WIDTHS[4] if level == 5 else FUSED
            setattr(self, f"convup{level}", nn.Sequential(
                nn.Conv2D(cin, num_classes, 3, padding=1),
                nn.Upsample(scale_factor=2 ** (level - 1), mode="bilinear")))
        self.outconv1 = nn.Conv2D(FUSED, num_classes, 3, padding=1)

    def forward(self, maps):
        return [self.outconv1(maps[0])] + [getattr(self, f"convup{level}")(maps[level - 1])
                                           for level in (2, 3, 4, 5)]


@MODELS.add
class UNet3Plus(nn.Layer):
    """U-Net 3+; arguments and defaults as PaddleSeg's (``num_classes`` second, default 2)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 2, is_batchnorm: bool = True,
                 is_deepsup: bool = False, is_CGM: bool = False):
        super().__init__()
        check_channels("num_classes", num_classes)
        self.is_CGM = check_flag("is_CGM", is_CGM)
        self.is_deepsup = check_flag("is_deepsup", is_deepsup) or is_CGM
        self.encoder = Encoder(check_channels("in_channels", in_channels),
                               check_flag("is_batchnorm", is_batchnorm))
        self.decoder = Decoder()
        if self.is_deepsup:
            self.deepsup = DeepSup(num_classes)
            if is_CGM:
                self.cls = nn.Sequential(nn.Dropout(p=0.5), nn.Conv2D(WIDTHS[4], 2, 1),
                                         nn.AdaptiveMaxPool2D(1), nn.Sigmoid())
        else:
            self.outconv1 = nn.Conv2D(FUSED, num_classes, 3, padding=1)
        kaiming = nn.initializer.KaimingNormal()
        for sub in self.sublayers():
            if isinstance(sub, (nn.Conv2D, nn.BatchNorm, nn.SyncBatchNorm)):
                kaiming(sub.weight)

    def forward(self, x):
        maps = self.decoder(self.encoder(x))
        if not self.is_deepsup:
            return [self.outconv1(maps[0])]
        logits = self.deepsup(maps)
        if not self.is_CGM:
            return logits
        has_object = paddle.argmax(self.cls(maps[-1]).flatten(1), axis=1)
        return [t * has_object.astype(t.dtype).reshape([-1, 1, 1, 1]) for t in logits]
