"""What a training run left behind, read by evaluate, export, predict and resume.

A run folder holds ``config.yaml`` (the effective config, with ``Train.num_classes`` and
``Train.class_names`` filled in, and its schema version), ``best_model/`` and ``iter_N/`` folders.
The network and the class list always come from that ``config.yaml``, never from a model's
defaults; configs written by older segx versions are upgraded when read, and PaddleX/PaddleSeg
runs (their PaddleSeg-format config.yaml) are converted (:mod:`segx.runs.paddlex`). Every file name
of a run folder (what train, evaluate, export and the result records write) is spelled once, in
:class:`RunFolder`; foundation modules, below this one, name none of them.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from segx.config import Config, load_config
from segx.utils.errors import ConfigError, WeightsError

CHECKPOINT = re.compile(r"^iter_(\d+)$")


class RunFolder:
    """The names of everything a run folder holds, in one place (every mode writes into
    ``Global.output``; train fills it). Paths are properties; the class attributes are the
    names as ``train_result.json`` records them, relative to the folder."""

    CONFIG = "config.yaml"
    BEST = "best_model"
    WEIGHTS, OPTIMIZER, STATES = "model.pdparams", "model.pdopt", "model.pdstates"
    INFERENCE = "inference"  # an exported model: inference.yml, .pdmodel, .pdiparams
    TRAIN_LOG = "train.log"
    TRAIN_RESULT = "train_result.json"
    TRAIN_REPORT = "train_report.html"
    CURVES = "training_curves.png"
    EVALUATE = "evaluate"  # evaluate's report.html, confusion_matrix.png and worst/
    CONFUSION = "confusion_matrix.png"
    REPORT = "report.html"
    DISTRIBUTED_LOGS = "distributed_train_logs"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def relative(self, path: Path) -> str:
        """``path`` as the run's records name it (``best_model/model.pdparams``)."""
        return path.relative_to(self.path).as_posix()

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def best_model(self) -> Path:
        return self.path / self.BEST

    @property
    def best_weights(self) -> Path:
        return self.best_model / self.WEIGHTS

    @property
    def best_states(self) -> Path:
        return self.best_model / self.STATES

    @property
    def best_inference(self) -> Path:
        return self.export_dir(self.best_weights)

    @property
    def inference(self) -> Path:
        """An export at the top of the folder (``segx export`` of weights there)."""
        return self.path / self.INFERENCE

    def checkpoint(self, n: int) -> Path:
        return self.path / f"iter_{n}"

    def checkpoints(self, complete: bool = False) -> list[tuple[int, Path]]:
        return list_checkpoints(self.path, complete)

    @property
    def train_log(self) -> Path:
        return self.path / self.TRAIN_LOG

    @property
    def train_result(self) -> Path:
        return self.path / self.TRAIN_RESULT

    @property
    def train_report(self) -> Path:
        return self.path / self.TRAIN_REPORT

    @property
    def training_curves(self) -> Path:
        return self.path / self.CURVES

    @staticmethod
    def result_name(mode: str) -> str:
        return f"{mode}_result.json"

    def result(self, mode: str) -> Path:
        """``<mode>_result.json``: what the last run of ``mode`` into this folder reported."""
        return self.path / self.result_name(mode)

    def failed_result(self, mode: str) -> Path:
        """``<mode>_result.failed.json``: a failure that must not replace a result."""
        return self.path / f"{mode}_result.failed.json"

    @property
    def evaluate_dir(self) -> Path:
        return self.path / self.EVALUATE

    @property
    def evaluate_confusion(self) -> Path:
        return self.evaluate_dir / self.CONFUSION

    @property
    def evaluate_report(self) -> Path:
        return self.evaluate_dir / self.REPORT

    @property
    def distributed_logs(self) -> Path:
        return self.path / self.DISTRIBUTED_LOGS

    @classmethod
    def weights_in(cls, folder: Path) -> Path:
        """The weights file of a checkpoint folder (``best_model/`` or ``iter_N/``)."""
        return folder / cls.WEIGHTS

    @classmethod
    def export_dir(cls, weights: Path) -> Path:
        """Where weights are exported: ``inference/`` beside them."""
        return weights.parent / cls.INFERENCE


CHECKPOINT_FILES = (RunFolder.WEIGHTS, RunFolder.OPTIMIZER, RunFolder.STATES)


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
    path = Path(value) if value else RunFolder(cfg.get("Global.output")).best_weights
    if path.is_dir() and RunFolder.weights_in(path).is_file():
        path = RunFolder.weights_in(path)
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
        if RunFolder(folder).config.is_file():
            return RunFolder(folder).config
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
