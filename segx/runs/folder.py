"""What a training run left behind, read by evaluate, export, predict and resume.

A run folder holds ``config.yaml`` (the effective config, with ``Train.num_classes`` and
``Train.class_names`` filled in, and its schema version), ``best_model/`` and ``iter_N/`` folders.
The network and the class list always come from that ``config.yaml``, never from a model's
defaults; configs written by older segx versions are upgraded when read, and PaddleX/PaddleSeg
runs (their PaddleSeg-format config.yaml) are converted (:mod:`segx.runs.paddlex`).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from segx.config import Config, load_config
from segx.utils.errors import ConfigError, WeightsError

CHECKPOINT = re.compile(r"^iter_(\d+)$")
CHECKPOINT_FILES = ("model.pdparams", "model.pdopt", "model.pdstates")


def list_checkpoints(output: Path, complete: bool = False) -> list[tuple[int, Path]]:
    """The ``iter_N`` folders in ``output`` as (N, path), oldest first; ``complete`` keeps only
    those holding every checkpoint file (an interrupted save leaves none behind, but a user
    might)."""
    found = [(int(m.group(1)), p) for p in Path(output).glob("iter_*")
             if (m := CHECKPOINT.match(p.name)) and p.is_dir()]
    if complete:
        found = [(n, p) for n, p in found if all((p / f).is_file() for f in CHECKPOINT_FILES)]
    return sorted(found)


def default_weights(cfg: Config, key: str) -> Path:
    """``key`` (a weight_path setting) or ``<Global.output>/best_model/model.pdparams``."""
    value = cfg.get(key)
    path = Path(value) if value else Path(cfg.get("Global.output")) / "best_model" / "model.pdparams"
    if path.is_dir() and (path / "model.pdparams").is_file():
        path = path / "model.pdparams"
    if path.is_file() and path.suffix != ".pdparams":
        raise WeightsError(f"{key}='{path}' is not a .pdparams file.",
                           solution="extract the model.pdparams from it and pass that.")
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
    cfg = _paddleseg_run_config(path) or load_config(path)
    if not cfg.get("Train.num_classes"):
        raise ConfigError(f"{path} has no Train.num_classes.",
                          solution="use the config.yaml written by segx train.")
    return cfg


def _paddleseg_run_config(path: Path) -> Config | None:
    """A PaddleX/PaddleSeg run's config.yaml, converted (None for segx's own)."""
    from segx.config import read_yaml
    from segx.runs.paddlex import is_paddleseg_config, run_config_from_paddleseg
    if not path.exists():
        return None
    data = read_yaml(path, "run config")
    return run_config_from_paddleseg(data, path) if is_paddleseg_config(data) else None


def class_names(run_cfg: Config) -> list[str]:
    """The run's class names (empty when it has none)."""
    return list(run_cfg.get("Train.class_names") or [])


def build_network(run_cfg: Config, weights: Path | None = None):
    """The run's network, with ``weights`` (a full-model .pdparams) loaded strictly."""
    from segx import backend
    arch = json.loads(json.dumps(run_cfg["Arch"]))
    if isinstance(arch.get("backbone"), dict):
        arch["backbone"]["pretrained"] = None  # the full weights replace it
    model = backend.build_model(arch, run_cfg.get("Train.num_classes"))
    if weights is not None:
        bad = backend.set_state(model, backend.load_weights(weights))
        if bad:
            raise WeightsError(f"'{weights}' does not fit {run_cfg.get('Global.model')} with "
                               f"{run_cfg.get('Train.num_classes')} classes: {len(bad)} tensors "
                               f"differ, first '{bad[0]}'.",
                               solution="use weights and config.yaml from the same run.")
    model.eval()
    return model
