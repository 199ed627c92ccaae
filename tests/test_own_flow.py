"""segx's own flow and edge family (SFNet, DecoupledSegNet, GSCNN on ResNet_vd) and the losses
their zoo recipes train with (EdgeAttentionLoss, BCELoss, RelaxBoundaryLoss, DualTaskLoss),
against paddleseg 2.8.0 as the oracle: every zoo model of the family, and small variants on
ResNet18_vd that reach the other code paths, has paddleseg's tensor names, shapes, dtypes and
parameter names and the same outputs for the same weights; every loss has paddleseg's value and
gradient on random inputs with ignored pixels. Nothing here multiplies an int tensor by a float
one (Paddle 3's strict type promotion refuses it; a check emulates that refusal on Paddle 2)."""
from __future__ import annotations

import zlib  # noqa: F401  (before paddle)

import inspect

import numpy as np
import pytest

paddle = pytest.importorskip("paddle")
pytest.importorskip("paddleseg")

from net_parity import (  # noqa: E402
    assert_backbone_keys_load, assert_export_matches_dynamic, both, loaded_pair, structure)
from net_parity import arch_of as zoo_arch  # noqa: E402
from segx import backend  # noqa: E402
from segx.backend import nets, optim  # noqa: E402
from segx.backend.nets import decoupled_segnet, edge_losses, gscnn, layers, resnet_vd, sfnet  # noqa: E402,E501
from segx.utils.errors import SegxError  # noqa: E402
from segx.zoo.registry import list_models, load_model_config, with_weights_arch  # noqa: E402,E501

SLOW = pytest.mark.slow  # over ~30 M parameters, or building a model (1-3 s each on 2 cores)
FAMILY = ("SFNet", "DecoupledSegNet", "GSCNN")
ZOO = [pytest.param("SFNet-R18", marks=SLOW), pytest.param("SFNet-R50", marks=SLOW),
       pytest.param("DecoupledSegNet-R50", marks=SLOW),
       pytest.param("DecoupledSegNet-R101", marks=SLOW), pytest.param("GSCNN-R50", marks=SLOW)]
SMALL = {  # not zoo models: cheap builds reaching the paths the zoo does not
    "SF-R18-os16-aux": {"type": "SFNet", "backbone": {"type": "ResNet18_vd", "output_stride": 16},
                        "backbone_indices": [0, 1, 2, 3], "enable_auxiliary_loss": True,
                        "align_corners": True},
    "DS-R18-os8-grid": {"type": "DecoupledSegNet", "backbone": {
        "type": "ResNet18_vd", "output_stride": 8, "multi_grid": [1, 2]},
        "aspp_ratios": [1, 12, 24, 36]},
    "GS-R18-os16": {"type": "GSCNN", "backbone": {"type": "ResNet18_vd", "output_stride": 16},
                    "align_corners": True},
}
SIZES = [(1, 3, 64, 64), (1, 3, 70, 90)]
SMALL_SLOW = [pytest.param(n, marks=SLOW) for n in SMALL]


def arch_of(name: str) -> dict:
    return SMALL[name] if name in SMALL else zoo_arch(name)


def flat_outputs(model, shape, train: bool = False, seed: int = 7) -> list:
    """Every output tensor (pairs flattened) as numpy, for an input in [-1, 1] (the range
    GSCNN's Canny step reads); ``seed`` set just before the forward pass (dropout)."""
    x = paddle.to_tensor(np.random.default_rng(1).uniform(-1, 1, shape).astype("float32"))
    model.train() if train else model.eval()
    paddle.seed(seed)
    with paddle.no_grad():
        outs = model(x)
    return [t.numpy() for o in outs for t in (o if isinstance(o, (list, tuple)) else [o])]


