"""The model zoo: one registry built from the YAML files in ``segx/configs``.

A model's name is its file's stem (``PP-LiteSeg-T.yaml`` is ``PP-LiteSeg-T``); nothing else
lists model names, so adding a YAML adds a model everywhere (CLI, API, docs, tests).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segx.config import CONFIG_DIR
from segx.errors import UnknownModelError, did_you_mean


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted case-insensitively.

    Args:
        pattern: an optional shell wildcard (``*LiteSeg*``); a pattern without wildcards matches
            names containing it (case-insensitive).
    """
    names = sorted((p.stem for p in CONFIG_DIR.glob("*.yaml")), key=str.lower)
    if not pattern:
        return names
    if not any(c in pattern for c in "*?["):
        pattern = f"*{pattern}*"
    return [n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower())]


def model_config_path(name: str) -> Path:
    """The YAML of a registered model; an unknown name suggests close ones."""
    path = CONFIG_DIR / f"{name}.yaml"
    if path.is_file():
        return path
    names = list_models()
    lower = {n.lower(): n for n in names}
    if name.lower() in lower:
        return CONFIG_DIR / f"{lower[name.lower()]}.yaml"
    raise UnknownModelError(f"unknown model '{name}'.{did_you_mean(name, names, cutoff=0.5)}",
                            solution="pass a YAML path, or a name from `segx models`.")


@dataclass
class ModelInfo:
    """What ``--list-models`` shows for one model."""

    name: str
    family: str
    architecture: str
    backbone: str
    params_m: float | None
    published: dict[str, Any]
    no_static_export: str | None = None


def model_info(name: str) -> ModelInfo:
    """Read one model's listing facts from its merged config."""
    from segx.config import load_config
    cfg = load_config(name)
    arch = cfg["Arch"]
    backbone = arch.get("backbone", {}).get("type", "-") if isinstance(arch.get("backbone"), dict) \
        else "-"
    return ModelInfo(name, cfg.get("Meta.family") or "-", arch["type"], backbone,
                     cfg.get("Meta.params_m"), cfg.get("Meta.published") or {},
                     cfg.get("Meta.no_static_export"))
