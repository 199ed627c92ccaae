"""export mode: ``<Global.output>/inference/`` from a training run's weights.

The weights are ``Export.weight_path`` (default ``<Global.output>/best_model/model.pdparams``);
the work is :func:`segx.exporting.export_run`.
"""
from __future__ import annotations

from pathlib import Path

from segx.config import Config
from segx.exporting import export_run, input_shape
from segx.runs import default_weights, run_config_path


def run(cfg: Config) -> dict:
    from segx import backend
    weights = default_weights(cfg, "Export.weight_path")
    config_path = run_config_path(weights)
    shape = input_shape(cfg.get("Export.input_shape"))
    backend.set_device(backend.resolve_device(cfg.get("Global.device")))
    target = Path(cfg.get("Global.output")) / "inference"
    result = export_run(config_path, weights, target, shape, cfg.get("Export.output_op"))
    a = result["agreement"]
    print(f"exported {weights} ({result['model_name']}, {result['num_classes']} classes) to "
          f"{target}")
    print(f"  agreement with the in-memory model: {a['argmax_equal']:.4%} equal pixels, "
          f"max |logit diff| {a['max_abs_diff']:.3g}")
    return result
