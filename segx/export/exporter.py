"""Static export: a training run's weights -> a model folder for Paddle Inference.

A folder holds ``inference.pdmodel``, ``inference.pdiparams`` and ``inference.yml`` (the
pre-processing, output op and the run's classes). The network and class list come from the
run's ``config.yaml``; weights that do not fit are an error. After export, the exported model and the in-memory one run on the same input and must
agree (the report is in ``export_result.json``); the same check decides whether the predictor may
run resizing in oneDNN (``Deploy.onednn_resize``). Models whose forward pass cannot become a
static graph say so in ``Meta.no_static_export`` and are refused with that reason.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segx.config import Config, dump_yaml
from segx.utils.errors import ConfigError, NotExportableError, SegxError
from segx.utils.fileio import replace_dir, write_text
from segx.data.layout import read_layout
from segx.imaging.images import read_image
from segx.runs.folder import build_network, class_names, run_config

MIN_ARGMAX_AGREEMENT = 0.999  # share of equal argmax pixels
# max |logit difference| / max |logit|. Not tighter: barely trained networks can be chaotic
# (input noise of 1e-5 moves a random-weight SFNet-R18's logits by 1e-3 of their range),
# while a wrong graph pass is off by far more (ANN: 0.66).
MAX_RELATIVE_DIFF = 1e-2


def input_shape(value: list | None) -> list | None:
    """``Export.input_shape`` checked: [N, 3, H, W] with null or -1 for a dynamic size."""
    if value is None:
        return None
    ok = len(value) == 4 and value[1] == 3 and all(
        v is None or (isinstance(v, int) and (v > 0 or v == -1)) for v in value)
    if not ok:
        raise ConfigError(f"Export.input_shape={value} is not [N, 3, H, W].",
                          solution="write -o Export.input_shape=[1,3,512,512] "
                                   "(-1 or null for a dynamic size).")
    return [None if v in (None, -1) else v for v in value]


def _probe(run_cfg: Config, shape: list | None) -> np.ndarray:
    """An input for the agreement check: the first val image if reachable, else a fixed noise."""
    from segx.inference.preprocess import preprocessor
    fixed = shape and all(shape[1:])
    dataset = run_cfg.get("Global.dataset_dir")
    if dataset and not fixed:
        try:
            val = read_layout(Path(dataset)).samples.get("val")
            if val:
                prepare = preprocessor(run_cfg.get("Train.val_transforms"),
                                       "Train.val_transforms")
                return prepare(read_image(val[0].image))[0][None]
        except (OSError, SegxError):
            pass
    h, w = (shape[2], shape[3]) if fixed else (256, 320)
    return np.random.default_rng(0).normal(0, 1, (1, 3, h, w)).astype(np.float32)


def _compare(out: np.ndarray, ref: np.ndarray) -> tuple[float, float, bool]:
    """(max |logit difference|, the same relative to max |logit|, whether that passes)."""
    diff = float(np.abs(out - ref).max())
    relative = diff / (float(np.abs(ref).max()) or 1.0)
    equal = float((out.argmax(1) == ref.argmax(1)).mean())
    return diff, relative, relative <= MAX_RELATIVE_DIFF and equal >= MIN_ARGMAX_AGREEMENT


def _resize_exact(model, files: tuple, probes: list) -> bool:
    """Whether oneDNN resizing reproduces the trained model's logits on every probe the
    network accepts (an odd size among them: that is where oneDNN's rounding differs)."""
    from segx.backend.predictor import PaddleInference, predict_logits
    engine, checked = PaddleInference(*files, onednn_resize=True), 0
    for probe in probes:
        try:
            ref = predict_logits(model, probe)
        except Exception:  # noqa: BLE001 - a network that cannot take this size never gets it
            continue
        if not _compare(engine(probe), ref)[2]:
            return False
        checked += 1
    return checked > 0


def agreement(model, folder: Path, output_op: str, probe: np.ndarray,
              dynamic_size: bool) -> dict:
    """Compare the exported model (Paddle Inference) with ``model`` on ``probe``, and find
    whether oneDNN resizing may be used for it (also checked on an odd-sized input when the
    model takes any size)."""
    from segx.backend.predictor import PaddleInference, export_static, predict_logits
    ref = predict_logits(model, probe)
    out = PaddleInference(folder / "inference.pdmodel", folder / "inference.pdiparams")(probe)
    equal = float(((out if output_op == "argmax" else out.argmax(1)) == ref.argmax(1)).mean())
    logits_folder = folder if output_op == "none" else folder / "_logits"
    try:  # logits come from the export itself or a temporary one without the output op
        if output_op != "none":
            export_static(model, logits_folder / "inference", None, "none")
        files = (logits_folder / "inference.pdmodel", logits_folder / "inference.pdiparams")
        diff, relative, ok = _compare(PaddleInference(*files)(probe), ref)
        odd = np.random.default_rng(1).normal(0, 1, (1, 3, 97, 131)).astype(np.float32)
        resize = _resize_exact(model, files, [probe, odd] if dynamic_size else [probe])
    finally:
        if logits_folder != folder:
            shutil.rmtree(logits_folder, ignore_errors=True)
    return {"input_shape": list(probe.shape), "max_abs_diff": diff, "relative_diff": relative,
            "argmax_equal": equal, "ok": ok and equal >= MIN_ARGMAX_AGREEMENT,
            "onednn_resize": resize}


@dataclass(frozen=True)
class ExportOptions:
    """What ``Export`` asks for beyond the Paddle model (see the schema's ``Export`` keys)."""

    shape: list | None = None
    output_op: str = "argmax"
    formats: tuple[str, ...] = ("paddle",)
    quantize: str | None = None
    int8_max_drop: float = 1.0
    calibration_images: int = 300
    dataset_dir: str | None = None

    @classmethod
    def from_config(cls, cfg: Config) -> "ExportOptions":
        formats = tuple(cfg.get("Export.formats") or ("paddle",))
        unknown = set(formats) - {"paddle", "onnx"}
        if unknown or "paddle" not in formats:
            raise ConfigError(f"Export.formats={list(formats)}: the formats are paddle (always) "
                              "and onnx.", solution="write -o Export.formats=[paddle,onnx].")
        shape = input_shape(cfg.get("Export.input_shape"))
        if "onnx" in formats and not (shape and all(shape)):
            raise ConfigError("an ONNX export needs a fixed input shape (ONNX Runtime cannot run "
                              "PP-LiteSeg-style pooling at a variable size).",
                              solution="add -o Export.input_shape=[1,3,512,512] (your images "
                                       "are resized to it and back).")
        return cls(shape, cfg.get("Export.output_op"), formats, cfg.get("Export.quantize"),
                   cfg.get("Export.int8_max_drop"), cfg.get("Export.calibration_images"),
                   cfg.get("Global.dataset_dir"))


def export_run(config_path: Path, weights: Path, target: Path,
               options: ExportOptions = ExportOptions()) -> dict:
    """Export ``weights`` of the run described by ``config_path`` into ``target``: the Paddle
    model (checked against the trained one), the speed and exactness of each installed engine,
    optionally ONNX and int8; the folder is replaced as one unit, only when every check passed.
    """
    run_cfg = run_config(config_path)
    reason = run_cfg.get("Meta.no_static_export")
    if reason:
        raise NotExportableError(
            f"{run_cfg.get('Global.model')} cannot be exported to a static graph: {reason}.",
            solution=f"predict with the dynamic graph: create_model('{weights}') or "
                     f"-o Predict.model_dir={weights}.")
    model = build_network(run_cfg, weights)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        report, deploy = _export_all(model, run_cfg, tmp, options)
        info = inference_info(run_cfg, options.shape, options.output_op, deploy)
        write_text(tmp / "inference.yml", dump_yaml(info))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, target)
    return {"inference_dir": str(target), "weight_path": str(weights),
            "model_name": run_cfg.get("Global.model"),
            "num_classes": run_cfg.get("Train.num_classes"), "agreement": report,
            "engines": deploy["engines"], **({"int8": deploy["int8"]} if "int8" in deploy
                                              else {})}


