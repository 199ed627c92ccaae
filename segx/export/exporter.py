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
    network accepts (an odd size among them: that is where oneDNN's rounding differs). A PIR
    program never runs oneDNN (:class:`segx.backend.predictor.PaddleInference`)."""
    from segx.backend.predictor import PaddleInference, is_pir, predict_logits
    if is_pir(files[0]):
        return False
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


def agreement(model, program: Path, output_op: str, probe: np.ndarray,
              dynamic_size: bool) -> dict:
    """Compare the exported ``program`` (Paddle Inference) with ``model`` on ``probe``, and
    find whether oneDNN resizing may be used for it (also checked on an odd-sized input when the
    model takes any size)."""
    from segx.backend.predictor import PaddleInference, export_static, predict_logits
    folder = program.parent
    ref = predict_logits(model, probe)
    out = PaddleInference(program, program.with_suffix(".pdiparams"))(probe)
    equal = float(((out if output_op == "argmax" else out.argmax(1)) == ref.argmax(1)).mean())
    logits_folder = folder if output_op == "none" else folder / "_logits"
    try:  # logits come from the export itself or a temporary one without the output op
        logits = program if output_op == "none" else \
            export_static(model, logits_folder / "inference", None, "none")
        files = (logits, logits.with_suffix(".pdiparams"))
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
    formats: tuple[str, ...] | None = None  # None: paddle, and onnx where a PIR export has one
    quantize: str | None = None
    int8_max_drop: float = 1.0
    calibration_images: int = 300
    dataset_dir: str | None = None

    @classmethod
    def from_config(cls, cfg: Config) -> "ExportOptions":
        given = cfg.get("Export.formats")
        formats = None if given is None else tuple(given)
        if formats is not None and (set(formats) - {"paddle", "onnx"} or "paddle" not in formats):
            raise ConfigError(f"Export.formats={list(formats)}: the formats are paddle (always) "
                              "and onnx.", solution="write -o Export.formats=[paddle,onnx].")
        shape = input_shape(cfg.get("Export.input_shape"))
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
            "model_file": deploy["model"], "engines": deploy["engines"],
            **{k: deploy[k] for k in ("onnx", "onnx_skipped", "int8") if k in deploy}}


def _export_all(model, run_cfg: Config, tmp: Path, options: ExportOptions) -> tuple[dict, dict]:
    """The files of one export in ``tmp``; returns (agreement report, Deploy additions)."""
    from segx.backend.predictor import export_static
    program = export_static(model, tmp / "inference", options.shape, options.output_op)
    probe = _probe(run_cfg, options.shape)
    report = agreement(model, program, options.output_op, probe,
                       dynamic_size=not (options.shape and all(options.shape[2:])))
    if not report["ok"]:
        raise SegxError(f"the exported model disagrees with the trained one: "
                        f"{report['argmax_equal']:.4%} equal pixels, max |diff| "
                        f"{report['max_abs_diff']:.3g}.",
                        solution="report this with the model name; try -o "
                                 "Export.input_shape to fix the input size.")
    deploy = {"model": program.name, "params": program.with_suffix(".pdiparams").name,
              "onednn_resize": report["onednn_resize"]}
    onnx = onnx_export(model, run_cfg, program, options, probe)
    deploy.update(onnx)
    deploy["engines"] = engine_records(tmp, probe, options.output_op, deploy)
    if options.quantize == "int8":
        deploy["int8"] = int8_export(run_cfg, tmp, options, probe, deploy)
    return report, deploy


def engine_records(folder: Path, probe: np.ndarray, output_op: str, deploy: dict) -> dict:
    """Each installed engine's exactness against Paddle Inference on the probe, and its time
    (best of 3): what ``engine=auto`` chooses by."""
    from segx.backend.predictor import PaddleInference
    from segx.inference.engines import OnnxEngine, OpenVINOEngine, fixed_size, installed, \
        openvino_source
    size = fixed_size((deploy.get("onnx") or {}).get("input_shape"))
    if size and probe.shape[2:] != size:  # every engine timed at the size ONNX was made for
        probe = np.random.default_rng(3).normal(0, 1, (1, 3, *size)).astype(np.float32)
    ref_engine = PaddleInference(folder / deploy["model"], folder / deploy["params"],
                                 onednn_resize=deploy["onednn_resize"])
    ref = ref_engine(probe)
    records = {"paddle": {"exact": True, "ms": _best_ms(ref_engine, probe)}}
    candidates = {}
    source = openvino_source(deploy)
    if installed("openvino") and source:
        candidates["openvino"] = lambda: OpenVINOEngine(folder / source[0], "fp32", None)
    elif installed("openvino"):
        records["openvino"] = {"exact": False, "error": "OpenVINO cannot read a PIR program "
                               "(inference.json) and this export has no ONNX"}
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


class OnnxDisagrees(SegxError):
    """ONNX Runtime's class map differs from Paddle Inference's: never kept. Fatal where ONNX was
    asked for (``Export.formats``); a default (Paddle 3) export records it as ``onnx_skipped``
    and deploys on Paddle."""


def onnx_export(model, run_cfg: Config, program: Path, options: ExportOptions,
                probe: np.ndarray) -> dict:
    """``{"onnx": record}`` when this export writes ONNX, ``{"onnx_skipped": reason}`` when
    it would but cannot, else ``{}``. ONNX is written when asked (``Export.formats`` with onnx:
    any failure is an error) and by default for a Paddle 3 (PIR) export, which OpenVINO can read
    only as ONNX (there a missing converter, a failed conversion or an ONNX that disagrees with
    Paddle Inference is reported and no ONNX kept). A disagreeing ONNX is never kept."""
    from segx.backend.onnx import ConversionError, converter_available, no_converter_reason
    from segx.backend.predictor import is_pir
    asked = options.formats is not None and "onnx" in options.formats
    if not asked and not (options.formats is None and is_pir(program)):
        return {}
    if not asked and not converter_available():
        return {"onnx_skipped": no_converter_reason()}
    try:
        return {"onnx": to_onnx(model, run_cfg, program, options, probe)}
    except SegxError as exc:  # a failed conversion, or an ONNX that disagrees (then removed)
        if asked or not isinstance(exc, (ConversionError, OnnxDisagrees)):
            raise
        return {"onnx_skipped": exc.message}


def to_onnx(model, run_cfg: Config, program: Path, options: ExportOptions,
            probe: np.ndarray) -> dict:
    """``inference.onnx`` beside ``program``, converted by paddle2onnx: at ``Export.input_shape``
    when it is fixed, else at any size where ONNX Runtime runs the conversion at two sizes, else
    at the model's natural fixed size (:func:`onnx_size`); checked with ONNX Runtime against
    Paddle Inference (fatal below :data:`MIN_ARGMAX_AGREEMENT`)."""
    from segx.backend.onnx import ConversionError
    from segx.inference.engines import installed
    if not installed("onnxruntime"):
        raise ConfigError("an ONNX export is checked with onnxruntime, which is not installed.",
                          solution="pip install 'segx[export-onnx]'.")
    target = program.parent / "inference.onnx"
    if options.shape and all(options.shape):  # the program itself has that one size
        return _convert_checked(program, target, options.shape, _noise(options.shape),
                                options.output_op)
    try:
        return _convert_checked(program, target, None, probe, options.output_op)
    except ConversionError:
        return _convert_fixed(model, program, target, [1, 3, *onnx_size(run_cfg)],
                              options.output_op)


def _noise(shape: list) -> np.ndarray:
    return np.random.default_rng(2).normal(0, 1, shape).astype(np.float32)


def _convert_fixed(model, program: Path, target: Path, shape: list, output_op: str) -> dict:
    """ONNX at one input size, converted from a copy of the program exported at that size."""
    from segx.backend.predictor import export_static
    work = program.parent / "_onnx_fixed"
    try:
        fixed = export_static(model, work / "inference", shape, output_op)
        return _convert_checked(fixed, target, shape, _noise(shape), output_op,
                                reference=program)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _convert_checked(program: Path, target: Path, shape: list | None, x: np.ndarray,
                     output_op: str, reference: Path | None = None) -> dict:
    """Convert ``program`` and check ONNX Runtime against Paddle Inference on ``x`` (and, for
    a dynamic conversion, on an odd size too); a conversion ONNX Runtime cannot run is a
    :class:`ConversionError`, a disagreement a fatal :class:`SegxError`."""
    from segx.backend.onnx import ConversionError, paddle_to_onnx
    from segx.backend.predictor import PaddleInference
    from segx.inference.engines import OnnxEngine
    paddle_to_onnx(program, target)
    reference = reference or program
    paddle = PaddleInference(reference, reference.with_suffix(".pdiparams"))
    inputs = [x] if shape else [x, np.random.default_rng(1).normal(0, 1, (1, 3, 97, 131))
                                .astype(np.float32)]
    labels = (lambda a: a) if output_op == "argmax" else (lambda a: a.argmax(1))
    try:
        engine = OnnxEngine(target, None)
        outs = [engine(i) for i in inputs]
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's refusal, said in one line
        target.unlink(missing_ok=True)
        size = f"{shape[3]}x{shape[2]}" if shape else "a variable size"
        raise ConversionError(f"ONNX Runtime cannot run the conversion at {size} "
                              f"({_first_line(exc)}).",
                              solution="use a larger Export.input_shape, e.g. [1,3,512,512] "
                                       "(pooling layers need room at 1/32 of the size).") from None
    equal = min(float((labels(o) == labels(paddle(i))).mean()) for o, i in zip(outs, inputs))
    if equal < MIN_ARGMAX_AGREEMENT:
        target.unlink(missing_ok=True)
        raise OnnxDisagrees(f"the ONNX export disagrees with the Paddle one ({equal:.4%} equal "
                        "pixels).", solution="export with -o Export.formats=[paddle], or report "
                                             "this with the model name.")
    return {"model": target.name, "input_shape": list(shape) if shape else
            [None, 3, None, None], "argmax_equal": equal}


def onnx_size(run_cfg: Config) -> tuple[int, int]:
    """(H, W) for an ONNX export of a network that needs a fixed size: the size its
    evaluation transforms make (Padding or Resize target), else the training crop, else
    512 x 512."""
    for key in ("Train.val_transforms", "Train.transforms"):
        for spec in run_cfg.get(key) or []:
            size = spec.get("target_size") or spec.get("crop_size") if isinstance(spec, dict) \
                else None
            if isinstance(size, int):
                return size, size
            if isinstance(size, (list, tuple)) and len(size) == 2 and all(
                    isinstance(v, int) and v > 0 for v in size):
                return int(size[1]), int(size[0])  # PaddleSeg sizes are [w, h]
    return 512, 512


def int8_export(run_cfg: Config, folder: Path, options: ExportOptions, probe: np.ndarray,
                deploy: dict) -> dict:
    """The int8 OpenVINO model beside the fp32 one (calibrated from what OpenVINO reads: the
    ``.pdmodel``, or the ONNX of a PIR export), with its measured mIoU against fp32 and both
    speeds on the probe (best of 3, as for every other engine)."""
    from segx.inference.engines import OpenVINOEngine, Resized, openvino_source
    from segx.inference.preprocess import preprocessor
    from segx.export.int8 import INT8_MODEL, calibrate, compare
    source = openvino_source({**deploy, "input_shape": options.shape})
    if not source:
        raise ConfigError("int8 needs OpenVINO, which reads a Paddle 3 (PIR) export only through "
                          f"its ONNX, and this export has none ({deploy.get('onnx_skipped')}).",
                          solution="export on Python 3.12 or older with 'segx[export-onnx]' "
                                   "installed.")
    root = options.dataset_dir or run_cfg.get("Global.dataset_dir")
    if not root or not Path(root).is_dir():
        raise ConfigError("Export.quantize=int8 calibrates on the training images and checks "
                          "on the validation images of a dataset.",
                          solution="add -o Global.dataset_dir=DATA.")
    layout = read_layout(Path(root))
    train = [s.image for s in layout.samples.get("train", [])][:options.calibration_images]
    val = [(s.image, s.label) for s in layout.samples.get("val", [])]
    prepare = preprocessor(run_cfg.get("Train.val_transforms"), "Train.val_transforms")
    model_file, size = source
    calibrate(folder / model_file, train, prepare, folder / INT8_MODEL, size)
    fp32 = OpenVINOEngine(folder / model_file, "fp32", None)
    int8 = OpenVINOEngine(folder / INT8_MODEL, "int8", None)
    if size:
        fp32, int8 = Resized(fp32, *size), Resized(int8, *size)
    result = compare(fp32, int8, val, prepare, run_cfg.get("Train.num_classes"),
                     class_names(run_cfg), options.int8_max_drop)
    return {**result, "calibration_images": len(train), "ms": _best_ms(int8, probe),
            "fp32_ms": _best_ms(fp32, probe)}


def inference_info(run_cfg: Config, shape: list | None, output_op: str, deploy: dict) -> dict:
    """The ``inference.yml`` of an export (PaddleX's layout: ``Deploy`` and ``Global``), with
    the program's files (``model``: ``inference.json`` from Paddle 3, ``inference.pdmodel``
    from 2.6; ``params``) and what export measured (``onednn_resize``, ``engines``, ``onnx``
    or ``onnx_skipped``, ``int8``)."""
    return {
        "Deploy": {"transforms": run_cfg.get("Train.val_transforms"),
                   "input_shape": shape or [None, 3, None, None], "output_op": output_op,
                   "output_dtype": "int32" if output_op == "argmax" else "float32",
                   "min_input": run_cfg.get("Meta.min_input"), **deploy},
        "Global": {"model_name": run_cfg.get("Global.model"),
                   "num_classes": run_cfg.get("Train.num_classes"),
                   "class_names": class_names(run_cfg)},
    }
