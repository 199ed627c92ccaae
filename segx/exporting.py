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
from pathlib import Path

import numpy as np

from segx.config import Config, dump_yaml
from segx.errors import ConfigError, NotExportableError, SegxError
from segx.fileio import replace_dir, write_text
from segx.datasets.layout import read_layout
from segx.images import read_image
from segx.runs import build_network, class_names, run_config

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
    from segx.preprocess import preprocessor
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
    from segx.backend.engine import Engine, predict_logits
    engine, checked = Engine(*files, onednn_resize=True), 0
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
    from segx.backend.engine import Engine, export_static, predict_logits
    ref = predict_logits(model, probe)
    out = Engine(folder / "inference.pdmodel", folder / "inference.pdiparams")(probe)
    equal = float(((out if output_op == "argmax" else out.argmax(1)) == ref.argmax(1)).mean())
    logits_folder = folder if output_op == "none" else folder / "_logits"
    try:  # logits come from the export itself or a temporary one without the output op
        if output_op != "none":
            export_static(model, logits_folder / "inference", None, "none")
        files = (logits_folder / "inference.pdmodel", logits_folder / "inference.pdiparams")
        diff, relative, ok = _compare(Engine(*files)(probe), ref)
        odd = np.random.default_rng(1).normal(0, 1, (1, 3, 97, 131)).astype(np.float32)
        resize = _resize_exact(model, files, [probe, odd] if dynamic_size else [probe])
    finally:
        if logits_folder != folder:
            shutil.rmtree(logits_folder, ignore_errors=True)
    return {"input_shape": list(probe.shape), "max_abs_diff": diff, "relative_diff": relative,
            "argmax_equal": equal, "ok": ok and equal >= MIN_ARGMAX_AGREEMENT,
            "onednn_resize": resize}


def export_run(config_path: Path, weights: Path, target: Path, shape: list | None = None,
               output_op: str = "argmax") -> dict:
    """Export ``weights`` of the run described by ``config_path`` into ``target`` (replaced as
    one unit, and only after the export agrees with the trained model).

    Args:
        config_path: the run's config.yaml.
        weights: a full-model .pdparams of that run.
        target: the model folder to write.
        shape: a fixed [N, 3, H, W] (None entries dynamic), see :func:`input_shape`.
        output_op: argmax, softmax or none, appended to the network.
    """
    from segx.backend.engine import export_static
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
        export_static(model, tmp / "inference", shape, output_op)
        report = agreement(model, tmp, output_op, _probe(run_cfg, shape),
                           dynamic_size=not (shape and all(shape[2:])))
        if not report["ok"]:
            raise SegxError(f"the exported model disagrees with the trained one: "
                            f"{report['argmax_equal']:.4%} equal pixels, max |diff| "
                            f"{report['max_abs_diff']:.3g}.",
                            solution="report this with the model name; try -o "
                                     "Export.input_shape to fix the input size.")
        write_text(tmp / "inference.yml", dump_yaml(inference_info(run_cfg, shape, output_op,
                                                                   report["onednn_resize"])))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, target)
    return {"inference_dir": str(target), "weight_path": str(weights),
            "model_name": run_cfg.get("Global.model"),
            "num_classes": run_cfg.get("Train.num_classes"), "agreement": report}


def inference_info(run_cfg: Config, shape: list | None, output_op: str,
                   onednn_resize: bool) -> dict:
    """The ``inference.yml`` of an export (PaddleX's layout: ``Deploy`` and ``Global``)."""
    return {
        "Deploy": {"model": "inference.pdmodel", "params": "inference.pdiparams",
                   "transforms": run_cfg.get("Train.val_transforms"),
                   "input_shape": shape or [None, 3, None, None], "output_op": output_op,
                   "output_dtype": "int32" if output_op == "argmax" else "float32",
                   "onednn_resize": onednn_resize, "min_input": run_cfg.get("Meta.min_input")},
        "Global": {"model_name": run_cfg.get("Global.model"),
                   "num_classes": run_cfg.get("Train.num_classes"),
                   "class_names": class_names(run_cfg)},
    }
