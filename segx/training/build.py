"""Everything a training run checks and builds before its first step: settings, data, classes,
the network (with its pretrained start), optimiser, resume state, and the hooks."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

from segx.config import Config
from segx.utils.errors import ConfigError, DatasetError, WeightsError, did_you_mean
from segx.zoo.registry import config_weights, with_pretrained_arch
from segx.runs.folder import CHECKPOINT_FILES, RunFolder, list_checkpoints
from segx.training import hooks as H
from segx.training.report_page import TrainReportHook
from segx.training.trainer import RunInfo, Trainer, new_state

NO_PRETRAINED = ("none", "null", "")


# --------------------------------------------------------------------------- guards
def check_settings(cfg: Config, device: str) -> None:
    """Settings that must hold before anything is built."""
    for key in ("epochs_iters", "batch_size", "log_interval", "eval_interval",
                "keep_checkpoint_max"):
        if cfg.get(f"Train.{key}") < 1:
            raise ConfigError(f"Train.{key}={cfg.get(f'Train.{key}')} must be at least 1.",
                              solution=f"set -o Train.{key}=1 or more.")
    total = cfg.get("Train.epochs_iters")
    if cfg.get("Train.warmup_steps") >= total:
        raise ConfigError(f"Train.warmup_steps={cfg.get('Train.warmup_steps')} is not below "
                          f"Train.epochs_iters={total}.",
                          solution="shorten the warm-up or train longer.")
    if cfg.get("Train.amp") and not device.startswith("gpu"):
        raise ConfigError(f"Train.amp={cfg.get('Train.amp')} needs a GPU; this run is on "
                          f"{device}.", solution="remove -o Train.amp, or train on a GPU "
                                                 "(-o Global.device=gpu).")


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
    """Every data guard that must hold before the first step; returns (train pairs, val pairs,
    class count, class names)."""
    from segx.data.analyse import analyse, class_names_setting
    from segx.data.layout import Problem, dataset_root, read_layout
    layout = read_layout(dataset_root(cfg))
    summary, _, problems = analyse(layout, cfg.get("Train.num_classes"),
                                   cfg.get("CheckDataset.num_workers"),
                                   class_names_setting(cfg.get("CheckDataset.class_names")),
                                   cfg.get("CheckDataset.max_pixels"))
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        p = errors[0]
        raise DatasetError(f"the dataset fails its check ({Problem.total(problems)} "
                           f"error(s)); first: {p.summary()}",
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


# --------------------------------------------------------------------------- pretrained start
def pretrained_source(cfg: Config) -> tuple[str, str | None, str | None]:
    """What ``Train.pretrained`` names: (description, path or official URL, sha256).

    ``imagenet`` is the model's official backbone, a dataset name its published trained
    weights, ``none`` nothing, anything else a local path or URL. The path is None when there
    is nothing to load (``none``, or ``imagenet`` for a model without official weights).
    """
    value = str(cfg.get("Train.pretrained") or "none").strip()
    if value.lower() in NO_PRETRAINED:
        return "none", None, None
    official = config_weights(cfg)
    if value.lower() == "imagenet":
        spec = official.imagenet
        if not spec:
            return "imagenet (this model has no official ImageNet weights)", None, None
        return "official ImageNet backbone", spec.url, spec.sha256
    entry = official.find(value)
    if entry:
        return f"official {entry.dataset} weights", entry.url, entry.sha256
    if value.startswith(("http://", "https://")):
        return "weights", value, None
    path = Path(value).expanduser()
    if not path.is_file():
        choices = ["imagenet", "none", *official.trained]
        raise WeightsError(f"Train.pretrained='{value}' is neither a file nor one of "
                           f"{', '.join(choices)}.{did_you_mean(value, choices)}",
                           solution="give an existing .pdparams path, a URL, or one of those "
                                    "names.")
    return "weights", str(path), None


def pretrained_file(cfg: Config) -> tuple[str, Path | None]:
    """(description, local file) for ``Train.pretrained``, downloading official weights into
    the cache when needed (an offline failure names the file and where to put it)."""
    from segx.zoo import weights
    what, where, sha256 = pretrained_source(cfg)
    if where is None:
        return what, None
    if not where.startswith(("http://", "https://")):
        path = Path(where).expanduser()
        if weights.is_archive(path.name):  # a downloaded .tar.gz: unpacked into the cache
            return what, weights.import_file(path, path.resolve().as_uri())
        return what, path
    return what, weights.fetch(where, sha256, hint=", or train from scratch with -o "
                                                   "Train.pretrained=none")


def load_pretrained(model, cfg: Config, log) -> str:
    """Load ``Train.pretrained`` into ``model`` and say which file, how many tensors loaded and
    which were skipped; a head of another class count is re-initialised (reported as skipped).
    Returns what training starts from (``none`` for random weights)."""
    from segx import backend
    what, path = pretrained_file(cfg)
    if path is None:
        if what == "none":
            log("pretrained: none - training from random weights. From scratch a model needs "
                "far more data and iterations; start from official weights with "
                "-o Train.pretrained=imagenet (the default).")
        else:
            log(f"pretrained: {cfg.get('Global.model')} has no official ImageNet weights; "
                "training from random weights (as PaddleSeg does for it).")
        return "none"
    state = backend.load_weights(path)
    if not isinstance(state, dict):
        raise WeightsError(f"'{path}' is not a state dict.", solution="give a .pdparams file.")
    own, state = model.state_dict(), backend.native_state(model, state)
    as_backbone = sum(f"backbone.{k}" in own for k in state) > sum(k in own for k in state)
    if as_backbone:
        state = {f"backbone.{k}": v for k, v in state.items()}
    loaded, skipped = backend.load_matching(model, state)
    if not loaded:
        raise WeightsError(f"no tensor of '{path}' fits {type(model).__name__}: they are "
                           "weights of another architecture.",
                           solution="give a checkpoint of this model or its backbone, or "
                                    "-o Train.pretrained=none.")
    kind = "backbone" if as_backbone else "full model"
    log(f"pretrained {kind} weights ({what}) from {path}: loaded {loaded} of {len(own)} tensors"
        + (f"; skipped {len(skipped)}: {', '.join(skipped[:5])}"
           f"{' ...' if len(skipped) > 5 else ''}" if skipped else ""))
    return what


# --------------------------------------------------------------------------- resume
def resume_folder(cfg: Config) -> Path | None:
    value = cfg.get("Train.resume_path")
    if not value:
        return None
    out = Path(cfg.get("Global.output"))
    if value == "auto":
        found = list_checkpoints(out, complete=True)
        return found[-1][1] if found else None  # None: nothing to resume, start fresh
    path = Path(value)
    if path.is_file():
        path = path.parent
    if not all((path / f).is_file() for f in CHECKPOINT_FILES):
        raise WeightsError(f"Train.resume_path='{value}' is not a complete checkpoint folder.",
                           solution="give an iter_N folder (with model.pdparams, model.pdopt and "
                                    "model.pdstates) or auto.")
    return path


def _resume(cfg: Config, resume: Path | None, model, opt, log) -> dict:
    """The training state: fresh, or loaded (with weights and optimiser) from ``resume``."""
    from segx import backend
    state = new_state(cfg.get("Global.seed"))
    if resume is None:
        if cfg.get("Train.resume_path") == "auto":
            log(f"no checkpoint in {cfg.get('Global.output')} to resume from; starting at "
                "iteration 0")
        return state
    bad = backend.set_state(model, backend.load_weights(resume / RunFolder.WEIGHTS))
    if bad:
        raise ConfigError(f"checkpoint {resume} does not fit this model ({len(bad)} tensors "
                          f"differ, first '{bad[0]}').",
                          solution="resume with the config the run was started with.")
    opt.set_state_dict(backend.load_weights(resume / RunFolder.OPTIMIZER))
    state = backend.load_weights(resume / RunFolder.STATES)
    log(f"resumed from {resume} at iteration {state['iter']} (best mIoU "
        f"{state['best']['score']:.4f} at iteration {state['best']['iter']})")
    total = cfg.get("Train.epochs_iters")
    if state["iter"] >= total:
        log(f"this run already finished: iteration {state['iter']} of {total}; nothing to "
            "train (raise Train.epochs_iters to train longer).")
    return state


# --------------------------------------------------------------------------- assembling
def effective_config(cfg: Config, num: int, names: list[str]) -> str:
    """The run's ``config.yaml``: this config with the classes filled in, resume cleared."""
    run = copy.deepcopy(cfg.data)
    run["Global"]["mode"] = "train"
    run["Train"]["num_classes"] = num
    run["Train"]["class_names"] = names or None
    run["Train"]["resume_path"] = None
    return Config(run, cfg.source).to_yaml()


