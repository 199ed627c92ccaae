"""segx's own DeepLab family (DeepLabV3, DeepLabV3P on ResNet18/50/101_vd) against paddleseg
2.8.0 as the oracle: every zoo model of the family, and small variants that reach the other
code paths (BasicBlock, output strides 16 and 32, multi_grid), has paddleseg's tensor names,
shapes, dtypes and parameter names, and the same logits for the same weights. Planted
differences in segx's modules make these checks fail."""
from __future__ import annotations

import zlib  # noqa: F401  (before paddle)

import numpy as np
import pytest

paddle = pytest.importorskip("paddle")
pytest.importorskip("paddleseg")

from net_parity import (  # noqa: E402
    assert_backbone_keys_load, assert_export_matches_dynamic, both, loaded_pair, max_diff,
    outputs, planted_logit_diff, random_state, structure)
from net_parity import arch_of as zoo_arch  # noqa: E402
from segx import backend  # noqa: E402
from segx.backend import nets  # noqa: E402
from segx.backend.nets import deeplab, resnet_vd  # noqa: E402
from segx.utils.errors import SegxError  # noqa: E402
from segx.zoo.registry import list_models  # noqa: E402

SLOW = pytest.mark.slow  # over ~30 M parameters
ZOO = [pytest.param("Deeplabv3_Plus-R50"),
       pytest.param("Deeplabv3_Plus-R101", marks=SLOW),
       pytest.param("Deeplabv3-R50", marks=SLOW),
       pytest.param("Deeplabv3-R101", marks=SLOW)]
SMALL = {  # not zoo models: cheap builds reaching the paths the zoo does not
    "V3P-R18-os8-grid": {"type": "DeepLabV3P", "backbone": {
        "type": "ResNet18_vd", "output_stride": 8, "multi_grid": [1, 2]},
        "backbone_indices": [0, 3], "aspp_ratios": [1, 12, 24, 36]},
    "V3-R18-os16": {"type": "DeepLabV3", "backbone": {
        "type": "ResNet18_vd", "output_stride": 16}, "backbone_indices": [3],
        "aspp_ratios": [1, 6, 12, 18], "aspp_out_channels": 64, "align_corners": True},
    "V3P-R18-os32": {"type": "DeepLabV3P", "backbone": {
        "type": "ResNet18_vd", "output_stride": 32}, "backbone_indices": [1, 3]},
}
SIZES = [(1, 3, 64, 64), (1, 3, 70, 90)]


def arch_of(name: str) -> dict:
    return SMALL[name] if name in SMALL else zoo_arch(name)


def rel_diff(own, ref, shape, train: bool = False) -> float:
    return max_diff(own, ref, shape, train, relative=True)


def test_zoo_deeplab_models_are_segx_owned_and_the_switch_turns_them_off(monkeypatch):
    names = {n for n in list_models() if arch_of(n)["type"] in ("DeepLabV3", "DeepLabV3P")}
    assert names == {p.values[0] for p in ZOO}  # every zoo DeepLab is tested here
    assert all(nets.owns(arch_of(n)) for n in names)
    own = backend.build_model(arch_of("V3-R18-os16"), 3)
    assert type(own).__module__ == "segx.backend.nets.deeplab"
    assert type(own.backbone).__module__ == "segx.backend.nets.resnet_vd"
    monkeypatch.setenv(nets.ENV, "paddleseg")
    ref = backend.build_model(arch_of("V3-R18-os16"), 3)
    assert type(ref).__module__.startswith("paddleseg.")


@pytest.mark.parametrize("name", ZOO + list(SMALL))
def test_same_tensors_and_parameter_counts(name):
    own, ref = both(arch_of(name))
    assert structure(own) == structure(ref)
    assert backend.count_params(own) == backend.count_params(ref)


@pytest.mark.parametrize("name", [pytest.param(p.values[0], marks=SLOW) for p in ZOO]
                         + list(SMALL))  # a zoo model's two sizes and training: over 5 s
