"""segx's own HRNet family (backbones HRNet_W18/W48, models OCRNet and FCN) against paddleseg
2.8.0 as the oracle: every zoo model of the family, built from the same Arch both ways, has the
same tensors (names, shapes, dtypes, paddle parameter names, learning rates) and, with the same
random weights, the same logits in evaluation and in training; the ImageNet backbone keys load
one for one; planted differences in segx's modules make these checks fail."""
from __future__ import annotations

import zlib  # noqa: F401  (before paddle)

import numpy as np
import pytest

paddle = pytest.importorskip("paddle")
pytest.importorskip("paddleseg")

from net_parity import (  # noqa: E402
    arch_of, assert_backbone_keys_load, assert_export_matches_dynamic, both, loaded_pair,
    outputs, structure)
from segx import backend  # noqa: E402
from segx.backend import nets  # noqa: E402
from segx.backend.nets import hrnet, ocrnet  # noqa: E402
from segx.utils.errors import ConfigError  # noqa: E402

# the W48 models have 66-70 M parameters: slow
MODELS = ["OCRNet_HRNet-W18", "FCN_HRNet-W18",
          pytest.param("OCRNet_HRNet-W48", marks=pytest.mark.slow),
          pytest.param("FCN_HRNet-W48", marks=pytest.mark.slow)]
# 64x64: even sizes are where paddle's 'same' padding of a stride-2 conv is asymmetric;
# 70x90: odd sizes at the lower resolutions, where upsampling is not an exact factor
SIZES = [(1, 3, 64, 64), (1, 3, 70, 90)]
_BUILT: dict = {}


def pair(name: str, arch: dict | None = None, classes: int = 5):
    """(segx's model, paddleseg's model) with the same random weights; built once per name."""
    if name not in _BUILT:
        _BUILT[name] = loaded_pair(arch or arch_of(name), classes)
    return _BUILT[name]


def assert_same_outputs(own, ref, shape, train: bool = False):
    a, b = outputs(own, shape, train), outputs(ref, shape, train)
    assert [t.shape for t in a] == [t.shape for t in b]
    for p, q in zip(a, b):
        assert np.isfinite(p).all() and p.std() > 1e-3  # not a degenerate (constant) output
        np.testing.assert_allclose(p, q, rtol=0, atol=1e-5)


@pytest.fixture(autouse=True, scope="module")
def _drop_builds_at_the_end():
    """The cached pairs hold up to ~1 GB (W48): free them when this module is done."""
    yield
    _BUILT.clear()


@pytest.fixture(autouse=True)
def _fresh_builds_after_a_plant():
    """A test that plants a change builds its own models: drop them afterwards."""
    before = set(_BUILT)
    yield
    for name in set(_BUILT) - before:
        if name.startswith("planted"):
            del _BUILT[name]


@pytest.mark.parametrize("name", MODELS)
def test_zoo_model_is_segx_own_with_paddleseg_tensors(name):
    own, ref = pair(name)
    family = "ocrnet" if name.startswith("OCRNet") else "fcn"
    assert type(own).__module__ == f"segx.backend.nets.{family}"
    assert type(own.backbone).__module__ == "segx.backend.nets.hrnet"
    assert type(ref).__module__.startswith("paddleseg.")
    assert structure(own) == structure(ref)
    assert backend.count_params(own) == backend.count_params(ref)


@pytest.mark.parametrize("name", MODELS)
def test_same_logits_in_eval_and_training(name):
    own, ref = pair(name)
    for shape in SIZES:
        assert_same_outputs(own, ref, shape)
    # training: OCRNet adds the coarse (auxiliary) logits, both at the input size
    train = outputs(own, SIZES[1], train=True)
    heads = 2 if name.startswith("OCRNet") else 1
    assert [t.shape for t in train] == [(1, 5, 70, 90)] * heads
    assert_same_outputs(own, ref, SIZES[1], train=True)


def test_same_gradients_for_a_training_step():
    """Both outputs weighted as the zoo's OCRNet loss weights them (1, 0.4): every parameter
    gets paddleseg's gradient (nothing detached, nothing left out)."""
    x = paddle.to_tensor(np.random.default_rng(4).normal(0, 1, (2, 3, 64, 64)).astype("float32"))
    grads = []
    for model in pair("OCRNet_HRNet-W18"):
        model.train()
        model.clear_gradients()
        paddle.seed(7)
        total = sum(coef * out.mean() for coef, out in zip((1.0, 0.4), model(x)))
        total.backward()
        grads.append({k: p.grad.numpy() for k, p in model.named_parameters()
                      if p.grad is not None})
        model.clear_gradients()
    assert sorted(grads[0]) == sorted(grads[1])
    assert len(grads[0]) == len([p for p in pair("OCRNet_HRNet-W18")[0].parameters()
                                 if not p.stop_gradient])
    for key, want in grads[1].items():
        np.testing.assert_allclose(grads[0][key], want, rtol=1e-5,
                                   atol=1e-6 * max(1e-6, float(np.abs(want).max())), err_msg=key)


