"""train mode: segx's own loop over PaddleSeg models, losses and transforms.

Output layout (the reference's): ``config.yaml`` (effective config, class count filled in),
``train.log``, ``train_result.json``, ``iter_N/{model.pdparams, model.pdopt, model.pdstates}``,
``best_model/{model.pdparams, model.pdstates, inference/}``, VisualDL records and
``training_curves.png``.

Reproducibility: data order and augmentation are pure functions of (seed, iteration), and the
paddle generator is re-seeded every iteration, so a resumed run ends with the same weights as an
uninterrupted one. Checkpoints are written to a temporary folder and renamed into place.
"""
from __future__ import annotations

import zlib  # noqa: F401  (ranks start here; must precede paddle)

import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from segx.config import Config, dump_yaml
from segx.errors import ConfigError, DatasetError, SegxError, WeightsError
from segx.fileio import replace_dir, write_text

CHECKPOINT = re.compile(r"^iter_(\d+)$")


class Interrupted(SegxError):
    """Training stopped on SIGINT after saving a checkpoint."""

    exit_code = 130


# --------------------------------------------------------------------------- classes and data
def resolve_classes(cfg: Config, summary: dict) -> tuple[int, list[str]]:
    """The class count and names: explicit settings, checked against what the dataset holds."""
    explicit = cfg.get("Train.num_classes")
    names = cfg.get("Train.class_names") or summary["names"]
    used = max(summary["class_ids"]) + 1 if summary["class_ids"] else 0
    if explicit is None:
        num = summary["num_classes"]
    else:
        num = explicit
        if used > explicit:  # also reported by the checker; kept for a precise message
            raise DatasetError(f"Train.num_classes={explicit} but the labels use ids up to "
                               f"{used - 1}.", solution=f"set -o Train.num_classes={used} or "
                                                        "leave it unset to take it from the data.")
    if num < 2:
        raise DatasetError(f"the labels hold {num} class(es); segmentation needs at least 2.",
                           solution="check the labels with check_dataset.")
    if names and len(names) != num:
        raise ConfigError(f"{len(names)} class names for {num} classes.",
                          solution="give one name per class id (Train.class_names or "
                                   "class_names.txt), or fix Train.num_classes.")
    return num, list(names)


def check_data(cfg: Config, world: int) -> tuple[list, list, int, list[str]]:
    """Every guard that must hold before the first step; returns (train, val, classes, names)."""
    from segx.modules.check_dataset import analyse
    from segx.modules.check_dataset.dataset import dataset_root, read_layout
    layout = read_layout(dataset_root(cfg))
    summary, _, problems = analyse(layout, cfg)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        p = errors[0]
        raise DatasetError(f"the dataset fails its check ({len(errors)} error(s)); first: "
                           f"{p.summary()}",
                           solution=f"{p.fix} Run Global.mode=check_dataset for the full list.")
    num, names = resolve_classes(cfg, summary)
    train = [(s.image, s.label) for s in layout.samples.get("train", [])]
    val = [(s.image, s.label) for s in layout.samples.get("val", [])]
    need = cfg.get("Train.batch_size") * world
    if len(train) < need:
        raise DatasetError(f"train.txt has {len(train)} samples, fewer than one batch "
                           f"(Train.batch_size={cfg.get('Train.batch_size')} x {world} "
                           "process(es)).", solution=f"add samples or set -o Train.batch_size="
                                                     f"{max(len(train) // world, 1)}.")
    if not val:
        raise DatasetError("val.txt has no samples; segx selects the best model on them.",
                           solution="add validation samples (check_dataset can re-split).")
    return train, val, num, names


# --------------------------------------------------------------------------- model
def build_network(run_cfg: Config, weights: Path | None = None):
    """The run's network, with ``weights`` (a full-model .pdparams) loaded strictly."""
    from segx.backend import build_model
    from segx.backend import training as T
    arch = json.loads(json.dumps(run_cfg["Arch"]))
    if isinstance(arch.get("backbone"), dict):
        arch["backbone"]["pretrained"] = None  # the full weights replace it
    model = build_model(arch, run_cfg.get("Train.num_classes"))
    if weights is not None:
        bad = T.set_state(model, T.load(weights))
        if bad:
            raise WeightsError(f"'{weights}' does not fit {run_cfg.get('Global.model')} with "
                               f"{run_cfg.get('Train.num_classes')} classes: {len(bad)} tensors "
                               f"differ, first '{bad[0]}'.",
                               solution="use weights and config.yaml from the same run.")
    model.eval()
    return model


def load_pretrained(model, path: str, log) -> None:
    """A backbone-only or a full-model checkpoint; says what loaded and what was skipped."""
    from segx.backend import load_matching, resolve_weights
    from segx.backend import training as T
    state = T.load(resolve_weights(path))
    own = model.state_dict()
    as_backbone = sum(f"backbone.{k}" in own for k in state) > sum(k in own for k in state)
    kind = "backbone" if as_backbone else "full model"
    if as_backbone:
        state = {f"backbone.{k}": v for k, v in state.items()}
    loaded, skipped = load_matching(model, state)
    if not loaded:
        raise WeightsError(f"no tensor of '{path}' fits {type(model).__name__}.",
                           solution="give a checkpoint of this architecture or its backbone.")
    log(f"pretrained {kind} weights from {path}: loaded {loaded} of {len(own)} tensors"
        + (f"; skipped {len(skipped)}: {', '.join(skipped[:5])}"
           f"{' ...' if len(skipped) > 5 else ''}" if skipped else ""))


