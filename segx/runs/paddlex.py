"""Runs and exports made by PaddleX and PaddleSeg, read as segx's own.

A PaddleX (or PaddleSeg) training output holds ``config.yaml`` in PaddleSeg's format (``model``,
``train_dataset``, ``val_dataset``, ``loss`` ...), ``best_model/model.pdparams`` and
``best_model/inference/`` (``inference.yml`` with ``Deploy`` and ``Global.model_name``). segx
turns the config into a run config, so ``evaluate``, ``export`` and ``predict`` work on such a
folder. PaddleX 3's exports in Paddle 3's PIR format (``inference.json``) run on Paddle 3; on
Paddle 2.6 they are refused with the route that works.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

from segx.config import Config, model_schema, read_small_text
from segx.utils.errors import ConfigError, WeightsError
from segx.runs.folder import RunFolder


def is_paddleseg_config(data: object) -> bool:
    """PaddleSeg's format: a lower-case ``model`` with a ``type``, and no segx sections."""
    return isinstance(data, dict) and isinstance(data.get("model"), dict) \
        and "type" in data["model"] and "Global" not in data


def _model_name(path: Path, model: dict) -> str:
    """PaddleX's model name from ``train_results.json`` beside the config, else the type."""
    for name in ("train_results.json", RunFolder.TRAIN_RESULT):  # PaddleX's name, segx's
        try:
            found = json.loads(read_small_text(path.parent / name)).get("model_name")
        except (ConfigError, ValueError, AttributeError):
            continue
        if isinstance(found, str) and found:
            return found
    return str(model["type"])


def run_config_from_paddleseg(data: dict, path: Path) -> Config:
    """A segx run config for a PaddleSeg/PaddleX ``config.yaml`` (network, classes, transforms,
    losses, dataset); validated like any segx config."""
    model = copy.deepcopy(data["model"])
    val = data.get("val_dataset") or {}
    train = data.get("train_dataset") or {}
    num = model.pop("num_classes", None) or val.get("num_classes") or train.get("num_classes")
    if not isinstance(num, int) or num < 1:
        raise ConfigError(f"{path}: a PaddleSeg config without num_classes (in model or "
                          "val_dataset).", solution="add model.num_classes to it.")
    model.pop("pretrained", None)
    if isinstance(model.get("backbone"), dict):
        model["backbone"]["pretrained"] = None
    cfg = copy.deepcopy(model_schema().defaults)
    cfg["Global"].update({"model": _model_name(path, model), "mode": "train",
                          "dataset_dir": train.get("dataset_root") or val.get("dataset_root")})
    cfg["Arch"] = model
    cfg["Train"].update({"num_classes": num, "pretrained": "none",
                         "val_transforms": val.get("transforms") or [{"type": "Normalize"}]})
    if train.get("transforms"):
        cfg["Train"]["transforms"] = train["transforms"]
    loss = data.get("loss")
    if isinstance(loss, dict) and loss.get("types"):
        cfg["Train"]["losses"] = {"types": loss["types"],
                                  "coef": loss.get("coef") or [1] * len(loss["types"])}
    result = Config(cfg, f"{path} (PaddleSeg format)")
    result.validate()
    return result


def refuse_pir(folder: Path) -> None:
    """A Paddle 3 export in the PIR format (``inference.json``, from PaddleX 3 or segx on Paddle
    3) runs on Paddle 3, or on OpenVINO/ONNX Runtime through its ONNX; on Paddle 2.6 without an
    ONNX it cannot run at all."""
    if not (folder / "inference.json").is_file() or (folder / "inference.pdmodel").is_file() \
            or (folder / "inference.onnx").is_file() or paddle_major() != 2:
        return
    run = folder.parent.parent if folder.parent.name == RunFolder.BEST else folder.parent
    raise WeightsError(
        f"{folder} is a Paddle 3 (PIR, inference.json) export, which Paddle 2.6 cannot run.",
        solution="install Paddle 3 (pip install 'paddlepaddle>=3.3'), or use the training "
                 f"weights instead: {RunFolder(run).best_weights} (with the run's config.yaml) "
                 "predicts directly, or export them with segx (Global.mode=export).")


def paddle_major() -> int | None:
    """The installed paddlepaddle's major version (read from its metadata; paddle is not
    imported), or None without paddle."""
    from importlib import metadata
    for dist in ("paddlepaddle", "paddlepaddle-gpu"):
        try:
            return int(metadata.version(dist).split(".")[0])
        except (metadata.PackageNotFoundError, ValueError):
            continue
    return None
