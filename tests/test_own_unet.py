"""segx's own U-Net family (UNet, AttentionUNet, UNetPlusPlus, UNet3Plus, U2Net, U2Netp)
against paddleseg 2.8.0 as the oracle: every zoo model of the family, and variants with the
options PaddleSeg offers (transposed-conv upsampling, align_corners, deep supervision on and
off, U-Net 3+ without norms and with its classification-guided module), built from the same
Arch both ways, has the same tensors (names, shapes, dtypes, paddle parameter names), the same
initial weights for the same seed and, with the same random weights, the same outputs in
evaluation and in training (count, shapes, values); U^2-Net's seven outputs give paddleseg's
loss and gradients under the zoo's seven CrossEntropyLoss terms; planted differences in
segx's modules make these checks fail."""
from __future__ import annotations

import zlib  # noqa: F401  (before paddle)

import numpy as np
import pytest

paddle = pytest.importorskip("paddle")
pytest.importorskip("paddleseg")

from net_parity import (  # noqa: E402
    assert_export_matches_dynamic, both, loaded_pair, outputs, structure)
from net_parity import arch_of as zoo_arch  # noqa: E402
from segx import backend  # noqa: E402
from segx.backend import nets, optim  # noqa: E402
from segx.backend.nets import attention_unet, u2net, unet, unet_3plus, unet_plusplus  # noqa: E402
from segx.utils.errors import SegxError  # noqa: E402
from segx.zoo.registry import list_models, load_model_config  # noqa: E402

SLOW = pytest.mark.slow  # over ~30 M parameters, or over ~5 s for the test
TYPES = {"UNet": "unet", "AttentionUNet": "attention_unet", "UNetPlusPlus": "unet_plusplus",
         "UNet3Plus": "unet_3plus", "U2Net": "u2net", "U2Netp": "u2net"}
ZOO = ["U-Net", "U-Net++", "U2-Net-p", pytest.param("U-Net3+", marks=SLOW),
       pytest.param("Attention_U-Net", marks=SLOW), pytest.param("U2-Net", marks=SLOW)]
VARIANTS = {  # not zoo models: PaddleSeg's other options
    "UNet-deconv-corners": {"type": "UNet", "use_deconv": True, "align_corners": True,
                            "in_channels": 4},
    "UNet++-deconv-no-ds": {"type": "UNetPlusPlus", "use_deconv": True, "is_ds": False},
    "UNet++-corners": {"type": "UNetPlusPlus", "align_corners": True},
    "UNet3+-deepsup-no-bn": {"type": "UNet3Plus", "is_deepsup": True, "is_batchnorm": False},
    "UNet3+-CGM": {"type": "UNet3Plus", "is_CGM": True},
}
# the options: slow (the fast suite keeps the zoo's own, ~10 s for the family)
# sizes the networks accept: the resize-based ones any size, the others multiples of 16
ANY_SIZE = [(1, 3, 32, 32), (1, 3, 35, 45)]
BY_16 = [(1, 3, 32, 32), (1, 3, 48, 80)]
_BUILT: dict = {}


def arch_of(name: str) -> dict:
    return VARIANTS[name] if name in VARIANTS else zoo_arch(name)


def sizes_of(arch: dict) -> list:
    resized = arch["type"] in ("U2Net", "U2Netp") or (
        arch["type"] == "UNet" and not arch.get("use_deconv"))
    shapes = ANY_SIZE if resized else BY_16
    return [(1, arch.get("in_channels", 3)) + s[2:] for s in shapes]


def pair(name: str):
    """(segx's model, paddleseg's model) with the same random weights; built once per name."""
    if name not in _BUILT:
        _BUILT[name] = loaded_pair(arch_of(name))
    return _BUILT[name]


@pytest.fixture(autouse=True, scope="module")
def _drop_builds_at_the_end():
    yield
    _BUILT.clear()


def params(names) -> list:
    return [pytest.param(n, marks=SLOW) for n in names]


def test_zoo_unet_models_are_segx_owned_and_the_switch_turns_them_off(monkeypatch):
    names = {n for n in list_models() if zoo_arch(n)["type"] in TYPES}
    assert names == {p if isinstance(p, str) else p.values[0] for p in ZOO}
    assert all(nets.owns(zoo_arch(n)) for n in names)
    assert all(t in nets.MODELS for t in TYPES)
    own = backend.build_model({"type": "U2Netp"}, 3)
    assert type(own).__module__ == "segx.backend.nets.u2net"
    monkeypatch.setenv(nets.ENV, "paddleseg")
    assert type(backend.build_model({"type": "U2Netp"}, 3)).__module__.startswith("paddleseg.")


