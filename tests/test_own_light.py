"""segx's own light-weight networks (BiSeNetV2, FastSCNN, HarDNet, LRASPP on
MobileNetV3_large_x1_0 and _os8, the ShuffleNetV2_x1_0 backbone under FCN) against paddleseg
2.8.0 as the oracle: every zoo model of these families, and variants reaching their other
options, built from the same Arch both ways has the same tensors (names, shapes, dtypes,
paddle parameter names, learning rates) and, with the same random weights, the same outputs in
evaluation and in training (auxiliary heads included); the ImageNet backbone keys load one for
one; planted differences in segx's modules make these checks fail."""
from __future__ import annotations

import zlib  # noqa: F401  (before paddle)

import numpy as np
import pytest

paddle = pytest.importorskip("paddle")
pytest.importorskip("paddleseg")
F = paddle.nn.functional

from net_parity import (  # noqa: E402
    assert_backbone_keys_load, assert_export_matches_dynamic, both, loaded_pair, max_diff,
    outputs, random_state, structure)
from net_parity import arch_of as zoo_arch  # noqa: E402
from segx import backend  # noqa: E402
from segx.backend import nets  # noqa: E402
from segx.backend.nets import (  # noqa: E402
    bisenetv2, fast_scnn, hardnet, layers, lraspp, mobilenetv3, shufflenetv2)
from segx.utils.errors import ConfigError  # noqa: E402
from segx.zoo.registry import list_models  # noqa: E402

# zoo model -> (model module, backbone module or None, outputs in evaluation, in training)
ZOO = {"BiSeNetV2": ("bisenetv2", None, 1, 5),
       "Fast-SCNN": ("fast_scnn", None, 2, 2),
       "HarDNet": ("hardnet", None, 1, 1),
       "LRASPP-MobileNetV3_large_x1_0": ("lraspp", "mobilenetv3", 1, 1),
       "LRASPP-MobileNetV3_large_x1_0_os8": ("lraspp", "mobilenetv3", 1, 1),
       "FCN_ShuffleNetV2_x1_0": ("fcn", "shufflenetv2", 1, 1)}
MODEL_TYPES = {"BiSeNetV2", "FastSCNN", "HarDNet", "LRASPP"}
BACKBONE_TYPES = {"MobileNetV3_large_x1_0", "MobileNetV3_large_x1_0_os8", "ShuffleNetV2_x1_0"}
MNV3 = {"type": "MobileNetV3_large_x1_0"}
VARIANTS = {  # not zoo models: the options and paths the zoo does not reach
    "BiSeNetV2 lambd 0.5, corners": {"type": "BiSeNetV2", "lambd": 0.5, "align_corners": True},
    "FastSCNN no aux, corners": {"type": "FastSCNN", "enable_auxiliary_loss": False,
                                 "align_corners": True},
    "HarDNet 3 blocks of 4-16": {"type": "HarDNet", "stem_channels": [8, 12, 16, 24],
                                 "ch_list": [32, 48, 64], "gr": [8, 10, 12], "grmul": 1.6,
                                 "n_layers": [4, 8, 16], "align_corners": True},
    "LRASPP 2 features, nearest": {"type": "LRASPP", "backbone": MNV3,
                                   "backbone_indices": [2, 3], "lraspp_head_inter_chs": [16],
                                   "lraspp_head_out_ch": 64, "resize_mode": "nearest"},
    "FCN ShuffleNetV2 swish": {"type": "FCN", "backbone": {"type": "ShuffleNetV2_x1_0",
                                                           "act": "swish"}},
    # combinations that became segx's own with these backbones
    "PPLiteSeg MobileNetV3": {"type": "PPLiteSeg", "backbone": MNV3,
                              "backbone_indices": [1, 2, 3]},
    "OCRNet ShuffleNetV2": {"type": "OCRNet", "backbone": {"type": "ShuffleNetV2_x1_0"},
                            "backbone_indices": [3]},
}
SLOW = pytest.mark.slow  # kept out of the fast suite: it would pass ~10 s per family
SLOW_VARIANTS = {"OCRNet ShuffleNetV2", "FastSCNN no aux, corners"}
# 64x64: paddle's 'same' padding of stride-2 convs is asymmetric on even sizes;
# 70x90: odd sizes at the lower resolutions, where upsampling is no exact factor
SIZES = [(1, 3, 64, 64), (1, 3, 70, 90)]
_BUILT: dict = {}


