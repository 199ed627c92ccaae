"""segx's own SegFormer family (SegFormer on MixVisionTransformer_B0..B5) against paddleseg 2.8.0
as the oracle: for every SegFormer zoo model the same Arch built both ways has the same tensor
names, shapes, dtypes and paddle parameter names, and the same logits for the same weights in
evaluation and in training (stochastic depth and dropout drawn from the same seed); the
from-scratch initialisation has paddleseg's distributions; planted differences are caught."""
from __future__ import annotations

import zlib  # noqa: F401  (before paddle)

import numpy as np
import pytest

paddle = pytest.importorskip("paddle")
pytest.importorskip("paddleseg")

from net_parity import (  # noqa: E402
    arch_of, assert_backbone_keys_load, assert_export_matches_dynamic, both, loaded_pair,
    max_diff, outputs, planted_logit_diff, structure)
from segx import backend  # noqa: E402
from segx.backend.nets import mix_transformer, segformer  # noqa: E402

SMALL = ["SegFormer-B0", "SegFormer-B1", "SegFormer-B2"]
LARGE = ["SegFormer-B3", "SegFormer-B4", "SegFormer-B5"]  # 45-85 M parameters
SIZES = [(1, 3, 64, 64), (1, 3, 70, 90)]
ALL = SMALL + [pytest.param(n, marks=pytest.mark.slow) for n in LARGE]


@pytest.mark.parametrize("name", SMALL + LARGE)
def test_same_tensors_and_parameter_counts(name):
    own, ref = both(arch_of(name))
    assert type(own).__module__ == "segx.backend.nets.segformer"
    assert type(own.backbone).__module__ == "segx.backend.nets.mix_transformer"
    assert type(ref).__module__.startswith("paddleseg.")
    assert structure(own) == structure(ref)
    assert backend.count_params(own) == backend.count_params(ref)
    assert own.backbone.feat_channels == ref.backbone.feat_channels


@pytest.mark.parametrize("name", ALL)
def test_same_logits_for_the_same_weights(name):
    """Eval and training (stochastic depth up to 0.1 and the head's 2-D dropout, drawn after
    the same seed): measured bit-identical for B0-B5."""
    own, ref = loaded_pair(arch_of(name))
    for shape in SIZES:
        assert max_diff(own, ref, shape) <= 1e-6
        assert max_diff(own, ref, shape, train=True) <= 1e-6


def test_training_mode_is_random_and_eval_is_not():
    """The training comparison above is not vacuous: stochastic depth changes the output
    between seeds in training and never in evaluation."""
    own, _ = loaded_pair(arch_of("SegFormer-B0"))
    drops = [b.drop_path.p for i in range(1, 5) for b in getattr(own.backbone, f"block{i}")]
    assert drops[0] == 0.0 and drops[-1] == pytest.approx(0.1) and drops == sorted(drops)
    a, b = outputs(own, SIZES[0], True, seed=1)[0], outputs(own, SIZES[0], True, seed=2)[0]
    assert float(np.abs(a - b).max()) > 1e-2
    a, b = outputs(own, SIZES[0], False, seed=1)[0], outputs(own, SIZES[0], False, seed=2)[0]
    assert float(np.abs(a - b).max()) == 0.0


def init_stats(model) -> dict:
    """Per tensor: the constant value if all entries are equal, else (std, the share of
    entries beyond 2.3 std: about 2% for a normal, none for one truncated at 2 sigma)."""
    stats = {}
    for key, t in model.state_dict().items():
        arr = t.numpy().astype("float64")
        if arr.min() == arr.max():
            stats[key] = float(arr.flat[0])
        elif arr.size >= 2000:
            stats[key] = (arr.std(), float((np.abs(arr) > 2.3 * arr.std()).mean()))
    return stats


@pytest.mark.parametrize("name", ["SegFormer-B0", "SegFormer-B2"])
def test_from_scratch_initialisation_has_paddleseg_distributions(name):
    """Linear weights truncated normal (std 0.02, cut at 2 std), convs normal with
    std sqrt(2/fan_out), LayerNorms 1/0, zero biases in the backbone; paddle's defaults in the
    decoder. Seeds give different draws (paddleseg re-initialises each sub-layer several times),
    so the distributions are compared: same constants, std within 15%, same tail shape."""
    paddle.seed(3)
    own = backend.build_model(arch_of(name), 5)
    paddle.seed(4)
    ref = backend.build_model(arch_of(name), 5, True)
    mine, theirs = init_stats(own), init_stats(ref)
    assert mine.keys() == theirs.keys()
    for key, value in theirs.items():
        if isinstance(value, float):
            assert mine[key] == value, key
        else:
            assert mine[key][0] == pytest.approx(value[0], rel=0.15), key
            assert mine[key][1] == pytest.approx(value[1], abs=0.01), key


@pytest.mark.parametrize("size", ["B0", "B1", "B2"] + [
    pytest.param(s, marks=pytest.mark.slow) for s in ("B3", "B4", "B5")])
