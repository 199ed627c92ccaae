"""The model zoo: one registry built from the YAML files in ``segx/configs``.

A model's name is its file's stem (``PP-LiteSeg-T.yaml`` is ``PP-LiteSeg-T``); nothing else
lists model names, so adding a YAML adds a model everywhere (CLI, API, docs, tests). Names are
matched case-insensitively wherever a user types one.
"""
from __future__ import annotations

import fnmatch
from functools import lru_cache
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import copy

from segx.config import Config, load_config, merge_configs
from segx.utils.errors import ConfigError, UnknownModelError, did_you_mean

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


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


@dataclass(frozen=True)
class WeightsEntry:
    """One file of official weights from a model's ``Meta.weights``: the ImageNet backbone
    training starts from (``dataset`` is ``imagenet``) or weights trained on ``dataset``, with
    what their published mIoU was measured with (``arch`` arguments, inference ``transforms``,
    a ``sliding_window``)."""

    dataset: str
    url: str
    sha256: str | None = None
    classes: str | None = None
    miou: float | None = None
    config: str | None = None
    source: str | None = None
    arch: dict = field(default_factory=dict)
    transforms: tuple = ()
    sliding_window: dict | None = None


@dataclass(frozen=True)
class ModelWeights:
    """A model's official weights: ``imagenet`` (its backbone, or None) and ``trained`` (by
    dataset name, in the YAML's order; the first is the default)."""

    imagenet: WeightsEntry | None = None
    trained: dict[str, WeightsEntry] = field(default_factory=dict)

    @property
    def default(self) -> str | None:
        """The dataset of the first trained weights (what a bare model name predicts with)."""
        return next(iter(self.trained), None)

    def find(self, dataset: str) -> WeightsEntry | None:
        """The trained weights for ``dataset`` (any case), or None."""
        key = {k.lower(): k for k in self.trained}.get(str(dataset).strip().lower())
        return self.trained[key] if key else None


def _mapping(value: Any, where: str, source: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {where} must be a mapping.",
                          solution="write it as in the zoo's YAMLs (segx/configs/*.yaml).")
    return value


def _entry(dataset: str, value: Any, where: str, source: str) -> WeightsEntry:
    """One parsed entry; a wrong shape names its key (hostile or mistyped YAML)."""
    raw = _mapping(value, where, source)
    if not isinstance(raw.get("url"), str) or not raw["url"]:
        raise ConfigError(f"{source}: {where}.url must be the weights' address.",
                          solution="give the URL the weights are downloaded from.")
    transforms = raw.get("transforms") or []
    if not isinstance(transforms, list) or not all(isinstance(t, dict) for t in transforms):
        raise ConfigError(f"{source}: {where}.transforms must be a list of mappings.",
                          solution="write them as Train.val_transforms are written.")
    window = _mapping(raw.get("sliding_window"), f"{where}.sliding_window", source) or None
    if window and not all(k in window for k in ("crop_size", "stride")):
        raise ConfigError(f"{source}: {where}.sliding_window needs crop_size and stride.",
                          solution="give both as [width, height].")
    return WeightsEntry(str(dataset), raw["url"], raw.get("sha256"), raw.get("classes"),
                        raw.get("miou"), raw.get("config"), raw.get("source"),
                        _mapping(raw.get("arch"), f"{where}.arch", source), tuple(transforms),
                        window)


def config_weights(cfg: Config) -> ModelWeights:
    """The official weights a config's ``Meta.weights`` lists (a user's YAML may carry its
    own); :func:`model_weights` is the cached form for zoo models."""
    source = str(cfg.source)
    meta = _mapping(cfg.get("Meta.weights", None), "Meta.weights", source)
    backbone = meta.get("backbone")
    trained = _mapping(meta.get("trained"), "Meta.weights.trained", source)
    return ModelWeights(
        _entry("imagenet", backbone, "Meta.weights.backbone", source) if backbone else None,
        {str(k): _entry(k, v, f"Meta.weights.trained.{k}", source) for k, v in trained.items()})


def model_weights(name: str) -> ModelWeights:
    """A zoo model's official weights (any case of its name), parsed once per process."""
    return _zoo_weights(canonical_name(name) or str(name))


@lru_cache(maxsize=None)
def _zoo_weights(name: str) -> ModelWeights:
    return config_weights(load_model_config(name))


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
    weights: ModelWeights = field(default_factory=ModelWeights)

    @property
    def trained_weights(self) -> dict[str, WeightsEntry]:
        """Published trained weights by dataset name (``{"cityscapes": WeightsEntry}``)."""
        return dict(self.weights.trained)

    @property
    def checkpoint_settings(self) -> dict[str, list[str]]:
        """Per dataset, what its trained weights need beyond the defaults (words; none: left
        out)."""
        return {d: s for d, e in self.trained_weights.items() if (s := checkpoint_settings(e))}

    @property
    def backbone_weights(self) -> WeightsEntry | None:
        """The official ImageNet backbone weights training starts from, or None."""
        return self.weights.imagenet


def model_info(name: str) -> ModelInfo:
    """Read one model's listing facts from its merged config."""
    cfg = load_model_config(name)
    arch = cfg["Arch"]
    backbone = arch.get("backbone", {}).get("type", "-") if isinstance(arch.get("backbone"), dict) \
        else "-"
    return ModelInfo(cfg.model_name, cfg.get("Meta.family") or "-", arch["type"], backbone,
                     cfg.get("Meta.params_m"), cfg.get("Meta.published") or {},
                     cfg.get("Meta.no_static_export"), model_weights(cfg.model_name))


def with_weights_arch(cfg: Config, dataset: str | None) -> Config:
    """``cfg`` with the architecture arguments of its ``dataset`` trained weights merged over
    ``Arch`` (an entry's ``arch:``, e.g. ``align_corners: true`` for PaddleSeg's VOC configs);
    ``cfg`` itself when those weights carry none. The weights compute what they were trained
    to compute only in that network."""
    entry = config_weights(cfg).find(dataset) if dataset else None
    if entry is None or not entry.arch:
        return cfg
    data = copy.deepcopy(cfg.data)
    data["Arch"] = merge_configs(data["Arch"], copy.deepcopy(entry.arch))
    return Config(data, cfg.source, cfg.schema)


def with_pretrained_arch(cfg: Config) -> Config:
    """``cfg`` with the architecture of the trained weights ``Train.pretrained`` names (a
    dataset such as ``pascal_voc12``) applied; unchanged for any other start."""
    return with_weights_arch(cfg, cfg.get("Train.pretrained", None))


def checkpoint_settings(entry: WeightsEntry) -> list[str]:
    """What a trained-weights entry needs beyond the model's defaults to compute what its
    published mIoU measured, in words (``align_corners=true``, ``padded to 512x512`` ...)."""
    out = [f"{k}={str(v).lower() if isinstance(v, bool) else v}"
           for k, v in entry.arch.items()]
    for t in entry.transforms:
        if t.get("type") == "Resize":
            out.append("resized to {}x{}".format(*t["target_size"]))
        elif t.get("type") == "Padding":
            out.append("padded to {}x{}".format(*t["target_size"]))
        elif t.get("type") == "LimitLong":
            out.append(f"long side at most {t['max_long']}")
    window = entry.sliding_window
    if window:
        out.append("sliding window {}x{}, stride {}x{}".format(*window["crop_size"],
                                                              *window["stride"]))
    return out
