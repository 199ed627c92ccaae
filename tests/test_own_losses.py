"""segx's own losses beyond cross entropy (segx/backend/nets/losses.py) against PaddleSeg 2.8's,
the oracle: the same value and the same gradient on random logits, with ignored (255) pixels."""
from __future__ import annotations

import numpy as np
import pytest

backend = pytest.importorskip("segx.backend")
import paddle  # noqa: E402
pytest.importorskip("paddleseg")  # the oracle: the Paddle 2.6 leg only
from paddleseg.cvlibs import manager  # noqa: E402

from segx.backend import nets  # noqa: E402
from segx.backend import optim as O  # noqa: E402

SEEDS = range(4)
SHAPE = (2, 4, 7, 9)  # N, C, H, W: odd sizes


def _inputs(seed: int, shape=SHAPE, classes: int | None = None, ignored: float = 0.15):
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    logits = (rng.standard_normal(shape) * 2).astype("float32")
    labels = rng.integers(0, classes or c, (n, h, w)).astype("int64")
    labels[rng.random((n, h, w)) < ignored] = 255
    return logits, labels


def _value_and_grad(loss, logits: np.ndarray, labels: np.ndarray):
    x = paddle.to_tensor(logits, stop_gradient=False)
    out = loss(x, paddle.to_tensor(labels))
    outs = out if isinstance(out, list) else [out]
    paddle.add_n([o.sum() for o in outs]).backward()
    return [float(o) for o in outs], x.grad.numpy()


def _pair(spec: dict):
    ours = O.build_losses({"types": [spec]}, use_paddleseg=False)[0][0]
    theirs = O.build_losses({"types": [spec]}, use_paddleseg=True)[0][0]
    assert type(ours).__module__ == "segx.backend.nets.losses"
    assert type(theirs).__module__.startswith("paddleseg.")
    return ours, theirs


def _assert_same(spec: dict, seed: int, **inputs):
    ours, theirs = _pair(spec)
    logits, labels = _inputs(seed, **inputs)
    mine, grad_mine = _value_and_grad(ours, logits, labels.copy())
    ref, grad_ref = _value_and_grad(theirs, logits, labels.copy())
    np.testing.assert_allclose(mine, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_mine, grad_ref, rtol=1e-4, atol=1e-7)
    assert np.abs(grad_ref).sum() > 0  # a gradient that could differ


CASES = [
    {"type": "DiceLoss"}, {"type": "DiceLoss", "smooth": 0.5, "weight": [1.0, 2.0, 0.5, 0.1]},
    {"type": "OhemCrossEntropyLoss"},  # min_kept above the pixels: every counted pixel
    {"type": "OhemCrossEntropyLoss", "thresh": 0.7, "min_kept": 20},
    {"type": "OhemCrossEntropyLoss", "thresh": 0.05, "min_kept": 30},  # the k-th sets the bar
    {"type": "OhemCrossEntropyLoss", "thresh": 0.9, "min_kept": 0},
    {"type": "LovaszSoftmaxLoss"}, {"type": "LovaszSoftmaxLoss", "classes": "all"},
    {"type": "LovaszSoftmaxLoss", "classes": [1, 3]}, {"type": "LovaszSoftmaxLoss", "classes": [2]},
    {"type": "BootstrappedCrossEntropyLoss", "min_K": 20, "loss_th": 0.3},  # many above
    {"type": "BootstrappedCrossEntropyLoss", "min_K": 40, "loss_th": 4.0,
     "weight": [1.0, 0.5, 2.0, 1.0]},  # too few above: the K largest
    {"type": "MultiClassFocalLoss", "num_class": 4},
    {"type": "MultiClassFocalLoss", "num_class": 4, "alpha": 0.5, "gamma": 1.5},
    {"type": "MixedLoss", "losses": [{"type": "CrossEntropyLoss"}, {"type": "LovaszSoftmaxLoss"},
                                     {"type": "DiceLoss"}], "coef": [1, 0.5, 0.25]},
    {"type": "MixedLoss", "losses": [{"type": "OhemCrossEntropyLoss", "min_kept": 10},
                                     {"type": "DiceLoss"}], "coef": [0.3, 2]},
]