def arch_of(name: str) -> dict:
    return VARIANTS[name] if name in VARIANTS else zoo_arch(name)


def lively_state(ref, seed: int = 0) -> dict:
    """Random weights that keep every path of the network audible in the logits: convs drawn
    at He scale (variance 2 / fan-in) and norms near the identity. With net_parity's
    random_state (every tensor N(0, 0.2)) the running means swamp the signal after a few
    layers; a dilation planted in MobileNetV3's block 6 then moved the logits by 4e-7 only."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, value in ref.state_dict().items():
        shape = list(value.shape)
        if key.endswith("_variance"):
            arr = rng.uniform(0.8, 1.2, shape)
        elif key.endswith("_mean"):
            arr = rng.normal(0, 0.05, shape)
        elif len(shape) == 4:
            arr = rng.normal(0, np.sqrt(2.0 / max(1, int(np.prod(shape[1:])))), shape)
        elif len(shape) == 1 and key.endswith(("weight", "_scale")):
            arr = rng.normal(1, 0.1, shape)
        else:
            arr = rng.normal(0, 0.1, shape)
        state[key] = arr.astype("float32")
    return state


def lively_pair(arch: dict):
    """:func:`net_parity.both` with the same :func:`lively_state` loaded into each."""
    own, ref = both(arch)
    state = lively_state(ref)
    assert backend.set_state(own, state) == [] and backend.set_state(ref, state) == []
    return own, ref


def pair(name: str):
    """(segx's model, paddleseg's model) with the same lively weights; built once per name."""
    if name not in _BUILT:
        _BUILT[name] = lively_pair(arch_of(name))
    return _BUILT[name]


@pytest.fixture(autouse=True, scope="module")
def _drop_builds_at_the_end():
    yield
    _BUILT.clear()


def assert_same_outputs(own, ref, shape, train: bool = False):
    a, b = outputs(own, shape, train), outputs(ref, shape, train)
    assert [t.shape for t in a] == [t.shape for t in b]
    for p, q in zip(a, b):
        assert np.isfinite(p).all() and p.std() > 1e-3  # not a degenerate (constant) output
        np.testing.assert_allclose(p, q, rtol=0, atol=1e-5 * max(1.0, float(np.abs(q).max())))


def test_zoo_light_models_are_segx_owned_and_the_switch_turns_them_off(monkeypatch):
    def light(arch):
        backbone = arch.get("backbone") or {}
        return arch["type"] in MODEL_TYPES or backbone.get("type") in BACKBONE_TYPES
    names = {n for n in list_models() if light(zoo_arch(n))}
    assert names == set(ZOO)  # every zoo model of these families is tested here
    assert all(nets.owns(zoo_arch(n)) for n in names)
    assert MODEL_TYPES <= set(nets.MODELS.components_dict)
    assert BACKBONE_TYPES <= set(nets.BACKBONES.components_dict)
    monkeypatch.setenv(nets.ENV, "paddleseg")
    model = backend.build_model(zoo_arch("FCN_ShuffleNetV2_x1_0"), 3)
    assert type(model).__module__.startswith("paddleseg.")
    assert type(model.backbone).__module__.startswith("paddleseg.")


NAMES = list(ZOO) + [pytest.param(n, marks=SLOW) if n in SLOW_VARIANTS else n
                     for n in VARIANTS]


@pytest.mark.parametrize("name", NAMES)
def test_same_tensors_and_parameter_counts(name):
    own, ref = pair(name)
    if name in ZOO:
        module, backbone, _, _ = ZOO[name]
        assert type(own).__module__ == f"segx.backend.nets.{module}"
        if backbone:
            assert type(own.backbone).__module__ == f"segx.backend.nets.{backbone}"
    assert type(ref).__module__.startswith("paddleseg.")
    assert structure(own) == structure(ref)
    assert backend.count_params(own) == backend.count_params(ref)


@pytest.mark.parametrize("name", NAMES)
def test_same_outputs_in_eval_and_training(name):
    own, ref = pair(name)
    for shape in SIZES:  # evaluation first: training updates the BatchNorm statistics
        assert_same_outputs(own, ref, shape)
    train = outputs(own, SIZES[1], train=True)
    if name in ZOO:  # the auxiliary heads: all at the input size
        n_eval, n_train = ZOO[name][2:]
        assert len(outputs(own, SIZES[0])) == n_eval
        assert [t.shape for t in train] == [(1, 5, 70, 90)] * n_train
    assert_same_outputs(own, ref, SIZES[1], train=True)


def test_same_outputs_with_net_parity_random_weights():
    """The shared helper's weights (every tensor N(0, 0.2)) agree too."""
    own, ref = loaded_pair(arch_of("LRASPP-MobileNetV3_large_x1_0"))
    assert max_diff(own, ref, SIZES[1], relative=True) <= 1e-5


