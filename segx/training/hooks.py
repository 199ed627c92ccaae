"""The hooks a training run is made of, in the order :func:`segx.training.build_trainer` adds
them: logging, VisualDL, evaluation, best-model checkpoints, Ctrl-C, periodic checkpoints with
pruning, and the final export. Each is small and knows one concern; what they report
(``train_result.json``, advice, curves) is :mod:`segx.training.results`."""
from __future__ import annotations

import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from segx.utils.fileio import replace_dir, write_text
from segx.utils.progress import Progress
from segx.runs.folder import RunFolder, list_checkpoints
from segx.training.results import (advice, curves_png, flat_validation_warning, previous_result,
                                   train_result, write_result)
from segx.training.trainer import HookBase, Trainer


# --------------------------------------------------------------------------- outputs
class RunLog:
    """Lines to ``train.log`` (rank 0) and the console; above the progress bar when one shows.

    The file is opened by :meth:`start` (when training has taken its first step); lines logged
    before are kept and written then, so a command that fails earlier leaves the log as it was.
    """

    def __init__(self, path: Path | None, echo: bool = True):
        self.path, self.file, self.pending = path, None, []
        self.echo = echo
        self.progress: Progress | None = None

    def start(self) -> None:
        """Open ``train.log`` (appending) and write the lines logged so far."""
        if self.path is not None and self.file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "a", encoding="utf-8")
            self.file.writelines(self.pending)
            self.file.flush()
        self.pending = []

    def __call__(self, line: str, console: bool = True) -> None:
        stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n"
        if self.file:
            self.file.write(stamped)
            self.file.flush()
        elif self.path is not None:
            self.pending.append(stamped)
        if console and self.echo:
            if self.progress is not None:
                self.progress.print(line)
            else:
                print(line, flush=True)

    def close(self) -> None:
        if self.file:
            self.file.close()
            self.file = None


def save_checkpoint(folder: Path, files: dict) -> None:
    """Write ``{name: object}`` into ``folder`` as one unit (a crash leaves the old or the new)."""
    from segx import backend
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, obj in files.items():
        backend.save(obj, tmp / name)
    replace_dir(tmp, folder)


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# --------------------------------------------------------------------------- hooks
class RunRecords(HookBase):
    """The run's records start when its first step has run (rank 0): ``config.yaml`` (the
    effective config, which later hooks export with) is written and ``train.log`` opened. Added
    first, so it precedes every other writer; until then a failing command (a resume that cannot
    start, a bad setting found late) has changed no file of an existing run."""

    def __init__(self, log: RunLog, config_text: str):
        self.log, self.config_text, self.started = log, config_text, False

    def start(self, trainer: Trainer, keep_config: bool = False) -> None:
        """Write ``config.yaml`` (with ``keep_config``: only if missing) and open the log."""
        if self.started or not trainer.run.main:
            return
        self.started = True
        path = RunFolder(trainer.run.out).config
        if not (keep_config and path.is_file()):
            trainer.run.out.mkdir(parents=True, exist_ok=True)
            write_text(path, self.config_text)
        self.log.start()

    def after_step(self, trainer: Trainer) -> None:
        self.start(trainer)


