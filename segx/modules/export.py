"""export mode: an ``inference/`` folder beside the weights it comes from.

The weights are ``Export.weight_path`` (default ``<Global.output>/best_model/model.pdparams``),
so by default export replaces ``best_model/inference``: the one place where a run's deployable
model is found (``create_model(run)``, predict mode, pipelines), int8 included. Export writes
only inside ``Global.output``: weights from elsewhere (another run, a PaddleX run) are exported
to ``<Global.output>/inference``, never beside them;
the work is :func:`segx.export.exporter.export_run`: the Paddle model, each installed engine's
exactness and speed, and on request ONNX (``Export.formats``) and int8 (``Export.quantize``).
"""
from __future__ import annotations

from pathlib import Path

from segx.config import Config
from segx.export.exporter import ExportOptions, export_run
from segx.runs.folder import RunFolder, default_weights, run_config_path


def run(cfg: Config) -> dict:
    from segx import backend
    weights = default_weights(cfg, "Export.weight_path")
    config_path = run_config_path(weights)
    options = ExportOptions.from_config(cfg)
    backend.set_device(backend.resolve_device(cfg.get("Global.device")))
    out = Path(cfg.get("Global.output")).resolve()
    inside = weights.resolve().is_relative_to(out)
    target = RunFolder.export_dir(weights) if inside else RunFolder(out).inference
    result = export_run(config_path, weights, target, options)
    a = result["agreement"]
    print(f"exported {weights} ({result['model_name']}, {result['num_classes']} classes) to "
          f"{target}")
    print(f"  agreement with the in-memory model: {a['argmax_equal']:.4%} equal pixels, "
          f"max |logit diff| {a['max_abs_diff']:.3g}")
    if "onnx" in result:
        shape = result["onnx"]["input_shape"]
        size = f"{shape[3]}x{shape[2]} (other sizes are resized to it and back)" if shape[2] \
            else "any size"
        print(f"  ONNX: {result['onnx']['model']} at {size}")
    elif "onnx_skipped" in result:
        print(f"  no ONNX: {result['onnx_skipped']}; OpenVINO and ONNX Runtime need it (export "
              "on Python 3.12 with 'segx[export-onnx]'), Paddle Inference runs this export")
    for name, rec in result["engines"].items():
        print(f"  {name:<12} " + (f"cannot run it: {rec['error']}" if "error" in rec else
                                  f"{'exact' if rec['exact'] else 'NOT exact'}, "
                                  f"{rec['ms']:.1f} ms on the check image"))
    if "int8" in result:
        q = result["int8"]
        verdict = "accepted" if q["accepted"] else "REFUSED (beyond Export.int8_max_drop)"
        print(f"  int8: val mIoU {q['miou_int8']:.4f} against fp32 {q['miou_fp32']:.4f} "
              f"(drop {q['drop']:.2f} points, limit {q['max_drop']}): {verdict}; "
              f"{q['ms']:.1f} ms against OpenVINO fp32's {q['fp32_ms']:.1f} ms")
    return result
