"""The one place segx imports paddle, paddleseg and paddle2onnx.

Everything that touches the deep-learning stack goes through this package, so moving to another
paddle/paddleseg version is a change here only: this module (devices, building networks, weights in
and out of layers), ``data`` (reading, transforms, the sample stream), ``optim`` (losses,
optimiser, one step, data parallel), ``predictor`` (dynamic-graph inference, static export, Paddle
Inference: ``PaddleInference``), ``onnx`` (paddle2onnx) and ``nets`` (segx's own networks, used
instead of paddleseg's where segx has them; ``SEGX_NETWORKS=paddleseg`` turns them off, except
for those paddleseg lacks, such as SeaFormer).

``import zlib`` must run before the first ``import paddle``: libpaddle exports its own zlib
symbols, and importing it first breaks every later zlib user (PNG I/O, sklearn) on this Python.
"""
from __future__ import annotations

import zlib  # noqa: F401  (must precede paddle; see the module docstring)

import inspect
import os
import warnings
from pathlib import Path
from typing import Any

from segx.utils import safe_pickle
from segx.utils.errors import BackendError, ConfigError, did_you_mean

os.environ.setdefault("GLOG_minloglevel", "2")  # paddle's C++ info lines ("New Executor ...")
warnings.filterwarnings("ignore", message="When training, we now always track global mean")
warnings.filterwarnings("ignore", message="No ccache found")  # Paddle 3 at import, irrelevant

try:
    import paddle
except ImportError as exc:  # pragma: no cover - exercised only without the stack installed
    raise BackendError(f"this needs paddlepaddle ({exc}).",
                       solution="pip install 'segx[train]' (or run `make install`); prediction "
                                "with an exported model needs only 'segx[deploy]'.") from None

from segx.backend import nets  # noqa: E402  (segx's own networks)
from segx.backend.nets import seaformer  # noqa: E402  (segx's SeaFormer; its names)

paddle.disable_signal_handler()  # keep Python's SIGINT handling (Ctrl-C)


def dygraph() -> None:
    """Make sure this thread runs paddle's dynamic graph. Paddle keeps the mode per thread and
    a thread that imports paddle first (a server's, say) can leave another thread in static
    mode; every dynamic-graph entry point of segx calls this first."""
    if not paddle.in_dynamic_mode():
        paddle.disable_static()


# --------------------------------------------------------------------------- devices
def resolve_device(device: str) -> str:
    """Turn ``Global.device`` into a paddle device string; ``auto`` picks GPU when present."""
    text = device.strip().lower()
    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if text == "auto":
        return "gpu:0" if has_gpu else "cpu"
    kind, _, ids = text.partition(":")
    if kind not in ("cpu", "gpu"):
        raise ConfigError(f"Global.device='{device}' is not a device segx supports.",
                          solution="use auto, cpu, gpu, gpu:0 or gpu:0,1.")
    if kind == "gpu" and not has_gpu:
        raise ConfigError(f"Global.device='{device}' but no GPU is usable here "
                          f"(paddle built with CUDA: {paddle.device.is_compiled_with_cuda()}).",
                          solution="use -o Global.device=cpu, or install paddlepaddle-gpu==2.6.2.")
    if ids and not all(i.isdigit() for i in ids.split(",")):
        raise ConfigError(f"Global.device='{device}': device ids must be integers.",
                          solution="write for example gpu:0 or gpu:0,1.")
    return f"gpu:{ids.split(',')[0]}" if kind == "gpu" and ids else kind


# --------------------------------------------------------------------------- weights
def load_weights(path: str | Path) -> dict:
    """A ``.pdparams``/``.pdopt``/``.pdstates`` file, read without running code in it
    (:mod:`segx.utils.safe_pickle`); arrays stay numpy arrays, which paddle layers accept."""
    return safe_pickle.load(path)


def save(obj, path: Path) -> None:
    paddle.save(obj, str(path))