def rel_diff(own, ref, shape, train: bool = False) -> float:
    a, b = flat_outputs(own, shape, train), flat_outputs(ref, shape, train)
    if own.__class__.__name__ == "SFNet" and not train:
        b = b[-1:]  # paddleseg's SFNet evaluates its auxiliary heads too, before the logits
    assert [t.shape for t in a] == [t.shape for t in b]
    return max(float(np.abs(p - q).max()) / max(1.0, float(np.abs(q).max()))
               for p, q in zip(a, b))


# ------------------------------------------------------------------ strict type promotion
_BINARY = ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
           "__rtruediv__", "__pow__", "__mod__", "__floordiv__", "__eq__", "__ne__", "__lt__",
           "__le__", "__gt__", "__ge__")
_FLOATS = {paddle.float16, paddle.float32, paddle.float64, paddle.bfloat16}


@pytest.fixture
def strict_promotion(monkeypatch):
    """Tensor-tensor arithmetic refuses operands of different dtypes unless both are floats,
    as Paddle 3 does (Paddle 2 casts the right operand to the left one's dtype silently)."""
    def guard(name):
        real = getattr(paddle.Tensor, name)

        def checked(a, b):
            if isinstance(b, paddle.Tensor) and a.dtype != b.dtype and not (
                    a.dtype in _FLOATS and b.dtype in _FLOATS):
                raise TypeError(f"{name}: {a.dtype} with {b.dtype}")
            return real(a, b)
        return checked
    for name in _BINARY:
        monkeypatch.setattr(paddle.Tensor, name, guard(name))


# ------------------------------------------------------------------ models
def test_zoo_flow_models_are_segx_owned_and_the_switch_turns_them_off(monkeypatch):
    names = {n for n in list_models() if arch_of(n)["type"] in FAMILY}
    assert names == {p.values[0] for p in ZOO}  # every zoo model of the family is tested here
    assert all(nets.owns(arch_of(n)) for n in names)
    for n in names:  # the trained weights' Arch too (none of the family overrides it today)
        cfg = load_model_config(n)
        for dataset in ((cfg.get("Meta.weights") or {}).get("trained") or {}):
            assert nets.owns(with_weights_arch(cfg, dataset)["Arch"]), (n, dataset)
    for n in names:  # and so is each loss of their recipes
        for spec in load_model_config(n).get("Train.losses.types") or []:
            assert spec["type"] in nets.LOSSES
    assert {nets.MODELS[m].__module__ for m in FAMILY} == {
        "segx.backend.nets.sfnet", "segx.backend.nets.decoupled_segnet",
        "segx.backend.nets.gscnn"}
    monkeypatch.setenv(nets.ENV, "paddleseg")
    assert type(optim.build_losses({"types": [{"type": "DualTaskLoss"}]})[0][0]).__module__ \
        .startswith("paddleseg.")


@pytest.mark.parametrize("name", ZOO + SMALL_SLOW)
def test_same_tensors_and_parameter_counts(name):
    own, ref = both(arch_of(name))
    assert structure(own) == structure(ref)
    assert backend.count_params(own) == backend.count_params(ref)


@pytest.mark.parametrize("name", ZOO + SMALL_SLOW)
def test_same_outputs_for_the_same_weights(name):
    """Evaluation at two sizes (one odd), then training mode: every output, pairs included
    (auxiliary heads, body and edge, the edge probability)."""
    own, ref = loaded_pair(arch_of(name))
    for shape in SIZES:  # evaluation first: training updates the BatchNorm statistics
        assert rel_diff(own, ref, shape) <= 1e-5
    assert rel_diff(own, ref, SIZES[1], train=True) <= 1e-4


@SLOW
@pytest.mark.parametrize("name, train, count", [
    ("SF-R18-os16-aux", False, 1), ("SF-R18-os16-aux", True, 4), ("SFNet-R18", True, 1),
    ("DS-R18-os8-grid", False, 1), ("DS-R18-os8-grid", True, 5), ("GS-R18-os16", False, 5)])
