"""OCRNet (Yuan et al., "Object-Contextual Representations for Semantic Segmentation", ECCV 2020,
arXiv:1909.11065), written for segx with PaddleSeg's parameter names and arguments.

The head, as the paper describes it:

* a coarse ("soft object region") prediction from the shallower chosen backbone feature: a 1x1
  conv and a 1x1 classifier; it is also the auxiliary output in training;
* pixel representations from the deeper feature (3x3 conv to ``ocr_mid_channels``);
* object region representations: for each class, the average of the pixel representations
  weighted by that class's spatial softmax over the coarse prediction;
* an attention from every pixel (query) to the region representations (keys and values, all in
  ``ocr_key_channels``), scaled by 1/sqrt(key channels); its result, mapped back to the pixel
  width, is concatenated with the pixel representation, fused by a 1x1 conv (dropout 0.1) and
  classified by a 1x1 conv.

Logits are upsampled bilinearly to the input size; training returns the final and the coarse
logits, evaluation the final ones only.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from segx.backend.nets import MODELS
from segx.backend.nets.layers import ConvBNReLU


def init_head(layer: nn.Layer) -> None:
    """Heads start from N(0, 0.001) conv weights (PaddleSeg's initialisation)."""
    normal = nn.initializer.Normal(mean=0.0, std=0.001)
    for sub in layer.sublayers():
        if isinstance(sub, nn.Conv2D):
            normal(sub.weight)


def _flat(x, channels: int):
    """(n, c, h, w) -> (n, c, h*w); the batch size stays dynamic for export."""
    return paddle.reshape(x, (0, channels, -1))


def region_features(pixels, regions, pixel_ch: int, classes: int):
    """Class-weighted averages of the pixel features: (n, pixel_ch, classes, 1)."""
    weights = F.softmax(_flat(regions, classes), axis=2)          # n, k, hw
    feats = paddle.bmm(weights, paddle.transpose(_flat(pixels, pixel_ch), (0, 2, 1)))
    return paddle.unsqueeze(paddle.transpose(feats, (0, 2, 1)), axis=-1)


def _two_1x1(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(ConvBNReLU(cin, cout, 1), ConvBNReLU(cout, cout, 1))


class ObjectAttentionBlock(nn.Layer):
    """Pixel-to-region attention; the result has the pixels' width again."""

    def __init__(self, in_channels: int, key_channels: int):
        super().__init__()
        self.key_channels = key_channels
        self.f_pixel = _two_1x1(in_channels, key_channels)
        self.f_object = _two_1x1(in_channels, key_channels)
        self.f_down = ConvBNReLU(in_channels, key_channels, 1)
        self.f_up = ConvBNReLU(key_channels, in_channels, 1)

    def forward(self, x, proxy):
        kc = self.key_channels
        hw = paddle.shape(x)[2:]
        query = paddle.transpose(_flat(self.f_pixel(x), kc), (0, 2, 1))     # n, hw, kc
        key = _flat(self.f_object(proxy), kc)                                 # n, kc, k
        value = paddle.transpose(_flat(self.f_down(proxy), kc), (0, 2, 1))   # n, k, kc
        attn = F.softmax((kc ** -0.5) * paddle.bmm(query, key), axis=-1)
        context = paddle.transpose(paddle.bmm(attn, value), (0, 2, 1))
        context = paddle.reshape(context, (0, kc, hw[0], hw[1]))
        return self.f_up(context)


class SpatialOCRModule(nn.Layer):
    def __init__(self, in_channels: int, key_channels: int, out_channels: int,
                 dropout_rate: float = 0.1):
        super().__init__()
        self.attention_block = ObjectAttentionBlock(in_channels, key_channels)
        self.conv1x1 = nn.Sequential(ConvBNReLU(2 * in_channels, out_channels, 1),
                                     nn.Dropout2D(dropout_rate))

    def forward(self, pixels, regions):
        context = self.attention_block(pixels, regions)
        return self.conv1x1(paddle.concat([context, pixels], axis=1))


class SpatialGather(nn.Layer):
    """No parameters; kept as a sublayer so the head's layout reads like PaddleSeg's."""

    def __init__(self, pixel_ch: int, classes: int):
        super().__init__()
        self.pixel_ch, self.classes = pixel_ch, classes

    def forward(self, pixels, regions):
        return region_features(pixels, regions, self.pixel_ch, self.classes)


class OCRHead(nn.Layer):
    """Coarse regions from the first chosen feature, OCR on the last (the same one when only
    one is chosen); returns [final logits, coarse logits]."""

    def __init__(self, num_classes: int, in_channels, ocr_mid_channels: int = 512,
                 ocr_key_channels: int = 256):
        super().__init__()
        shallow, deep = (in_channels[-2], in_channels[-1]) if len(in_channels) > 1 \
            else (in_channels[-1], in_channels[-1])
        self.shallow_at = -2 if len(in_channels) > 1 else -1
        self.spatial_gather = SpatialGather(ocr_mid_channels, num_classes)
        self.spatial_ocr = SpatialOCRModule(ocr_mid_channels, ocr_key_channels,
                                            ocr_mid_channels)
        self.conv3x3_ocr = ConvBNReLU(deep, ocr_mid_channels, 3, padding=1)
        self.cls_head = nn.Conv2D(ocr_mid_channels, num_classes, 1)
        self.aux_head = nn.Sequential(ConvBNReLU(shallow, shallow, 1),
                                      nn.Conv2D(shallow, num_classes, 1))
        init_head(self)

    def forward(self, feats):
        coarse = self.aux_head(feats[self.shallow_at])
        pixels = self.conv3x3_ocr(feats[-1])
        ocr = self.spatial_ocr(pixels, self.spatial_gather(pixels, coarse))
        return [self.cls_head(ocr), coarse]


@MODELS.add
class OCRNet(nn.Layer):
    """OCRNet; arguments and defaults as PaddleSeg's. ``backbone_indices``: one or two backbone
    outputs (two: the first feeds the coarse prediction, the second the OCR)."""

    def __init__(self, num_classes: int, backbone: nn.Layer, backbone_indices,
                 ocr_mid_channels: int = 512, ocr_key_channels: int = 256,
                 align_corners: bool = False, pretrained=None):
        super().__init__()
        chans = list(getattr(backbone, "feat_channels", None) or [])
        indices = list(backbone_indices)
        if len(indices) not in (1, 2) or any(not -len(chans) <= i < len(chans)
                                             for i in indices):
            raise ValueError(f"backbone_indices must pick 1 or 2 of the backbone's "
                             f"{len(chans)} features")
        self.backbone, self.backbone_indices = backbone, indices
        self.head = OCRHead(num_classes, [chans[i] for i in indices], ocr_mid_channels,
                            ocr_key_channels)
        self.align_corners = align_corners
        self.pretrained = pretrained

    def forward(self, x):
        hw = paddle.shape(x)[2:]
        feats = self.backbone(x)
        logits = self.head([feats[i] for i in self.backbone_indices])
        if not self.training:
            logits = logits[:1]
        return [F.interpolate(t, hw, mode="bilinear", align_corners=self.align_corners)
                for t in logits]
