"""segx.training.trainer: the loop's mechanics with a fake step and loader (no paddle).

What the Trainer promises (its docstrings): iterations ``state["iter"] + 1 .. run.total``;
hooks called in order around the loop and each iteration; the loader built only when
iterations are left; ``after_train`` always, with ``status`` saying how training ended; a hook
that sets ``trainer.interrupted`` stops the loop and ``train`` raises :class:`Interrupted`.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from segx.utils.errors import ConfigError, SegxError
from segx.training.trainer import HookBase, Interrupted, RunInfo, StepRecord, Trainer, new_state


class FakeStep:
    """``step(batch) -> (loss, terms)`` with ``lr()``; the loss is the batch itself, so a test
    chooses it through the loader; ``fail_at``: raise on that call."""

    def __init__(self, log: list, fail_at: int | None = None):
        self.log, self.fail_at, self.batches = log, fail_at, []

    def __call__(self, batch):
        self.batches.append(batch)
        self.log.append(("step", len(self.batches)))
        if len(self.batches) == self.fail_at:
            raise RuntimeError("boom")
        return float(batch), [float(batch), 0.0]

    def lr(self) -> float:
        return 0.01 * len(self.batches)


class Recorder(HookBase):
    """Appends (name, event, trainer.iter, trainer.status) to a shared log."""

    def __init__(self, name: str, log: list):
        self.name, self.log = name, log

    def _add(self, event, trainer):
        self.log.append((self.name, event, trainer.iter, trainer.status))

    def before_train(self, trainer):
        self._add("before_train", trainer)

    def before_step(self, trainer):
        self._add("before_step", trainer)

    def after_step(self, trainer):
        self._add("after_step", trainer)

    def after_train(self, trainer):
        self._add("after_train", trainer)


def run_info(total: int) -> RunInfo:
    return RunInfo(out=Path("/nonexistent/run"), model_name="fake", device="cpu", num_classes=2,
                   class_names=["a", "b"], total=total, batch_size=1, train_samples=4,
                   val_samples=2)


def make(total=3, start=0, hooks=(), step=None, log=None, batches=None):
    """A Trainer on a fake step whose loader yields 1.0, 2.0, ... (or ``batches``); returns
    (trainer, log, loader calls, reseed calls)."""
    log = [] if log is None else log
    loaders, seeds = [], []
    state = new_state(seed=7)
    state["iter"] = start

    def loader():
        loaders.append(1)
        return iter(batches if batches is not None else [float(i) for i in range(1, 100)])
    trainer = Trainer(step or FakeStep(log), loader, state, run_info(total),
                      list(hooks), seeds.append)
    return trainer, log, loaders, seeds


def events(log, name="A"):
    return [e[1:3] for e in log if e[0] == name]


def test_hooks_run_in_registration_order_around_each_step():
    log: list = []
    trainer, _, _, _ = make(total=2, hooks=[Recorder("A", log), Recorder("B", log)], log=log)
    trainer.train()
    assert [e[:3] if e[0] != "step" else e for e in log] == [
        ("A", "before_train", 0), ("B", "before_train", 0),
        ("A", "before_step", 1), ("B", "before_step", 1), ("step", 1),
        ("A", "after_step", 1), ("B", "after_step", 1),
        ("A", "before_step", 2), ("B", "before_step", 2), ("step", 2),
        ("A", "after_step", 2), ("B", "after_step", 2),
        ("A", "after_train", 2), ("B", "after_train", 2)]
    assert log[-1][3] == "done" and trainer.status == "done"


def test_iterations_one_to_total_each_with_its_batch_seed_and_record():
    step_log: list = []
    step = FakeStep(step_log)
    trainer, _, loaders, seeds = make(total=3, step=step)
    assert trainer.train() is trainer.report
    assert step.batches == [1.0, 2.0, 3.0] and seeds == [1, 2, 3] and loaders == [1]
    assert trainer.iter == trainer.state["iter"] == 3 and trainer.start_iter == 0
    last = trainer.last
    assert isinstance(last, StepRecord)
    assert (last.loss, last.terms, last.lr) == (3.0, [3.0, 0.0], 0.03)
    assert last.reader_s >= 0 and last.step_s >= 0


def test_a_resumed_run_continues_after_the_checkpointed_iteration():
    log: list = []
    trainer, _, loaders, seeds = make(total=5, start=3, hooks=[Recorder("A", log)], log=log)
    trainer.train()
    assert trainer.start_iter == 3 and trainer.state["iter"] == 5
    assert seeds == [4, 5] and loaders == [1]
    assert [i for e, i in events(log) if e == "before_step"] == [4, 5]
    assert [e for e in log if e[0] == "step"] == [("step", 1), ("step", 2)]


def test_a_finished_run_starts_no_loader_and_no_step_but_still_runs_the_train_hooks():
    log: list = []
    trainer, _, loaders, seeds = make(total=4, start=4, hooks=[Recorder("A", log)], log=log)
    trainer.train()
    assert loaders == [] and seeds == []
    assert events(log) == [("before_train", 4), ("after_train", 4)]
    assert trainer.status == "done"


def test_after_train_runs_when_a_step_fails_and_the_error_propagates():
    log: list = []
    trainer, _, _, _ = make(total=5, hooks=[Recorder("A", log), Recorder("B", log)],
                            step=FakeStep(log, fail_at=2), log=log)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train()
    assert events(log) == [("before_train", 0), ("before_step", 1), ("after_step", 1),
                           ("before_step", 2), ("after_train", 2)]
    assert [e[3] for e in log if e[1:2] == ("after_train",)] == ["failed", "failed"]
    assert trainer.state["iter"] == 1  # the checkpointed state never claims the failed step


def test_after_train_runs_on_every_hook_when_a_before_train_hook_fails():
    log: list = []

    class Broken(HookBase):
        def before_train(self, trainer):
            raise ValueError("bad hook")
    trainer, _, loaders, _ = make(hooks=[Recorder("A", log), Broken(), Recorder("B", log)],
                                  log=log)
    with pytest.raises(ValueError, match="bad hook"):
        trainer.train()
    assert events(log, "A") == [("before_train", 0), ("after_train", 0)]
    assert events(log, "B") == [("after_train", 0)]
    assert loaders == [] and trainer.status == "failed"


def test_keyboard_interrupt_in_a_step_is_a_failure_that_still_runs_after_train():
    log: list = []

    def step(batch):
        raise KeyboardInterrupt
    step.lr = lambda: 0.0
    trainer, _, _, _ = make(hooks=[Recorder("A", log)], step=step, log=log)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert log[-1][1:] == ("after_train", 1, "failed")


@pytest.mark.parametrize("loss", [math.nan, math.inf, -math.inf])
def test_a_non_finite_loss_stops_training_with_a_config_error(loss):
    log: list = []
    trainer, _, _, _ = make(total=5, hooks=[Recorder("A", log)], log=log, batches=[1.0, loss, 3.0])
    with pytest.raises(ConfigError, match="iteration 2") as exc:
        trainer.train()
    assert "learning_rate" in exc.value.solution
    assert trainer.state["iter"] == 1 and log[-1][1:] == ("after_train", 2, "failed")


class StopAt(HookBase):
    """Asks the loop to stop after iteration ``at`` (what the Ctrl-C hook does) and leaves a
    report, as the final hooks do."""

    def __init__(self, at: int):
        self.at = at

    def after_step(self, trainer):
        if trainer.iter == self.at:
            trainer.interrupted = True

    def after_train(self, trainer):
        trainer.report = {"status": trainer.status, "iter": trainer.iter}


def test_an_interrupted_run_stops_runs_after_train_and_raises_interrupted():
    log: list = []
    trainer, _, _, seeds = make(total=10, hooks=[StopAt(2), Recorder("A", log)], log=log)
    with pytest.raises(Interrupted) as exc:
        trainer.train()
    err = exc.value
    assert isinstance(err, SegxError) and err.exit_code == 130
    assert seeds == [1, 2] and trainer.state["iter"] == 2
    assert log[-1] == ("A", "after_train", 2, "interrupted")
    assert "iteration 2" in str(err) and str(Path("/nonexistent/run") / "iter_2") in str(err)
    assert "Train.resume_path=auto" in err.solution
    assert err.report == {"status": "interrupted", "iter": 2}


def test_an_interrupt_on_the_last_iteration_is_still_an_interruption():
    trainer, _, _, _ = make(total=2, hooks=[StopAt(2)])
    with pytest.raises(Interrupted):
        trainer.train()
    assert trainer.status == "interrupted"


def test_events_are_reset_before_every_iteration():
    seen = []

    class Events(HookBase):
        def before_step(self, trainer):
            seen.append(dict(trainer.events))

        def after_step(self, trainer):
            trainer.events["eval"] = {"mIoU": trainer.iter / 10}
    make(total=3, hooks=[Events()])[0].train()
    assert seen == [{}, {}, {}]


def test_hook_finds_the_first_hook_of_a_class():
    first, second = StopAt(5), StopAt(6)
    trainer, _, _, _ = make(hooks=[HookBase(), first, second])
    assert trainer.hook(StopAt) is first and trainer.hook(Recorder) is None