def model_state(model) -> dict:
    """The state dict of ``model`` (of the wrapped layer under data parallel) as it is saved:
    SeaFormer's tensors under PaddleSeg's names, which PaddleX reads."""
    layer = model._layers if isinstance(model, paddle.DataParallel) else model
    state = layer.state_dict()
    return seaformer.to_paddleseg(state) if seaformer.has_seaformer(layer) else state


def native_state(layer, state: dict) -> dict:
    """``state`` under ``layer``'s own tensor names: SeaFormer weights written under
    PaddleSeg's names (PaddleX's, segx's since 0.3) map to segx's; anything else unchanged."""
    return seaformer.to_native(layer, state) if seaformer.has_seaformer(layer) else state


def load_matching(layer: paddle.nn.Layer, state: dict) -> tuple[int, list[str]]:
    """Load the tensors of ``state`` whose name and shape match; returns (loaded, skipped)."""
    own, state = layer.state_dict(), native_state(layer, state)
    loaded, skipped = {}, []
    for key, value in state.items():
        if key in own and list(own[key].shape) == list(value.shape):
            loaded[key] = value
        else:
            skipped.append(key)
    with warnings.catch_warnings():  # paddle warns once per tensor left out; the caller reports
        warnings.filterwarnings("ignore", message="Skip loading for ")
        layer.set_state_dict(loaded)
    return len(loaded), skipped


def set_state(layer, state: dict) -> list[str]:
    """Load a full-model state strictly; returns the names of mismatching tensors (none = ok)."""
    own, state = layer.state_dict(), native_state(layer, state)
    bad = [k for k in own if k not in state or list(state[k].shape) != list(own[k].shape)]
    bad += [k for k in state if k not in own]
    if not bad:
        layer.set_state_dict(state)
    return bad


# --------------------------------------------------------------------------- building
PADDLESEG_EXTRA = ("pip install --no-deps paddleseg==2.8.0 into a Paddle 2.6.2 / numpy 1 "
                   "environment (docs/networks.md)")


def paddleseg_installed() -> bool:
    import importlib.util
    return importlib.util.find_spec("paddleseg") is not None


def paddleseg_manager(where: str, type_name: object, own: Any = None):
    """paddleseg's component tables, for ``type_name`` at ``where`` (a type that segx's own
    table ``own`` lacks, or the parity tests' oracle). paddleseg is an optional extra: it pins
    Paddle 2.6 and numpy 1."""
    try:
        import paddleseg  # noqa: F401
        from paddleseg.cvlibs import manager
    except ImportError:
        hint = did_you_mean(str(type_name), own.components_dict) if own is not None else ""
        raise ConfigError(f"{where}.type='{type_name}' is not one of segx's own networks "
                          f"and losses, and paddleseg (which has more) is not installed.{hint}",
                          solution=f"fix the type, or {PADDLESEG_EXTRA}; `segx models` marks "
                                   "the models that need it.") from None
    return manager


def _component(kind: Any, type_name: str, where: str):
    try:
        return kind[type_name]
    except KeyError:
        raise ConfigError(f"{where}.type='{type_name}' is not a known {kind.name[:-1].lower()}."
                          + did_you_mean(type_name, kind.components_dict),
                          solution=f"fix {where}.type.") from None


