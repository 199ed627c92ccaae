"""Inference engines for exported model folders, behind one interface.

An engine is a callable ``N x 3 x H x W float32 -> N x H x W int32 class ids`` (an export with
``output_op: argmax``) or ``N x C x H x W`` scores. :func:`plan` decides which engine and
precision serve a request (a pure function, tested without the engines); :func:`open_engine`
builds it. Every engine gets the same pre- and post-processing, batching and test-time
augmentation from :class:`segx.api.model.SegModel`.

| engine | reads | precisions | needs |
|---|---|---|---|
| ``paddle`` | ``inference.json`` (Paddle 3, plain CPU kernels) or ``inference.pdmodel`` (2.6, oneDNN) | fp32 (CPU, GPU, TensorRT) | paddlepaddle |
| ``openvino`` | ``inference.pdmodel`` directly, else ``inference.onnx``; ``inference_int8.xml`` | fp32, bf16 (CPUs with native bf16), int8 | openvino |
| ``onnxruntime`` | ``inference.onnx`` | fp32 | onnxruntime |

OpenVINO cannot read a PIR program (``inference.json``), so on a Paddle 3 export it reads the
ONNX that export converted. An export or ONNX made for one input size (``Export.input_shape``;
PP-LiteSeg-style adaptive pooling converts only at a fixed size) takes any image: each is
resized to that size and its output back.

``auto`` picks, among the installed engines that export found exact for this model, the one
export measured fastest (Paddle on a GPU); it never picks bf16. Precision ``auto`` is int8 where
an accepted int8 model exists (its mIoU drop within ``Export.int8_max_drop``), else fp32.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from segx.config import read_yaml
from segx.utils.errors import ConfigError, WeightsError

ENGINES = ("auto", "paddle", "openvino", "onnxruntime")
PRECISIONS = ("fp32", "bf16", "int8", "auto")
MODULES = {"paddle": "paddle", "openvino": "openvino", "onnxruntime": "onnxruntime"}
INSTALL = {"paddle": "pip install 'segx[train]' (paddlepaddle)",
           "openvino": "pip install 'segx[openvino]'", "onnxruntime": "pip install 'segx[onnx]'"}
Engine = Callable[[np.ndarray], np.ndarray]


def read_deploy_info(folder: Path) -> dict:
    """A model folder's ``inference.yml`` (``Deploy`` and ``Global`` sections)."""
    path = folder / "inference.yml"
    info = read_yaml(path, "model file")
    if not isinstance(info, dict) or not isinstance(info.get("Deploy"), dict):
        raise WeightsError(f"{path} has no Deploy section.",
                           solution="re-export the model with segx (Global.mode=export).")
    return info


def installed(name: str) -> bool:
    """Whether an engine's Python package can be imported here (nothing is imported)."""
    module = MODULES[name]
    if module in sys.modules:
        return sys.modules[module] is not None  # None: the import is blocked
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def runnable(deploy: dict) -> set[str]:
    """The installed engines that can read this export: Paddle 2.6 crashes on a PIR program
    (``inference.json``, a segmentation fault in its loader), so it is left out there."""
    from segx.runs.paddlex import paddle_major
    available = {name for name in MODULES if installed(name)}
    if str(deploy.get("model", "")).endswith(".json") and paddle_major() == 2:
        available.discard("paddle")
    return available