def test_outputs_per_mode(name, train, count):
    """SFNet: the logits (3 auxiliary logits before them in training, when it has auxiliary
    heads; paddleseg's gives those in evaluation too, first); DecoupledSegNet: final, body,
    edge and the (final, edge) pair in training; GSCNN: its four outputs always."""
    model = backend.build_model(arch_of(name), 3)
    if name.startswith("GS"):
        assert model.backbone.keep_conv1_logit is True
    shapes = [t.shape for t in flat_outputs(model, SIZES[1], train)]
    assert len(shapes) == count
    assert all(s[0] == 1 and s[2:] == (70, 90) and s[1] in (1, 3) for s in shapes)


def test_flow_warp_of_zero_flow_is_identity_and_a_shift_moves_by_pixels():
    """Zero flow reproduces the map; a flow of +1 along x reads one pixel to the right
    (``flow`` is in pixels of the output grid)."""
    x = paddle.to_tensor(np.random.default_rng(2).normal(0, 1, (2, 3, 7, 9)).astype("float32"))
    size = paddle.shape(x)[2:]
    still = layers.flow_warp(x, paddle.zeros([2, 2, 7, 9]), size)
    np.testing.assert_allclose(still.numpy(), x.numpy(), atol=1e-5)
    flow = np.zeros((2, 2, 7, 9), "float32")
    # an x offset f moves the grid by f / w in [-1, 1] units, i.e. f (w - 1) / (2 w) columns
    flow[:, 0] = 2 * 9 / (9 - 1)
    moved = layers.flow_warp(x, paddle.to_tensor(flow), size).numpy()
    np.testing.assert_allclose(moved[..., :-1], x.numpy()[..., 1:], atol=1e-5)


def test_flow_warp_follows_a_dynamic_shape_in_a_static_graph():
    """The grid is built from a shape tensor: one static program serves several sizes."""
    def warp(x, flow):
        return layers.flow_warp(x, flow, paddle.shape(x)[2:])
    static = paddle.jit.to_static(warp, full_graph=True, input_spec=[
        paddle.static.InputSpec([None, 2, None, None], "float32"),
        paddle.static.InputSpec([None, 2, None, None], "float32")])
    for h, w in ((5, 6), (8, 3)):
        x = paddle.rand([1, 2, h, w])
        f = paddle.rand([1, 2, h, w])
        np.testing.assert_allclose(static(x, f).numpy(), warp(x, f).numpy(), atol=1e-6)


@SLOW
def test_imagenet_backbone_loads_into_every_model_of_the_family():
    """The ImageNet ResNet18_vd checkpoint's keys (paddleseg's) load, all of them, as the
    backbone of SFNet, DecoupledSegNet and GSCNN (R50/R101: tests/test_own_deeplab.py)."""
    from paddleseg.models import backbones
    ref = backbones.ResNet18_vd().state_dict()
    assert_backbone_keys_load(resnet_vd.ResNet18_vd().state_dict(), ref,
                              [arch_of(n) for n in SMALL])


def test_resnet_keeps_the_stem_output_only_when_asked_and_gscnn_asks():
    net = resnet_vd.ResNet18_vd(keep_conv1_logit=True)
    net.eval()
    with paddle.no_grad():
        net(paddle.rand([1, 3, 32, 48]))
    assert list(net.conv1_logit.shape) == [1, 64, 16, 24]
    assert inspect.signature(resnet_vd.ResNet_vd).parameters["keep_conv1_logit"].default is False


@pytest.mark.parametrize("arch, words", [
    ({"type": "SFNet", "backbone": {"type": "ResNet18_vd"}, "backbone_indices": [3]},
     "backbone_indices"),
    pytest.param({"type": "DecoupledSegNet", "backbone": {"type": "ResNet18_vd"},
                  "backbone_indices": [0, 9]}, "backbone_indices", marks=SLOW),
    pytest.param({"type": "GSCNN", "backbone": {"type": "ResNet18_vd"},
                  "backbone_indices": [0, 3]}, "backbone_indices", marks=SLOW),
    ({"type": "GSCNN", "backbone": {"type": "STDC1"}}, "ResNet_vd"),
    pytest.param({"type": "DecoupledSegNet", "backbone": {"type": "ResNet18_vd"},
                  "aspp_ratios": [1, 10 ** 6]}, "aspp_ratios", marks=SLOW),
], ids=["sf-indices", "ds-indices", "gs-indices", "gs-backbone", "ds-rates"])
def test_bad_model_arguments_are_one_line_config_errors(arch, words):
    with pytest.raises(SegxError, match=words) as info:
        backend.build_model(arch, 3)
    assert "\n" not in str(info.value)


