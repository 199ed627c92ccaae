"""The training loop: one Trainer per process (rank 0 writes every output)."""
from __future__ import annotations

import copy
import math
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from segx.config import Config, dump_yaml
from segx.errors import ConfigError
from segx.fileio import write_json, write_text
from segx.progress import Progress
from segx.modules.train import (
    CHECKPOINT, Interrupted, Log, check_data, load_pretrained, resume_folder,
    save_checkpoint)


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Trainer:
    def __init__(self, cfg: Config, device: str, rank: int = 0, world: int = 1):
        self.cfg, self.device, self.rank, self.world = cfg, device, rank, world
        self.main = rank == 0
        self.out = Path(cfg.get("Global.output"))
        self.total = cfg.get("Train.epochs_iters")
        self.stop_requested = False

    # ------------------------------------------------------------------ setup
    def _effective_config(self, num: int, names: list[str]) -> dict:
        data = copy.deepcopy(self.cfg.data)
        data["Global"]["mode"] = "train"
        data["Train"]["num_classes"] = num
        data["Train"]["class_names"] = names or None
        data["Train"]["resume_path"] = None
        return data

    def _check_settings(self) -> None:
        cfg = self.cfg
        for key in ("epochs_iters", "batch_size", "log_interval", "eval_interval",
                    "keep_checkpoint_max"):
            if cfg.get(f"Train.{key}") < 1:
                raise ConfigError(f"Train.{key}={cfg.get(f'Train.{key}')} must be at least 1.",
                                  solution=f"set -o Train.{key}=1 or more.")
        if cfg.get("Train.warmup_steps") >= self.total:
            raise ConfigError(f"Train.warmup_steps={cfg.get('Train.warmup_steps')} is not below "
                              f"Train.epochs_iters={self.total}.",
                              solution="shorten the warm-up or train longer.")
        if cfg.get("Train.amp"):
            from segx.backend import training as T
            if not T.amp_supported(self.device):
                raise ConfigError(f"Train.amp={cfg.get('Train.amp')} needs a GPU; this run is on "
                                  f"{self.device}.", solution="remove -o Train.amp, or train on "
                                                              "a GPU (-o Global.device=gpu).")

    # ------------------------------------------------------------------ outputs
    def _state_files(self, model, opt, state: dict) -> dict:
        from segx.backend import training as T
        return {"model.pdparams": T.model_state(model), "model.pdopt": opt.state_dict(),
                "model.pdstates": state}

    def _prune(self) -> None:
        keep = self.cfg.get("Train.keep_checkpoint_max")
        found = sorted((int(m.group(1)), p) for p in self.out.glob("iter_*")
                       if (m := CHECKPOINT.match(p.name)))
        for _, path in found[:-keep]:
            shutil.rmtree(path, ignore_errors=True)

    def _result(self, state: dict, done: bool) -> dict:
        found = sorted((int(m.group(1)), p) for p in self.out.glob("iter_*")
                       if (m := CHECKPOINT.match(p.name)))
        scores = dict(zip(state["curves"]["eval_iter"], state["curves"]["mIoU"]))

        def score_at(it: int) -> float | None:
            done_evals = [i for i in scores if i <= it]
            return scores[max(done_evals)] if done_evals else None

        models: dict = {}
        for k, (it, path) in enumerate(reversed(found), 1):
            rel = path.name
            models[f"last_{k}"] = {"iter": it, "score": score_at(it),
                                   "pdparams": f"{rel}/model.pdparams",
                                   "pdopt": f"{rel}/model.pdopt",
                                   "pdstates": f"{rel}/model.pdstates"}
        best = state["best"]
        if best["iter"]:
            models["best"] = {"iter": best["iter"], "score": best["score"],
                              "pdparams": "best_model/model.pdparams",
                              "pdstates": "best_model/model.pdstates"}
            inf = self.out / "best_model" / "inference"
            if (inf / "inference.yml").is_file():
                models["best"].update({
                    "inference_config": "best_model/inference/inference.yml",
                    "pdmodel": "best_model/inference/inference.pdmodel",
                    "pdiparams": "best_model/inference/inference.pdiparams"})
        return {"model_name": self.cfg.get("Global.model"), "label_dict": "",
                "train_log": "train.log", "visualdl_log": self.vdl_dir, "config": "config.yaml",
                "models": models, "done_flag": done, "iter": state["iter"],
                "total_iters": self.total, "num_classes": self.num_classes,
                "class_names": self.names, "best_mIoU": best["score"] if best["iter"] else None,
                "training_curves": "training_curves.png" if done else None}

    def _curves_png(self, state: dict) -> None:
        from matplotlib.figure import Figure
        c = state["curves"]
        fig = Figure(figsize=(12, 3.6), dpi=100)
        axes = fig.subplots(1, 3)
        axes[0].plot(c["iter"], c["loss"])
        axes[0].set_title("training loss")
        axes[1].plot(c["iter"], c["lr"])
        axes[1].set_title("learning rate")
        axes[2].plot(c["eval_iter"], c["mIoU"], marker="o")
        axes[2].set_title("validation mIoU")
        for ax in axes:
            ax.set_xlabel("iteration")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(self.out / "training_curves.png")

    # ------------------------------------------------------------------ loop
    def _sigint(self, signum, frame) -> None:  # noqa: ARG002
        if self.stop_requested and self.world == 1:
            raise KeyboardInterrupt
        self.stop_requested = True
        if self.main:
            print("\nstopping after this iteration to save a checkpoint"
                  + (" (Ctrl-C again to abort)" if self.world == 1 else ""),
                  file=sys.stderr, flush=True)

    def _catch_signals(self) -> dict:
        """Ctrl-C (and, in a multi-process run, the launcher's SIGTERM that follows it) asks
        for a checkpoint at the end of the iteration; returns the previous handlers."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        signals = [signal.SIGINT] + ([signal.SIGTERM] if self.world > 1 else [])
        return {sig: signal.signal(sig, self._sigint) for sig in signals}

    def _evaluate(self, net, val, transforms) -> dict:
        from segx.modules.evaluate import evaluate_samples
        conf = evaluate_samples(net, val, transforms, self.num_classes)
        return conf.metrics(self.names)

    def fit(self) -> dict:
        from segx.backend import build_model
        from segx.backend import training as T
        cfg = self.cfg
        self._check_settings()
        T.set_device(self.device)
        train, val, self.num_classes, self.names = check_data(cfg, self.world)
        seed = cfg.get("Global.seed")
        main = self.main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text(self.out / "config.yaml",
                       dump_yaml(self._effective_config(self.num_classes, self.names)))
        log = Log(self.out / "train.log" if main else None, echo=True)
        progress = vdl = previous = None
        self.vdl_dir = ""
        try:
            T.seed_everything(seed)
            model = build_model(cfg["Arch"], self.num_classes)
            if cfg.get("Train.pretrain_weight_path"):
                load_pretrained(model, cfg.get("Train.pretrain_weight_path"), log)
            losses, coef = T.build_losses(cfg.get("Train.losses"))
            opt, sched = T.build_optimizer(
                model, cfg.get("Train.optimizer"), cfg.get("Train.lr_scheduler"),
                cfg.get("Train.learning_rate"), self.total, cfg.get("Train.warmup_steps"),
                cfg.get("Train.warmup_start_lr"))
            state = {"iter": 0, "best": {"score": -1.0, "iter": 0}, "seed": seed,
                     "curves": {"iter": [], "loss": [], "lr": [], "eval_iter": [], "mIoU": []}}
            resume = resume_folder(cfg)
            if resume is not None:
                bad = T.set_state(model, T.load(resume / "model.pdparams"))
                if bad:
                    raise ConfigError(f"checkpoint {resume} does not fit this model "
                                      f"({len(bad)} tensors differ, first '{bad[0]}').",
                                      solution="resume with the config the run was started with.")
                opt.set_state_dict(T.load(resume / "model.pdopt"))
                state = T.load(resume / "model.pdstates")
                log(f"resumed from {resume} at iteration {state['iter']} (best mIoU "
                    f"{state['best']['score']:.4f} at iteration {state['best']['iter']})")
                if state["iter"] >= self.total:
                    log(f"this run already finished: iteration {state['iter']} of {self.total}; "
                        "nothing to train (raise Train.epochs_iters to train longer).")
                    if main and not ((self.out / "best_model" / "inference" / "inference.yml")
                                     .is_file() and (self.out / "training_curves.png").is_file()):
                        self._finish(state, log)  # the run stopped before its final export
                    result = self._result(state, True)
                    if main:
                        write_json(self.out / "train_result.json", result, indent=None)
                    return result
            elif cfg.get("Train.resume_path") == "auto":
                log(f"no checkpoint in {self.out} to resume from; starting at iteration 0")
            if main:
                try:
                    from visualdl import LogWriter
                    vdl = LogWriter(logdir=str(self.out))
                    self.vdl_dir = Path(vdl.file_name).name
                except Exception:  # noqa: BLE001 - VisualDL is optional
                    vdl = None
            net = T.init_parallel(model) if self.world > 1 else model
            step = T.TrainStep(net, opt, sched, losses, coef, cfg.get("Train.amp"))
            train_tf = T.build_transforms(cfg.get("Train.transforms"), "Train.transforms")
            val_tf = T.build_transforms(cfg.get("Train.val_transforms"), "Train.val_transforms")
            data = T.SegData(train, train_tf, seed,
                             self.num_classes if T.uses_edges(losses) else None)
            bs = cfg.get("Train.batch_size")
            sampler = T.StreamSampler(len(train), bs, seed, state["iter"], self.rank, self.world)
            loader = iter(T.train_loader(data, sampler, cfg.get("Train.num_workers")))
            log_every = cfg.get("Train.log_interval")
            eval_every = cfg.get("Train.eval_interval")
            save_every = cfg.get("Train.save_interval") or eval_every
            log(f"training {cfg.get('Global.model')} on {self.device} x{self.world}: "
                f"{len(train)} train / {len(val)} val samples, {self.num_classes} classes, "
                f"iterations {state['iter'] + 1}..{self.total}, batch {bs} per process")
            if main and sys.stderr.isatty():
                progress = Progress("train", self.total, state["iter"])
            previous = self._catch_signals()
            window_loss, window_n, t_window, reader = 0.0, 0, time.perf_counter(), 0.0
            t_start, start_iter = time.perf_counter(), state["iter"]
            for it in range(state["iter"] + 1, self.total + 1):
                t0 = time.perf_counter()
                batch = next(loader)
                reader += time.perf_counter() - t0
                T.reseed(seed, it)
                loss, terms = step(batch)
                if not math.isfinite(loss):
                    raise ConfigError(f"the loss became {loss} at iteration {it}.",
                                      solution="lower Train.learning_rate (or add warm-up with "
                                               "Train.warmup_steps).")
                window_loss += loss
                window_n += 1
                state["iter"] = it
                if it % log_every == 0 or it == self.total:
                    now = time.perf_counter()
                    rate = window_n / max(now - t_window, 1e-9)
                    eta = (self.total - it) / max((it - start_iter) / (now - t_start), 1e-9)
                    lr, mean = step.lr(), window_loss / window_n
                    line = (f"[TRAIN] iter {it}/{self.total} loss {mean:.4f} lr {lr:.6f} "
                            f"{rate * bs * self.world:.2f} img/s reader {reader / window_n:.3f} "
                            f"s/it ETA {_fmt_eta(eta)}")
                    log(line, console=progress is None)  # on a terminal the bar shows it
                    state["curves"]["iter"].append(it)
                    state["curves"]["loss"].append(mean)
                    state["curves"]["lr"].append(lr)
                    if vdl:
                        vdl.add_scalar("Train/loss", mean, it)
                        vdl.add_scalar("Train/lr", lr, it)
                        for k, t in enumerate(terms):
                            vdl.add_scalar(f"Train/loss_{k}", t, it)
                    if progress:
                        progress.update(it, f"loss {mean:.4f} lr {lr:.2e} "
                                            f"{rate * bs * self.world:.1f} img/s")
                    window_loss, window_n, reader, t_window = 0.0, 0, 0.0, now
                elif progress:
                    progress.update(it)
                if it % eval_every == 0 or it == self.total:
                    self._validate(net, model, opt, state, val, val_tf, log, progress, vdl)
                interrupted = self.stop_requested if self.world == 1 else T.any_rank(
                    self.stop_requested)  # every rank stops at the same iteration
                if it % save_every == 0 or it == self.total or interrupted:
                    if self.world > 1:
                        T.broadcast_buffers(model)
                    if main:
                        save_checkpoint(self.out / f"iter_{it}",
                                        self._state_files(model, opt, state))
                        self._prune()
                        write_json(self.out / "train_result.json",
                                   self._result(state, False), indent=None)
                    if self.world > 1:
                        T.barrier()
                if interrupted:
                    if progress:
                        progress.close()
                        progress = None
                    log(f"interrupted at iteration {it}: checkpoint saved in "
                        f"{self.out / f'iter_{it}'}")
                    report = {**self._result(state, False), "interrupted_at": it}
                    if main:
                        write_json(self.out / "train_result.json", report, indent=None)
                    raise Interrupted(f"training interrupted at iteration {it}; checkpoint "
                                      f"{self.out / f'iter_{it}'} saved.",
                                      solution="resume with -o Train.resume_path=auto.",
                                      report=report)
            self.loop_seconds = time.perf_counter() - t_start  # read by bench/train.py
            if progress:
                progress.close()
                progress = None
            result = self._result(state, True)
            if self.world > 1 and not main:  # kept so a test can compare ranks' final states
                T.save(T.model_state(model),
                       self.out / "distributed_train_logs" / f"rank{self.rank}.pdparams")
            if main:
                self._finish(state, log)
                result = self._result(state, True)
                write_json(self.out / "train_result.json", result, indent=None)
            return result
        finally:
            for sig, handler in (previous or {}).items():
                signal.signal(sig, handler)
            if progress:
                progress.close()
            if vdl:
                vdl.close()
            log.close()

    def _validate(self, net, model, opt, state, val, val_tf, log, progress, vdl) -> None:
        from segx.backend import training as T
        if self.world > 1:
            T.broadcast_buffers(model)  # BatchNorm statistics: rank 0's everywhere
        if self.main:
            metrics = self._evaluate(model, val, val_tf)
            it = state["iter"]
            miou = metrics["mIoU"]
            state["curves"]["eval_iter"].append(it)
            state["curves"]["mIoU"].append(miou)
            per_class = " ".join(f"{r['IoU']:.3f}" for r in metrics["per_class"])
            line = (f"[EVAL] iter {it} mIoU {miou:.4f} Acc {metrics['Acc']:.4f} Kappa "
                    f"{metrics['Kappa']:.4f} Dice {metrics['Dice']:.4f} class IoU [{per_class}]")
            if miou > state["best"]["score"]:
                state["best"] = {"score": miou, "iter": it}
                save_checkpoint(self.out / "best_model", {
                    "model.pdparams": T.model_state(model),
                    "model.pdstates": {"iter": it, "mIoU": miou, "metrics": metrics}})
                line += " (best so far)"
            if progress:
                progress.print(line)
            log(line, console=progress is None)
            if vdl:
                vdl.add_scalar("Evaluate/mIoU", miou, it)
                vdl.add_scalar("Evaluate/Acc", metrics["Acc"], it)
            self._warn_flat(state, log, progress)
        if self.world > 1:
            T.barrier()

    def _warn_flat(self, state, log, progress) -> None:
        """Validation stuck while the loss collapses: almost always a label problem."""
        c = state["curves"]
        if len(c["mIoU"]) < 3 or len(c["loss"]) < 2:
            return
        if max(c["mIoU"]) - min(c["mIoU"]) < 1e-4 and c["loss"][-1] < 0.5 * c["loss"][0]:
            line = (f"WARNING: validation mIoU has stayed at {c['mIoU'][-1]:.4f} for "
                    f"{len(c['mIoU'])} evaluations while the training loss fell from "
                    f"{c['loss'][0]:.4f} to {c['loss'][-1]:.4f}. The model likely predicts one "
                    "class everywhere: check the label encoding (check_dataset), "
                    "Train.num_classes and Train.val_transforms.")
            if progress:
                progress.print(line)
            log(line, console=progress is None)

    def _finish(self, state: dict, log) -> None:
        """Export the best model and draw the curves."""
        from segx.errors import NotExportableError
        from segx.modules.export import export_run
        best = self.out / "best_model" / "model.pdparams"
        if best.is_file():
            try:
                report = export_run(self.cfg, self.out / "config.yaml", best,
                                    self.out / "best_model" / "inference")
            except NotExportableError as exc:
                log(f"not exported: {exc}")
            else:
                log(f"exported best model (mIoU {state['best']['score']:.4f} at iteration "
                    f"{state['best']['iter']}) to {self.out / 'best_model' / 'inference'}; "
                    f"agreement with the in-memory model: "
                    f"{report['agreement']['argmax_equal']:.4%} equal pixels")
        self._curves_png(state)
        log(f"done: {self.total} iterations; best mIoU {state['best']['score']:.4f} "
            f"at iteration {state['best']['iter']}")
