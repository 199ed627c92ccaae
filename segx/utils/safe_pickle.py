"""Reading ``.pdparams``/``.pdopt``/``.pdstates`` files without running their code.

Paddle saves weights with :mod:`pickle`, and unpickling calls whatever a file names: a planted
``model.pdparams`` can run any command. segx reads them with an unpickler that admits only numpy
arrays, numpy scalars and dtypes of plain numbers or text, and plain containers (dict, list,
tuple, str, numbers); anything else is refused before it is called. Every file paddle 2.x writes
for a state dict, optimiser state or segx's own training states is made of exactly these,
including paddle's split form for arrays of more than 2^30 bytes. Nothing here imports paddle.

Loading is bounded by the file's size, in time and in memory: the unpickler is pickle's own
opcode interpreter (its memo is a dict, so a huge memo index costs nothing), every call it may
make is checked before it runs (arrays only from the exact form numpy writes, ``_codecs.encode``
only for latin-1, dict keys only plain values, so hashing is cheap), and the bytes it
materialises plus the size of the object tree once shared references are expanded may not exceed
``EXPANSION`` times the file's size (plus ``SLACK``): a few hundred bytes that reference one list
from itself thirty levels deep are refused at once instead of growing to 2^30 items.
"""
from __future__ import annotations

import collections
import io
import math
import pickle
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from segx.utils.errors import WeightsError

EXPANSION = 4  # an honest weights file expands to about its own size (arrays are stored once)
SLACK = 1 << 20
MAX_DEPTH = 50
_BIG = "UnpackBigParamInfor@@"  # paddle's index of arrays saved in slices
_NAMES = "StructuredToParameterName@@"  # paddle's structured-name table (not weights)
_DTYPE_NAME = re.compile(r"[<>|=]?[a-zA-Z]\d{0,4}")  # 'f4', '<i8', 'U10': no structures
_REAL_RECONSTRUCT = np.empty(0).__reduce__()[0]
_REAL_SCALAR = np.float32(0).__reduce__()[0]
_KEY_TYPES = (str, bytes, int, float, bool, type(None), np.generic)
_CONTAINERS = (dict, list, tuple, set, frozenset)


class UnsafePickleError(WeightsError):
    """A weights file that names code to run (or is not a weights pickle at all)."""


class _NotWeights(Exception):
    """Raised inside the unpickler; :func:`loads` turns it into a one-line error."""


class _NdarrayName:
    """What ``numpy.ndarray`` names in a pickle: an argument of ``_reconstruct``, never called."""
    __slots__ = ()


_NDARRAY = _NdarrayName()


def _plain_dtype(dtype: Any) -> np.dtype:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or dtype.fields is not None \
            or dtype.subdtype is not None or dtype.kind not in "biufcSU":
        raise _NotWeights(f"it holds the data type {dtype!r}, not plain numbers")
    return dtype


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's own pickles always start an array as ``_reconstruct(ndarray, (0,), b'b')``."""
    if subtype is not _NDARRAY or shape != (0,) or dtype not in (b"b", "b"):
        raise _NotWeights("it builds an array in a form numpy never writes")
    return _REAL_RECONSTRUCT(np.ndarray, (0,), b"b")