def test_same_logits_for_the_same_weights(name):
    own, ref = loaded_pair(arch_of(name))
    for shape in SIZES:  # evaluation first: training updates the BatchNorm statistics
        assert rel_diff(own, ref, shape) <= 1e-5
    train = outputs(own, SIZES[1], train=True)
    assert [t.shape for t in train] == [(1, 5, 70, 90)]
    assert rel_diff(own, ref, SIZES[0], train=True) <= 1e-4


def test_channels_last_layout_matches_paddleseg():
    """DeepLabV3P and ResNet_vd take ``data_format: NHWC`` as paddleseg's do."""
    arch = {"type": "DeepLabV3P", "data_format": "NHWC", "backbone": {
        "type": "ResNet18_vd", "multi_grid": [1, 2], "data_format": "NHWC"}}
    own, ref = (backend.build_model(arch, 5, use) for use in (False, True))
    assert structure(own) == structure(ref)
    state = random_state(ref)
    backend.set_state(own, state), backend.set_state(ref, state)
    assert rel_diff(own, ref, (1, 70, 90, 3)) <= 1e-5
    assert [t.shape for t in outputs(own, (1, 70, 90, 3))] == [(1, 70, 90, 5)]


BLOCKS = [("ConvBN", (6, 8, 3), {"stride": 2}), ("ConvBNReLU", (6, 8, 1), {"bias_attr": False}),
          ("ConvBNAct", (6, 8, 3), {"act_type": "prelu"}),
          ("ConvBNAct", (6, 8, 3), {"act_type": "leakyrelu", "dilation": 2}),
          ("DepthwiseConvBN", (6, 6, 3), {}),
          ("SeparableConvBNReLU", (6, 8, 3), {"dilation": 3, "padding": 3}),
          ("AuxLayer", (6, 4, 3), {"dropout_prob": 0.0})]


@pytest.mark.parametrize("block, args, kwargs", BLOCKS, ids=lambda v: str(v))
def test_shared_blocks_match_paddleseg(block, args, kwargs):
    """segx's shared blocks (nets/layers.py) have paddleseg's tensor and parameter names and
    compute the same for the same weights."""
    from paddleseg.models import layers as ps_layers

    from segx.backend.nets import layers
    built = []
    for lib in (layers, ps_layers):
        with paddle.utils.unique_name.guard():
            built.append(getattr(lib, block)(*args, **kwargs))
    own, ref = built
    assert structure(own) == structure(ref)
    state = random_state(ref)
    own.set_state_dict(state), ref.set_state_dict(state)
    x = paddle.to_tensor(np.random.default_rng(4).normal(0, 1, (1, 6, 11, 13)).astype("float32"))
    own.eval(), ref.eval()
    np.testing.assert_allclose(own(x).numpy(), ref(x).numpy(), rtol=1e-6, atol=1e-6)


def test_backbone_features_strides_and_stem_output():
    """Features at strides 4, 8, 8, 8 (output stride 8) with ResNet-50's widths; the stem's
    output is kept for GSCNN when asked."""
    net = resnet_vd.ResNet50_vd(output_stride=8, multi_grid=(1, 2, 4))
    net.eval()
    with paddle.no_grad():
        feats = net(paddle.rand([1, 3, 64, 96]))
    assert [list(f.shape) for f in feats] == [[1, c, 16, 24] if i == 0 else [1, c, 8, 12]
                                              for i, c in enumerate([256, 512, 1024, 2048])]
    assert net.feat_channels == [256, 512, 1024, 2048]
    assert net.conv1_logit is None  # not kept unless asked for
    net.keep_conv1_logit = True
    with paddle.no_grad():
        net(paddle.rand([1, 3, 64, 96]))
    assert list(net.conv1_logit.shape) == [1, 64, 32, 48]


@pytest.mark.parametrize("factory", ["ResNet18_vd", "ResNet50_vd",
                                     pytest.param("ResNet101_vd", marks=SLOW)])
def test_imagenet_backbone_names_match_paddleseg(factory):
    """The ImageNet checkpoints hold paddleseg's ResNet_vd keys: segx's backbone has exactly
    them, and a model built on it loads every tensor of such a checkpoint."""
    from paddleseg.models import backbones
    ref = getattr(backbones, factory)().state_dict()
    arch = {"type": "DeepLabV3", "backbone": {"type": factory}, "aspp_out_channels": 16}
    assert_backbone_keys_load(getattr(resnet_vd, factory)().state_dict(), ref, [arch])