class LoggingHook(HookBase):
    """``[TRAIN]`` lines every ``every`` iterations (loss, learning rate, speed, ETA) into the
    log and the loss curves; a progress bar on a terminal. The ETA counts the evaluations still
    to come (measured, or estimated before the first), and the first line says how long the
    whole run will take."""

    def __init__(self, log: RunLog, every: int, bar: bool, eval_every: int):
        self.log, self.every, self.bar, self.eval_every = log, every, bar, eval_every

    def before_train(self, trainer: Trainer) -> None:
        run = trainer.run
        self.window_loss, self.window_n, self.reader, self.busy = 0.0, 0, 0.0, 0.0
        self.t_start, self.estimated = time.perf_counter(), False
        if trainer.iter >= run.total:
            return
        self.log(f"training {run.model_name} on {run.device} x{run.world}: "
                 f"{run.train_samples} train / {run.val_samples} val samples, "
                 f"{run.num_classes} classes, iterations {trainer.iter + 1}..{run.total}, "
                 f"batch {run.batch_size} per process")
        if self.bar and run.main:
            self.log.progress = Progress("train", run.total, trainer.iter)

    def eta(self, trainer: Trainer) -> tuple[float, float, int, float, bool]:
        """(seconds left, of them training, evaluations left, seconds each, measured?)."""
        run, it = trainer.run, trainer.iter
        evals = trainer.timing["eval_s"]
        wall = time.perf_counter() - self.t_start - sum(evals)
        per_iter = wall / max(it - trainer.start_iter, 1)
        each = sum(evals) / len(evals) if evals else \
            0.5 * per_iter * run.val_samples / (run.batch_size * run.world)
        left = sum(1 for k in range(it + 1, run.total + 1)
                   if k % self.eval_every == 0 or k == run.total)
        training = (run.total - it) * per_iter
        return training + left * each, training, left, each, bool(evals)

    def after_step(self, trainer: Trainer) -> None:
        run, it, last = trainer.run, trainer.iter, trainer.last
        self.window_loss += last.loss
        self.window_n += 1
        self.reader += last.reader_s
        self.busy += last.reader_s + last.step_s
        progress = self.log.progress
        if it % self.every and it != run.total:
            if progress:
                progress.update(it)
            return
        eta = self.eta(trainer)
        if not self.estimated and it < run.total:
            self._estimate(trainer, eta)
        mean = self.window_loss / self.window_n
        images = self.window_n * run.batch_size * run.world / max(self.busy, 1e-9)
        self.log(f"[TRAIN] iter {it}/{run.total} loss {mean:.4f} lr {last.lr:.6f} "
                 f"{images:.2f} img/s reader {self.reader / self.window_n:.3f} s/it "
                 f"ETA {_fmt_eta(eta[0])}", console=progress is None)  # the bar shows it
        curves = trainer.state["curves"]
        curves["iter"].append(it)
        curves["loss"].append(mean)
        curves["lr"].append(last.lr)
        trainer.events["train"] = {"loss": mean, "lr": last.lr, "terms": last.terms}
        if progress:
            progress.update(it, f"loss {mean:.4f} lr {last.lr:.2e} {images:.1f} img/s")
        self.window_loss, self.window_n, self.reader, self.busy = 0.0, 0, 0.0, 0.0

    def _estimate(self, trainer: Trainer, eta: tuple) -> None:
        left, training, evals, each, measured = eta
        self.estimated = True
        self.log(f"estimated time left: {_fmt_eta(left)} ({_fmt_eta(training)} training + "
                 f"{evals} evaluation(s) of {'' if measured else '~'}{each:.0f} s); the "
                 "[TRAIN] lines keep it current")

    def after_train(self, trainer: Trainer) -> None:
        if self.log.progress:
            self.log.progress.close()
            self.log.progress = None