def test_zoo_yamls_set_these_options_and_train_with_cross_entropy():
    """What the tests below must cover: U-Net without transposed convs, U-Net++ with deep
    supervision, the others with defaults; every loss is CrossEntropyLoss, one per output
    (U^2-Net: seven, coefficient 1 each)."""
    archs = {n: zoo_arch(n) for n in ("U-Net", "U-Net++", "U-Net3+", "Attention_U-Net",
                                      "U2-Net", "U2-Net-p")}
    assert archs["U-Net"] == {"type": "UNet", "use_deconv": False}
    assert archs["U-Net++"] == {"type": "UNetPlusPlus", "is_ds": True}
    assert all(len(a) == 1 for n, a in archs.items() if n not in ("U-Net", "U-Net++"))
    for name in archs:
        losses = load_model_config(name).get("Train.losses")
        heads = 7 if name.startswith("U2") else 1
        assert [t["type"] for t in losses["types"]] == ["CrossEntropyLoss"] * heads
        assert losses["coef"] == [1] * heads


@pytest.mark.parametrize("name", ZOO + params(VARIANTS))
def test_same_tensors_and_parameter_counts(name):
    own, ref = pair(name)
    assert type(own).__module__ == f"segx.backend.nets.{TYPES[arch_of(name)['type']]}"
    assert type(ref).__module__.startswith("paddleseg.")
    assert structure(own) == structure(ref)
    assert backend.count_params(own) == backend.count_params(ref)


def assert_same_outputs(own, ref, shape, train: bool = False) -> list:
    a, b = outputs(own, shape, train), outputs(ref, shape, train)
    assert [t.shape for t in a] == [t.shape for t in b]
    for p, q in zip(a, b):
        assert np.isfinite(p).all() and p.std() > 1e-3  # not a degenerate (constant) output
        np.testing.assert_allclose(p, q.astype(p.dtype), rtol=0, atol=1e-5)
    return a


def say_object(own, ref, yes: bool) -> None:
    """U-Net 3+'s classification branch answering ``yes`` (class 1) or no for any input."""
    for model in (own, ref):
        conv = model.cls[1]
        conv.weight.set_value(np.zeros(conv.weight.shape, "float32"))
        conv.bias.set_value(np.array([-1.0, 1.0] if yes else [1.0, -1.0], "float32"))


def output_count(arch: dict) -> int:
    if arch["type"] in ("U2Net", "U2Netp"):
        return 7
    return 5 if arch.get("is_deepsup") or arch.get("is_CGM") else 1


@pytest.mark.parametrize("name", ZOO + params(VARIANTS))
def test_same_outputs_in_eval_and_training(name):
    own, ref = pair(name)
    arch = arch_of(name)
    if arch.get("is_CGM"):  # the random branch says "no object" (all zeros): make it say yes
        say_object(own, ref, True)
    shapes = sizes_of(arch)
    for shape in shapes:  # evaluation first: training updates the BatchNorm statistics
        assert_same_outputs(own, ref, shape)
    train = assert_same_outputs(own, ref, shapes[1], train=True)
    assert [t.shape for t in train] == [(1, 5) + shapes[1][2:]] * output_count(arch)


def test_same_initial_weights_for_the_same_seed():
    """U-Net++ re-draws its convs Kaiming-normal as PaddleSeg does: same seed, same start."""
    starts = []
    for use_paddleseg in (False, True):
        paddle.seed(11)
        model = backend.build_model({"type": "UNetPlusPlus"}, 3, use_paddleseg)
        starts.append({k: v.numpy() for k, v in model.state_dict().items()})
    assert list(starts[0]) == list(starts[1])
    for key, want in starts[1].items():
        np.testing.assert_array_equal(starts[0][key], want, err_msg=key)


def test_u2net_loss_and_gradients_under_the_zoo_losses():
    """U^2-Net-p's seven outputs, each under the zoo's CrossEntropyLoss with coefficient 1 (a
    few ignored pixels): the total loss and every parameter's gradient are paddleseg's."""
    spec = load_model_config("U2-Net-p").get("Train.losses")
    rng = np.random.default_rng(5)
    x = paddle.to_tensor(rng.normal(0, 1, (2, 3, 35, 45)).astype("float32"))
    label = rng.integers(0, 5, (2, 35, 45)).astype("int64")
    label[:, :3] = 255
    label = paddle.to_tensor(label)
    totals, grads = [], []
    for use_paddleseg, model in zip((False, True), pair("U2-Net-p")):
        losses, coef = optim.build_losses(spec, use_paddleseg)
        model.train()
        model.clear_gradients()
        total = paddle.add_n(optim.loss_terms(model(x), label, None, losses, coef))
        total.backward()
        totals.append(float(total))
        trainable = [(k, p) for k, p in model.named_parameters() if not p.stop_gradient]
        assert all(p.grad is not None for _, p in trainable)  # nothing detached
        grads.append({k: p.grad.numpy() for k, p in trainable})
        model.clear_gradients()
    assert totals[0] == pytest.approx(totals[1], rel=1e-6)
    assert list(grads[0]) == list(grads[1])
    for key, want in grads[1].items():
        np.testing.assert_allclose(grads[0][key], want, rtol=1e-5,
                                   atol=1e-6 * max(1e-6, float(np.abs(want).max())), err_msg=key)


