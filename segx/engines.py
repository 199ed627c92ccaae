"""Inference engines for exported model folders, behind one interface.

An engine is a callable ``N x 3 x H x W float32 -> N x H x W int32 class ids`` (an export with
``output_op: argmax``) or ``N x C x H x W`` scores; :func:`open_engine` picks and builds it from
the folder's ``inference.yml``. Every engine gets the same pre- and post-processing, batching
and test-time augmentation from :class:`segx.model.SegModel`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from segx.config import parse_yaml
from segx.errors import ConfigError, WeightsError

ENGINES = ("auto", "paddle")
Engine = Callable[[np.ndarray], np.ndarray]


def read_deploy_info(folder: Path) -> dict:
    """A model folder's ``inference.yml`` (``Deploy`` and ``Global`` sections)."""
    path = folder / "inference.yml"
    info = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    if not isinstance(info, dict) or not isinstance(info.get("Deploy"), dict):
        raise WeightsError(f"{path} has no Deploy section.",
                           solution="re-export the model with segx (Global.mode=export).")
    return info


def _paddle(folder: Path, deploy: dict, device: str, threads: int | None,
            onednn: bool | None) -> tuple[Engine, str]:
    from segx.backend.engine import Engine as PaddleEngine
    files = (folder / deploy.get("model", "inference.pdmodel"),
             folder / deploy.get("params", "inference.pdiparams"))
    for f in files:
        if not f.is_file():
            raise WeightsError(f"'{f}' is missing.", solution="re-export the model.")
    if device.startswith("gpu"):
        return PaddleEngine(*files, device, threads, mkldnn=False), "paddle-gpu"
    # oneDNN resizing only where segx export found it exact for this model
    resize = deploy.get("onednn_resize") is True
    if onednn is not None:
        name = "paddle-onednn" if onednn else "paddle-cpu"
        return PaddleEngine(*files, device, threads, mkldnn=onednn, onednn_resize=resize), name
    # oneDNN by default (the faster here once resizing runs in oneDNN too, docs/benchmarks.md);
    # the plain kernels where oneDNN cannot start
    try:
        engine = PaddleEngine(*files, device, threads, mkldnn=True, onednn_resize=resize)
        shape = [v if isinstance(v, int) and v > 0 else d for v, d in
                 zip(deploy.get("input_shape") or [None] * 4, (1, 3, 64, 64))]
        engine(np.zeros(shape, np.float32))
        return engine, "paddle-onednn"
    except Exception:  # noqa: BLE001 - any oneDNN start-up failure means: use plain CPU
        return PaddleEngine(*files, device, threads, mkldnn=False), "paddle-cpu"


def open_engine(folder: Path, info: dict, engine: str = "auto", device: str = "cpu",
                threads: int | None = None, onednn: bool | None = None) -> tuple[Engine, str]:
    """Build the engine for an exported folder; returns (engine, the name of what runs).

    Args:
        folder: the model folder.
        info: its ``inference.yml``.
        engine: ``auto`` or ``paddle``.
        device: ``cpu`` or ``gpu:N`` (already resolved).
        threads: CPU threads (None: all cores).
        onednn: Paddle on CPU: oneDNN kernels (None: oneDNN, plain kernels if it cannot start).
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine='{engine}' is not one of {', '.join(ENGINES)}.",
                          solution="use auto (the fastest exact engine here) or paddle.")
    return _paddle(folder, info["Deploy"], device, threads, onednn)
