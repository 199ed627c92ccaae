"""export mode: a training run's weights -> a static model for Paddle Inference.

Writes ``<Global.output>/inference/{inference.pdmodel, inference.pdiparams, inference.yml}``.
The network and class list come from the run's ``config.yaml``; weights that do not fit are an
error. After export, the exported model and the in-memory one run on the same input and must
agree (the report is in ``export_result.json``).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from segx.config import Config, dump_yaml
from segx.errors import ConfigError, SegxError
from segx.fileio import replace_dir, write_text

MIN_ARGMAX_AGREEMENT = 0.999  # share of equal argmax pixels
MAX_RELATIVE_DIFF = 1e-3  # max |logit difference| / max |logit|


def _input_shape(cfg: Config) -> list | None:
    shape = cfg.get("Export.input_shape")
    if shape is None:
        return None
    ok = len(shape) == 4 and shape[1] == 3 and all(
        v is None or (isinstance(v, int) and (v > 0 or v == -1)) for v in shape)
    if not ok:
        raise ConfigError(f"Export.input_shape={shape} is not [N, 3, H, W].",
                          solution="write -o Export.input_shape=[1,3,512,512] "
                                   "(-1 or null for a dynamic size).")
    return [None if v in (None, -1) else v for v in shape]


def _probe(run_cfg: Config, shape: list | None) -> np.ndarray:
    """An input for the agreement check: the first val image if reachable, else a fixed noise."""
    from segx.backend import training as T
    fixed = shape and all(shape[1:])
    dataset = run_cfg.get("Global.dataset_dir")
    if dataset and not fixed:
        from segx.modules.check_dataset.dataset import read_layout
        try:
            val = read_layout(Path(dataset)).samples.get("val")
            if val:
                tf = T.build_transforms(run_cfg.get("Train.val_transforms"),
                                        "Train.val_transforms")
                return T.apply_transforms(tf, T.read_image(val[0].image), None)["img"][None]
        except (OSError, SegxError):
            pass
    h, w = (shape[2], shape[3]) if fixed else (256, 320)
    return np.random.default_rng(0).normal(0, 1, (1, 3, h, w)).astype(np.float32)


def agreement(model, folder: Path, output_op: str, probe: np.ndarray) -> dict:
    """Compare the exported model (Paddle Inference) with ``model`` on ``probe``."""
    from segx.backend import training as T
    ref = T.predict_logits(model, probe)
    out = T.Engine(folder / "inference.pdmodel", folder / "inference.pdiparams")(probe)
    equal = float(((out if output_op == "argmax" else out.argmax(1)) == ref.argmax(1)).mean())
    if output_op == "none":
        raw = out
    else:  # compare logits through a temporary export without the output op
        logits_folder = folder / "_logits"
        T.export_static(model, logits_folder / "inference", None, "none")
        raw = T.Engine(logits_folder / "inference.pdmodel",
                       logits_folder / "inference.pdiparams")(probe)
        shutil.rmtree(logits_folder)
    diff = float(np.abs(raw - ref).max())
    scale = float(np.abs(ref).max()) or 1.0
    return {"input_shape": list(probe.shape), "max_abs_diff": diff,
            "relative_diff": diff / scale, "argmax_equal": equal,
            "ok": equal >= MIN_ARGMAX_AGREEMENT and diff / scale <= MAX_RELATIVE_DIFF}


def export_run(cfg: Config, config_path: Path, weights: Path, target: Path) -> dict:
    """Export ``weights`` of the run described by ``config_path`` into ``target``."""
    from segx.backend import training as T
    from segx.modules.run_info import run_config
    from segx.modules.train import build_network
    run_cfg = run_config(config_path)
    shape = _input_shape(cfg)
    output_op = cfg.get("Export.output_op")
    model = build_network(run_cfg, weights)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    T.export_static(model, tmp / "inference", shape, output_op)
    info = {
        "Deploy": {"model": "inference.pdmodel", "params": "inference.pdiparams",
                   "transforms": run_cfg.get("Train.val_transforms"),
                   "input_shape": shape or [None, 3, None, None], "output_op": output_op,
                   "output_dtype": "int32" if output_op == "argmax" else "float32"},
        "Global": {"model_name": run_cfg.get("Global.model"),
                   "num_classes": run_cfg.get("Train.num_classes"),
                   "class_names": run_cfg.get("Train.class_names") or []},
    }
    write_text(tmp / "inference.yml", dump_yaml(info))
    report = agreement(model, tmp, output_op, _probe(run_cfg, shape))
    if not report["ok"]:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SegxError(f"the exported model disagrees with the trained one: "
                        f"{report['argmax_equal']:.4%} equal pixels, max |diff| "
                        f"{report['max_abs_diff']:.3g}.",
                        solution="report this with the model name; try -o Export.input_shape "
                                 "to fix the input size.")
    replace_dir(tmp, target)
    return {"inference_dir": str(target), "weight_path": str(weights),
            "model_name": run_cfg.get("Global.model"),
            "num_classes": run_cfg.get("Train.num_classes"), "agreement": report}


def run(cfg: Config) -> dict:
    from segx.backend import resolve_device
    from segx.backend import training as T
    from segx.modules.run_info import default_weights, run_config_path
    weights = default_weights(cfg, "Export.weight_path")
    config_path = run_config_path(weights)
    T.set_device(resolve_device(cfg.get("Global.device")))
    target = Path(cfg.get("Global.output")) / "inference"
    result = export_run(cfg, config_path, weights, target)
    a = result["agreement"]
    print(f"exported {weights} ({result['model_name']}, {result['num_classes']} classes) to "
          f"{target}")
    print(f"  agreement with the in-memory model: {a['argmax_equal']:.4%} equal pixels, "
          f"max |logit diff| {a['max_abs_diff']:.3g}")
    return result
