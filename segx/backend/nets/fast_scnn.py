"""Fast-SCNN (Poudel et al., "Fast-SCNN: Fast Semantic Segmentation Network", BMVC 2019,
arXiv:1902.04502), written for segx with PaddleSeg's parameter names and arguments.

* Learning to downsample (``learning_to_downsample``): a 3x3 stride-2 ConvBNReLU to 32
  channels and two stride-2 depthwise-separable convs to 48 and 64 (stride 8).
* Global feature extractor (``global_feature_extractor``): three stages of three inverted
  bottlenecks (expansion 6; 64, 96, 128 channels; strides 2, 2, 1), then PSPNet's pyramid
  pooling (bins 1, 2, 3, 6, upsampled with ``align_corners=True``) to 128 channels.
* Feature fusion (``feature_fusion``): the global features upsampled to the stride-8 map, a
  depthwise 3x3 ConvBNReLU and a 1x1 ConvBN, added to a 1x1 ConvBN of the stride-8 map, ReLU.
* Classifier: two depthwise-separable convs, dropout 0.1, a 1x1 conv; the logits are upsampled
  bilinearly to the input size. With ``enable_auxiliary_loss`` an auxiliary head on the
  stride-8 map (``auxlayer``) adds a second output, in evaluation too (as PaddleSeg's).
"""
from __future__ import annotations

import paddle.nn as nn
import paddle.nn.functional as F

from segx.backend.nets import MODELS
from segx.backend.nets.layers import (
    AuxLayer, ConvBN, ConvBNReLU, PPModule, SeparableConvBNReLU, resize, spatial_size)

DOWNSAMPLE_WIDTHS = (32, 48, 64)
GLOBAL_WIDTHS = (64, 96, 128)
GLOBAL_STRIDES = (2, 2, 1)
BLOCKS_PER_STAGE = 3
EXPANSION = 6
WIDTH = 128  # the global features' and the fusion's width


class LearningToDownsample(nn.Layer):
    def __init__(self, cin: int, widths=DOWNSAMPLE_WIDTHS):
        super().__init__()
        c1, c2, c3 = widths
        self.conv_bn_relu = ConvBNReLU(cin, c1, 3, stride=2)
        self.dsconv_bn_relu1 = SeparableConvBNReLU(c1, c2, 3, stride=2, padding=1)
        self.dsconv_bn_relu2 = SeparableConvBNReLU(c2, c3, 3, stride=2, padding=1)

    def forward(self, x):
        return self.dsconv_bn_relu2(self.dsconv_bn_relu1(self.conv_bn_relu(x)))


class InvertedBottleneck(nn.Layer):
    """1x1 expansion, depthwise 3x3 (the stride), linear 1x1 (``block.0..2``); the input is
    added back when stride and width are kept."""

    def __init__(self, cin: int, cout: int, expansion: int = EXPANSION, stride: int = 2):
        super().__init__()
        wide = cin * expansion
        self.use_shortcut = stride == 1 and cin == cout
        self.block = nn.Sequential(
            ConvBNReLU(cin, wide, 1, bias_attr=False),
            ConvBNReLU(wide, wide, 3, stride=stride, padding=1, groups=wide, bias_attr=False),
            ConvBN(wide, cout, 1, bias_attr=False))

    def forward(self, x):
        y = self.block(x)
        return x + y if self.use_shortcut else y


class GlobalFeatureExtractor(nn.Layer):
    def __init__(self, cin: int, cout: int = WIDTH):
        super().__init__()
        for n, (width, stride) in enumerate(zip(GLOBAL_WIDTHS, GLOBAL_STRIDES), start=1):
            blocks = [InvertedBottleneck(cin, width, EXPANSION, stride)]
            blocks += [InvertedBottleneck(width, width, EXPANSION, 1)
                       for _ in range(BLOCKS_PER_STAGE - 1)]
            setattr(self, f"bottleneck{n}", nn.Sequential(*blocks))
            cin = width
        self.ppm = PPModule(cin, cout, bin_sizes=(1, 2, 3, 6), dim_reduction=True,
                            align_corners=True)

    def forward(self, x):
        for stage in (self.bottleneck1, self.bottleneck2, self.bottleneck3):
            x = stage(x)
        return self.ppm(x)


class FeatureFusionModule(nn.Layer):
    def __init__(self, high_ch: int, low_ch: int, cout: int, align_corners: bool):
        super().__init__()
        self.dwconv = ConvBNReLU(low_ch, cout, 3, padding=1, groups=WIDTH, bias_attr=False)
        self.conv_low_res = ConvBN(cout, cout, 1)
        self.conv_high_res = ConvBN(high_ch, cout, 1)
        self.align_corners = align_corners

    def forward(self, high, low):
        low = resize(low, spatial_size(high), align_corners=self.align_corners)
        low = self.conv_low_res(self.dwconv(low))
        return F.relu(self.conv_high_res(high) + low)


class Classifier(nn.Layer):
    def __init__(self, width: int, num_classes: int):
        super().__init__()
        self.dsconv1 = SeparableConvBNReLU(width, width, 3, padding=1)
        self.dsconv2 = SeparableConvBNReLU(width, width, 3, padding=1)
        self.conv = nn.Conv2D(width, num_classes, 1)
        self.dropout = nn.Dropout(p=0.1)

    def forward(self, x):
        return self.conv(self.dropout(self.dsconv2(self.dsconv1(x))))


@MODELS.add
class FastSCNN(nn.Layer):
    """Fast-SCNN; arguments and defaults as PaddleSeg's."""

    def __init__(self, num_classes: int, in_channels: int = 3,
                 enable_auxiliary_loss: bool = True, align_corners: bool = False,
                 pretrained=None):
        super().__init__()
        high = DOWNSAMPLE_WIDTHS[-1]
        self.learning_to_downsample = LearningToDownsample(in_channels)
        self.global_feature_extractor = GlobalFeatureExtractor(high, WIDTH)
        self.feature_fusion = FeatureFusionModule(high, WIDTH, WIDTH, align_corners)
        self.classifier = Classifier(WIDTH, num_classes)
        if enable_auxiliary_loss:
            self.auxlayer = AuxLayer(high, high // 2, num_classes)
        self.enable_auxiliary_loss = enable_auxiliary_loss
        self.align_corners = align_corners
        self.pretrained = pretrained

    def forward(self, x):
        hw = spatial_size(x)
        stride8 = self.learning_to_downsample(x)
        fused = self.feature_fusion(stride8, self.global_feature_extractor(stride8))
        logits = [self.classifier(fused)]
        if self.enable_auxiliary_loss:
            logits.append(self.auxlayer(stride8))
        return [resize(t, hw, align_corners=self.align_corners) for t in logits]