def test_non_default_backbone_options_match_paddleseg():
    """has_se, padding_same=False and align_corners=True are implemented, not ignored."""
    arch = {"type": "FCN", "backbone": {"type": "HRNet_W18", "has_se": True,
                                        "padding_same": False, "align_corners": True},
            "backbone_indices": [-1], "align_corners": True}
    own, ref = pair("HRNet_W18 options", arch)
    assert type(own.backbone).__module__ == "segx.backend.nets.hrnet"
    assert any(".se.squeeze." in key for key in own.state_dict())
    assert structure(own) == structure(ref)
    assert_same_outputs(own, ref, SIZES[0])


def test_routing_and_the_switch(monkeypatch):
    assert nets.owns(arch_of("OCRNet_HRNet-W18")) and nets.owns(arch_of("FCN_HRNet-W48"))
    # an OCRNet or FCN on a backbone segx does not own stays on paddleseg as a whole
    assert not nets.owns({"type": "OCRNet", "backbone": {"type": "MobileNetV3_small_x1_0"}})
    monkeypatch.setenv(nets.ENV, "paddleseg")
    model = backend.build_model(arch_of("OCRNet_HRNet-W18"), 3)
    assert type(model).__module__.startswith("paddleseg.")


def test_options_segx_lacks_are_refused_naming_the_switch():
    arch = {"type": "FCN", "backbone": {"type": "HRNet_W18", "use_psa": True}}
    with pytest.raises(ConfigError, match="SEGX_NETWORKS=paddleseg"):
        backend.build_model(arch, 3)
    with pytest.raises(ConfigError, match="backbone_indices"):
        backend.build_model({**arch_of("OCRNet_HRNet-W18"), "backbone_indices": [0, 1, 2]}, 3)


@pytest.mark.parametrize("factory", ["HRNet_W18", pytest.param("HRNet_W48",
                                                               marks=pytest.mark.slow)])
def test_imagenet_backbone_keys_load_one_for_one(factory):
    """The ImageNet start is a backbone-only state dict: segx's backbone has exactly paddleseg's
    keys and shapes, so every tensor of it loads into the OCRNet and FCN models."""
    import paddleseg.models.backbones as ps
    with paddle.utils.unique_name.guard():
        ref = getattr(ps, factory)().state_dict()
    with paddle.utils.unique_name.guard():
        ours = getattr(hrnet, factory)().state_dict()
    width = factory.rsplit("W", 1)[1]
    assert_backbone_keys_load(ours, ref, [arch_of(f"{family}_HRNet-W{width}")
                                          for family in ("OCRNet", "FCN")])


# ---- planted differences: each must make a check above fail -------------------------------

def test_planted_block_kernel_is_caught(monkeypatch):
    """A basic block's second conv 1x1 instead of 3x3: the tensor shapes differ."""
    real = hrnet.Basic.__init__

    def init(self, cin, cout, has_se, same):
        real(self, cin, cout, has_se, same)
        self.conv2 = hrnet.ConvBN(cout, cout, 1, bias_attr=False)
    monkeypatch.setattr(hrnet.Basic, "__init__", init)
    own, ref = both(arch_of("FCN_HRNet-W18"))
    assert structure(own) != structure(ref)


def _plant_symmetric_padding(monkeypatch):
    """padding=1 instead of paddle's 'same' (differs for stride-2 convs of even sizes)."""
    monkeypatch.setattr(hrnet, "_pad", lambda same: 1)


def _plant_fuse_align_corners(monkeypatch):
    """align_corners=True in the fusion's upsampling."""
    real = hrnet.Fuse.__init__

    def init(self, *args):
        real(self, *args)
        self.align_corners = True
    monkeypatch.setattr(hrnet.Fuse, "__init__", init)


def _plant_region_softmax_axis(monkeypatch):
    """Region weights normalised over the classes instead of over the pixels."""
    def regions(pixels, coarse, pixel_ch, classes):
        weights = paddle.nn.functional.softmax(ocrnet._flat(coarse, classes), axis=1)
        flat = paddle.transpose(ocrnet._flat(pixels, pixel_ch), (0, 2, 1))
        feats = paddle.transpose(paddle.bmm(weights, flat), (0, 2, 1))
        return paddle.unsqueeze(feats, axis=-1)
    monkeypatch.setattr(ocrnet, "region_features", regions)


@pytest.mark.parametrize("plant", [_plant_symmetric_padding, _plant_fuse_align_corners,
                                   _plant_region_softmax_axis])
def test_planted_forward_change_is_caught(monkeypatch, plant):
    plant(monkeypatch)
    own, ref = pair(f"planted {plant.__name__}", arch_of("OCRNet_HRNet-W18"))
    assert structure(own) == structure(ref)  # same tensors: only the logits can tell
    with pytest.raises(AssertionError):
        assert_same_outputs(own, ref, SIZES[0])


@pytest.mark.slow  # minutes on a shared CPU
def test_static_export_matches_dynamic(tmp_path):
    """Dynamic batch and size survive the export (reshapes keep the batch dimension as 0).
    Random weights give logits in the thousands: the tolerance is relative to their scale
    (the engine fuses conv and BatchNorm, which rounds differently)."""
    assert_export_matches_dynamic(arch_of("OCRNet_HRNet-W18"), "segx.backend.nets.ocrnet",
                                  tmp_path, SIZES, atol=1e-5, rtol=0, scaled=True)