def _build(spec: dict, kind: Any, where: str, extra: dict | None = None,
           kinds: dict | None = None):
    """Build ``spec`` from table ``kind``; nested ``{type: ...}`` values under a key of
    ``kinds`` (default: none, the same table) come from that key's table."""
    kinds = kinds or {}
    if not isinstance(spec, dict) or not spec.get("type"):
        raise ConfigError(f"{where} must be a mapping with a 'type'.",
                          solution=f"set {where}.type, for example PPLiteSeg.")
    cls = _component(kind, spec["type"], where)
    kwargs = dict(extra or {})
    for key, value in spec.items():
        if key == "type":
            continue
        if isinstance(value, dict) and "type" in value:
            value = _build(value, kinds.get(key, kind), f"{where}.{key}", kinds=kinds)
        elif isinstance(value, list) and value and all(
                isinstance(v, dict) and "type" in v for v in value):
            value = [_build(v, kinds.get(key, kind), f"{where}.{key}.{i}", kinds=kinds)
                     for i, v in enumerate(value)]
        elif key == "pretrained" and value:
            raise ConfigError(f"{where}.pretrained: segx loads pretrained weights itself.",
                              solution=f"set -o Train.pretrained={value} and {where}."
                                       "pretrained to null.")
        kwargs[key] = value
    params = inspect.signature(cls).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in kwargs if k not in params]
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: {spec['type']} has no argument "
                              f"'{unknown[0]}'.{did_you_mean(unknown[0], params)}",
                              solution=f"valid arguments: {', '.join(params)}.")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"{where}: cannot build {spec['type']} ({exc}).",
                          solution=f"check the arguments under {where}.") from None


def build_model(arch: dict, num_classes: int,
                use_paddleseg: bool | None = None) -> paddle.nn.Layer:
    """Build the network described by an ``Arch`` section.

    Args:
        arch: ``{"type": <model>, "backbone": {"type": ...}, ...}`` (PaddleSeg components, plus
            segx's SeaFormer).
        num_classes: the number of output classes.
        use_paddleseg: True builds from paddleseg even where segx has its own network (the
            parity tests' oracle); None (default) follows ``$SEGX_NETWORKS``.

    A model whose type and backbone type segx owns (:mod:`segx.backend.nets`) is built from
    segx's code, with the same parameter names; anything else from paddleseg.

    Each build gets its own parameter-name scope: names start from zero every time (so optimizer
    state, which paddle keys by parameter name, matches across processes), and backbones that
    name their parameters explicitly (ShuffleNetV2) can be built more than once per process, as
    training does when it exports at the end.
    """
    dygraph()
    with paddle.utils.unique_name.guard():
        manager = _paddleseg_tables(arch, use_paddleseg)
        if manager is None:
            return _build(arch, nets.MODELS, "Arch", {"num_classes": num_classes},
                          {"backbone": nets.BACKBONES})
        return _build(arch, manager.MODELS, "Arch", {"num_classes": num_classes},
                      {"backbone": manager.BACKBONES})


def _paddleseg_tables(arch: object, use_paddleseg: bool | None):
    """paddleseg's tables when ``arch`` comes from paddleseg (asked for, or a type segx lacks);
    None when segx's own code builds it."""
    if nets.owns(arch) and nets.prefer_own(use_paddleseg):
        return None
    if isinstance(arch, dict) and arch.get("type") in nets.MODELS and not paddleseg_installed():
        return None  # segx's tables then name the part it lacks (a backbone, say)
    manager = paddleseg_manager("Arch", arch.get("type") if isinstance(arch, dict) else None,
                                nets.MODELS)
    if nets.owns(arch) and arch["type"] not in manager.MODELS.components_dict:
        return None  # a network paddleseg lacks (SeaFormer): segx's own either way
    return manager


def set_device(device: str) -> None:
    dygraph()
    paddle.set_device(device)


def count_params(model: paddle.nn.Layer) -> int:
    """Number of parameters (trainable and not, excluding BatchNorm running statistics)."""
    return sum(int(p.size) for p in model.parameters())


def forward_random(model: paddle.nn.Layer, height: int, width: int, train: bool = False) -> list:
    """Run one forward pass on a random 1x3xHxW batch; returns the outputs as numpy arrays."""
    model.train() if train else model.eval()
    with paddle.no_grad():
        outs = model(paddle.rand([1, 3, height, width]))
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    # some training outputs are (logit, edge) pairs consumed by pair losses
    return [tuple(t.numpy() for t in o) if isinstance(o, (list, tuple)) else o.numpy()
            for o in outs]