@SLOW  # 27 M parameters, two builds
def test_cgm_branch_gates_the_outputs_in_float32():
    """With the classification branch saying "no object" every output is zero; segx keeps the
    logits float32 where paddleseg's float64 class index promotes them to float64."""
    own, ref = pair("UNet3+-CGM")
    say_object(own, ref, False)
    a, b = outputs(own, BY_16[0]), outputs(ref, BY_16[0])
    assert all(not t.any() for t in a + b)
    assert {t.dtype for t in a} == {np.dtype("float32")}
    assert {t.dtype for t in b} == {np.dtype("float64")}


# ------------------------------------------------------------------- planted differences
def test_planted_structure_change_is_caught(monkeypatch):
    """U^2-Net-p's first stage at 8 instead of 16 inner channels."""
    monkeypatch.setitem(u2net.U2NETP, "encoder",
                        [(7, False, None, 8, 64)] + u2net.U2NETP["encoder"][1:])
    own, ref = both({"type": "U2Netp"})
    assert structure(own) != structure(ref)


def planted_unet_corners(monkeypatch):
    """U-Net's decoder resize with align_corners flipped."""
    real = unet.resize_like
    monkeypatch.setattr(unet, "resize_like", lambda x, ref, mode="bilinear",
                        align_corners=False: real(x, ref, mode, not align_corners))


def planted_nested_order(monkeypatch):
    """U-Net++'s nodes concatenating the upsampled map last instead of first."""
    def forward(self, deeper, *same_level):
        return self.conv(paddle.concat([*same_level, self.up(deeper)], axis=1))
    monkeypatch.setattr(unet_plusplus.Node, "forward", forward)


def planted_rsu_dilation(monkeypatch):
    """The RSU blocks' deepest unit dilated by 1 instead of 2."""
    real = u2net.ResidualU._dilation
    monkeypatch.setattr(u2net.ResidualU, "_dilation", lambda self, level: 1 if (
        not self.flat and level == self.depth) else real(self, level))


def planted_gate_off(monkeypatch):
    """Attention U-Net's gates passing the skip through unweighted."""
    monkeypatch.setattr(attention_unet.Gate, "forward", lambda self, g, x: x)


def planted_full_scale_pool(monkeypatch):
    """U-Net 3+'s shallow-to-deep branches average- instead of max-pooling."""
    real = unet_3plus._to_level

    def to_level(x, source, level):
        if source < level:
            k = 2 ** (level - source)
            return paddle.nn.functional.avg_pool2d(x, k, k, ceil_mode=True)
        return real(x, source, level)
    monkeypatch.setattr(unet_3plus, "_to_level", to_level)


PLANTS = [(planted_unet_corners, "U-Net"), (planted_rsu_dilation, "U2-Net-p"),
          pytest.param(planted_nested_order, "U-Net++", marks=SLOW),
          pytest.param(planted_gate_off, "Attention_U-Net", marks=SLOW),
          pytest.param(planted_full_scale_pool, "U-Net3+", marks=SLOW)]


@pytest.mark.parametrize("plant, name", PLANTS)
def test_planted_forward_change_is_caught(monkeypatch, plant, name):
    plant(monkeypatch)
    own, ref = loaded_pair(arch_of(name))
    assert structure(own) == structure(ref)  # only the outputs can tell
    a, b = outputs(own, sizes_of(arch_of(name))[1]), outputs(ref, sizes_of(arch_of(name))[1])
    assert max(float(np.abs(p - q).max()) for p, q in zip(a, b)) > 1e-3


@SLOW  # two more U-Net++ builds
def test_planted_init_change_is_caught(monkeypatch):
    """U-Net++ without its Kaiming re-draw starts from other weights than paddleseg's."""
    monkeypatch.setattr(unet_plusplus, "_init", lambda model: None)
    starts = []
    for use_paddleseg in (False, True):
        paddle.seed(11)
        model = backend.build_model({"type": "UNetPlusPlus"}, 3, use_paddleseg)
        starts.append(model.state_dict()["conv0_0.conv.0.weight"].numpy())
    assert not np.array_equal(*starts)


# ------------------------------------------------------------------- arguments and export
@pytest.mark.parametrize("arch, words", [
    ({"type": "UNet", "use_deconv": "yes"}, "use_deconv"),
    ({"type": "UNet", "in_channels": 0}, "in_channels"),
    ({"type": "UNetPlusPlus", "is_ds": 1}, "is_ds"),
    ({"type": "UNet3Plus", "is_CGM": "true"}, "is_CGM"),
    ({"type": "AttentionUNet", "in_channels": 10**6}, "in_channels"),
    ({"type": "U2Netp", "in_channels": 2.5}, "in_channels"),
], ids=["deconv", "in0", "ds", "cgm", "in-huge", "in-float"])
def test_bad_arguments_are_one_line_config_errors(arch, words):
    with pytest.raises(SegxError, match=words) as info:
        backend.build_model(arch, 3)
    assert "\n" not in str(info.value)


@SLOW  # ~40 s (the export)
def test_static_export_matches_dynamic(tmp_path):
    assert_export_matches_dynamic({"type": "U2Netp"}, "segx.backend.nets.u2net", tmp_path,
                                  ANY_SIZE, atol=1e-4, scaled=True)
