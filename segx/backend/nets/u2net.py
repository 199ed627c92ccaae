"""U^2-Net (Qin et al., "U^2-Net: Going Deeper with Nested U-Structure for Salient Object
Detection", Pattern Recognition 2020, arXiv:2005.09007) and its small variant U^2-Net-p, as
PaddleSeg builds them, written for segx with PaddleSeg's arguments and tensor names.

* The unit is a conv-BN-ReLU with a 3x3 kernel dilated by ``dirate`` (``conv_s1``, ``bn_s1``).
* A residual U-block RSU-L of depth L: an input unit to ``out_ch`` (``rebnconvin``); units
  ``rebnconv1`` .. ``rebnconv{L-1}`` at ``mid_ch`` with 2x2 max pooling (ceil) between them;
  ``rebnconv{L}`` dilated by 2 on the deepest map; then back up, each ``rebnconv{i}d`` taking
  the deeper result (bilinear-resized to level i) concatenated with unit i's output; the last
  one returns to ``out_ch`` and the input unit's output is added. RSU-4F keeps the full size
  and dilates by 1, 2, 4, 8 instead of pooling.
* The network: six stages (RSU-7, 6, 5, 4, 4F, 4F) with pooling between them, five decoder
  stages on [upsampled deeper, skip], a 3x3 side classifier on each decoder stage and on stage
  6, upsampled to the first's size, and a 1x1 ``outconv`` fusing the six.

Outputs, in training and evaluation alike: [fused, side 1, ..., side 6], all at the input
size (the first is the prediction; the zoo trains all seven with CrossEntropyLoss, coefficient
1 each). Any input size of at least 1x1 per pooling works (ceil pooling, resize to the skip).
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from segx.backend.nets import MODELS
from segx.backend.nets.layers import resize_like
from segx.backend.nets.unet import check_channels


class REBNCONV(nn.Layer):
    """3x3 conv (bias, dilation ``dirate``), BatchNorm, ReLU."""

    def __init__(self, in_ch: int = 3, out_ch: int = 3, dirate: int = 1):
        super().__init__()
        self.conv_s1 = nn.Conv2D(in_ch, out_ch, 3, padding=dirate, dilation=dirate)
        self.bn_s1 = nn.BatchNorm2D(out_ch)
        self.relu_s1 = nn.ReLU()

    def forward(self, x):
        return self.relu_s1(self.bn_s1(self.conv_s1(x)))


def _pool():
    return nn.MaxPool2D(2, stride=2, ceil_mode=True)


class ResidualU(nn.Layer):
    """RSU-``depth`` (``flat``: RSU-4F, dilations instead of pooling)."""

    def __init__(self, depth: int, in_ch: int, mid_ch: int, out_ch: int, flat: bool = False):
        super().__init__()
        self.depth, self.flat = depth, flat
        self.rebnconvin = REBNCONV(in_ch, out_ch, 1)
        for i in range(1, depth + 1):
            setattr(self, f"rebnconv{i}", REBNCONV(out_ch if i == 1 else mid_ch, mid_ch,
                                                   self._dilation(i)))
            if not flat and i < depth - 1:
                setattr(self, f"pool{i}", _pool())
        for i in range(depth - 1, 0, -1):
            setattr(self, f"rebnconv{i}d", REBNCONV(2 * mid_ch, out_ch if i == 1 else mid_ch,
                                                    self._dilation(i)))

    def _dilation(self, level: int) -> int:
        """Level ``level``'s units: 1, the deepest 2; in RSU-4F 1, 2, 4, 8 by level."""
        if self.flat:
            return 2 ** (level - 1)
        return 2 if level == self.depth else 1

    def forward(self, x):
        start = self.rebnconvin(x)
        down, h = [], start
        for i in range(1, self.depth):
            h = getattr(self, f"rebnconv{i}")(h)
            down.append(h)
            if not self.flat and i < self.depth - 1:
                h = getattr(self, f"pool{i}")(h)
        h = getattr(self, f"rebnconv{self.depth}")(h)
        for i in range(self.depth - 1, 0, -1):
            if not self.flat and i < self.depth - 1:
                h = resize_like(h, down[i - 1])
            h = getattr(self, f"rebnconv{i}d")(paddle.concat([h, down[i - 1]], axis=1))
        return h + start