def test_planted_structure_change_is_caught(monkeypatch):
    """The decoder's low-level reduction to 32 channels instead of 48."""
    monkeypatch.setattr(deeplab, "DECODER_LOW_CHANNELS", 32)
    own, ref = both(arch_of("V3P-R18-os8-grid"))
    assert structure(own) != structure(ref)


def planted_multi_grid(monkeypatch):
    """Output stride 8 with the last stage dilated by 2 instead of 4."""
    monkeypatch.setitem(resnet_vd.STAGE_DILATIONS, 8, (1, 1, 2, 2))


def planted_vd_shortcut(monkeypatch):
    """The vd shortcut with a 2x2 max pool instead of the average pool."""
    real = resnet_vd.ResConvBN.__init__

    def init(self, *args, **kwargs):
        real(self, *args, **kwargs)
        if self.avg_down:
            self._pool2d_avg = paddle.nn.MaxPool2D(2, 2, ceil_mode=True)
    monkeypatch.setattr(resnet_vd.ResConvBN, "__init__", init)


def planted_image_pool_corners(monkeypatch):
    """The ASPP image-pooling and decoder upsampling with align_corners flipped."""
    real = deeplab.resize
    monkeypatch.setattr(deeplab, "resize", lambda x, size, mode="bilinear",
                        align_corners=False, data_format="NCHW":
                        real(x, size, mode, not align_corners, data_format))


@pytest.mark.parametrize("plant", [planted_multi_grid, planted_vd_shortcut,
                                   planted_image_pool_corners])
def test_planted_forward_change_is_caught(monkeypatch, plant):
    plant(monkeypatch)
    assert planted_logit_diff(arch_of("V3P-R18-os8-grid"), SIZES[1], relative=True) > 1e-3


@pytest.mark.parametrize("arch, words", [
    ({"type": "ResNet18_vd", "output_stride": 4}, "output_stride=4"),
    ({"type": "ResNet18_vd", "multi_grid": [1]}, "multi_grid"),
    ({"type": "ResNet50_vd", "multi_grid": [1, 2, 10**6]}, "multi_grid"),
], ids=["stride", "short-grid", "huge-grid"])
def test_bad_backbone_arguments_are_one_line_config_errors(arch, words):
    with pytest.raises(SegxError, match=words) as info:
        backend.build_model({"type": "DeepLabV3", "backbone": arch}, 3)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("extra, words", [
    ({"backbone_indices": [3]}, "backbone_indices"),
    ({"backbone_indices": [0, 7]}, "backbone_indices"),
    ({"aspp_ratios": [1, 100000]}, "aspp_ratios"),
    ({"aspp_ratios": "1,6"}, "aspp_ratios"),
])
def test_bad_model_arguments_are_config_errors(extra, words):
    arch = {"type": "DeepLabV3P", "backbone": {"type": "ResNet18_vd"}, **extra}
    with pytest.raises(SegxError, match=words):
        backend.build_model(arch, 3)


def test_decoder_follows_aspp_out_channels():
    """paddleseg's decoder expects 48 + 256 input channels whatever ``aspp_out_channels`` is
    (its forward fails for any other width); segx's takes 48 + ``aspp_out_channels``."""
    arch = {"type": "DeepLabV3P", "backbone": {"type": "ResNet18_vd", "output_stride": 32},
            "aspp_out_channels": 64}
    model = backend.build_model(arch, 3)
    assert model.head.decoder.conv_bn_relu2.depthwise_conv._conv.weight.shape[0] == 48 + 64
    model.eval()
    with paddle.no_grad():
        assert list(model(paddle.rand([1, 3, 64, 64]))[0].shape) == [1, 3, 64, 64]


@SLOW  # ~10 s
def test_static_export_matches_dynamic(tmp_path):
    assert_export_matches_dynamic(arch_of("V3P-R18-os8-grid"), "segx.backend.nets.deeplab",
                                  tmp_path, SIZES, atol=1e-4, scaled=True)
