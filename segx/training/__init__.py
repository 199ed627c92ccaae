"""Training: :func:`train` runs a config here or in data-parallel processes; the loop is a
:class:`~segx.training.trainer.Trainer` of hooks assembled by
:func:`~segx.training.build.build_trainer`."""
from segx.training.build import build_trainer
from segx.training.launch import train
from segx.training.trainer import HookBase, Interrupted, Trainer

__all__ = ["HookBase", "Interrupted", "Trainer", "build_trainer", "train"]