def _dtype(name: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(name, str) or not _DTYPE_NAME.fullmatch(name):
        raise _NotWeights(f"it asks for the data type {name!r}, not plain numbers")
    return _plain_dtype(np.dtype(name, align=bool(align), copy=bool(copy)))


def _plain_key(key: Any) -> bool:
    return isinstance(key, _KEY_TYPES) or (
        type(key) is tuple and all(isinstance(k, _KEY_TYPES) for k in key))


def _check_keys(keys) -> None:
    if not all(_plain_key(k) for k in keys):
        raise _NotWeights("it uses a container as a dictionary key or set item")


class _Unpickler(pickle._Unpickler):
    """pickle's opcode interpreter with every call and every growth checked and charged."""

    dispatch: ClassVar[dict] = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, source: str, budget: int):
        super().__init__(file, encoding="latin1")
        self.source, self.budget, self.spent = source, budget, 0
        self.allowed = {
            ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy.core.multiarray", "scalar"): self._scalar,
            ("numpy._core.multiarray", "scalar"): self._scalar,
            ("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _dtype,
            ("collections", "OrderedDict"): self._ordered_dict,
            ("_codecs", "encode"): self._encode,  # how protocol-2 pickles store bytes
        }

    def charge(self, nbytes: int) -> None:
        self.spent += nbytes
        if self.spent > self.budget:
            raise _NotWeights(f"it expands to more than {self.budget} bytes")

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise UnsafePickleError(
                f"'{self.source}' is not a plain weights file: it asks to run {module}.{name} "
                "when loaded, so segx refused it (a planted or foreign file).",
                solution="use weights written by segx, PaddleSeg or PaddleX; if you trust this "
                         "file, re-save its arrays as a plain state dict.")
        return self.allowed[(module, name)]

    def _encode(self, text: Any, encoding: Any = "utf-8") -> bytes:
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise _NotWeights(f"it asks to encode text as {encoding!r} (only latin1 is used)")
        self.charge(len(text))
        return text.encode("latin1")

    def _scalar(self, dtype: Any, data: Any = None) -> Any:
        dtype = _plain_dtype(dtype)
        if isinstance(data, str):
            data = data.encode("latin1")
        if not isinstance(data, bytes) or len(data) != dtype.itemsize:
            raise _NotWeights("it holds a number whose bytes do not match its type")
        self.charge(len(data))
        return _REAL_SCALAR(dtype, data)

    def _ordered_dict(self, items: Any = ()) -> collections.OrderedDict:
        if not isinstance(items, (list, tuple)) or not all(
                type(p) in (list, tuple) and len(p) == 2 for p in items):
            raise _NotWeights("it builds an ordered dict from something other than pairs")
        _check_keys(p[0] for p in items)
        self.charge(len(items))
        return collections.OrderedDict(items)

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, np.ndarray):
            self.charge(_array_bytes(state))
        elif not isinstance(inst, np.dtype) or not isinstance(state, tuple) or not all(
                isinstance(s, (str, bytes, int, type(None))) for s in state):
            raise _NotWeights(f"it sets the state of a {type(inst).__name__}")
        inst.__setstate__(state)
        if isinstance(inst, np.dtype):
            _plain_dtype(inst)
    dispatch[pickle.BUILD[0]] = load_build

    def load_setitems(self) -> None:
        items = self.pop_mark()
        self._set(self.stack[-1], items)
    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        self._set(self.stack[-1], [key, value])
    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_dict(self) -> None:
        items = self.pop_mark()
        self.append({})
        self._set(self.stack[-1], items)
    dispatch[pickle.DICT[0]] = load_dict

    @staticmethod
    def _set(target: Any, items: list) -> None:
        if not isinstance(target, dict):
            raise _NotWeights(f"it sets items of a {type(target).__name__}")
        _check_keys(items[::2])
        for i in range(0, len(items) - 1, 2):
            target[items[i]] = items[i + 1]

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        _check_keys(items)
        if not isinstance(target, set):
            raise _NotWeights(f"it adds set items to a {type(target).__name__}")
        target.update(items)
    dispatch[pickle.ADDITEMS[0]] = load_additems

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        _check_keys(items)
        self.append(frozenset(items))
    dispatch[pickle.FROZENSET[0]] = load_frozenset

    def load_appends(self) -> None:
        items = self.pop_mark()
        if type(self.stack[-1]) is not list:
            raise _NotWeights(f"it appends to a {type(self.stack[-1]).__name__}")
        self.stack[-1].extend(items)
    dispatch[pickle.APPENDS[0]] = load_appends

    def load_append(self) -> None:
        value = self.stack.pop()
        if type(self.stack[-1]) is not list:
            raise _NotWeights(f"it appends to a {type(self.stack[-1]).__name__}")
        self.stack[-1].append(value)
    dispatch[pickle.APPEND[0]] = load_append


def _array_bytes(state: Any) -> int:
    """The size of the array numpy's ``__setstate__`` would build, checked against its data."""
    if not isinstance(state, tuple) or len(state) not in (4, 5):
        raise _NotWeights("it sets an array's state in a form numpy never writes")
    shape, dtype, _, raw = state[-4:]
    if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
        raise _NotWeights(f"it gives an array the shape {shape!r}")
    need = math.prod(shape) * _plain_dtype(dtype).itemsize
    if not isinstance(raw, (bytes, str)) or len(raw) != need:
        raise _NotWeights(f"an array of shape {shape} needs {need} bytes but the file holds "
                          f"{len(raw) if isinstance(raw, (bytes, str)) else 'none'}")
    return need


