"""Typed errors for bad user input.

A :class:`SegxError` is always the user's to fix: the CLI prints it on one line with its fix,
exits with code 2 and shows no traceback (unless ``Global.debug`` is true). Any other exception
is a bug in segx and exits with code 1.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class SegxError(Exception):
    """An error caused by user input (a config key, a file, a dataset), with a fix hint.

    Args:
        message: what is wrong, naming the key or file.
        solution: how to fix it, or None.
        report: a complete result for ``<mode>_result.json`` (a check that ran to the end and
            found problems); None writes the reference failure form.
    """

    exit_code = 2

    def __init__(self, message: str, *, solution: str | None = None, report: dict | None = None):
        super().__init__(message)
        self.message = message
        self.solution = solution
        self.report = report

    def __str__(self) -> str:
        if self.solution:
            return f"{self.message} Fix: {self.solution}"
        return self.message


class ConfigError(SegxError):
    """A bad config file, key, value or mode."""


class UnknownModelError(ConfigError):
    """A model name that is neither registered nor a YAML path."""


class DatasetError(SegxError):
    """A dataset that cannot be read or used."""


class WeightsError(SegxError):
    """Missing, unreachable or mismatching weights."""


class BackendError(SegxError):
    """The deep-learning backend (paddle, paddleseg) is missing or unusable."""


class NotExportableError(SegxError):
    """A model whose forward pass cannot become a static graph (``Meta.no_static_export``)."""


def did_you_mean(word: str, options: Iterable[str], cutoff: float = 0.6) -> str:
    """`` Did you mean a, b?`` for the closest options, or an empty string."""
    close = difflib.get_close_matches(word, sorted(options), n=3, cutoff=cutoff)
    return f" Did you mean {', '.join(close)}?" if close else ""
