"""Zoo models by name: their official trained weights, fetched and exported once.

``create_model("PP-LiteSeg-T")`` resolves here: the model's first published trained weights
(``Meta.weights.trained`` in its YAML, e.g. Cityscapes; ``PP-LiteSeg-T@camvid`` names another
dataset's) are fetched into the weights cache,
given a run folder (``config.yaml`` with the dataset's class names and inference transforms),
exported with the usual agreement check into ``$SEGX_HOME/models/<name>/``, and used from there
on (also offline). Models whose network cannot become a static graph predict from the run
folder's weights on the dynamic graph.
"""
from __future__ import annotations

import copy
import fcntl
import shutil
from pathlib import Path

from segx.utils.class_lists import CLASS_LISTS
from segx.config import Config
from segx.utils.constants import segx_home
from segx.utils.errors import WeightsError
from segx.utils.fileio import replace_dir, write_text
from segx.zoo.registry import (WeightsEntry, canonical_name, config_weights, list_models,
                           load_model_config, model_weights, with_weights_arch)
from segx.runs.folder import RunFolder
from segx.zoo.weights import fetch


def models_dir() -> Path:
    """``$SEGX_HOME/models``: exported official models, one folder per name."""
    return segx_home() / "models"


def trained_entry(cfg: Config, dataset: str | None = None) -> tuple[str, WeightsEntry]:
    """(dataset name, entry) of a model's published trained weights; the first by default."""
    trained = config_weights(cfg).trained
    name = cfg.model_name
    if not trained:
        with_weights = [m for m in list_models() if model_weights(m).trained]
        raise WeightsError(f"{name} has no published trained weights, so it cannot predict "
                           "before you train it.",
                           solution="train it on your data (Global.mode=train) and pass the "
                                    f"output folder; models with trained weights: "
                                    f"{', '.join(with_weights[:8])} ... (segx models).")
    if dataset is None:
        dataset = next(iter(trained))
    if dataset not in trained:
        raise WeightsError(f"{name} has no trained weights for '{dataset}'.",
                           solution=f"use one of {', '.join(trained)}.")
    return dataset, trained[dataset]


def _run_config(cfg: Config, dataset: str, entry: WeightsEntry) -> str:
    """A run's config.yaml for official weights: the dataset's classes and transforms."""
    names = CLASS_LISTS[entry.classes]
    data = copy.deepcopy(with_weights_arch(cfg, dataset).data)  # the weights' own network
    data["Global"].update({"mode": "predict", "dataset_dir": None})
    data["Train"].update({"num_classes": len(names), "class_names": list(names),
                          "pretrained": dataset, "val_transforms":
                          copy.deepcopy(list(entry.transforms)) or [{"type": "Normalize"}]})
    return Config(data, cfg.source).to_yaml()


def model_folder(name: str, dataset: str | None = None) -> Path:
    """An official model ready to predict, prepared on first use (download, export): a folder
    with ``inference.yml``, or (models that cannot be exported) with :func:`run_weights`.

    Raises:
        WeightsError: an unknown name, a model without trained weights, or a failed fetch.
    """
    name, _, tag = str(name).partition("@")  # PP-LiteSeg-T@camvid: another dataset's weights
    dataset = dataset or tag or None
    found = canonical_name(name)
    if found is None:
        from segx.utils.errors import did_you_mean
        raise WeightsError(f"'{name}' is neither a file, a folder nor a model name."
                           + did_you_mean(name, list_models(), cutoff=0.5),
                           solution="see `segx models`, or pass an exported folder.")
    cfg = load_model_config(found)
    default = config_weights(cfg).default
    folder = models_dir() / (found if dataset in (None, default) else f"{found}@{dataset}")
    dataset, entry = trained_entry(cfg, dataset)
    if _ready(folder, entry):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{found}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be preparing it
        if not _ready(folder, entry):
            _prepare(cfg, dataset, entry, folder)
    return folder


def published_prediction(name: str) -> dict:
    """How the published mIoU of a zoo name's weights (``SegFormer-B0``,
    ``EMANet-R50@pascal_voc12``) was predicted beyond its transforms: ``crop_size`` and
    ``stride`` of a sliding window, or nothing; ``{}`` for anything that is not a zoo name."""
    name, _, dataset = str(name).partition("@")
    found = canonical_name(name)
    if found is None:
        return {}
    weights = model_weights(found)
    entry = weights.trained.get(dataset or weights.default or "")
    window = (entry.sliding_window if entry else None) or {}
    return {k: tuple(window[k]) for k in ("crop_size", "stride") if k in window}


def run_weights(folder: Path) -> Path:
    """The weights inside a prepared model folder (what the dynamic graph loads)."""
    return RunFolder(folder / "run").best_weights


def _ready(folder: Path, entry: WeightsEntry) -> bool:
    """Prepared, and (weights predicted with a sliding window) exported with class scores; a
    folder an earlier segx exported with argmax is prepared again."""
    info = folder / "inference.yml"
    if info.is_file() and entry.sliding_window:
        from segx.config import parse_yaml
        data = parse_yaml(info.read_text(encoding="utf-8", errors="replace"), str(info))
        return isinstance(data, dict) and (data.get("Deploy") or {}).get("output_op") == "softmax"
    return info.is_file() or run_weights(folder).is_file()


def _prepare(cfg: Config, dataset: str, entry: WeightsEntry, folder: Path) -> None:
    """Fetch the weights, write a run folder beside the export, export; one unit."""
    weights = fetch(entry.url, entry.sha256,
                    hint=f", or pass a local exported model instead of the name {cfg.model_name}")
    tmp = folder.with_name(folder.name + ".prepare")
    shutil.rmtree(tmp, ignore_errors=True)
    run = RunFolder(tmp / "run")
    run.best_model.mkdir(parents=True)
    write_text(run.config, _run_config(cfg, dataset, entry))
    shutil.copyfile(weights, run.best_weights)
    try:
        if cfg.get("Meta.no_static_export"):  # the dynamic graph predicts from run/
            replace_dir(tmp, folder)
            return
        from segx.export.exporter import ExportOptions, export_run
        # a sliding window combines class scores, so those weights export with softmax
        options = ExportOptions(output_op="softmax" if entry.sliding_window else "argmax")
        export_run(run.config, run.best_weights, tmp / "export",
                   options)
        for item in (tmp / "export").iterdir():
            shutil.move(str(item), tmp / item.name)
        (tmp / "export").rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, folder)
