"""segx's own EMANet, ISANet and DNLNet (on ResNet50/101_vd) against paddleseg 2.8.0 as the
oracle: every zoo model of the three families (and the align_corners its VOC weights need), and
small ResNet18_vd variants that reach the other code paths (EM rounds and momentum, ISA
padding, DNL's three pairwise modes), have paddleseg's tensor names, shapes, dtypes and
parameter names, the same logits in evaluation and training mode, the same gradients and the
same EM-basis buffer after a training step. Planted differences in segx's modules make these
checks fail."""
from __future__ import annotations

import zlib  # noqa: F401  (before paddle)

import numpy as np
import pytest

paddle = pytest.importorskip("paddle")
pytest.importorskip("paddleseg")

from net_parity import (  # noqa: E402
    assert_export_matches_dynamic, both, loaded_pair, max_diff, outputs, planted_logit_diff,
    structure)
from net_parity import arch_of as zoo_arch  # noqa: E402
from segx import backend  # noqa: E402
from segx.backend import nets  # noqa: E402
from segx.backend.nets import dnlnet, emanet, isanet, layers  # noqa: E402
from segx.utils.errors import SegxError  # noqa: E402
from segx.zoo.registry import list_models, load_model_config, with_weights_arch  # noqa: E402

SLOW = pytest.mark.slow  # over ~30 M parameters
TYPES = ("EMANet", "ISANet", "DNLNet")
ZOO_R50 = ["EMANet-R50", "ISANet-R50", "DNLNet-R50"]
ZOO_R101 = ["EMANet-R101", "ISANet-R101", "DNLNet-R101"]
R18 = {"type": "ResNet18_vd", "output_stride": 8}
SMALL = {  # not zoo models: cheap builds reaching the paths the zoo does not (no auxiliary
    # head: it reads a 1024-wide feature, which ResNet18_vd does not have)
    "EMA-R18": {"type": "EMANet", "backbone": R18, "enable_auxiliary_loss": False,
                "ema_channels": 32, "gc_channels": 16, "num_bases": 8, "stage_num": 2,
                "momentum": 0.3, "align_corners": True},
    "EMA-R18-plain": {"type": "EMANet", "backbone": R18, "enable_auxiliary_loss": False,
                      "backbone_indices": [1, 2], "ema_channels": 16, "gc_channels": 8,
                      "num_bases": 4, "concat_input": False},
    "ISA-R18-pad": {"type": "ISANet", "backbone": R18, "enable_auxiliary_loss": False,
                    "isa_channels": 16, "down_factor": [4, 5]},
    "ISA-R18-corners": {"type": "ISANet", "backbone": R18, "enable_auxiliary_loss": False,
                        "isa_channels": 8, "align_corners": True},
    "DNL-R18": {"type": "DNLNet", "backbone": R18, "enable_auxiliary_loss": False},
    "DNL-R18-dot": {"type": "DNLNet", "backbone": R18, "enable_auxiliary_loss": False,
                    "mode": "dot_product", "use_scale": False, "concat_input": False,
                    "align_corners": True},
    "DNL-R18-cat": {"type": "DNLNet", "backbone": R18, "enable_auxiliary_loss": False,
                    "mode": "concatenation", "reduction": 4, "temperature": 0.5},
}
SIZES = [(1, 3, 64, 64), (2, 3, 70, 90)]
EM_BOOST = "head.ema_out_conv._batch_norm.weight"  # 70x90: 9x12 features, not a multiple of 8


def arch_of(name: str) -> dict:
    return SMALL[name] if name in SMALL else zoo_arch(name)


@pytest.fixture(autouse=True)
def paddleseg_isa_on_paddle_26(monkeypatch):
    """paddleseg 2.8.0's ISAHead concatenates 0-D shape elements to pad its map, which Paddle
    2.6 refuses (they were 1-D in the Paddle it was written for): the oracle runs with
    ``paddle.concat`` taking 0-D tensors as 1-element ones. segx's ISANet does not need this."""
    real = paddle.concat

    def concat(xs, axis=0, name=None):
        xs = [x.reshape([1]) if isinstance(x, paddle.Tensor) and x.ndim == 0 else x
              for x in xs]
        return real(xs, axis=axis, name=name)
    monkeypatch.setattr(paddle, "concat", concat)


