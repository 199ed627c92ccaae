"""One table from ``Global.mode`` to its handler, used by the CLI and the Python API.

Every run writes ``<Global.output>/<mode>_result.json``: ``{"done_flag": true, ...}`` on success
and ``{"done_flag": false, "err_type": ..., "err_msg": ...}`` on failure (the reference format).
A failure never replaces a result: when ``<mode>_result.json`` holds anything but an earlier
failure record (a finished or interrupted run's result), the failure record is written to
``<mode>_result.failed.json`` instead and the result stays as it was. A result identical to the
one on disk is not rewritten.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Callable, Iterable

from segx.config import Config, schema
from segx.utils.errors import ConfigError, SegxError
from segx.utils.fileio import write_json
from segx.zoo.registry import load_model_config
from segx.runs.folder import RunFolder

# mode -> "module:function"; handlers take a Config and return the result dict
MODES: dict[str, str] = {
    "check_dataset": "segx.modules.check_dataset:run",
    "train": "segx.modules.train:run",
    "evaluate": "segx.modules.evaluate:run",
    "export": "segx.modules.export:run",
    "predict": "segx.modules.predict:run",
}
assert list(MODES) == schema()["Global.mode"].choices, "schema and MODES must agree"


def _handler(mode: str) -> Callable[[Config], dict]:
    if mode not in MODES:
        raise ConfigError(f"Global.mode='{mode}' is not a mode.",
                          solution=f"use one of {', '.join(MODES)}.")
    module, func = MODES[mode].split(":")
    return getattr(importlib.import_module(module), func)


def run(cfg: Config) -> dict[str, Any]:
    """Run ``cfg``'s mode and write its result JSON; returns the result dict.

    Raises:
        SegxError: a user mistake (the failure JSON is written first).
    """
    mode = cfg.get("Global.mode")
    output = Path(cfg.get("Global.output"))
    if output.exists() and not output.is_dir():
        raise ConfigError(f"Global.output='{output}' is a file, not a folder.",
                          solution="pass a folder for the outputs (it is created if missing).")
    folder = RunFolder(output)
    result_path = folder.result(mode)
    try:
        result = {"done_flag": True, **(_handler(mode)(cfg) or {})}
    except SegxError as exc:
        if exc.report is not None:
            _write_result(result_path, {"done_flag": True, **exc.report})
        else:
            _write_failure(folder, mode, exc)
        raise
    except Exception as exc:
        _write_failure(folder, mode, exc)
        raise
    _write_result(result_path, result)
    return result


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_result(path: Path, result: dict) -> None:
    """Write ``result`` unless the file already holds exactly it."""
    if not path.is_file() or _read_json(path) != result:
        write_json(path, result)


def _write_failure(folder: RunFolder, mode: str, exc: BaseException) -> None:
    """The reference failure record, beside a result it must not replace."""
    path = folder.result(mode)
    old = _read_json(path) if path.exists() else None
    if path.exists() and not (isinstance(old, dict) and old.get("err_type")):
        path = folder.failed_result(mode)
    write_json(path, {"done_flag": False, "err_type": type(exc).__name__, "err_msg": str(exc)})


def run_mode(model: str, mode: str, overrides: Iterable[str] = (), **options: Any) -> dict:
    """Python API: run one mode like the CLI does.

    Args:
        model: a model name or YAML path.
        mode: one of :data:`MODES`.
        overrides: ``Dotted.key=value`` strings.
        **options: more overrides as ``Section__key=value`` keyword arguments
            (``Global__output="out"``).

    Example:
        >>> run_mode("PP-LiteSeg-T", "check_dataset", ["Global.dataset_dir=data"])
    """
    extra = [f"{k.replace('__', '.')}={v}" for k, v in options.items()]
    return run(load_model_config(model, [*overrides, *extra, f"Global.mode={mode}"]))