@SLOW
def test_decoupled_widths_follow_aspp_out_channels():
    """paddleseg's DecoupledSegNet fails for any ASPP width but 256; segx's follows it."""
    arch = {"type": "DecoupledSegNet", "backbone": {"type": "ResNet18_vd", "output_stride": 32},
            "aspp_out_channels": 32}
    outs = flat_outputs(backend.build_model(arch, 3), (1, 3, 64, 64), train=True)
    assert [o.shape[1] for o in outs] == [3, 3, 1, 3, 1]


# ------------------------------------------------------------------ planted differences
@SLOW
def test_planted_structure_change_is_caught(monkeypatch):
    """DecoupledSegNet's low-level reduction to 32 channels instead of 48."""
    monkeypatch.setattr(decoupled_segnet, "FINE_CHANNELS", 32)
    own, ref = both(arch_of("DS-R18-os8-grid"))
    assert structure(own) != structure(ref)


def planted_ppm_bins(monkeypatch):
    """SFNet's pyramid pooling with bins 1, 3, 2, 6 (same tensors)."""
    monkeypatch.setattr(sfnet, "PPM_BINS", (1, 3, 2, 6))


def planted_unwarped_body(monkeypatch):
    """DecoupledSegNet's body taken as the ASPP map itself (the flow ignored)."""
    monkeypatch.setattr(decoupled_segnet, "flow_warp", lambda x, flow, size: x + 0 * flow[:, :1])


def planted_plain_gate(monkeypatch):
    """GSCNN's gated convs scaling their input by the gate instead of 1 + the gate."""
    def forward(self, features, gating):
        return self.conv(features * self._gate_conv(paddle.concat([features, gating], 1)))
    monkeypatch.setattr(gscnn.GatedSpatailConv2d, "forward", forward)


@SLOW
@pytest.mark.parametrize("plant, name", [(planted_ppm_bins, "SF-R18-os16-aux"),
                                         (planted_unwarped_body, "DS-R18-os8-grid"),
                                         (planted_plain_gate, "GS-R18-os16")])
def test_planted_forward_change_is_caught(monkeypatch, plant, name):
    plant(monkeypatch)
    own, ref = loaded_pair(arch_of(name))
    assert structure(own) == structure(ref)
    assert rel_diff(own, ref, SIZES[1]) > 1e-3


def test_canny_edges_outline_a_square_in_each_image_of_a_batch():
    """GSCNN's Canny input: 1 on the outline of a bright square (the input in [-1, 1]), 0
    inside, outside and on a blank image; one map per image."""
    img = -np.ones((2, 3, 32, 32), "float32")
    img[0, :, 8:24, 8:24] = 1.0
    edges = gscnn.canny_edges(paddle.to_tensor(img)).numpy()
    assert edges.shape == (2, 1, 32, 32) and edges.dtype == np.float32
    assert set(np.unique(edges)) == {0.0, 1.0} and edges[1].max() == 0
    ring = np.zeros((32, 32), bool)
    ring[7:25, 7:25], ring[9:23, 9:23] = True, False
    assert edges[0, 0][~ring].max() == 0 and edges[0, 0][ring].sum() >= 4 * 14


@SLOW  # ~10 s
def test_sfnet_static_export_matches_dynamic(tmp_path):
    assert_export_matches_dynamic(arch_of("SF-R18-os16-aux"), "segx.backend.nets.sfnet",
                                  tmp_path, SIZES, atol=1e-4, scaled=True)