# --------------------------------------------------------------------------- logging
class Log:
    """Plain lines to ``train.log`` and, with ``echo``, to stdout."""

    def __init__(self, path: Path | None, echo: bool):
        self.file = open(path, "a", encoding="utf-8") if path else None
        self.echo = echo

    def __call__(self, line: str, console: bool = True) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        if self.file:
            self.file.write(f"{stamp} {line}\n")
            self.file.flush()
        if console and self.echo:
            print(line, flush=True)

    def close(self) -> None:
        if self.file:
            self.file.close()


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(folder: Path, files: dict) -> None:
    """Write ``{name: object}`` into ``folder`` atomically (model.pdstates last)."""
    from segx.backend import training as T
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, obj in files.items():
        T.save(obj, tmp / name)
    replace_dir(tmp, folder)


def find_checkpoint(output: Path) -> Path | None:
    """The newest complete ``iter_N`` folder in ``output``."""
    found = [(int(m.group(1)), p) for p in output.glob("iter_*")
             if (m := CHECKPOINT.match(p.name)) and (p / "model.pdstates").is_file()
             and (p / "model.pdparams").is_file() and (p / "model.pdopt").is_file()]
    return max(found)[1] if found else None


def resume_folder(cfg: Config) -> Path | None:
    value = cfg.get("Train.resume_path")
    if not value:
        return None
    out = Path(cfg.get("Global.output"))
    if value == "auto":
        return find_checkpoint(out)  # None: nothing to resume, start fresh
    path = Path(value)
    if path.is_file():
        path = path.parent
    if not all((path / f).is_file() for f in ("model.pdparams", "model.pdopt", "model.pdstates")):
        raise WeightsError(f"Train.resume_path='{value}' is not a complete checkpoint folder.",
                           solution="give an iter_N folder (with model.pdparams, model.pdopt and "
                                    "model.pdstates) or auto.")
    return path


# --------------------------------------------------------------------------- launching
def _devices(cfg: Config) -> tuple[str, int, str]:
    """(paddle device, process count, launch device list)."""
    from segx.backend import resolve_device
    text = cfg.get("Global.device").strip().lower()
    device = resolve_device(text)
    if device.startswith("gpu"):
        ids = text.partition(":")[2] or device.partition(":")[2] or "0"
        return device, len(ids.split(",")), ids
    nprocs = cfg.get("Train.nprocs")
    if nprocs < 1:
        raise ConfigError(f"Train.nprocs={nprocs} must be at least 1.",
                          solution="use -o Train.nprocs=1 (or more for data parallel on CPU).")
    return device, nprocs, ""


def _launch(cfg: Config, nprocs: int, gpu_ids: str) -> dict:
    """Start ``nprocs`` ranks through paddle.distributed.launch; rank 0 writes the outputs."""
    from segx.backend import resolve_weights
    out = Path(cfg.get("Global.output"))
    out.mkdir(parents=True, exist_ok=True)
    data = json.loads(json.dumps(cfg.data))
    # weights are fetched here, never inside the ranks (a failed download would block them)
    backbone = data.get("Arch", {}).get("backbone")
    if isinstance(backbone, dict) and backbone.get("pretrained"):
        backbone["pretrained"] = str(resolve_weights(backbone["pretrained"]))
    if data["Train"].get("pretrain_weight_path"):
        data["Train"]["pretrain_weight_path"] = str(
            resolve_weights(data["Train"]["pretrain_weight_path"]))
    launch_cfg = out / "launch_config.yaml"
    write_text(launch_cfg, dump_yaml(data))
    logs = out / "distributed_train_logs"
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--log_dir", str(logs)]
    cmd += ["--gpus", gpu_ids] if gpu_ids else ["--nproc_per_node", str(nprocs)]
    cmd += [str(Path(__file__).with_name("rank.py")), str(launch_cfg)]
    print(f"starting {nprocs} training processes (logs: {logs})", flush=True)
    result_path = out / "train_result.json"
    started = time.time()
    proc = subprocess.Popen(cmd)
    # Ctrl-C reaches the ranks directly (same process group) and they checkpoint; this process
    # waits for them instead of dying first.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
    try:
        code = proc.wait()
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    fresh = result_path.is_file() and result_path.stat().st_mtime >= started
    result = json.loads(result_path.read_text(encoding="utf-8")) if fresh else None
    if result and result.get("interrupted_at"):
        raise Interrupted(f"training interrupted at iteration {result['interrupted_at']}; "
                          f"checkpoint {out / ('iter_' + str(result['interrupted_at']))} saved.",
                          solution="resume with -o Train.resume_path=auto.", report=result)
    if code != 0 or result is None:
        raise SegxError(f"a training process failed (exit {code}).",
                        solution=f"see {logs}/workerlog.* for each rank's output.")
    return result


def run(cfg: Config) -> dict:
    device, nprocs, gpu_ids = _devices(cfg)
    from segx.backend import training as T
    rank, world = T.dist_info()
    if nprocs > 1 and world == 1:
        return _launch(cfg, nprocs, gpu_ids)
    from segx.modules.train.loop import Trainer
    return Trainer(cfg, device, rank, world).fit()