def build_trainer(cfg: Config, device: str, rank: int = 0, world: int = 1) -> Trainer:
    """A ready :class:`Trainer` for ``cfg``: data checked, network built with its pretrained
    start (none when resuming: the checkpoint replaces it), optimiser and resume state loaded,
    hooks added. Nothing is written into ``Global.output`` until the first step has run
    (:class:`~segx.training.hooks.RunRecords`), so a run that fails before leaves an existing
    run folder as it was. Callers may add hooks to ``trainer.hooks`` before ``trainer.train()``."""
    from segx import backend
    from segx.backend import data as D
    from segx.backend import optim as O
    cfg = with_pretrained_arch(cfg)  # Train.pretrained=pascal_voc12: those weights' network
    check_settings(cfg, device)
    backend.set_device(device)
    train, val, num, names = check_data(cfg, world)
    out, seed = Path(cfg.get("Global.output")), cfg.get("Global.seed")
    resume = resume_folder(cfg)
    log = H.RunLog(RunFolder(out).train_log if rank == 0 else None)
    try:
        O.seed_everything(seed)
        model = backend.build_model(cfg["Arch"], num)
        start = "checkpoint" if resume else load_pretrained(model, cfg, log)
        losses, coef = O.build_losses(cfg.get("Train.losses"))
        opt, sched = O.build_optimizer(
            model, cfg.get("Train.optimizer"), cfg.get("Train.lr_scheduler"),
            cfg.get("Train.learning_rate"), cfg.get("Train.epochs_iters"),
            cfg.get("Train.warmup_steps"), cfg.get("Train.warmup_start_lr"))
        state = _resume(cfg, resume, model, opt, log)
    except BaseException:
        log.close()
        raise
    net = O.init_parallel(model) if world > 1 else model
    step = O.TrainStep(net, opt, sched, losses, coef, cfg.get("Train.amp"))
    data = D.SegData(train, D.build_transforms(cfg.get("Train.transforms"), "Train.transforms"),
                     seed, num if O.uses_edges(losses) else None)
    bs = cfg.get("Train.batch_size")
    sampler = D.StreamSampler(len(train), bs, seed, state["iter"], rank, world)
    run = RunInfo(out, cfg.get("Global.model"), device, num, names,
                  cfg.get("Train.epochs_iters"), bs, len(train), len(val), rank, world,
                  pretrained=start)
    trainer = Trainer(step, lambda: iter(D.train_loader(data, sampler,
                                                        cfg.get("Train.num_workers"))),
                      state, run, [H.RunRecords(log, effective_config(cfg, num, names)),
                                   *_hooks(cfg, log, val, num, names)],
                      lambda it: O.reseed(seed, it), model, opt)
    trainer.log = log
    return trainer