class VisualDLHook(HookBase):
    """VisualDL records of the training and evaluation scalars (rank 0; optional)."""

    def before_train(self, trainer: Trainer) -> None:
        self.writer, self.tried = None, not trainer.run.main

    def _open(self, trainer: Trainer) -> None:
        """The records file, created at the first step (a failed start leaves none behind)."""
        self.tried = True
        try:
            from visualdl import LogWriter
            self.writer = LogWriter(logdir=str(trainer.run.out))
            trainer.run.visualdl_log = Path(self.writer.file_name).name
        except Exception:  # noqa: BLE001 - VisualDL is optional
            self.writer = None

    def after_step(self, trainer: Trainer) -> None:
        if not self.tried:
            self._open(trainer)
        if self.writer is None:
            return
        it = trainer.iter
        if "train" in trainer.events:
            train = trainer.events["train"]
            self.writer.add_scalar("Train/loss", train["loss"], it)
            self.writer.add_scalar("Train/lr", train["lr"], it)
            for k, t in enumerate(train["terms"]):
                self.writer.add_scalar(f"Train/loss_{k}", t, it)
        if "eval" in trainer.events:
            self.writer.add_scalar("Evaluate/mIoU", trainer.events["eval"]["mIoU"], it)
            self.writer.add_scalar("Evaluate/Acc", trainer.events["eval"]["Acc"], it)

    def after_train(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()


class EvalHook(HookBase):
    """Validation every ``every`` iterations and at the end (rank 0; the other ranks wait):
    ``[EVAL]`` line with per-class IoU by name and the time it took, mIoU curve,
    ``trainer.events["eval"]``, the flat-validation warning; a progress bar on a terminal."""

    def __init__(self, log: RunLog, every: int, evaluate: Callable[..., dict]):
        self.log, self.every, self.evaluate = log, every, evaluate

    def after_step(self, trainer: Trainer) -> None:
        from segx.backend import optim
        run, it = trainer.run, trainer.iter
        if it % self.every and it != run.total:
            return
        if run.world > 1:
            optim.broadcast_buffers(trainer.model)  # BatchNorm statistics: rank 0's everywhere
        if run.main:
            t0 = time.perf_counter()
            metrics = self._validate(trainer)
            seconds = time.perf_counter() - t0
            trainer.timing["eval_s"].append(seconds)
            curves = trainer.state["curves"]
            curves["eval_iter"].append(it)
            curves["mIoU"].append(metrics["mIoU"])
            trainer.events["eval"] = metrics
            per_class = ", ".join(f"{r['name']}: {r['IoU']:.3f}" for r in metrics["per_class"])
            best = " (best so far)" if metrics["mIoU"] > trainer.state["best"]["score"] else ""
            self.log(f"[EVAL] iter {it} mIoU {metrics['mIoU']:.4f} Acc {metrics['Acc']:.4f} "
                     f"Kappa {metrics['Kappa']:.4f} Dice {metrics['Dice']:.4f} class IoU "
                     f"[{per_class}]{best} in {seconds:.1f} s")
            warning = flat_validation_warning(curves)
            if warning:
                self.log(warning)
        if run.world > 1:
            optim.barrier()

    def _validate(self, trainer: Trainer) -> dict:
        """The metrics; on a terminal the progress bar counts the validation images."""
        run, bar = trainer.run, self.log.progress
        previous = trainer.timing["eval_s"][-1:] or [0.0]
        if bar is None:
            if previous[0] > 10:  # long evaluations say they are running
                self.log(f"validating {run.val_samples} images (about {previous[0]:.0f} s)")
            return self.evaluate(trainer.model, None)
        done = [0]

        def tick(n: int) -> None:
            done[0] += n
            bar.update(trainer.iter, f"validating {done[0]}/{run.val_samples}")
        return self.evaluate(trainer.model, tick)


class BestCheckpointer(HookBase):
    """``best_model/`` whenever validation mIoU improves (rank 0)."""

    def after_step(self, trainer: Trainer) -> None:
        metrics = trainer.events.get("eval")
        if metrics is None or metrics["mIoU"] <= trainer.state["best"]["score"]:
            return
        from segx import backend
        it = trainer.iter
        trainer.state["best"] = {"score": metrics["mIoU"], "iter": it}
        save_checkpoint(RunFolder(trainer.run.out).best_model, {
            RunFolder.WEIGHTS: backend.model_state(trainer.model),
            RunFolder.STATES: {"iter": it, "mIoU": metrics["mIoU"], "metrics": metrics}})


class InterruptHook(HookBase):
    """Ctrl-C (and, with several processes, the launcher's SIGTERM that follows it) asks for a
    checkpoint at the end of the iteration; every rank stops at the same iteration."""

    def __init__(self, log: RunLog):
        self.log = log
        self.requested = False
        self.previous: dict = {}

    def _handler(self, signum, frame) -> None:  # noqa: ARG002
        if self.requested and self.world == 1:
            raise KeyboardInterrupt
        self.requested = True
        if self.main:
            print("\nstopping after this iteration to save a checkpoint"
                  + (" (Ctrl-C again to abort)" if self.world == 1 else ""),
                  file=sys.stderr, flush=True)

    def before_train(self, trainer: Trainer) -> None:
        self.world, self.main = trainer.run.world, trainer.run.main
        if threading.current_thread() is threading.main_thread():
            signals = [signal.SIGINT] + ([signal.SIGTERM] if self.world > 1 else [])
            self.previous = {sig: signal.signal(sig, self._handler) for sig in signals}

    def after_step(self, trainer: Trainer) -> None:
        from segx.backend import optim
        trainer.interrupted = self.requested if self.world == 1 else optim.any_rank(
            self.requested)  # every rank stops at the same iteration

    def after_train(self, trainer: Trainer) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if trainer.status == "interrupted":
            folder = RunFolder(trainer.run.out).checkpoint(trainer.iter)
            self.log(f"interrupted at iteration {trainer.iter}: checkpoint saved in {folder}")
            write_result(trainer, {**train_result(trainer, False),
                                   "interrupted_at": trainer.iter})


class PeriodicCheckpointer(HookBase):
    """``iter_N/`` every ``every`` iterations, at the end and when interrupted; keeps the newest
    ``keep``; rewrites ``train_result.json``."""

    def __init__(self, every: int, keep: int):
        self.every, self.keep = every, keep

    def after_step(self, trainer: Trainer) -> None:
        from segx import backend
        from segx.backend import optim
        run, it = trainer.run, trainer.iter
        if it % self.every and it != run.total and not trainer.interrupted:
            return
        if run.world > 1:
            optim.broadcast_buffers(trainer.model)
        if run.main:
            save_checkpoint(RunFolder(run.out).checkpoint(it), {
                RunFolder.WEIGHTS: backend.model_state(trainer.model),
                RunFolder.OPTIMIZER: trainer.optimizer.state_dict(),
                RunFolder.STATES: trainer.state})
            for _, path in list_checkpoints(run.out)[:-self.keep]:
                shutil.rmtree(path, ignore_errors=True)
            write_result(trainer, train_result(trainer, False))
        if run.world > 1:
            optim.barrier()


class FinalHook(HookBase):
    """At the end (rank 0): export ``best_model`` to ``best_model/inference`` (once, also when
    a finished run is resumed without it), draw the curves, write the final result."""

    def __init__(self, log: RunLog, config_path: Path, exportable: bool = True):
        self.log, self.config_path, self.exportable = log, config_path, exportable

    def after_train(self, trainer: Trainer) -> None:
        if trainer.status != "done":
            return
        run, folder = trainer.run, RunFolder(trainer.run.out)
        if run.main:
            exported = (folder.best_inference / "inference.yml").is_file() or \
                not self.exportable
            complete = exported and folder.training_curves.is_file()
            trained = trainer.start_iter < run.total
            previous = None if trained else previous_result(run.out)
            if complete and previous and previous.get("done_flag") is True:
                trainer.report = previous  # a finished run resumed: its records stay as they are
                return
            if not trained:
                run.visualdl_log = run.visualdl_log or str((previous or {}).get("visualdl_log")
                                                           or "")
            records = trainer.hook(RunRecords)
            if records is not None:  # finishing an export left undone keeps the run's config
                records.start(trainer, keep_config=True)
            if trained or not complete:
                self._export(trainer)
                curves_png(trainer.state["curves"], folder.training_curves)
                best = trainer.state["best"]
                self.log(f"done: {run.total} iterations; best mIoU {best['score']:.4f} "
                         f"at iteration {best['iter']}")
                for line in advice(trainer):
                    self.log(line)
        write_result(trainer, train_result(trainer, True))

    def _export(self, trainer: Trainer) -> None:
        from segx.utils.errors import NotExportableError
        from segx.export.exporter import export_run
        folder, best = RunFolder(trainer.run.out), trainer.state["best"]
        weights = folder.best_weights
        if not weights.is_file():
            return
        try:
            report = export_run(self.config_path, weights, folder.best_inference)
        except NotExportableError as exc:
            self.log(f"not exported: {exc}")
            return
        self.log(f"exported best model (mIoU {best['score']:.4f} at iteration {best['iter']}) "
                 f"to {folder.best_inference}; agreement with the in-memory model: "
                 f"{report['agreement']['argmax_equal']:.4%} equal pixels")