# ------------------------------------------------------------------ losses
N, C, H, W = 2, 5, 20, 24


def _loss_inputs(seed: int = 0) -> dict:
    """Random logits, an edge probability and edge logit, class labels and 0/1 edge labels,
    a fifth of each label ignored (255)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, (N, H, W)).astype("int64")
    labels[rng.random((N, H, W)) < 0.2] = 255
    edges = (rng.random((N, H, W)) < 0.3).astype("int64")
    edges[rng.random((N, H, W)) < 0.2] = 255
    return {"logit": rng.normal(0, 2, (N, C, H, W)).astype("float32"),
            "prob": rng.random((N, 1, H, W)).astype("float32"),
            "edge_logit": rng.normal(0, 2, (N, 1, H, W)).astype("float32"),
            "label": labels, "edge": edges}


def value_and_grads(loss, inputs: dict, names, label: str, seed: int = 3):
    """The loss of ``names`` (a pair when two) against ``label`` and the gradient of each."""
    xs = [paddle.to_tensor(inputs[n], stop_gradient=False) for n in names]
    paddle.seed(seed)  # DualTaskLoss draws Gumbel noise
    value = loss(xs[0] if len(xs) == 1 else tuple(xs), paddle.to_tensor(inputs[label]))
    value.backward()
    return float(value), [None if x.grad is None else x.grad.numpy() for x in xs]


def paddleseg_loss(spec: dict):
    from paddleseg.cvlibs import manager
    return backend._build(spec, manager.LOSSES, "loss")


def relax_in_float(loss):
    """paddleseg's RelaxBoundaryLoss with its one-hot in float32: its formula without the
    int64 products (see test_paddleseg_relax_boundary_truncates_and_has_no_gradient)."""
    onehot = loss.relax_onehot
    loss.relax_onehot = lambda label, classes: onehot(label, classes).astype("float32")
    return loss


# (loss spec as in the zoo's recipes or beyond, the inputs it reads, the label it reads)
LOSS_CASES = {
    "edge-attention": ({"type": "EdgeAttentionLoss"}, ("logit", "prob"), "label"),
    "edge-attention-0.5": ({"type": "EdgeAttentionLoss", "edge_threshold": 0.5},
                           ("logit", "prob"), "label"),
    "bce-zoo": ({"type": "BCELoss", "weight": "dynamic", "edge_label": True}, ("edge_logit",),
                "edge"),
    "bce-plain": ({"type": "BCELoss"}, ("edge_logit",), "edge"),
    "bce-pos-dynamic": ({"type": "BCELoss", "pos_weight": "dynamic"}, ("edge_logit",), "edge"),
    "bce-pos-2": ({"type": "BCELoss", "pos_weight": 2.0}, ("edge_logit",), "edge"),
    "bce-onehot": ({"type": "BCELoss", "weight": "dynamic"}, ("logit",), "label"),
    "relax-boundary": ({"type": "RelaxBoundaryLoss"}, ("logit",), "label"),
    "dual-task": ({"type": "DualTaskLoss"}, ("logit",), "label"),
    "dual-task-tau": ({"type": "DualTaskLoss", "tau": 1.0}, ("logit",), "label"),
}


@pytest.mark.parametrize("case", list(LOSS_CASES))
def test_losses_match_paddleseg_in_value_and_gradient(case):
    spec, names, label = LOSS_CASES[case]
    ours = optim.build_losses({"types": [spec]})[0][0]
    assert type(ours).__module__ == "segx.backend.nets.edge_losses"
    theirs = paddleseg_loss(spec)
    theirs = relax_in_float(theirs) if spec["type"] == "RelaxBoundaryLoss" else theirs
    inputs = _loss_inputs()
    (v1, g1), (v2, g2) = (value_and_grads(f, inputs, names, label) for f in (ours, theirs))
    assert v1 == pytest.approx(v2, rel=1e-5) and v1 != 0
    for a, b in zip(g1, g2):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(b).max())


def test_paddleseg_relax_boundary_truncates_and_has_no_gradient():
    """paddleseg 2.8.0's RelaxBoundaryLoss on Paddle 2.6 multiplies log-probabilities by an
    int64 one-hot, in int64: a value from truncated logs and no gradient at all. segx's keeps
    the product in float32 (the loss above) and trains through it."""
    inputs = _loss_inputs()
    v_ps, (g_ps,) = value_and_grads(paddleseg_loss({"type": "RelaxBoundaryLoss"}), inputs,
                                    ("logit",), "label")
    v_own, (g_own,) = value_and_grads(edge_losses.RelaxBoundaryLoss(), inputs, ("logit",),
                                      "label")
    assert g_ps is None or not g_ps.any()
    assert np.abs(g_own).max() > 1e-4 and v_own > v_ps


def test_relax_boundary_counts_each_class_within_the_border():
    """A pixel next to another class scores the probability of both; one with an ignored
    neighbourhood nothing; with border 0 the loss is cross entropy averaged over H*W - ignored
    + 1 pixels."""
    loss = edge_losses.RelaxBoundaryLoss()
    label = paddle.to_tensor(np.array([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255]]]))
    targets = loss.relaxed_targets(label, 3).numpy()[0]
    assert targets[:, 0, 0].tolist() == [1, 0, 0] and targets[:, 0, 1].tolist() == [1, 1, 0]
    assert targets[:, 2, 3].tolist() == [0, 1, 0] and targets[:, 1, 1].tolist() == [1, 1, 1]
    logit = paddle.to_tensor(np.random.default_rng(5).normal(0, 1, (1, 3, 3, 4)), "float32")
    plain = edge_losses.RelaxBoundaryLoss(border=0)(logit, label)
    ce = paddle.nn.functional.cross_entropy(logit.transpose([0, 2, 3, 1]), label,
                                            ignore_index=255, reduction="sum")
    assert float(plain) == pytest.approx(float(ce) / (12 - 2 + 1), rel=1e-6)


@pytest.mark.parametrize("spec, words", [
    ({"type": "RelaxBoundaryLoss", "calculate_weights": True}, "calculate_weights"),
    ({"type": "RelaxBoundaryLoss", "border": -1}, "border"),
    ({"type": "BCELoss", "weight": "static"}, "weight"),
    ({"type": "BCELoss", "pos_weight": [1, 2]}, "pos_weight"),
], ids=["relax-weights", "relax-border", "bce-weight", "bce-pos-weight"])
def test_bad_loss_arguments_are_one_line_config_errors(spec, words):
    with pytest.raises(SegxError, match=words) as info:
        optim.build_losses({"types": [spec]})
    assert "\n" not in str(info.value)


def test_losses_refuse_inputs_they_cannot_score():
    with pytest.raises(ValueError, match="edge output"):
        edge_losses.EdgeAttentionLoss()((paddle.rand([1, 3, 8, 8]), paddle.rand([1, 1, 4, 4])),
                                        paddle.zeros([1, 8, 8], "int64"))
    with pytest.raises(ValueError, match="at least 4x4"):
        edge_losses.DualTaskLoss()(paddle.rand([1, 3, 3, 8]), paddle.zeros([1, 3, 8], "int64"))


# ------------------------------------------------------------------ the zoo recipes, strictly
def _recipe(name: str) -> tuple:
    cfg = load_model_config(name)
    return optim.build_losses(cfg.get("Train.losses"))


def recipe_loss(model, name: str, seed: int = 5):
    """One training step's loss of ``model`` under zoo model ``name``'s Train.losses (labels
    with ignored pixels, edge labels); returns the loss and the model's gradients."""
    rng = np.random.default_rng(seed)
    img = paddle.to_tensor(rng.uniform(-1, 1, (2, 3, 64, 64)).astype("float32"))
    label = rng.integers(0, 5, (2, 64, 64)).astype("int64")
    label[:, :8] = 255
    edge = (rng.random((2, 64, 64)) < 0.2).astype("int64")
    losses, coef = _recipe(name)
    model.train()
    paddle.seed(seed)
    outs = model(img)
    total = paddle.add_n(optim.loss_terms(outs, paddle.to_tensor(label), paddle.to_tensor(edge),
                                          losses, coef))
    total.backward()
    return float(total), {p.name: p.grad for p in model.parameters() if p.grad is not None}