def test_imagenet_backbone_names_match(size):
    """The official backbone-only checkpoints hold MixVisionTransformer's keys: segx's have
    exactly paddleseg's (names, shapes, order), so ``Train.pretrained=imagenet`` loads N of N.
    (B3-B5 backbones are also covered, inside the whole model, by the fast tensor test.)"""
    from paddleseg.models import backbones
    with paddle.utils.unique_name.guard():
        ref = getattr(backbones, f"MixVisionTransformer_{size}")().state_dict()
    with paddle.utils.unique_name.guard():
        ours = getattr(mix_transformer, f"MixVisionTransformer_{size}")().state_dict()
    assert_backbone_keys_load(ours, ref, [arch_of("SegFormer-B0")] if size == "B0" else [])


def planted_patch_norm_eps(monkeypatch):
    """The patch embeddings' LayerNorm with epsilon 1e-6 (PaddleSeg's is paddle's 1e-5)."""
    real = mix_transformer.OverlapPatchEmbed.__init__

    def init(self, *args, **kwargs):
        real(self, *args, **kwargs)
        self.norm._epsilon = 1e-6
    monkeypatch.setattr(mix_transformer.OverlapPatchEmbed, "__init__", init)


def planted_fuse_order(monkeypatch):
    """The decoder's maps fused shallow-first instead of deepest-first."""
    class Reversed(segformer.ConvBNReLU):
        def forward(self, x):
            return super().forward(paddle.concat(paddle.split(x, 4, axis=1)[::-1], axis=1))
    monkeypatch.setattr(segformer, "ConvBNReLU", Reversed)


def planted_align_corners(monkeypatch):
    """The upsampling with align_corners=True."""
    real = segformer.resize
    monkeypatch.setattr(segformer, "resize",
                        lambda x, size, align_corners=False: real(x, size, align_corners=True))


@pytest.mark.parametrize("plant", [planted_patch_norm_eps, planted_fuse_order,
                                   planted_align_corners])
def test_planted_forward_change_is_caught(monkeypatch, plant):
    plant(monkeypatch)
    assert planted_logit_diff(arch_of("SegFormer-B0"), SIZES[1]) > 1e-6


def test_planted_drop_path_schedule_is_caught_in_training_only(monkeypatch):
    """Stochastic depth decreasing over the blocks instead of increasing: evaluation is
    unchanged, the seeded training comparison tells."""
    real = mix_transformer.drop_path_rates
    monkeypatch.setattr(mix_transformer, "drop_path_rates", lambda r, n: real(r, n)[::-1])
    own, ref = loaded_pair(arch_of("SegFormer-B0"))
    assert max_diff(own, ref, SIZES[0]) == 0.0
    assert max_diff(own, ref, SIZES[0], train=True) > 1e-3


def test_planted_reduction_kernel_is_caught(monkeypatch):
    """The attention's spatial reduction as a 1x1 conv instead of sr_ratio x sr_ratio."""
    real = mix_transformer.Attention.__init__

    def init(self, dim, *args, **kwargs):
        real(self, dim, *args, **kwargs)
        if self.sr_ratio > 1:
            self.sr = paddle.nn.Conv2D(dim, dim, 1, stride=self.sr_ratio)
    monkeypatch.setattr(mix_transformer.Attention, "__init__", init)
    own, ref = both(arch_of("SegFormer-B0"))
    assert structure(own) != structure(ref)


def test_config_arguments_are_checked_like_paddleseg():
    """The variants take PaddleSeg's overridable arguments; an unknown one is a one-line
    config error naming it."""
    from segx.utils.errors import SegxError
    arch = dict(arch_of("SegFormer-B0"), backbone={"type": "MixVisionTransformer_B0",
                                                   "in_channels": 4})
    model = backend.build_model(arch, 3)
    assert list(model(paddle.rand([1, 4, 32, 32]))[0].shape) == [1, 3, 32, 32]
    arch["backbone"] = {"type": "MixVisionTransformer_B0", "depth": 3}
    with pytest.raises(SegxError, match="MixVisionTransformer_B0 has no argument 'depth'"):
        backend.build_model(arch, 3)


def test_static_export_matches_dynamic(tmp_path):
    assert_export_matches_dynamic(arch_of("SegFormer-B0"), "segx.backend.nets.segformer",
                                  tmp_path, SIZES, atol=1e-4)


def test_training_step_gradients_match():
    """One training-mode backward pass (stochastic depth and dropout from the same seed): every
    parameter gets paddleseg's gradient (none for BatchNorm's running statistics, in both)."""
    own, ref = loaded_pair(arch_of("SegFormer-B0"))
    x = paddle.to_tensor(np.random.default_rng(1).normal(0, 1, SIZES[1]).astype("float32"))
    probe = paddle.to_tensor(np.random.default_rng(2).normal(0, 1, (1, 5, 70, 90)), "float32")
    grads = []
    for model in (own, ref):
        model.train()
        paddle.seed(11)
        (model(x)[0] * probe).mean().backward()
        grads.append({p.name: None if p.grad is None else p.grad.numpy()
                      for p in model.parameters()})
    assert grads[0].keys() == grads[1].keys()
    assert sum(g is None for g in grads[0].values()) == 2
    for name, g in grads[1].items():
        if g is None:
            assert grads[0][name] is None, name
            continue
        np.testing.assert_allclose(grads[0][name], g, rtol=1e-5, atol=1e-7, err_msg=name)