def same_structure(own, ref) -> bool:
    """:func:`structure` equal, except the EM bases buffer's paddle name: paddle draws it from
    a process-wide counter (``eager_tmp_N``) that no checkpoint or optimizer state holds."""
    def rows(model):
        return [r if not r[0].endswith("emau.mu") else (r[0], r[1], r[2], "-", *r[4:])
                for r in structure(model)]
    return rows(own) == rows(ref)


def rel_diff(own, ref, shape, train: bool = False) -> float:
    return max_diff(own, ref, shape, train, relative=True)


def test_zoo_models_are_segx_owned_and_the_switch_turns_them_off(monkeypatch):
    names = {n for n in list_models() if arch_of(n)["type"] in TYPES}
    assert names == set(ZOO_R50 + ZOO_R101)  # every zoo model of the families is tested here
    assert all(nets.owns(arch_of(n)) for n in names)
    assert [nets.MODELS[t].__module__ for t in TYPES] == [
        f"segx.backend.nets.{t.lower()}" for t in TYPES]
    assert type(backend.build_model(arch_of("DNL-R18"), 3)).__module__ == \
        "segx.backend.nets.dnlnet"
    monkeypatch.setenv(nets.ENV, "paddleseg")
    assert type(backend.build_model(arch_of("DNL-R18"), 3)).__module__.startswith("paddleseg.")


@SLOW  # 38 to 69 M parameters
@pytest.mark.parametrize("name", ZOO_R50 + ZOO_R101)
def test_zoo_tensors_and_parameter_counts(name):
    own, ref = both(arch_of(name))
    assert same_structure(own, ref)
    assert backend.count_params(own) == backend.count_params(ref)


def boost_em_unit(*models):
    """With random weights the EM unit's unit-length output is small beside the conv it is
    added to: its 1x1 ConvBNReLU is scaled up (alike in each model) so it shows in the logits."""
    for model in models:
        weight = dict(model.named_parameters())[EM_BOOST]
        weight.set_value(weight.numpy() * 1000)


@pytest.mark.parametrize("name", list(SMALL))
def test_same_tensors_and_logits_for_the_same_weights(name):
    own, ref = loaded_pair(arch_of(name))
    assert same_structure(own, ref)
    assert backend.count_params(own) == backend.count_params(ref)
    if name.startswith("EMA"):
        boost_em_unit(own, ref)
    for shape in SIZES:  # evaluation first: training updates the BatchNorm statistics
        assert rel_diff(own, ref, shape) <= 1e-5
    assert rel_diff(own, ref, SIZES[1], train=True) <= 1e-4
    assert [t.shape for t in outputs(own, SIZES[1], train=True)] == [(2, 5, 70, 90)]


def zoo_weights_cases():
    """(model, dataset or None): each zoo model's default Arch (which its ImageNet start and
    its Cityscapes weights use) and each trained entry's with an ``arch:`` of its own."""
    cases = []
    for name in ZOO_R50 + ZOO_R101:
        cases.append((name, None))
        trained = (load_model_config(name).get("Meta.weights") or {}).get("trained") or {}
        cases += [(name, d) for d, entry in sorted(trained.items()) if entry.get("arch")]
    return cases


@SLOW  # a zoo model's two sizes and training, with its auxiliary head
@pytest.mark.parametrize("name, dataset", zoo_weights_cases(), ids=str)
def test_zoo_logits_with_each_weights_arch(name, dataset):
    """The Arch each official checkpoint runs in (VOC's align_corners) gives paddleseg's
    logits, auxiliary head included, in evaluation and training."""
    arch = with_weights_arch(load_model_config(name), dataset)["Arch"]
    own, ref = loaded_pair(arch)
    if arch["type"] == "EMANet":
        boost_em_unit(own, ref)
    assert own.align_corners == ref.align_corners == (arch.get("align_corners") is True)
    assert rel_diff(own, ref, SIZES[1]) <= 1e-5
    assert rel_diff(own, ref, SIZES[0], train=True) <= 1e-4  # once each: EMANet's bases move
    train = outputs(own, SIZES[0], train=True)
    assert [t.shape for t in train] == [(1, 5, 64, 64)] * 2  # logits and auxiliary logits


def test_voc_weights_need_align_corners_and_get_it():
    """EMANet's and ISANet's VOC checkpoints were trained with align_corners on; the entry's
    arch reaches segx's model."""
    for name in ("EMANet-R50", "ISANet-R101"):
        arch = with_weights_arch(load_model_config(name), "pascal_voc12")["Arch"]
        assert arch["align_corners"] is True
    assert "align_corners" not in zoo_arch("DNLNet-R50")


