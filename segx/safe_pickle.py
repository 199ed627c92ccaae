"""Reading ``.pdparams``/``.pdopt``/``.pdstates`` files without running their code.

Paddle saves weights with :mod:`pickle`, and unpickling calls whatever a file names: a planted
``model.pdparams`` can run any command. segx reads them with an unpickler that admits only numpy
arrays, numpy scalars and dtypes, and plain containers (dict, list, tuple, str, numbers); anything
else is refused before it is called. Every file paddle 2.x writes for a state dict, optimiser
state or segx's own training states is made of exactly these, including paddle's split form for
arrays of more than 2^30 bytes. Nothing here imports paddle.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from segx.errors import WeightsError

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how protocol-2 pickles (older paddle) store bytes
}
_BIG = "UnpackBigParamInfor@@"  # paddle's index of arrays saved in slices
_NAMES = "StructuredToParameterName@@"  # paddle's structured-name table (not weights)


class UnsafePickleError(WeightsError):
    """A weights file that names code to run (or is not a weights pickle at all)."""


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise UnsafePickleError(
                f"'{self.source}' is not a plain weights file: it asks to run {module}.{name} "
                "when loaded, so segx refused it (a planted or foreign file).",
                solution="use weights written by segx, PaddleSeg or PaddleX; if you trust this "
                         "file, re-save its arrays as a plain state dict.")
        return super().find_class(module, name)


def _check(obj: Any, source: str, depth: int = 0) -> None:
    """Only numbers, strings, arrays of numbers and containers of them."""
    if depth > 50:
        raise UnsafePickleError(f"'{source}' nests containers more than 50 levels deep.",
                                solution="use a weights file written by paddle.save.")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check(k, source, depth + 1)
            _check(v, source, depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            _check(v, source, depth + 1)
    elif isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        raise UnsafePickleError(f"'{source}' holds an array of Python objects, not numbers.",
                                solution="use a weights file written by paddle.save.")


def _join_slices(state: dict) -> dict:
    """Undo paddle's slicing of arrays over 2^30 bytes (``UnpackBigParamInfor@@``)."""
    info = state.pop(_BIG, None)
    if not isinstance(info, dict):
        return state
    for key, spec in info.items():
        parts = [state.pop(p) for p in spec["slices"]]
        state[key] = np.concatenate(parts).reshape(spec["OriginShape"])
    return state


def loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` allowing only arrays and plain containers (see the module docstring)."""
    try:
        obj = _Unpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure means: not a weights file
        raise WeightsError(f"'{source}' is not a readable weights file ({type(exc).__name__}: "
                           f"{exc}).", solution="re-download or re-export it; .pdparams files "
                                                "are written by paddle.save.") from None
    _check(obj, source)
    if isinstance(obj, dict):
        obj = _join_slices(dict(obj))
        obj.pop(_NAMES, None)
    return obj


def load(path: str | Path) -> Any:
    """Read a ``.pdparams``/``.pdopt``/``.pdstates`` file safely; arrays stay numpy arrays."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"cannot read weights file '{path}' ({exc.strerror}).",
                           solution="check the path.") from None
    return loads(data, str(path))


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A weights file that must be a state dict: ``{name: array}``."""
    obj = load(path)
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()):
        raise WeightsError(f"'{path}' is not a state dict of named arrays.",
                           solution="give a model or backbone .pdparams file.")
    return obj