@pytest.mark.parametrize("name, recipe", [pytest.param("SF-R18-os16-aux", None, marks=SLOW),
                                          ("DS-R18-os8-grid", "DecoupledSegNet-R50"),
                                          ("GS-R18-os16", "GSCNN-R50")])
def test_training_step_has_no_mixed_int_float_arithmetic(strict_promotion, name, recipe):
    """segx's models and the losses of their zoo recipes run forward and backward with every
    tensor-tensor operation on one dtype (or two floats), as Paddle 3 requires."""
    model = backend.build_model(arch_of(name), 5)
    if recipe is None:  # SFNet's auxiliary heads: cross entropy on every output
        model.train()
        outs = model(paddle.rand([2, 3, 64, 64]))
        ce = optim.build_losses({"types": [{"type": "CrossEntropyLoss"}]})[0][0]
        total = paddle.add_n([ce(o, paddle.randint(0, 5, [2, 64, 64])) for o in outs])
        total.backward()
        grads = [p for p in model.parameters() if p.grad is not None]
    else:
        total, grads = recipe_loss(model, recipe)
    assert np.isfinite(float(total)) and len(grads) > 10


@pytest.mark.parametrize("spec, names, label", [LOSS_CASES["bce-zoo"], LOSS_CASES["dual-task"],
                                                LOSS_CASES["relax-boundary"]],
                         ids=["bce", "dual-task", "relax-boundary"])