@SLOW  # a 400x424 input: ~5 s
def test_local_pooling_gate_matches_paddleseg():
    """``use_gap: false`` pools the deepest feature 49x49 with strides (16, 20): it needs a
    feature map of 49 pixels, so an input of 392 at output stride 8."""
    arch = {"type": "LRASPP", "backbone": {"type": "MobileNetV3_large_x1_0_os8"},
            "use_gap": False}
    own, ref = lively_pair(arch)
    assert structure(own) == structure(ref)
    assert_same_outputs(own, ref, (1, 3, 400, 424))


@pytest.mark.parametrize("name, coefs", [("BiSeNetV2", (1, 1, 1, 1, 1)),
                                         pytest.param("Fast-SCNN", (1, 0.4), marks=SLOW)])
def test_same_gradients_for_a_training_step(name, coefs):
    """Every output weighted as the zoo's loss weights it: every parameter gets paddleseg's
    gradient (nothing detached, no auxiliary head left out)."""
    x = paddle.to_tensor(np.random.default_rng(4).normal(0, 1, (2, 3, 64, 64)).astype("float32"))
    grads = []
    for model in pair(name):
        model.train()
        model.clear_gradients()
        paddle.seed(7)
        total = sum(coef * out.mean() for coef, out in zip(coefs, model(x)))
        total.backward()
        grads.append({k: p.grad.numpy() for k, p in model.named_parameters()
                      if p.grad is not None})
        model.clear_gradients()
    assert sorted(grads[0]) == sorted(grads[1])
    assert len(grads[0]) == len([p for p in pair(name)[0].parameters() if not p.stop_gradient])
    for key, want in grads[1].items():
        np.testing.assert_allclose(grads[0][key], want, rtol=1e-5,
                                   atol=1e-6 * max(1e-6, float(np.abs(want).max())), err_msg=key)


def test_pyramid_pooling_block_matches_paddleseg():
    """layers.PPModule (PSPNet's pyramid pooling) has paddleseg's names and results."""
    from paddleseg.models import layers as ps_layers
    built = []
    for lib in (layers, ps_layers):
        with paddle.utils.unique_name.guard():
            built.append(lib.PPModule(8, 6, bin_sizes=(1, 3), dim_reduction=False,
                                      align_corners=False))
    own, ref = built
    assert structure(own) == structure(ref)
    state = random_state(ref)
    own.set_state_dict(state), ref.set_state_dict(state)
    own.eval(), ref.eval()
    x = paddle.to_tensor(np.random.default_rng(4).normal(0, 1, (1, 8, 11, 13)).astype("float32"))
    np.testing.assert_allclose(own(x).numpy(), ref(x).numpy(), rtol=1e-6, atol=1e-6)


def _paddleseg_backbone(factory: str) -> dict:
    from paddleseg.cvlibs import manager
    with paddle.utils.unique_name.guard():
        return manager.BACKBONES[factory]().state_dict()


@pytest.mark.parametrize("factory, zoo", [
    ("MobileNetV3_large_x1_0", ["LRASPP-MobileNetV3_large_x1_0",
                                "LRASPP-MobileNetV3_large_x1_0_os8"]),
    ("MobileNetV3_large_x1_0_os8", []),
    ("ShuffleNetV2_x1_0", ["FCN_ShuffleNetV2_x1_0"])])
