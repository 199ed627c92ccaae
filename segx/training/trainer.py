"""The training loop, built from hooks (in the spirit of detectron2's ``HookBase``).

:class:`Trainer` only runs iterations: for each one it calls every hook's ``before_step``, runs
one optimisation step (:meth:`Trainer.run_step`) and calls every hook's ``after_step``. Logging,
VisualDL, evaluation, best-model and periodic checkpoints, Ctrl-C and the final export are hooks
(:mod:`segx.training.hooks`), so each is a small class, and tools that observe training (the
benchmarks, tests) add hooks instead of patching the loop.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from segx.utils.errors import ConfigError, SegxError
from segx.runs.folder import RunFolder


class Interrupted(SegxError):
    """Training stopped on SIGINT after saving a checkpoint."""

    exit_code = 130


class HookBase:
    """Called by :class:`Trainer` around the loop and each iteration; override what you need.

    ``after_train`` always runs, also when training fails; ``trainer.status`` then says how it
    ended (``done``, ``interrupted`` or ``failed``).
    """

    def before_train(self, trainer: "Trainer") -> None:
        pass

    def before_step(self, trainer: "Trainer") -> None:
        pass

    def after_step(self, trainer: "Trainer") -> None:
        pass

    def after_train(self, trainer: "Trainer") -> None:
        pass


@dataclass
class RunInfo:
    """What every hook may need to know about the run (the same on every rank)."""

    out: Path
    model_name: str
    device: str
    num_classes: int
    class_names: list[str]
    total: int
    batch_size: int
    train_samples: int
    val_samples: int
    rank: int = 0
    world: int = 1
    pretrained: str = "none"  # what training started from (none: random weights)
    visualdl_log: str = ""

    @property
    def main(self) -> bool:
        """Rank 0 writes every output."""
        return self.rank == 0


def new_state(seed: int) -> dict:
    """The state a checkpoint holds besides weights and optimiser (``model.pdstates``)."""
    return {"iter": 0, "best": {"score": -1.0, "iter": 0}, "seed": seed,
            "curves": {"iter": [], "loss": [], "lr": [], "eval_iter": [], "mIoU": []}}


@dataclass
class StepRecord:
    """What the last iteration measured."""

    loss: float = 0.0
    terms: list[float] = field(default_factory=list)
    lr: float = 0.0
    reader_s: float = 0.0
    step_s: float = 0.0


class Trainer:
    """Runs iterations ``state["iter"] + 1 .. run.total`` of ``step`` over ``loader``.

    Args:
        step: one optimisation step, ``step(batch) -> (loss, loss terms)``, with ``step.lr()``.
        loader: a zero-argument function returning the batch iterator (called only when there
            are iterations left, so a finished run starts no loader workers).
        state: the checkpointed state (:func:`new_state`, or a resumed one).
        run: facts about the run.
        hooks: called in order.
        reseed: called with the iteration number before each step (exact resume).
        model: the network (hooks evaluate and save it).
        optimizer: the optimiser (hooks save its state).
    """

    def __init__(self, step: Any, loader: Callable[[], Iterator], state: dict, run: RunInfo,
                 hooks: list[HookBase], reseed: Callable[[int], None], model: Any = None,
                 optimizer: Any = None):
        self.step, self.loader_factory, self.state, self.run = step, loader, state, run
        self.hooks, self.reseed, self.model, self.optimizer = list(hooks), reseed, model, optimizer
        self.start_iter = state["iter"]
        self.iter = state["iter"]
        self.last = StepRecord()
        self.events: dict[str, Any] = {}  # what happened this iteration (``eval``: metrics)
        self.timing: dict[str, list[float]] = {"eval_s": []}  # seconds of each evaluation
        self.interrupted = False
        self.status = "ready"
        self.report: dict = {}
        self.log: Callable[..., None] = lambda line, console=True: print(line, flush=True)
        self._loader: Iterator | None = None

    def hook(self, kind: type) -> Any:
        """The first hook of class ``kind`` (or None)."""
        return next((h for h in self.hooks if isinstance(h, kind)), None)

    def run_step(self) -> None:
        """One iteration: next batch, re-seed, forward/backward/update."""
        t0 = time.perf_counter()
        batch = next(self._loader)
        t1 = time.perf_counter()
        self.reseed(self.iter)
        loss, terms = self.step(batch)
        if not math.isfinite(loss):
            raise ConfigError(f"the loss became {loss} at iteration {self.iter}.",
                              solution="lower Train.learning_rate (or add warm-up with "
                                       "Train.warmup_steps).")
        self.state["iter"] = self.iter
        self.last = StepRecord(loss, terms, self.step.lr(), t1 - t0, time.perf_counter() - t1)

    def train(self) -> dict:
        """Run the loop; returns the final report (``train_result.json``)."""
        try:
            for h in self.hooks:
                h.before_train(self)
            if self.iter < self.run.total:
                self._loader = self.loader_factory()
            while self.iter < self.run.total and not self.interrupted:
                self.iter += 1
                self.events = {}
                for h in self.hooks:
                    h.before_step(self)
                self.run_step()
                for h in self.hooks:
                    h.after_step(self)
            self.status = "interrupted" if self.interrupted else "done"
        except BaseException:
            self.status = "failed"
            raise
        finally:
            for h in self.hooks:
                h.after_train(self)
        if self.status == "interrupted":
            raise Interrupted(f"training interrupted at iteration {self.iter}; checkpoint "
                              f"{RunFolder(self.run.out).checkpoint(self.iter)} saved.",
                              solution="resume with -o Train.resume_path=auto.",
                              report=self.report)
        return self.report