def _export_all(model, run_cfg: Config, tmp: Path, options: ExportOptions) -> tuple[dict, dict]:
    """The files of one export in ``tmp``; returns (agreement report, Deploy additions)."""
    from segx.backend.predictor import export_static
    export_static(model, tmp / "inference", options.shape, options.output_op)
    probe = _probe(run_cfg, options.shape)
    report = agreement(model, tmp, options.output_op, probe,
                       dynamic_size=not (options.shape and all(options.shape[2:])))
    if not report["ok"]:
        raise SegxError(f"the exported model disagrees with the trained one: "
                        f"{report['argmax_equal']:.4%} equal pixels, max |diff| "
                        f"{report['max_abs_diff']:.3g}.",
                        solution="report this with the model name; try -o "
                                 "Export.input_shape to fix the input size.")
    deploy = {"onednn_resize": report["onednn_resize"]}
    if "onnx" in options.formats:
        deploy["onnx"] = to_onnx(tmp, options.shape, probe, options.output_op)
    deploy["engines"] = engine_records(tmp, probe, options.output_op, deploy)
    if options.quantize == "int8":
        deploy["int8"] = int8_export(run_cfg, tmp, options, probe)
    return report, deploy


def engine_records(folder: Path, probe: np.ndarray, output_op: str, deploy: dict) -> dict:
    """Each installed engine's exactness against Paddle Inference on the probe, and its time
    (best of 3): what ``engine=auto`` chooses by."""
    from segx.backend.predictor import PaddleInference
    from segx.inference.engines import OnnxEngine, OpenVINOEngine, installed
    ref_engine = PaddleInference(folder / "inference.pdmodel", folder / "inference.pdiparams",
                              onednn_resize=deploy["onednn_resize"])
    ref = ref_engine(probe)
    records = {"paddle": {"exact": True, "ms": _best_ms(ref_engine, probe)}}
    candidates = {}
    if installed("openvino"):
        candidates["openvino"] = lambda: OpenVINOEngine(folder / "inference.pdmodel", "fp32",
                                                        None)
    if "onnx" in deploy and installed("onnxruntime"):
        candidates["onnxruntime"] = lambda: OnnxEngine(folder / deploy["onnx"]["model"], None)
    labels = (lambda x: x) if output_op == "argmax" else (lambda x: x.argmax(1))
    for name, build in candidates.items():
        try:
            engine = build()
            out = engine(probe)
        except Exception as exc:  # noqa: BLE001 - an engine that cannot run this model
            records[name] = {"exact": False, "error": _first_line(exc)}
            continue
        exact = out.shape == ref.shape and bool((labels(out) == labels(ref)).all())
        records[name] = {"exact": exact, "ms": _best_ms(engine, probe)}
    return records