def test_the_strict_check_refuses_paddleseg_losses(strict_promotion, spec, names, label):
    """The check is real: paddleseg's versions of these losses mix int64 and float32."""
    with pytest.raises(TypeError, match="int64|bool"):
        value_and_grads(paddleseg_loss(spec), _loss_inputs(), names, label)


@SLOW
def test_the_strict_check_refuses_paddleseg_flow_warp(strict_promotion):
    """paddleseg's flow warp divides the float32 flow by the int32 shape."""
    ref = backend.build_model(arch_of("SF-R18-os16-aux"), 3, use_paddleseg=True)
    ref.eval()
    with pytest.raises(TypeError, match="int32"):
        ref(paddle.rand([1, 3, 64, 64]))


@SLOW
@pytest.mark.parametrize("name, recipe", [("DS-R18-os8-grid", "DecoupledSegNet-R50"),
                                          ("GS-R18-os16", "GSCNN-R50")])
def test_training_step_matches_paddleseg(name, recipe, monkeypatch):
    """The same weights and batch under the zoo recipe: segx's model and losses give
    paddleseg's total loss and gradients (its RelaxBoundaryLoss taken in float32)."""
    own, ref = loaded_pair(arch_of(name))
    from paddleseg.models.losses import RelaxBoundaryLoss
    real = RelaxBoundaryLoss.relax_onehot
    monkeypatch.setattr(RelaxBoundaryLoss, "relax_onehot",
                        lambda self, lb, c: real(self, lb, c).astype("float32"))
    v_own, g_own = recipe_loss(own, recipe)
    monkeypatch.setenv(nets.ENV, "paddleseg")
    v_ref, g_ref = recipe_loss(ref, recipe)
    assert v_own == pytest.approx(v_ref, rel=1e-5)
    assert sorted(g_own) == sorted(g_ref)
    largest = max(float(g.abs().max()) for g in g_ref.values())
    for key, grad in g_ref.items():  # (a conv bias before a BatchNorm gets only noise)
        tol = 1e-3 * float(grad.abs().max()) + 1e-6 * largest
        assert float((g_own[key] - grad).abs().max()) <= tol, key