def train_step(model, shape=SIZES[1]):
    """One training-mode forward and backward; the gradient of every parameter (None where
    none flows) and the buffers afterwards."""
    x = paddle.to_tensor(np.random.default_rng(2).normal(0, 1, shape).astype("float32"))
    model.train()
    paddle.seed(11)
    sum(o.square().mean() for o in model(x)).backward()
    grads = {k: (None if p.grad is None else p.grad.numpy())
             for k, p in model.named_parameters()}
    return grads, {k: t.numpy() for k, t in model.state_dict().items() if k not in grads}


def assert_same_step(own, ref, rtol=1e-4):
    (g_own, b_own), (g_ref, b_ref) = train_step(own), train_step(ref)
    assert list(g_own) == list(g_ref) and list(b_own) == list(b_ref)
    for key in g_ref:
        assert (g_own[key] is None) == (g_ref[key] is None), key
        if g_ref[key] is not None:
            scale = max(1e-4, float(np.abs(g_ref[key]).max()))
            assert float(np.abs(g_own[key] - g_ref[key]).max()) <= rtol * scale, key
    for key in b_ref:
        np.testing.assert_allclose(b_own[key], b_ref[key], rtol=1e-5, atol=1e-6, err_msg=key)
    return g_own, b_own


@pytest.mark.parametrize("name", ["EMA-R18", "ISA-R18-pad", "DNL-R18-cat"])
def test_training_step_gradients_and_buffers_match(name):
    """Gradients of every parameter and every buffer after a step (BatchNorm statistics, the
    EM bases) match paddleseg's."""
    grads, _ = assert_same_step(*loaded_pair(arch_of(name)))
    if name.startswith("EMA"):  # as in paddleseg, no gradient flows through the EM unit
        assert grads["head.ema_mid_conv.weight"] is None
        assert grads["head.ema_in_conv._conv.weight"] is not None


def test_em_bases_move_by_momentum_in_training_only():
    own, ref = loaded_pair(arch_of("EMA-R18"))
    start = own.head.emau.mu.numpy().copy()
    outputs(own, SIZES[1]), outputs(ref, SIZES[1])
    np.testing.assert_array_equal(own.head.emau.mu.numpy(), start)  # evaluation: unchanged
    outputs(own, SIZES[1], train=True), outputs(ref, SIZES[1], train=True)
    moved = own.head.emau.mu.numpy()
    assert float(np.abs(moved - start).max()) > 1e-3
    np.testing.assert_allclose(moved, ref.head.emau.mu.numpy(), rtol=1e-5, atol=1e-6)
    assert "head.emau.mu" in own.state_dict()  # still saved with the checkpoint
    np.testing.assert_allclose(np.linalg.norm(moved, axis=1), 1.0, rtol=0.35)  # a blend of
    # unit vectors: not renormalised after the move, as in paddleseg


def test_isanet_runs_where_paddleseg_2_8_fails(monkeypatch):
    """Without the oracle's shim, paddleseg 2.8.0's ISANet fails on Paddle 2.6 for any map
    that is not a multiple of ``down_factor``; segx's gives the shimmed oracle's logits."""
    own, ref = loaded_pair(arch_of("ISA-R18-pad"))
    want = outputs(ref, SIZES[1])
    monkeypatch.undo()
    with pytest.raises(ValueError):
        outputs(ref, SIZES[1])
    got = outputs(own, SIZES[1])
    assert [t.shape for t in got] == [(2, 5, 70, 90)]
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("extra, words", [
    ({"type": "EMANet", "backbone_indices": [3]}, "backbone_indices"),
    ({"type": "ISANet", "backbone_indices": [0, 9]}, "backbone_indices"),
    ({"type": "DNLNet", "enable_auxiliary_loss": True}, "enable_auxiliary_loss"),
    ({"type": "EMANet", "stage_num": 0}, "stage_num"),
    ({"type": "EMANet", "num_bases": 0}, "num_bases"),
    ({"type": "ISANet", "down_factor": [8]}, "down_factor"),
    ({"type": "ISANet", "down_factor": [0, 8]}, "down_factor"),
    ({"type": "DNLNet", "mode": "gaussian"}, "mode"),
    ({"type": "DNLNet", "mode": "cosine"}, "mode"),
    ({"type": "DNLNet", "reduction": 0}, "reduction"),
    ({"type": "DNLNet", "temperature": 0}, "temperature"),
], ids=str)
def test_bad_arguments_are_one_line_config_errors(extra, words):
    arch = {"backbone": R18, "enable_auxiliary_loss": False, **extra}
    with pytest.raises(SegxError, match=words) as info:
        backend.build_model(arch, 3)
    assert "\n" not in str(info.value)