@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 natively on this CPU."""
    if not installed("openvino"):
        return False
    import openvino as ov
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


# --------------------------------------------------------------------------- the decision
@dataclass(frozen=True)
class Plan:
    engine: str
    precision: str


def _int8_ok(deploy: dict) -> bool:
    return bool((deploy.get("int8") or {}).get("accepted"))


def plan(engine: str, precision: str, device: str, deploy: dict,
         available: set[str], bf16: bool) -> Plan:
    """Which engine and precision serve a request (pure: inputs are facts, not probes).

    Args:
        engine, precision: what was asked (see the module table).
        device: ``cpu`` or ``gpu:N``.
        deploy: the folder's ``Deploy`` section (what export recorded).
        available: the engines installed here.
        bf16: whether the CPU computes bf16 natively.
    """
    if engine not in ENGINES or precision not in PRECISIONS:
        raise ConfigError(f"engine='{engine}', precision='{precision}': engines are "
                          f"{', '.join(ENGINES)}, precisions {', '.join(PRECISIONS)}.",
                          solution="fix the engine or precision setting.")
    if device.startswith("gpu"):
        if engine not in ("auto", "paddle") or precision not in ("fp32", "auto"):
            raise ConfigError(f"on {device} segx runs the Paddle engine in fp32 (TensorRT "
                              "optional); OpenVINO and ONNX Runtime run on the CPU here.",
                              solution="use engine=paddle (or auto), or device=cpu.")
        return _check(Plan("paddle", "fp32"), deploy, available, bf16)
    if precision == "auto":
        precision = "int8" if _int8_ok(deploy) and "openvino" in available else "fp32"
    if engine == "auto":
        engine = "openvino" if precision in ("bf16", "int8") else _fastest(deploy, available)
    return _check(Plan(engine, precision), deploy, available, bf16)


def _fastest(deploy: dict, available: set[str]) -> str:
    """The installed engine export found exact and fastest; without records, Paddle (the
    engine export checks itself), else OpenVINO."""
    records = deploy.get("engines") or {}
    exact = [(r.get("ms") or float("inf"), name) for name, r in records.items()
             if r.get("exact") and name in available]
    if exact:
        return min(exact)[1]
    for name in ("paddle", "openvino"):
        if name in available:
            return name
    raise WeightsError("no inference engine is installed for this model.",
                       solution=f"{INSTALL['openvino']} (or {INSTALL['paddle']}).")


def _check(p: Plan, deploy: dict, available: set[str], bf16: bool) -> Plan:
    if p.engine == "paddle" and "paddle" not in available and \
            str(deploy.get("model", "")).endswith(".json") and installed("paddle"):
        raise ConfigError("this is a Paddle 3 export (PIR, inference.json), which the installed "
                          "Paddle 2.6 cannot run.",
                          solution="use engine=openvino or onnxruntime (with its ONNX), or "
                                   "install Paddle 3 (pip install 'paddlepaddle>=3.3').")
    if p.engine not in available:
        raise ConfigError(f"engine '{p.engine}' is not installed.",
                          solution=f"{INSTALL[p.engine]}, or choose another engine.")
    error = ((deploy.get("engines") or {}).get(p.engine) or {}).get("error")
    if error:
        raise ConfigError(f"engine '{p.engine}' cannot run this model (export found: {error}).",
                          solution="use engine=auto or paddle.")
    allowed = {"paddle": ("fp32",), "onnxruntime": ("fp32",),
               "openvino": ("fp32", "bf16", "int8")}[p.engine]
    if p.precision not in allowed:
        raise ConfigError(f"engine '{p.engine}' runs {'/'.join(allowed)}, not {p.precision}.",
                          solution="use engine=openvino for bf16 or int8.")
    if p.precision == "bf16" and not bf16:
        raise ConfigError("precision=bf16 needs a CPU with native bf16 (AVX-512 BF16 or AMX); "
                          "this one has none, and emulated bf16 is slower than fp32.",
                          solution="use precision=fp32 or int8.")
    if p.precision == "int8":
        int8 = deploy.get("int8") or {}
        if not int8:
            raise ConfigError("this model has no int8 version.",
                              solution="export it with -o Export.quantize=int8 -o "
                                       "Global.dataset_dir=DATA.")
        if not int8.get("accepted"):
            raise ConfigError(f"its int8 version lost {int8.get('drop', float('nan')):.2f} mIoU "
                              f"points (more than Export.int8_max_drop="
                              f"{int8.get('max_drop')}), so segx does not use it.",
                              solution="use fp32, or re-export with more calibration images or "
                                       "a larger Export.int8_max_drop if that loss is fine.")
    if p.engine == "openvino" and p.precision != "int8" and not openvino_source(deploy):
        raise ConfigError("OpenVINO cannot read a Paddle 3 (PIR) program and this export has no "
                          f"ONNX ({deploy.get('onnx_skipped') or 'not converted'}).",
                          solution="use engine=paddle, or export on Python 3.12 or older with "
                                   "'segx[export-onnx]' installed.")
    if p.engine == "onnxruntime" and not deploy.get("onnx"):
        raise ConfigError("this model has no ONNX export.",
                          solution="export it with -o Export.formats=[paddle,onnx].")
    return p


def program_file(folder: Path, deploy: dict) -> str:
    """The Paddle program of an export: ``Deploy.model``, else (PaddleSeg's and PaddleX's
    exports name none) ``inference.json`` (Paddle 3, PIR) where it exists, else
    ``inference.pdmodel``."""
    model = deploy.get("model")
    if isinstance(model, str) and model:
        return model
    return "inference.json" if (folder / "inference.json").is_file() else "inference.pdmodel"


def openvino_source(deploy: dict) -> tuple[str, tuple[int, int] | None] | None:
    """(the file OpenVINO reads for fp32/bf16 and calibration, the one input size it was made
    for or None): the ``.pdmodel`` of a Paddle 2.6 export, else the ONNX of a PIR export;
    None when there is neither (a PIR export without ONNX)."""
    model = str(deploy.get("model", "inference.pdmodel"))
    if model.endswith(".pdmodel"):
        return model, fixed_size(deploy.get("input_shape"))
    onnx = deploy.get("onnx")
    if isinstance(onnx, dict) and onnx.get("model"):
        return str(onnx["model"]), fixed_size(onnx.get("input_shape"))
    return None


# --------------------------------------------------------------------------- building
def _paddle(folder: Path, deploy: dict, device: str, threads: int | None,
            onednn: bool | None, tensorrt: bool) -> tuple[Engine, str]:
    from segx.backend.predictor import PaddleInference
    files = (folder / deploy["model"], folder / deploy.get("params", "inference.pdiparams"))
    for f in files:
        if not f.is_file():
            raise WeightsError(f"'{f}' is missing.", solution="re-export the model.")
    if device.startswith("gpu"):
        return PaddleInference(*files, device, threads, mkldnn=False, tensorrt=tensorrt), \
            "paddle-tensorrt" if tensorrt else "paddle-gpu"
    if files[0].suffix == ".json":  # PIR: Paddle 3.3 runs it only on the plain CPU kernels
        return PaddleInference(*files, device, threads, mkldnn=False), "paddle-cpu"
    # oneDNN resizing only where segx export found it exact for this model
    resize = deploy.get("onednn_resize") is True
    if onednn is not None:
        name = "paddle-onednn" if onednn else "paddle-cpu"
        return PaddleInference(*files, device, threads, mkldnn=onednn, onednn_resize=resize), name
    # oneDNN by default (the faster here once resizing runs in oneDNN too, docs/benchmarks.md);
    # the plain kernels where oneDNN cannot start
    try:
        engine = PaddleInference(*files, device, threads, mkldnn=True, onednn_resize=resize)
        shape = [v if isinstance(v, int) and v > 0 else d for v, d in
                 zip(deploy.get("input_shape") or [None] * 4, (1, 3, 64, 64))]
        engine(np.zeros(shape, np.float32))
        return engine, "paddle-onednn"
    except Exception:  # noqa: BLE001 - any oneDNN start-up failure means: use plain CPU
        return PaddleInference(*files, device, threads, mkldnn=False), "paddle-cpu"


class OpenVINOEngine:
    """OpenVINO on the CPU: the Paddle model read directly (fp32, bf16) or the int8 IR."""

    def __init__(self, model_file: Path, precision: str, threads: int | None):
        import openvino as ov
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                  "INFERENCE_NUM_THREADS": threads or os.cpu_count() or 1}
        self.compiled = core.compile_model(core.read_model(str(model_file)), "CPU", config)
        self.output = self.compiled.output(0)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.compiled(np.ascontiguousarray(batch, np.float32))[self.output])


class OnnxEngine:
    """ONNX Runtime on the CPU."""

    def __init__(self, model_file: Path, threads: int | None):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.log_severity_level = 3  # errors only: paddle2onnx's ONNX leaves unused
        # initializers, about which ONNX Runtime warns once per tensor at every start
        self.session = ort.InferenceSession(str(model_file), options,
                                            providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.ascontiguousarray(batch, np.float32)})[0]


def fixed_size(shape: list | None) -> tuple[int, int] | None:
    """(h, w) of an export made for one input size (``Export.input_shape``), else None."""
    if shape and len(shape) == 4 and all(isinstance(v, int) and v > 0 for v in shape[2:]):
        return int(shape[2]), int(shape[3])
    return None


class Resized:
    """An engine made for one input size, given any: each image is resized to that size and
    its output back (nearest for class ids, bilinear for scores), one image per call."""

    def __init__(self, engine: Engine, h: int, w: int):
        self.engine, self.h, self.w = engine, h, w

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        from segx.imaging.tta import resize_nearest, resize_scores
        h, w = batch.shape[2:]
        if (h, w) == (self.h, self.w):
            return np.concatenate([self.engine(x[None]) for x in batch])
        outs = []
        for x in batch:
            out = self.engine(resize_scores(x[None], self.h, self.w))
            outs.append((resize_nearest(out, h, w) if out.ndim == 3
                         else resize_scores(out, h, w))[0])
        return np.stack(outs)


def open_engine(folder: Path, info: dict, engine: str = "auto", precision: str = "fp32",
                device: str = "cpu", threads: int | None = None, onednn: bool | None = None,
                tensorrt: bool = False) -> tuple[Engine, str]:
    """Build the engine for an exported folder; returns (engine, the name of what runs, e.g.
    ``openvino-fp32``). An export made for one input size gets any size through
    :class:`Resized`."""
    deploy = {**info["Deploy"], "model": program_file(folder, info["Deploy"])}
    available = runnable(deploy)
    p = plan(engine, precision, device, deploy, available,
             native_bf16() if precision in ("bf16",) else False)
    if p.engine == "paddle":
        built, name = _paddle(folder, deploy, device, threads, onednn, tensorrt)
        size = fixed_size(deploy.get("input_shape"))
    elif p.engine == "openvino":
        source, size = openvino_source(deploy) or (None, None)
        model = deploy["int8"]["model"] if p.precision == "int8" else source
        built, name = OpenVINOEngine(folder / model, p.precision, threads), \
            f"openvino-{p.precision}"
    else:
        onnx = deploy["onnx"]
        built, name = OnnxEngine(folder / onnx["model"], threads), "onnxruntime-fp32"
        size = fixed_size(onnx["input_shape"])
    return (Resized(built, *size) if size else built), name