def test_imagenet_backbone_keys_load_one_for_one(factory, zoo):
    """The ImageNet start (mobilenetv3_large_x1_0_ssld, for both LRASPP models) is a
    backbone-only state dict: segx's backbone has exactly paddleseg's keys and shapes, so every
    tensor of it loads into the zoo models."""
    with paddle.utils.unique_name.guard():
        ours = nets.BACKBONES[factory]().state_dict()
    assert_backbone_keys_load(ours, _paddleseg_backbone(factory), [zoo_arch(n) for n in zoo])


def test_shufflenet_keeps_paddleseg_explicit_parameter_names():
    with paddle.utils.unique_name.guard():
        net = shufflenetv2.ShuffleNetV2_x1_0()
    names = {k: t.name for k, t in net.state_dict().items()}
    assert names["_conv1._conv.weight"] == "stage1_conv_weights"
    assert names["2_1._conv_dw_1._batch_norm._mean"] == "stage_2_1_conv4_bn_mean"
    assert names["4_4._conv_linear._batch_norm.bias"] == "stage_4_4_conv3_bn_offset"


def test_backbone_feature_strides():
    x = paddle.rand([1, 3, 64, 96])
    for factory, strides in [("MobileNetV3_large_x1_0", (4, 8, 16, 32)),
                             ("MobileNetV3_large_x1_0_os8", (4, 8, 8, 8)),
                             ("ShuffleNetV2_x1_0", (4, 8, 16, 32))]:
        with paddle.utils.unique_name.guard():
            net = nets.BACKBONES[factory]()
        net.eval()
        with paddle.no_grad():
            feats = net(x)
        assert [list(f.shape) for f in feats] == [[1, c, 64 // s, 96 // s] for c, s in
                                                  zip(net.feat_channels, strides)]


def test_harmonic_links_follow_the_paper():
    """Layer k reads k - 2**j for each 2**j dividing k; widths grow by grmul per j > 0 and are
    rounded to even numbers (HarDNet paper, Fig. 3)."""
    widths, links = hardnet.harmonic_links(8, 48, 10, 1.7)
    assert links[1:] == [[0], [0, 1], [2], [0, 2, 3], [4], [4, 5], [6], [0, 4, 6, 7]]
    assert widths == [48, 10, 18, 10, 28, 10, 18, 10, 50]


# ---- planted differences: each must make a check above fail -------------------------------

def test_planted_structure_change_is_caught(monkeypatch):
    """Harmonic layer widths rounded down to even numbers instead of to the nearest."""
    real = hardnet.harmonic_links

    def links(n_layers, base, growth, grmul):
        widths, found = real(n_layers, base, growth, grmul)
        return [base] + [w - 2 if w > 2 else w for w in widths[1:]], found
    monkeypatch.setattr(hardnet, "harmonic_links", links)
    own, ref = both(zoo_arch("HarDNet"))
    assert structure(own) != structure(ref)


def planted_bisenet_corners(monkeypatch):
    """BiSeNetV2: the aggregation and final upsampling with align_corners flipped."""
    real = bisenetv2.resize
    monkeypatch.setattr(bisenetv2, "resize", lambda x, size, mode="bilinear",
                        align_corners=False: real(x, size, mode, not align_corners))


def planted_pyramid_order(monkeypatch):
    """Fast-SCNN: the pyramid branches concatenated shallowest bin first."""
    def forward(self, x):
        hw = layers.spatial_size(x)
        pooled = [layers.resize(s(x), hw, align_corners=self.align_corners) for s in self.stages]
        return self.conv_bn_relu2(paddle.concat([x] + pooled, axis=1))
    monkeypatch.setattr(layers.PPModule, "forward", forward)


def planted_fusion_corners(monkeypatch):
    """Fast-SCNN: the global features upsampled with align_corners=True."""
    real = fast_scnn.resize
    monkeypatch.setattr(fast_scnn, "resize", lambda x, size, mode="bilinear",
                        align_corners=False: real(x, size, mode, True))


def planted_link_order(monkeypatch):
    """HarDNet: a layer's inputs concatenated newest first."""
    real = hardnet.harmonic_links

    def links(*args):
        widths, found = real(*args)
        return widths, [f[::-1] for f in found]
    monkeypatch.setattr(hardnet, "harmonic_links", links)


def planted_hardsigmoid(monkeypatch):
    """MobileNetV3: squeeze-excitation's hard sigmoid with paddle's default slope 1/6."""
    def forward(self, x):
        w = F.relu(self.conv1(F.adaptive_avg_pool2d(x, 1)))
        return x * F.hardsigmoid(self.conv2(w))
    monkeypatch.setattr(mobilenetv3.SEModule, "forward", forward)


def planted_os8_dilation(monkeypatch):
    """MobileNetV3 os8: block 6 dilated by 2 too."""
    rows = list(mobilenetv3._LARGE_OS8)
    rows[6] = rows[6][:6] + (2,)
    monkeypatch.setattr(mobilenetv3, "_LARGE_OS8", rows)


def planted_head_corners(monkeypatch):
    """LRASPP: the head's upsampling with align_corners=True."""
    monkeypatch.setattr(lraspp.LRASPPHead, "_up", lambda self, x, like: lraspp.resize(
        x, lraspp.spatial_size(like), self.mode, True))


def planted_no_shuffle(monkeypatch):
    """ShuffleNetV2: the halves concatenated, not shuffled."""
    monkeypatch.setattr(shufflenetv2, "interleave", lambda a, b: paddle.concat([a, b], axis=1))


@pytest.mark.parametrize("plant, name", [
    (planted_bisenet_corners, "BiSeNetV2"), (planted_pyramid_order, "Fast-SCNN"),
    pytest.param(planted_fusion_corners, "Fast-SCNN", marks=SLOW),
    (planted_link_order, "HarDNet"), (planted_hardsigmoid, "LRASPP-MobileNetV3_large_x1_0"),
    (planted_os8_dilation, "LRASPP-MobileNetV3_large_x1_0_os8"),
    pytest.param(planted_head_corners, "LRASPP-MobileNetV3_large_x1_0", marks=SLOW),
    (planted_no_shuffle, "FCN_ShuffleNetV2_x1_0")], ids=lambda v: getattr(v, "__name__", v))
def test_planted_forward_change_is_caught(monkeypatch, plant, name):
    plant(monkeypatch)
    own, ref = lively_pair(zoo_arch(name))
    assert structure(own) == structure(ref)  # same tensors: only the outputs can tell
    diff = max_diff(own, ref, SIZES[1], relative=True)
    assert diff > 1e-3


@pytest.mark.parametrize("arch, words", [
    ({"type": "LRASPP", "backbone": MNV3, "backbone_indices": [0, 9, 3]}, "backbone_indices"),
    ({"type": "LRASPP", "backbone": MNV3, "backbone_indices": [0, 3]}, "lraspp_head_inter_chs"),
    ({"type": "HarDNet", "n_layers": [4, 4, 8, 8, 10**6]}, "n_layers"),
    ({"type": "HarDNet", "gr": [10, 16]}, "gr"),
    ({"type": "BiSeNetV2", "lambd": 0}, "lambd"),
    ({"type": "FCN", "backbone": {"type": "ShuffleNetV2_x1_0", "act": "gelu"}}, "act"),
], ids=["indices", "inter-chs", "huge-block", "short-gr", "lambd", "act"])
def test_bad_arguments_are_one_line_config_errors(arch, words):
    with pytest.raises(ConfigError, match=words) as info:
        backend.build_model(arch, 3)
    assert "\n" not in str(info.value)


@SLOW  # 5-15 s each
@pytest.mark.parametrize("name, module", [
    ("FCN_ShuffleNetV2_x1_0", "segx.backend.nets.fcn"),
    ("BiSeNetV2", "segx.backend.nets.bisenetv2"), ("Fast-SCNN", "segx.backend.nets.fast_scnn"),
    ("HarDNet", "segx.backend.nets.hardnet"),
    ("LRASPP-MobileNetV3_large_x1_0_os8", "segx.backend.nets.lraspp")])
def test_static_export_matches_dynamic(tmp_path, name, module):
    """Every family exports (dynamic-to-static conversion) and its engine agrees with the
    dynamic graph at both sizes (ShuffleNetV2's channel shuffle keeps no fixed size)."""
    assert_export_matches_dynamic(zoo_arch(name), module, tmp_path, SIZES, atol=1e-5,
                                  rtol=0, scaled=True)
