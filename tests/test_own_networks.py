"""segx's own networks against paddleseg 2.8.0 as the oracle: for each family segx owns, the
same Arch built both ways has the same tensor names, shapes, dtypes and parameter names, and
the same logits for the same weights; segx's losses give paddleseg's values. A planted
difference in segx's module must make these checks fail."""
from __future__ import annotations

import zlib  # noqa: F401  (before paddle)

import numpy as np
import pytest

paddle = pytest.importorskip("paddle")
pytest.importorskip("paddleseg")

from net_parity import (  # noqa: E402
    arch_of, assert_backbone_keys_load, assert_export_matches_dynamic, both, loaded_pair,
    max_diff, planted_logit_diff, structure)
from segx import backend  # noqa: E402
from segx.backend import nets  # noqa: E402
from segx.backend.nets import pp_liteseg, stdc  # noqa: E402
from segx.backend.optim import build_losses  # noqa: E402

OWN_MODELS = ["PP-LiteSeg-T", "PP-LiteSeg-B"]
SIZES = [(1, 3, 64, 96), (1, 3, 70, 90)]


def test_owned_models_come_from_segx_and_the_switch_turns_them_off(monkeypatch):
    own, ref = both(arch_of("PP-LiteSeg-T"))
    assert type(own).__module__ == "segx.backend.nets.pp_liteseg"
    assert type(own.backbone).__module__ == "segx.backend.nets.stdc"
    assert type(ref).__module__.startswith("paddleseg.")
    monkeypatch.setenv(nets.ENV, "paddleseg")
    assert type(backend.build_model(arch_of("PP-LiteSeg-T"), 3)).__module__.startswith(
        "paddleseg.")
    # a backbone segx does not own keeps the whole model on paddleseg
    monkeypatch.delenv(nets.ENV)
    monkeypatch.delitem(nets.BACKBONES.components_dict, "STDC1")
    assert not nets.owns(arch_of("PP-LiteSeg-T"))
    assert type(backend.build_model(arch_of("PP-LiteSeg-T"), 3)).__module__.startswith(
        "paddleseg.")


@pytest.mark.parametrize("name", OWN_MODELS)
def test_same_tensors_and_parameter_counts(name):
    own, ref = both(arch_of(name))
    assert structure(own) == structure(ref)
    assert backend.count_params(own) == backend.count_params(ref)


@pytest.mark.parametrize("name", OWN_MODELS)
def test_same_logits_for_the_same_weights(name):
    own, ref = loaded_pair(arch_of(name))
    for shape in SIZES:
        assert max_diff(own, ref, shape) <= 1e-5
        assert max_diff(own, ref, shape, train=True) <= 1e-5


def test_imagenet_backbone_names_match_segx_stdc():
    """The official backbone-only checkpoint holds STDCNet's keys (``features.*``): segx's
    STDC1 has exactly paddleseg's, so ``Train.pretrained=imagenet`` loads every tensor."""
    from paddleseg.models.backbones import STDC1
    assert_backbone_keys_load(stdc.STDC1().state_dict(), STDC1().state_dict(),
                              [arch_of("PP-LiteSeg-T")])


def planted_kernel(monkeypatch):
    """The fusion module's input conv with a 1x1 kernel instead of 3x3."""
    real = pp_liteseg.UAFM_SpAtten.__init__

    def init(self, x_ch, y_ch, out_ch, ksize=3, resize_mode="bilinear"):
        real(self, x_ch, y_ch, out_ch, 1, resize_mode)
    monkeypatch.setattr(pp_liteseg.UAFM_SpAtten, "__init__", init)


def planted_align_corners(monkeypatch):
    """The final upsampling with align_corners=True."""
    monkeypatch.setattr(pp_liteseg, "_resize", lambda x, hw, mode="bilinear": F_interp(x, hw))


def F_interp(x, hw):
    return paddle.nn.functional.interpolate(x, hw, mode="bilinear", align_corners=True)