class _Measure:
    """The size of the object tree with shared references expanded, computed once per object
    (a shared list costs its size at every place it appears, but is walked once)."""

    def __init__(self, budget: int):
        self.budget, self.known, self.active = budget, {}, set()

    def size(self, obj: Any, depth: int = 0) -> tuple[int, int]:
        """(expanded size, nesting height) of ``obj``."""
        key = id(obj)
        if key in self.known:
            cost, height = self.known[key]
        elif isinstance(obj, _CONTAINERS):
            if key in self.active:
                raise _NotWeights("a container holds itself")
            self.active.add(key)
            cost, height = self._container(obj, depth)
            self.active.discard(key)
            self.known[key] = cost, height
        else:
            cost, height = _leaf_size(obj), 0
        if depth + height > MAX_DEPTH:
            raise _NotWeights(f"it nests containers more than {MAX_DEPTH} levels deep")
        if cost > self.budget:
            raise _NotWeights(f"its shared references expand to more than {self.budget} items "
                              "and bytes")
        return cost, height

    def _container(self, obj: Any, depth: int) -> tuple[int, int]:
        if depth >= MAX_DEPTH:
            raise _NotWeights(f"it nests containers more than {MAX_DEPTH} levels deep")
        children = [x for kv in obj.items() for x in kv] if isinstance(obj, dict) else obj
        cost, height = 1, 0
        for child in children:
            c, h = self.size(child, depth + 1)
            cost, height = cost + c, max(height, h + 1)
            if cost > self.budget:
                raise _NotWeights(f"its shared references expand to more than {self.budget} "
                                  "items and bytes")
        return cost, height


def _leaf_size(obj: Any) -> int:
    if isinstance(obj, (str, bytes, bytearray)):
        return 1 + len(obj)
    if isinstance(obj, int):
        return 1 + obj.bit_length() // 8
    if obj is None or isinstance(obj, (float, complex)):
        return 1
    if isinstance(obj, (np.ndarray, np.generic)):
        return 1 + _plain_dtype(obj.dtype).itemsize * obj.size
    if isinstance(obj, np.dtype):
        return 1
    raise _NotWeights(f"it holds a {type(obj).__name__}, not numbers")


def _join_slices(state: dict) -> dict:
    """Undo paddle's slicing of arrays over 2^30 bytes (``UnpackBigParamInfor@@``): each entry
    names its 1-D slices and the original shape, which must hold exactly the slices' data."""
    info = state.pop(_BIG, None)
    if info is None:
        return state
    if not isinstance(info, dict):
        raise _NotWeights(f"its {_BIG} is not a table")
    for key, spec in info.items():
        slices = spec.get("slices") if isinstance(spec, dict) else None
        shape = spec.get("OriginShape") if isinstance(spec, dict) else None
        if not isinstance(slices, (list, tuple)) or not isinstance(shape, (list, tuple)) or \
                not all(type(n) is int and n >= 0 for n in shape) or \
                len(set(map(str, slices))) != len(slices) or \
                not all(isinstance(state.get(p), np.ndarray) for p in slices):
            raise _NotWeights(f"its {_BIG} entry '{key}' is malformed")
        parts = [state.pop(p).reshape(-1) for p in slices]
        if not parts or sum(p.size for p in parts) != math.prod(shape):
            raise _NotWeights(f"its {_BIG} entry '{key}' claims the shape {tuple(shape)}, "
                              "which its slices do not fill")
        state[key] = np.concatenate(parts).reshape(shape)
    return state


def _refusal(source: str, exc: BaseException) -> WeightsError:
    if isinstance(exc, _NotWeights):
        return UnsafePickleError(f"'{source}' is not a plain weights file: {exc}, so segx "
                                 "refused it.", solution="use a weights file written by "
                                                         "paddle.save.")
    first = (str(exc).splitlines() or [""])[0][:200]
    return WeightsError(f"'{source}' is not a readable weights file ({type(exc).__name__}: "
                        f"{first}).", solution="re-download or re-export it; .pdparams files "
                                               "are written by paddle.save.")


def loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` allowing only arrays and plain containers (see the module docstring)."""
    budget = EXPANSION * len(data) + SLACK
    try:
        obj = _Unpickler(io.BytesIO(data), source, budget).load()
        _Measure(budget).size(obj)
        if isinstance(obj, dict):
            obj = _join_slices(dict(obj))
            obj.pop(_NAMES, None)
    except UnsafePickleError:
        raise
    except (Exception, RecursionError) as exc:  # noqa: BLE001 - any failure: not weights
        raise _refusal(source, exc) from None
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