def _hooks(cfg: Config, log: H.RunLog, val: list, num: int, names: list[str]) -> list:
    from segx.inference.preprocess import preprocessor
    from segx.backend.predictor import predict_logits
    from segx.inference.evaluation import evaluate_samples
    prepare = preprocessor(cfg.get("Train.val_transforms"), "Train.val_transforms")

    def evaluate(model, on_batch) -> dict:
        return evaluate_samples(lambda b: predict_logits(model, b), val, prepare, num,
                                on_batch=on_batch).metrics(names)

    every, bar = cfg.get("Train.eval_interval"), sys.stderr.isatty()
    return [H.LoggingHook(log, cfg.get("Train.log_interval"), bar, every),
            H.VisualDLHook(), H.EvalHook(log, every, evaluate), TrainReportHook(),
            H.BestCheckpointer(),
            H.InterruptHook(log),
            H.PeriodicCheckpointer(cfg.get("Train.save_interval") or every,
                                   cfg.get("Train.keep_checkpoint_max")),
            H.FinalHook(log, RunFolder(cfg.get("Global.output")).config,
                        not cfg.get("Meta.no_static_export")), _CloseLog(log)]


class _CloseLog(H.HookBase):
    def __init__(self, log: H.RunLog):
        self.log = log

    def after_train(self, trainer) -> None:
        self.log.close()
