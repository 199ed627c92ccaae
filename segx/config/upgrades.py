"""Config versions: the one table of steps (:data:`UPGRADES`) that brings a config written by
an earlier segx to the current ``_version_``, and the filling of keys added since."""
from __future__ import annotations

import copy
from typing import Any, Callable

from segx.config.schemas import Schema, model_schema
from segx.utils.errors import ConfigError


# --------------------------------------------------------------------------- versions
def _move(data: dict, old: str, new: str | None, convert: Callable[[Any], Any] | None = None
          ) -> None:
    """Move the value at dotted ``old`` to ``new`` (None: drop it), converting it on the way."""
    *parents, leaf = old.split(".")
    node = data
    for part in parents:
        node = node.get(part)
        if not isinstance(node, dict):
            return
    if leaf not in node:
        return
    value = node.pop(leaf)
    if new is None:
        return
    *parents, leaf = new.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = convert(value) if convert else value


def _upgrade_1(data: dict) -> None:
    """1 -> 2: official weights by name, deployment engines."""
    _move(data, "Train.pretrain_weight_path", "Train.pretrained", lambda v: v or "none")
    _move(data, "Meta.pretrained_url", None)
    upgrade_run_mode(data.get("Predict"))


def upgrade_run_mode(section: Any) -> None:
    """1 -> 2 of a section holding ``run_mode`` (a model's ``Predict``, a pipeline's
    ``Pipeline``): auto|paddle|mkldnn became ``engine`` (auto, else paddle) + ``onednn`` (paddle
    meant the plain CPU kernels, mkldnn oneDNN; any other value is left to validation's
    defaults). One step for both tables, so model and pipeline configs cannot drift apart."""
    if not isinstance(section, dict) or "run_mode" not in section:
        return
    mode = section.pop("run_mode")
    section["engine"] = "auto" if mode == "auto" else "paddle"
    if mode in ("paddle", "mkldnn"):
        section["onednn"] = mode == "mkldnn"


def _upgrade_2(data: dict) -> None:
    """2 -> 3: only new keys (CheckDataset.convert.allow_outside_image_paths, max_pixels, the
    leakage search and report keys, Evaluate.report_worst and split), given their defaults by
    :func:`upgrade`."""


UPGRADES: dict[int, Callable[[dict], None]] = {1: _upgrade_1, 2: _upgrade_2}
"""version -> the step that turns a config written at that version into the next version.

Version 1 is every config written before versions were recorded (segx up to commit fc3912f).
Keys added by a version need no step: loading fills missing keys of older configs with their
defaults. Any change to the schema's keys bumps ``_version_`` in schema.yaml (tests check it).
"""


def upgrade(data: dict, version: int, source: str, schema: Schema | None = None,
            upgrades: dict[int, Callable[[dict], None]] | None = None) -> dict:
    """Bring ``data`` (written at ``version``) to the schema's current version (model configs
    by default): apply each version's step, then give keys added since their defaults."""
    schema = schema or model_schema()
    upgrades = UPGRADES if upgrades is None else upgrades
    current = schema.version or 1
    if version > current:
        raise ConfigError(f"{source} was written by a newer segx (config version {version}; this "
                          f"segx reads up to {current}).", solution="upgrade segx.")
    for v in range(version, current):
        upgrades[v](data)
    if version < current:
        _fill_missing(data, schema)
    return data


def _fill_missing(data: dict, schema: Schema) -> None:
    """Give every declared key that ``data`` lacks its default (parents come first)."""
    for spec in schema:
        *parents, leaf = spec.path.split(".")
        node = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf not in node:
            node[leaf] = copy.deepcopy(spec.default)
