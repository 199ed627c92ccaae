"""Pipelines: a segx model wrapped for applications (``create_pipeline``), the ``--pipeline``
command and the HTTP service (``segx.serving``).

A pipeline is described by a YAML file; ``semantic_segmentation`` is built in. Keyword
overrides replace keys of its ``Pipeline`` section (``model=``, ``batch_size=``, ``device=``...).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterator

from segx.config import parse_yaml
from segx.errors import ConfigError, did_you_mean
from segx.predictor import SegModel, create_model
from segx.result import SegResult

PIPELINE_DIR = Path(__file__).resolve().parent
BUILTIN = {p.stem: p for p in PIPELINE_DIR.glob("*.yaml")}


def pipeline_config_path(name_or_path: str | Path) -> Path:
    """The YAML for a built-in pipeline name or a path."""
    text = str(name_or_path)
    if text in BUILTIN:
        return BUILTIN[text]
    path = Path(text).expanduser()
    if path.is_file():
        return path
    raise ConfigError(f"'{text}' is neither a pipeline name nor a YAML file."
                      + did_you_mean(text, BUILTIN),
                      solution=f"use one of {', '.join(sorted(BUILTIN))} or a YAML path.")


def load_pipeline_config(name_or_path: str | Path, **overrides: Any) -> dict:
    """The pipeline's YAML as a dict, with ``Pipeline`` keys replaced by ``overrides``."""
    path = pipeline_config_path(name_or_path)
    data = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    base = parse_yaml(BUILTIN["semantic_segmentation"].read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "Pipeline" not in data:
        raise ConfigError(f"{path} has no Pipeline section.",
                          solution="start from `segx --get_pipeline_config "
                                   "semantic_segmentation --save_path DIR`.")
    merged = copy.deepcopy(base)
    for section, values in data.items():
        if section not in merged:
            raise ConfigError(f"{path}: unknown section '{section}'."
                              + did_you_mean(section, merged),
                              solution=f"sections are {', '.join(merged)}.")
        for key, value in (values or {}).items():
            if key not in merged[section]:
                raise ConfigError(f"{path}: unknown key {section}.{key}."
                                  + did_you_mean(key, merged[section]),
                                  solution=f"keys are {', '.join(merged[section])}.")
            merged[section][key] = value
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in merged["Pipeline"]:
            raise ConfigError(f"create_pipeline(): unknown option '{key}'."
                              + did_you_mean(key, merged["Pipeline"]),
                              solution=f"options are {', '.join(merged['Pipeline'])}.")
        merged["Pipeline"][key] = value
    return merged


class SemanticSegmentationPipeline:
    """One model; ``predict``/``__call__`` yield the same results as ``create_model``."""

    def __init__(self, config: dict):
        self.config = config
        p = config["Pipeline"]
        self.model: SegModel = create_model(p["model"], p["device"], p["batch_size"],
                                            run_mode=p["run_mode"], cpu_threads=p["cpu_threads"])

    def predict(self, input: Any = None, batch_size: int | None = None  # noqa: A002
                ) -> Iterator[SegResult]:
        """Predict on ``input`` (or the YAML's ``Global.input``); see ``SegModel.predict``."""
        if input is None:
            input = self.config["Global"].get("input")  # noqa: A001
            if input is None:
                raise ConfigError("no input given and the pipeline YAML has no Global.input.",
                                  solution="pass an input, or set Global.input in the YAML.")
        return self.model.predict(input, batch_size)

    __call__ = predict

    def close(self) -> None:
        self.model.close()


def create_pipeline(pipeline: str | Path = "semantic_segmentation", device: str | None = None,
                    **overrides: Any) -> SemanticSegmentationPipeline:
    """Build a pipeline from a built-in name or a YAML path.

    Example:
        >>> pipe = create_pipeline("semantic_segmentation", model="output", device="cpu")
        >>> for res in pipe("img.jpg"):
        ...     res.save_to_img("out/")
    """
    config = load_pipeline_config(pipeline, device=device, **overrides)
    name = config["Global"]["pipeline_name"]
    if name != "semantic_segmentation":
        raise ConfigError(f"pipeline_name '{name}' is not a segx pipeline.",
                          solution="use pipeline_name: semantic_segmentation.")
    return SemanticSegmentationPipeline(config)
