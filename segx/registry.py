"""The model zoo: one registry built from the YAML files in ``segx/configs``.

A model's name is its file's stem (``PP-LiteSeg-T.yaml`` is ``PP-LiteSeg-T``); nothing else
lists model names, so adding a YAML adds a model everywhere (CLI, API, docs, tests). Names are
matched case-insensitively wherever a user types one.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import copy

from segx.config import Config, load_config, merge_configs
from segx.errors import ConfigError, UnknownModelError, did_you_mean

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


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


def canonical_name(name: str) -> str | None:
    """The registered spelling of ``name`` (matched case-insensitively), or None."""
    return {n.lower(): n for n in list_models()}.get(str(name).lower())


def model_config_path(name: str) -> Path:
    """The YAML of a registered model; an unknown name suggests close ones."""
    found = canonical_name(name)
    if found:
        return CONFIG_DIR / f"{found}.yaml"
    raise UnknownModelError(
        f"unknown model '{name}'.{did_you_mean(name, list_models(), cutoff=0.5)}",
        solution="pass a YAML path, or a name from `segx models`.")


def resolve_config(name_or_path: str | Path) -> Path:
    """Map ``-c`` (a YAML path or a model name) to a file."""
    p = Path(name_or_path)
    if p.suffix.lower() in (".yaml", ".yml") or p.exists():
        if not p.exists():  # anything else that is not a regular file: load_config says so
            raise ConfigError(f"config file '{name_or_path}' does not exist.",
                              solution="check the path, or pass a model name from --list-models.")
        return p.resolve()
    return model_config_path(str(name_or_path))


def load_model_config(name_or_path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """A model's config by name (``PP-LiteSeg-T``, any case) or YAML path, with overrides.

    Raises:
        ConfigError: unknown model or key, bad value type, bad YAML.
    """
    path = resolve_config(name_or_path)
    return load_config(path, overrides, model_name=path.stem if path.parent == CONFIG_DIR
                       else None)


@dataclass
class ModelInfo:
    """What ``segx models`` shows for one model."""

    name: str
    family: str
    architecture: str
    backbone: str
    params_m: float | None
    published: dict[str, Any]
    no_static_export: str | None = None
    weights: dict[str, Any] = field(default_factory=dict)

    @property
    def trained_weights(self) -> dict[str, dict]:
        """Published trained weights by dataset name (``{"cityscapes": {...}}``)."""
        return dict(self.weights.get("trained") or {})

    @property
    def checkpoint_settings(self) -> dict[str, list[str]]:
        """Per dataset, what its trained weights need beyond the defaults (words; none: left
        out)."""
        return {d: s for d, e in self.trained_weights.items() if (s := checkpoint_settings(e))}

    @property
    def backbone_weights(self) -> dict | None:
        """The official ImageNet backbone weights training starts from, or None."""
        return self.weights.get("backbone")


def model_info(name: str) -> ModelInfo:
    """Read one model's listing facts from its merged config."""
    cfg = load_model_config(name)
    arch = cfg["Arch"]
    backbone = arch.get("backbone", {}).get("type", "-") if isinstance(arch.get("backbone"), dict) \
        else "-"
    return ModelInfo(cfg.model_name, cfg.get("Meta.family") or "-", arch["type"], backbone,
                     cfg.get("Meta.params_m"), cfg.get("Meta.published") or {},
                     cfg.get("Meta.no_static_export"), cfg.get("Meta.weights") or {})


def trained_weights_entry(cfg: Config, dataset: str) -> tuple[str, dict] | None:
    """(registered dataset name, entry) of ``cfg``'s published trained weights for
    ``dataset`` (any case), or None when the model has none by that name."""
    trained = (cfg.get("Meta.weights", None) or {}).get("trained") or {}
    key = {k.lower(): k for k in trained}.get(str(dataset).strip().lower())
    return (key, trained[key]) if key else None


def with_weights_arch(cfg: Config, dataset: str | None) -> Config:
    """``cfg`` with the architecture arguments of its ``dataset`` trained weights merged over
    ``Arch`` (an entry's ``arch:``, e.g. ``align_corners: true`` for PaddleSeg's VOC configs);
    ``cfg`` itself when those weights carry none. The weights compute what they were trained
    to compute only in that network."""
    found = trained_weights_entry(cfg, dataset) if dataset else None
    arch = (found[1].get("arch") or {}) if found else {}
    if not arch:
        return cfg
    if not isinstance(arch, dict):
        raise ConfigError(f"{cfg.source}: Meta.weights.trained.{found[0]}.arch must be a mapping.",
                          solution="write the Arch arguments those weights need as a mapping.")
    data = copy.deepcopy(cfg.data)
    data["Arch"] = merge_configs(data["Arch"], arch)
    return Config(data, cfg.source, cfg.schema)


def with_pretrained_arch(cfg: Config) -> Config:
    """``cfg`` with the architecture of the trained weights ``Train.pretrained`` names (a
    dataset such as ``pascal_voc12``) applied; unchanged for any other start."""
    return with_weights_arch(cfg, cfg.get("Train.pretrained", None))


def checkpoint_settings(entry: dict) -> list[str]:
    """What a trained-weights entry needs beyond the model's defaults to compute what its
    published mIoU measured, in words (``align_corners=true``, ``padded to 512x512`` ...)."""
    out = [f"{k}={str(v).lower() if isinstance(v, bool) else v}"
           for k, v in (entry.get("arch") or {}).items()]
    for t in entry.get("transforms") or []:
        if t.get("type") == "Resize":
            out.append("resized to {}x{}".format(*t["target_size"]))
        elif t.get("type") == "Padding":
            out.append("padded to {}x{}".format(*t["target_size"]))
        elif t.get("type") == "LimitLong":
            out.append(f"long side at most {t['max_long']}")
    window = entry.get("sliding_window")
    if window:
        out.append("sliding window {}x{}, stride {}x{}".format(*window["crop_size"],
                                                              *window["stride"]))
    return out
