"""int8 for OpenVINO: NNCF post-training quantization of an exported model, calibrated on the
training images and accepted only when its validation mIoU stays within a set loss.

The fp32 and int8 models are evaluated on the validation split with the evaluator of
``evaluate`` (:func:`segx.inference.evaluation.evaluate_samples`); their mIoU, the drop and the per-class
change go into ``export_result.json`` and ``inference.yml`` (``Deploy.int8``). A model that
loses more than ``max_drop`` points is written but marked ``accepted: false``: engines refuse
it (``auto`` never picks it; an explicit ``precision=int8`` says why).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from segx.utils.errors import ConfigError, DatasetError
from segx.inference.evaluation import evaluate_samples
from segx.imaging.images import read_image

INT8_MODEL = "inference_int8.xml"


def _need(module: str, extra: str):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"int8 export needs {module}.",
                          solution=f"pip install 'segx[{extra}]'.") from None


def calibrate(fp32_model: Path, images: Sequence[Path],
              prepare: Callable[[np.ndarray], tuple[np.ndarray, list]], target: Path,
              size: tuple[int, int] | None = None) -> Path:
    """Quantize ``fp32_model`` (a Paddle or OpenVINO model file) with NNCF on ``images``
    (resized to ``size`` for an export made for one input size); writes ``target`` (OpenVINO
    IR, int8 weights and activations) and returns it."""
    ov = _need("openvino", "openvino")
    nncf = _need("nncf", "quantize")
    if not images:
        raise DatasetError("int8 calibration needs training images (train.txt).",
                           solution="pass -o Global.dataset_dir=DATA with a train.txt.")
    from segx.imaging.tta import resize_scores

    def sample(path: Path) -> np.ndarray:
        x = prepare(read_image(path))[0][None]
        return resize_scores(x, *size) if size and x.shape[2:] != size else x
    nncf.set_log_level(logging.ERROR)
    model = ov.Core().read_model(str(fp32_model))
    data = nncf.Dataset(list(images), sample)
    quantized = nncf.quantize(model, data, subset_size=len(images),
                              preset=nncf.QuantizationPreset.MIXED)
    ov.save_model(quantized, str(target), compress_to_fp16=False)
    return target


def compare(fp32: Callable, int8: Callable, val: Sequence[tuple[Path, Path]],
            prepare: Callable, num_classes: int, names: list[str], max_drop: float) -> dict:
    """Both models' validation mIoU, the drop (points) and the per-class IoU change; accepted
    when the drop is at most ``max_drop``."""
    if not val:
        raise DatasetError("the int8 check needs validation samples (val.txt).",
                           solution="pass -o Global.dataset_dir=DATA with a val.txt.")
    m32 = evaluate_samples(fp32, list(val), prepare, num_classes).metrics(names)
    m8 = evaluate_samples(int8, list(val), prepare, num_classes).metrics(names)
    drop = 100 * (m32["mIoU"] - m8["mIoU"])
    return {"model": INT8_MODEL, "miou_fp32": m32["mIoU"], "miou_int8": m8["mIoU"],
            "drop": drop, "max_drop": max_drop, "accepted": drop <= max_drop,
            "val_images": len(val),
            "per_class": [{"id": a["id"], "name": a["name"], "IoU_fp32": a["IoU"],
                           "IoU_int8": b["IoU"], "change": b["IoU"] - a["IoU"]}
                          for a, b in zip(m32["per_class"], m8["per_class"])]}