def planted_pool(monkeypatch):
    """STDC's downsampling skip with a max pool instead of an average pool."""
    real = stdc.CatBottleneck.__init__

    def init(self, *args, **kwargs):
        real(self, *args, **kwargs)
        if self.stride == 2:
            self.skip = paddle.nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
    monkeypatch.setattr(stdc.CatBottleneck, "__init__", init)


def test_planted_kernel_change_is_caught(monkeypatch):
    planted_kernel(monkeypatch)
    own, ref = both(arch_of("PP-LiteSeg-T"))
    assert structure(own) != structure(ref)


@pytest.mark.parametrize("plant", [planted_align_corners, planted_pool])
def test_planted_forward_change_is_caught(monkeypatch, plant):
    plant(monkeypatch)
    assert planted_logit_diff(arch_of("PP-LiteSeg-T"), SIZES[1]) > 1e-3


LOSS_SPECS = [
    {"type": "CrossEntropyLoss"},
    {"type": "CrossEntropyLoss", "weight": [0.5, 1.0, 2.0, 1.5, 0.7]},
    {"type": "CrossEntropyLoss", "top_k_percent_pixels": 0.3},
    {"type": "CrossEntropyLoss", "weight": [0.5, 1.0, 2.0, 1.5, 0.7],
     "top_k_percent_pixels": 0.5},
    {"type": "CrossEntropyLoss", "avg_non_ignore": False, "ignore_index": 4},
]


@pytest.mark.parametrize("spec", LOSS_SPECS, ids=lambda s: ",".join(map(str, s.values())))
def test_loss_equals_paddleseg(spec):
    rng = np.random.default_rng(2)
    logit = rng.normal(0, 2, (2, 5, 9, 11)).astype("float32")
    label = rng.integers(0, 5, (2, 9, 11)).astype("int64")
    label[0, :3, :4] = spec.get("ignore_index", 255)
    (own,), _ = build_losses({"types": [spec]})
    (ref,), _ = build_losses({"types": [spec]}, use_paddleseg=True)
    assert type(own).__module__ == "segx.backend.nets.losses"
    assert type(ref).__module__.startswith("paddleseg.")
    values, grads = [], []
    for loss in (own, ref):
        x = paddle.to_tensor(logit, stop_gradient=False)
        value = loss(x, paddle.to_tensor(label))
        value.backward()
        values.append(float(value))
        grads.append(x.grad.numpy())
    assert values[0] == pytest.approx(values[1], rel=1e-6, abs=1e-7)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def test_loss_casts_where_paddle3_refuses_mixed_dtypes(monkeypatch):
    """Paddle 3 refuses float32 x int64 arithmetic; on 2.6 a guard on multiply stands in for
    it: segx's loss never mixes them, paddleseg's does (so the guard is real)."""
    real = paddle.Tensor.__mul__

    def strict(a, b):
        if isinstance(b, paddle.Tensor) and {str(a.dtype), str(b.dtype)} == \
                {"paddle.float32", "paddle.int64"}:
            raise TypeError(f"mixed {a.dtype} x {b.dtype}")
        return real(a, b)
    logit = paddle.rand([1, 5, 4, 4])
    label = paddle.randint(0, 5, [1, 4, 4])
    monkeypatch.setattr(paddle.Tensor, "__mul__", strict)
    for spec in LOSS_SPECS:
        (own,), _ = build_losses({"types": [spec]})
        own(logit, label)
    (ref,), _ = build_losses({"types": [LOSS_SPECS[0]]}, use_paddleseg=True)
    with pytest.raises(TypeError, match="mixed"):
        ref(logit, label)


def test_static_export_matches_dynamic(tmp_path):
    assert_export_matches_dynamic(arch_of("PP-LiteSeg-T"), "segx.backend.nets.pp_liteseg",
                                  tmp_path, SIZES, atol=1e-4)