# (depth, flat, in, mid, out) for stages 1..6 and decoder stages 5d..1d
U2NET = {"encoder": [(7, False, None, 32, 64), (6, False, 64, 32, 128),
                     (5, False, 128, 64, 256), (4, False, 256, 128, 512),
                     (4, True, 512, 256, 512), (4, True, 512, 256, 512)],
         "decoder": [(4, True, 1024, 256, 512), (4, False, 1024, 128, 256),
                     (5, False, 512, 64, 128), (6, False, 256, 32, 64),
                     (7, False, 128, 16, 64)]}
U2NETP = {"encoder": [(7, False, None, 16, 64), (6, False, 64, 16, 64), (5, False, 64, 16, 64),
                      (4, False, 64, 16, 64), (4, True, 64, 16, 64), (4, True, 64, 16, 64)],
          "decoder": [(4, True, 128, 16, 64), (4, False, 128, 16, 64),
                      (5, False, 128, 16, 64), (6, False, 128, 16, 64),
                      (7, False, 128, 16, 64)]}


class _U2Base(nn.Layer):
    def _build(self, spec: dict, num_classes: int, in_channels: int) -> None:
        check_channels("num_classes", num_classes)
        check_channels("in_channels", in_channels)
        for n, (depth, flat, cin, mid, cout) in enumerate(spec["encoder"], 1):
            setattr(self, f"stage{n}", ResidualU(depth, cin or in_channels, mid, cout, flat))
            if n < 6:
                setattr(self, f"pool{n}{n + 1}", _pool())
        for n, (depth, flat, cin, mid, cout) in zip(range(5, 0, -1), spec["decoder"]):
            setattr(self, f"stage{n}d", ResidualU(depth, cin, mid, cout, flat))
        side_in = [spec["decoder"][5 - n][4] for n in range(1, 6)] + [spec["encoder"][5][4]]
        for n, cin in enumerate(side_in, 1):
            setattr(self, f"side{n}", nn.Conv2D(cin, num_classes, 3, padding=1))
        self.outconv = nn.Conv2D(6 * num_classes, num_classes, 1)

    def forward(self, x):
        skips, h = [], x
        for n in range(1, 7):
            h = getattr(self, f"stage{n}")(h)
            skips.append(h)
            if n < 6:
                h = getattr(self, f"pool{n}{n + 1}")(h)
        decoded = {6: h}
        for n in range(5, 0, -1):
            up = resize_like(decoded[n + 1], skips[n - 1])
            decoded[n] = getattr(self, f"stage{n}d")(paddle.concat([up, skips[n - 1]], axis=1))
        sides = [self.side1(decoded[1])]
        sides += [resize_like(getattr(self, f"side{n}")(decoded[n]), sides[0])
                  for n in range(2, 7)]
        return [self.outconv(paddle.concat(sides, axis=1))] + sides


@MODELS.add
class U2Net(_U2Base):
    """U^2-Net; arguments and defaults as PaddleSeg's. Seven outputs (see the module)."""

    def __init__(self, num_classes: int, in_channels: int = 3, pretrained=None):
        super().__init__()
        self._build(U2NET, num_classes, in_channels)
        self.pretrained = pretrained


@MODELS.add
class U2Netp(_U2Base):
    """U^2-Net-p, the 1.1 M-parameter variant; arguments and defaults as PaddleSeg's."""

    def __init__(self, num_classes: int, in_channels: int = 3, pretrained=None):
        super().__init__()
        self._build(U2NETP, num_classes, in_channels)
        self.pretrained = pretrained
