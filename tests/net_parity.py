"""What the parity tests of segx's own networks (test_own_*.py) share: the same Arch built by
segx and by paddleseg 2.8.0 (the oracle), random weights copied into both, the tensors each
holds, their logits side by side, the ImageNet backbone keys and the static export. Tests
import these with ``from net_parity import ...`` after their ``importorskip`` lines."""
from __future__ import annotations

import zlib  # noqa: F401  (before paddle)

import numpy as np
import paddle

from segx import backend
from segx.zoo.registry import load_model_config


def arch_of(name: str) -> dict:
    """The ``Arch`` section of zoo model ``name``."""
    return load_model_config(name)["Arch"]


def both(arch: dict, classes: int = 5):
    """(segx's model, paddleseg's model) built from the same ``arch``."""
    return backend.build_model(arch, classes), backend.build_model(arch, classes, True)


def random_state(ref, seed: int = 0) -> dict:
    """Random weights for every tensor (variances positive) so no layer is a no-op."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, value in ref.state_dict().items():
        arr = rng.normal(0, 0.2, value.shape).astype("float32")
        state[key] = np.abs(arr) + 0.5 if key.endswith("_variance") else arr
    return state


def loaded_pair(arch: dict, classes: int = 5):
    """:func:`both`, with the same random weights loaded into each, every tensor used."""
    own, ref = both(arch, classes)
    state = random_state(ref)
    assert backend.set_state(own, state) == [] and backend.set_state(ref, state) == []
    return own, ref


def structure(model) -> list:
    """(key, shape, dtype, parameter name, frozen, learning rate) for every tensor."""
    rows = []
    for key, t in model.state_dict().items():
        lr = t.optimize_attr.get("learning_rate") if hasattr(t, "optimize_attr") else None
        rows.append((key, list(t.shape), str(t.dtype), t.name, bool(t.stop_gradient), lr))
    return rows


def outputs(model, shape, train: bool = False, seed: int = 7) -> list:
    """The model's outputs (numpy) for a fixed normal input; ``seed`` is set just before the
    forward pass so dropout and stochastic depth draw the same masks in training mode."""
    x = paddle.to_tensor(np.random.default_rng(1).normal(0, 1, shape).astype("float32"))
    model.train() if train else model.eval()
    paddle.seed(seed)
    with paddle.no_grad():
        return [t.numpy() for t in model(x)]


def max_diff(own, ref, shape, train: bool = False, relative: bool = False) -> float:
    """The largest absolute difference of the two models' outputs (the outputs have the same
    shapes); with ``relative``, each output's divided by max(1, paddleseg's largest value)."""
    a, b = outputs(own, shape, train), outputs(ref, shape, train)
    assert [t.shape for t in a] == [t.shape for t in b]
    return max(float(np.abs(p - q).max()) / (max(1.0, float(np.abs(q).max())) if relative else 1)
               for p, q in zip(a, b))


def planted_logit_diff(arch: dict, shape, relative: bool = False) -> float:
    """With a forward-only change planted in segx's module: both models of ``arch`` hold the
    same tensors (only the logits can tell) and :func:`max_diff` of their logits."""
    own, ref = loaded_pair(arch)
    assert structure(own) == structure(ref)
    return max_diff(own, ref, shape, relative=relative)


def assert_backbone_keys_load(ours: dict, ref: dict, archs=()) -> None:
    """segx's backbone state dict ``ours`` has paddleseg's ``ref`` keys and shapes in order,
    and a model built from each of ``archs`` loads every tensor of ``ref`` as its backbone."""
    assert [(k, list(v.shape)) for k, v in ours.items()] == \
        [(k, list(v.shape)) for k, v in ref.items()]
    start = {f"backbone.{k}": v.numpy() for k, v in ref.items()} if archs else {}
    for arch in archs:
        loaded, skipped = backend.load_matching(backend.build_model(arch, 3), start)
        assert (loaded, skipped) == (len(ref), [])


def assert_export_matches_dynamic(arch: dict, module: str, folder, sizes, atol: float,
                                  rtol: float = 1e-7, scaled: bool = False) -> None:
    """segx's model of ``arch`` (from ``module``) with random weights, exported to a static
    graph in ``folder``: the engine's logits match the dynamic model's for each input size
    (``atol`` times max(1, the largest logit) when ``scaled``)."""
    from segx.backend.predictor import PaddleInference, export_static, predict_logits
    model = backend.build_model(arch, 4)
    assert type(model).__module__ == module
    model.set_state_dict(random_state(model))
    program = export_static(model, folder / "inference", None, "none")
    engine = PaddleInference(program, folder / "inference.pdiparams")
    for shape in sizes:
        probe = np.random.default_rng(3).normal(0, 1, shape).astype("float32")
        want = predict_logits(model, probe)
        tol = atol * max(1.0, float(np.abs(want).max())) if scaled else atol
        np.testing.assert_allclose(engine(probe), want, rtol=rtol, atol=tol)