def test_paddleseg_cannot_run_the_gaussian_mode_segx_refuses():
    """paddleseg 2.8.0 builds DNLNet's gaussian mode but its forward indexes a dimension by
    the channel count; segx refuses the mode when building (the bad-arguments test)."""
    ref = backend.build_model({**arch_of("DNL-R18"), "mode": "gaussian"}, 3, True)
    with pytest.raises(ValueError, match="dim"):
        outputs(ref, SIZES[0])


def test_planted_structure_change_is_caught(monkeypatch):
    """The auxiliary head's conv with a bias where paddleseg has none."""
    monkeypatch.setattr(isanet, "context_aux_head", lambda n, bias: layers.context_aux_head(
        n, bias=True))
    own, ref = both(arch_of("ISA-R18-pad"))
    assert not same_structure(own, ref)


def planted_em_rounds(monkeypatch):
    """One EM round fewer than asked."""
    real = emanet.EMAU._em_rounds

    def fewer(self, pixels, bases):
        self.stage_num -= 1
        try:
            return real(self, pixels, bases)
        finally:
            self.stage_num += 1
    monkeypatch.setattr(emanet.EMAU, "_em_rounds", fewer)


def planted_isa_padding(monkeypatch):
    """The padding all at the bottom/right instead of split evenly."""
    real = isanet.ISAHead._padded

    def padded(self, x):
        out, grid, (top, left) = real(self, x)
        return out, grid, (top * 0, left * 0)
    monkeypatch.setattr(isanet.ISAHead, "_padded", padded)


def planted_isa_align_mode(monkeypatch):
    """ISANet's final upsampling with paddle's default half-pixel mapping."""
    monkeypatch.setattr(isanet.ISANet, "align_mode", 0)


def planted_dnl_whitening(monkeypatch):
    """The DNL query not whitened (its mean kept; the key's mean cancels in the softmax)."""
    real = dnlnet._centered
    monkeypatch.setattr(dnlnet, "_centered", lambda t, axis: t if axis == -2 else real(t, axis))


def planted_dnl_concat_halves(monkeypatch):
    """The concatenation mode's conv halves swapped between query and key."""
    real = dnlnet._query_key_halves
    monkeypatch.setattr(dnlnet, "_query_key_halves", lambda w: real(w)[::-1])


@pytest.mark.parametrize("plant, name", [
    (planted_em_rounds, "EMA-R18"), (planted_isa_padding, "ISA-R18-pad"),
    (planted_isa_align_mode, "ISA-R18-pad"), (planted_dnl_whitening, "DNL-R18"),
    (planted_dnl_concat_halves, "DNL-R18-cat")], ids=lambda v: getattr(v, "__name__", v))
def test_planted_forward_change_is_caught(monkeypatch, plant, name):
    plant(monkeypatch)
    if not name.startswith("EMA"):
        assert planted_logit_diff(arch_of(name), SIZES[1], relative=True) > 1e-4
        return
    own, ref = loaded_pair(arch_of(name))
    boost_em_unit(own, ref)
    assert max_diff(own, ref, SIZES[1], relative=True) > 1e-4


def test_planted_momentum_change_is_caught(monkeypatch):
    """The bases' batch mean not scaled back to unit length before the move."""
    def move(self, bases):
        self.mu = self.mu * (1 - self.momentum) + bases.mean(axis=0, keepdim=True) * \
            self.momentum
    own, ref = loaded_pair(arch_of("EMA-R18"))
    monkeypatch.setattr(emanet.EMAU, "_move_buffer", move)
    with pytest.raises(AssertionError, match="mu"):
        assert_same_step(own, ref)


@SLOW  # ~10 s each
@pytest.mark.parametrize("name", ["ISA-R18-pad", "EMA-R18", "DNL-R18-dot"])
def test_static_export_matches_dynamic(tmp_path, name):
    """Exported with dynamic sizes, segx's models give the dynamic graph's logits, padding
    (ISANet, which paddleseg's cannot export) and pixel counts (DNL) taken from the input."""
    module = f"segx.backend.nets.{arch_of(name)['type'].lower()}"
    assert_export_matches_dynamic(arch_of(name), module, tmp_path, SIZES[:1] + [(1, 3, 70, 90)],
                                  atol=1e-4, scaled=True)