def _first_line(exc: Exception) -> str:
    """The line of an engine's (often multi-line) error that says what failed."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if "Fail to convert" in ln or "Error" in ln] or lines or [
        type(exc).__name__]
    return useful[0][:300]


def _best_ms(engine, probe: np.ndarray) -> float:
    import time
    engine(probe)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        engine(probe)
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 2)


def to_onnx(folder: Path, shape: list, probe: np.ndarray, output_op: str) -> dict:
    """``inference.onnx`` converted by paddle2onnx from the Paddle export (a fixed shape),
    checked with ONNX Runtime against Paddle Inference at that shape."""
    from segx.backend.onnx import paddle_to_onnx
    from segx.backend.predictor import PaddleInference
    from segx.inference.engines import OnnxEngine
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ConfigError("an ONNX export needs paddle2onnx 1.3.1 and onnxruntime.",
                          solution="pip install 'segx[export-onnx]'.") from None
    paddle_to_onnx(folder)
    x = probe if list(probe.shape) == list(shape) else \
        np.random.default_rng(2).normal(0, 1, shape).astype(np.float32)
    try:
        out = OnnxEngine(folder / "inference.onnx", None)(x)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's refusal, said in one line
        raise SegxError(f"ONNX Runtime cannot run this model at {shape[3]}x{shape[2]} "
                        f"({str(exc).splitlines()[-1][:300]}).",
                        solution="use a larger Export.input_shape, e.g. [1,3,512,512] (pooling "
                                 "layers need room at 1/32 of the size).") from None
    ref = PaddleInference(folder / "inference.pdmodel", folder / "inference.pdiparams")(x)
    labels = (lambda a: a) if output_op == "argmax" else (lambda a: a.argmax(1))
    equal = float((labels(out) == labels(ref)).mean())
    if equal < MIN_ARGMAX_AGREEMENT:
        raise SegxError(f"the ONNX export disagrees with the Paddle one at that shape "
                        f"({equal:.4%} equal pixels).",
                        solution="export without onnx, or report this with the model name.")
    return {"model": "inference.onnx", "input_shape": list(shape), "argmax_equal": equal}


def int8_export(run_cfg: Config, folder: Path, options: ExportOptions, probe: np.ndarray) -> dict:
    """The int8 OpenVINO model beside the fp32 one, with its measured mIoU against fp32 and both
    speeds on the probe (best of 3, as for every other engine)."""
    from segx.inference.engines import OpenVINOEngine, Resized, fixed_size
    from segx.inference.preprocess import preprocessor
    from segx.export.int8 import INT8_MODEL, calibrate, compare
    root = options.dataset_dir or run_cfg.get("Global.dataset_dir")
    if not root or not Path(root).is_dir():
        raise ConfigError("Export.quantize=int8 calibrates on the training images and checks "
                          "on the validation images of a dataset.",
                          solution="add -o Global.dataset_dir=DATA.")
    layout = read_layout(Path(root))
    train = [s.image for s in layout.samples.get("train", [])][:options.calibration_images]
    val = [(s.image, s.label) for s in layout.samples.get("val", [])]
    prepare = preprocessor(run_cfg.get("Train.val_transforms"), "Train.val_transforms")
    size = fixed_size(options.shape)
    calibrate(folder / "inference.pdmodel", train, prepare, folder / INT8_MODEL, size)
    fp32 = OpenVINOEngine(folder / "inference.pdmodel", "fp32", None)
    int8 = OpenVINOEngine(folder / INT8_MODEL, "int8", None)
    if size:
        fp32, int8 = Resized(fp32, *size), Resized(int8, *size)
    result = compare(fp32, int8, val, prepare, run_cfg.get("Train.num_classes"),
                     class_names(run_cfg), options.int8_max_drop)
    return {**result, "calibration_images": len(train), "ms": _best_ms(int8, probe),
            "fp32_ms": _best_ms(fp32, probe)}


def inference_info(run_cfg: Config, shape: list | None, output_op: str, deploy: dict) -> dict:
    """The ``inference.yml`` of an export (PaddleX's layout: ``Deploy`` and ``Global``), with
    what export measured (``onednn_resize``, ``engines``, ``onnx``, ``int8``)."""
    return {
        "Deploy": {"model": "inference.pdmodel", "params": "inference.pdiparams",
                   "transforms": run_cfg.get("Train.val_transforms"),
                   "input_shape": shape or [None, 3, None, None], "output_op": output_op,
                   "output_dtype": "int32" if output_op == "argmax" else "float32",
                   "min_input": run_cfg.get("Meta.min_input"), **deploy},
        "Global": {"model_name": run_cfg.get("Global.model"),
                   "num_classes": run_cfg.get("Train.num_classes"),
                   "class_names": class_names(run_cfg)},
    }
