"""What a finished (or running) training run left behind, read by evaluate, export and predict.

A run folder holds ``config.yaml`` (the effective config, with ``Train.num_classes`` and
``Train.class_names`` filled in), ``best_model/`` and ``iter_N/`` folders. The network and the
class list always come from that ``config.yaml``, never from a model's defaults.
"""
from __future__ import annotations

from pathlib import Path

from segx.config import Config, load_config
from segx.errors import ConfigError, WeightsError


def default_weights(cfg: Config, key: str) -> Path:
    """``key`` (a weight_path setting) or ``<Global.output>/best_model/model.pdparams``."""
    value = cfg.get(key)
    path = Path(value) if value else Path(cfg.get("Global.output")) / "best_model" / "model.pdparams"
    if not path.is_file():
        raise WeightsError(f"weights '{path}' do not exist.",
                           solution=f"train first (Global.mode=train with Global.output="
                                    f"{cfg.get('Global.output')}) or set -o {key}=path/to/"
                                    "model.pdparams.")
    return path


def run_config_path(weights: Path) -> Path:
    """The ``config.yaml`` of the run that wrote ``weights`` (next to them or one level up)."""
    for folder in (weights.parent, weights.parent.parent):
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    raise ConfigError(f"no config.yaml next to '{weights}' or in its parent folder; segx needs "
                      "the training run's config to rebuild the network with its class count.",
                      solution="point the weight path into a segx training output folder "
                               "(its config.yaml sits beside best_model/).")


def run_config(path: Path) -> Config:
    """A run's config (``path`` is its config.yaml, or weights inside the run folder)."""
    if path.suffix != ".yaml":
        path = run_config_path(path)
    cfg = load_config(str(path))
    if not cfg.get("Train.num_classes"):
        raise ConfigError(f"{path} has no Train.num_classes.",
                          solution="use the config.yaml written by segx train.")
    return cfg