@pytest.mark.parametrize("spec", CASES, ids=[f"{s['type']}-{i}" for i, s in enumerate(CASES)])
def test_value_and_gradient_match_paddleseg(spec):
    for seed in SEEDS:
        _assert_same(spec, seed)


@pytest.mark.parametrize("channels", [1, 2])
def test_lovasz_hinge_matches_paddleseg(channels):
    for seed in SEEDS:
        _assert_same({"type": "LovaszHingeLoss"}, seed, shape=(2, channels, 7, 9), classes=2)


@pytest.mark.parametrize("args", [{}, {"alpha": 0.6, "gamma": 1.0}])
def test_binary_focal_loss_matches_paddleseg(args):
    for seed in SEEDS:
        _assert_same({"type": "FocalLoss", **args}, seed, shape=(2, 2, 7, 9), classes=2)


def test_mixed_loss_nests_segx_losses_and_the_train_step_sees_each_term():
    losses, coef = O.build_losses({"types": [
        {"type": "MixedLoss", "losses": [{"type": "CrossEntropyLoss"}, {"type": "DiceLoss"}],
         "coef": [1, 0.5]}]})
    mixed = losses[0]
    assert type(mixed).__module__ == "segx.backend.nets.losses"
    assert [type(m).__module__ for m in mixed.losses] == ["segx.backend.nets.losses"] * 2
    logits, labels = _inputs(0)
    terms = O.loss_terms([paddle.to_tensor(logits)], paddle.to_tensor(labels), None, losses, coef)
    assert len(terms) == 2 and all(np.isfinite(float(t)) for t in terms)


def test_dice_leaves_the_callers_labels_alone():
    """PaddleSeg's DiceLoss writes 0 over the caller's ignored pixels (a loss after it in a
    MixedLoss then counts them as class 0); segx's does not."""
    logits, labels = _inputs(1)
    ours, theirs = _pair({"type": "DiceLoss"})
    mine_t, theirs_t = paddle.to_tensor(labels), paddle.to_tensor(labels)
    ours(paddle.to_tensor(logits), mine_t)
    theirs(paddle.to_tensor(logits), theirs_t)
    np.testing.assert_array_equal(mine_t.numpy(), labels)
    assert (theirs_t.numpy() == 255).sum() == 0 < (labels == 255).sum()


@pytest.mark.parametrize("name", ["LovaszSoftmaxLoss", "LovaszHingeLoss"])
def test_lovasz_over_no_counted_pixel_is_a_zero_scalar(name):
    loss = nets.LOSSES[name]()
    x = paddle.to_tensor(np.ones((1, 2, 3, 3), "float32"), stop_gradient=False)
    out = loss(x, paddle.full([1, 3, 3], 255, dtype="int64"))
    assert out.shape == [] and float(out) == 0.0
    out.backward()
    assert float(x.grad.abs().sum()) == 0.0


def test_losses_take_int32_labels_and_float64_logits():
    """Every dtype cast is explicit: other label and logit dtypes give the same value."""
    logits, labels = _inputs(2)
    for name in ("DiceLoss", "OhemCrossEntropyLoss", "LovaszSoftmaxLoss"):
        loss = nets.LOSSES[name]()
        ref = float(loss(paddle.to_tensor(logits), paddle.to_tensor(labels)))
        other = float(loss(paddle.to_tensor(logits.astype("float64")),
                           paddle.to_tensor(labels.astype("int32"))))
        assert other == pytest.approx(ref, rel=1e-5), name


def test_the_named_losses_are_segx_own():
    for name in ("CrossEntropyLoss", "DiceLoss", "OhemCrossEntropyLoss", "LovaszSoftmaxLoss",
                 "LovaszHingeLoss", "MixedLoss", "BootstrappedCrossEntropyLoss", "FocalLoss",
                 "MultiClassFocalLoss"):
        assert name in nets.LOSSES and name in manager.LOSSES.components_dict
