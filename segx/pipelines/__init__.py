"""Pipelines: a segx model wrapped for applications (``create_pipeline``), the ``--pipeline``
command and the HTTP service (``segx.apps.serving.app``).

A pipeline is described by a YAML file; ``semantic_segmentation`` is built in, and its YAML is
also the pipeline schema: a user's YAML overrides its keys, is upgraded from older versions and
validated with the same machinery as model configs (unknown keys and wrong types are errors
with suggestions). Keyword overrides replace keys of the ``Pipeline`` section.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

from segx.config import (Config, merge_configs, load_schema, read_config_file, upgrade,
                         upgrade_run_mode)
from segx.utils.errors import ConfigError, did_you_mean
from segx.api.model import SegModel, create_model
from segx.inference.result import SegResult

PIPELINE_DIR = Path(__file__).resolve().parent
BUILTIN = {p.stem: p for p in PIPELINE_DIR.glob("*.yaml")}
SCHEMA_PATH = BUILTIN["semantic_segmentation"]


def _upgrade_1(data: dict) -> None:
    """1 -> 2: ``Pipeline.run_mode`` (auto|paddle|mkldnn) became ``engine`` and ``onednn``."""
    upgrade_run_mode(data.get("Pipeline"))


UPGRADES: dict[int, Callable[[dict], None]] = {1: _upgrade_1}


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


def load_pipeline_config(name_or_path: str | Path, **overrides: Any) -> Config:
    """The pipeline's config: its YAML over the built-in defaults, upgraded and validated, with
    ``Pipeline`` keys replaced by ``overrides`` (None values are ignored)."""
    path = pipeline_config_path(name_or_path)
    schema = load_schema(SCHEMA_PATH)
    data = read_config_file(path.resolve())
    if "Pipeline" not in data:
        raise ConfigError(f"{path} has no Pipeline section.",
                          solution="start from `segx --get_pipeline_config "
                                   "semantic_segmentation --save_path DIR`.")
    upgrade(data, data.pop("_version_", 1), str(path), schema, UPGRADES)
    cfg = Config(merge_configs(schema.defaults, data), str(path), schema)
    cfg.validate()
    for key, value in overrides.items():
        if f"Pipeline.{key}" not in schema.specs:
            options = [p.split(".")[1] for p in schema.specs if p.startswith("Pipeline.")]
            raise ConfigError(f"create_pipeline(): unknown option '{key}'."
                              + did_you_mean(key, options),
                              solution=f"options are {', '.join(options)}.")
        if value is not None:
            cfg.set(f"Pipeline.{key}", value, where="create_pipeline()")
    return cfg


class SemanticSegmentationPipeline:
    """One model; ``predict``/``__call__`` yield the same results as ``create_model``."""

    def __init__(self, config: Config):
        self.config = config
        p = config["Pipeline"]
        self.model: SegModel = create_model(
            p["model"], device=p["device"], engine=p["engine"], precision=p["precision"],
            batch_size=p["batch_size"], cpu_threads=p["cpu_threads"], onednn=p["onednn"],
            tensorrt=p["tensorrt"])

    def predict(self, input: Any = None, batch_size: int | None = None  # noqa: A002
                ) -> Iterator[SegResult]:
        """Predict on ``input`` (or the YAML's ``Global.input``); see ``SegModel.predict``."""
        if input is None:
            input = self.config.get("Global.input")  # noqa: A001
            if input is None:
                raise ConfigError("no input given and the pipeline YAML has no Global.input.",
                                  solution="pass an input, or set Global.input in the YAML.")
        return self.model.predict(input, batch_size)

    __call__ = predict

    def close(self) -> None:
        self.model.close()

    def __enter__(self) -> "SemanticSegmentationPipeline":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def create_pipeline(pipeline: str | Path = "semantic_segmentation", *,
                    device: str | None = None, **overrides: Any
                    ) -> SemanticSegmentationPipeline:
    """Build a pipeline from a built-in name or a YAML path.

    Args:
        pipeline: ``semantic_segmentation`` or a pipeline YAML.
        device: ``cpu``, ``gpu``, ``gpu:N`` (None: the YAML's).
        **overrides: other ``Pipeline`` keys: ``model``, ``batch_size``, ``engine``,
            ``precision``, ``onednn``, ``tensorrt``, ``cpu_threads``.

    Example:
        >>> with create_pipeline("semantic_segmentation", model="output", device="cpu") as pipe:
        ...     for res in pipe("img.jpg"):
        ...         res.save_to_img("out/")
    """
    return SemanticSegmentationPipeline(load_pipeline_config(pipeline, device=device,
                                                             **overrides))
