"""Loading a config: ``_base_`` chains, upgrades, strict typed ``-o`` overrides, and the
:class:`Config` object every mode reads."""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Iterable

from segx.config.schemas import KeySpec, Schema, model_schema
from segx.config.upgrades import upgrade
from segx.config.yaml_io import dump_yaml, parse_yaml, read_yaml
from segx.utils.errors import ConfigError, did_you_mean


# --------------------------------------------------------------------------- loading
def merge_configs(base: dict, over: dict) -> dict:
    """Deep-merge: dicts merge key by key, everything else replaces; ``_replace_: true`` in a
    dict replaces the base dict wholesale."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and value.get("_replace_"):
            out[key] = {k: copy.deepcopy(v) for k, v in value.items() if k != "_replace_"}
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_configs(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


MAX_BASE_FILES = 64
"""The most files one config may read through its ``_base_`` chains (repeats counted)."""


def read_config_file(path: Path, seen: tuple[Path, ...] = (), read: list | None = None) -> dict:
    """A YAML config with its ``_base_`` chain merged in (``_version_`` kept, if any)."""
    if path in seen:
        raise ConfigError(f"{path}: '_base_' inheritance loops back to itself.",
                          solution="remove the circular _base_ reference.")
    read = [0] if read is None else read
    read[0] += 1
    if read[0] > MAX_BASE_FILES:
        raise ConfigError(f"{seen[0] if seen else path}: its '_base_' chains read more than "
                          f"{MAX_BASE_FILES} files.", solution="inherit from fewer files.")
    data = read_yaml(path, "config") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}.")
    bases = data.pop("_base_", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(f"{path}: _base_={bases!r} is not a file name or a list of them.",
                          solution="write _base_: other.yaml (relative to this file).")
    merged: dict = {}
    for base in bases:
        merged = merge_configs(merged, read_config_file((path.parent / base).resolve(),
                                                        seen + (path,), read))
    return merge_configs(merged, data)


# --------------------------------------------------------------------------- typing values
_PY_TYPES = {"int": int, "float": (int, float), "bool": bool, "str": str, "list": list,
             "dict": dict}


def _type_ok(value: Any, spec: KeySpec) -> bool:
    if value is None:
        return spec.nullable
    for base in spec.base_types:
        if base == "any":
            return True
        if base == "choice":
            if value in spec.choices:
                return True
            continue
        if base in ("int", "float") and isinstance(value, bool):
            continue
        if isinstance(value, _PY_TYPES[base]):
            return True
    return False


def coerce(raw: str, spec: KeySpec | None, key: str) -> Any:
    """Type one ``-o`` value: YAML 1.2 scalars and flow lists, steered by the key's type.

    A key typed ``str`` keeps the text as written (``Global.output=08`` stays ``"08"``); a float
    key accepts ints; an int key accepts a float with an integral value (``1e5``).
    """
    parsed = parse_yaml(raw, f"-o {_short(key)}") if raw.strip() else ""
    if spec is None:
        return parsed
    if isinstance(parsed, float) and "int" in spec.base_types and parsed.is_integer():
        parsed = int(parsed)
    if isinstance(parsed, int) and not isinstance(parsed, bool) and "float" in spec.base_types \
            and "int" not in spec.base_types:
        parsed = float(parsed)
    if _type_ok(parsed, spec):
        return parsed
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    if "str" in spec.base_types or (spec.choices and text in spec.choices):
        return text
    raise ConfigError(f"-o {key}={_short(raw)}: expected {spec.describe()}, got "
                      f"{_short(repr(parsed))}.",
                      solution=f"give {key} a value of that type ({spec.doc}).")


# --------------------------------------------------------------------------- the config object
_MISSING = object()  # get(): no default given
_ABSENT = object()  # validate(): the key is not there


class Config:
    """A merged, validated config: nested dicts with strict dotted access and overrides.

    Example:
        >>> cfg = load_model_config("PP-LiteSeg-T", ["Train.batch_size=4"])  # segx.zoo.registry
        >>> cfg.get("Train.batch_size")
        4
    """

    def __init__(self, data: dict, source: str, schema: Schema | None = None):
        self.data = data
        self.source = source
        self.schema = schema or model_schema()

    def __getitem__(self, section: str) -> dict:
        return self.data[section]

    def get(self, dotted: str, default: Any = _MISSING) -> Any:
        """The value at ``dotted`` (``Train.batch_size``, ``Train.transforms.0.type``).

        A path that does not exist raises a ConfigError with the closest paths, unless a
        ``default`` is given (for optional keys inside free-form values such as ``Arch``).
        """
        node: Any = self.data
        for part in _split_key(dotted):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif default is not _MISSING:
                return default
            else:
                raise ConfigError(f"{self.source}: no config key '{dotted}'."
                                  + _suggest(dotted, self),
                                  solution="see --print-config or docs/config.md for the keys.")
        return node

    @property
    def model_name(self) -> str:
        return self.data["Global"]["model"]

    def to_yaml(self) -> str:
        """The config as YAML, its schema version first (what every saved config holds)."""
        version = {"_version_": self.schema.version} if self.schema.version else {}
        return dump_yaml({**version, **self.data})

    def override(self, option: str) -> None:
        """Apply one ``Dotted.key=value``; split on the first ``=`` only."""
        key, sep, raw = option.partition("=")
        key = key.strip()
        if len(key) > 200:
            raise ConfigError(f"-o {_short(key)}: a key of {len(key):,} characters.",
                              solution="give a dotted key such as Train.batch_size.")
        if not sep or not key:
            raise ConfigError(f"-o '{_short(option)}': expected Dotted.key=value.",
                              solution="write for example -o Train.batch_size=4.")
        parts = _split_key(key)
        node: Any = self.data
        free = False
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                node = self._list_step(node, parts, i, key, raw)
                if last:
                    return
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"-o {key}: '{'.'.join(parts[:i])}' is a value, not a section.",
                                  solution="override the value itself.")
            here = ".".join(parts[: i + 1])
            spec = None if free else self.schema.specs.get(here)
            if part not in node and not free:
                raise ConfigError(f"-o {key}: unknown key '{here}'." + _suggest(here, self),
                                  solution="see --print-config or docs/config.md for valid keys.")
            if spec is not None and not spec.is_section and spec.free_form:
                free = True
            if last:
                node[part] = coerce(raw, spec if spec and not spec.is_section else None, key)
                return
            node = node.setdefault(part, {}) if free and part not in node else node[part]

    @staticmethod
    def _list_step(node: list, parts: list[str], i: int, key: str, raw: str) -> Any:
        """One list index of an override path: set the item (last part) or step into it."""
        part = parts[i]
        if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
            raise ConfigError(f"-o {key}: '{part}' is not an index of the {len(node)}-item "
                              f"list {'.'.join(parts[:i])}.",
                              solution=f"use an index from 0 to {len(node) - 1}.")
        if i == len(parts) - 1:
            node[int(part)] = coerce(raw, None, key)
            return None
        return node[int(part)]

    def set(self, dotted: str, value: Any, where: str = "") -> None:
        """Set a declared key to a Python value (the Python API's overrides), type-checked."""
        spec = self.schema.specs.get(dotted)
        if spec is None or spec.is_section:
            raise ConfigError(f"{where or self.source}: unknown option '{dotted}'."
                              + _suggest(dotted, self),
                              solution="see docs/config.md for the keys.")
        if not _type_ok(value, spec):
            raise ConfigError(f"{where or self.source}: {dotted}={value!r} is not "
                              f"{spec.describe()}.", solution=f"give {spec.describe()} ({spec.doc}).")
        *parents, leaf = _split_key(dotted)
        node = self.data
        for part in parents:
            node = node[part]
        node[leaf] = value

    def validate(self) -> None:
        """Check every declared key's type and reject undeclared keys."""
        for path, spec in self.schema.specs.items():
            value = self.get(path, _ABSENT)
            if value is _ABSENT:
                raise ConfigError(f"{self.source}: missing key '{path}'.",
                                  solution="do not delete schema keys; set them to null instead.")
            if not spec.is_section and not _type_ok(value, spec):
                raise ConfigError(f"{self.source}: {path}={value!r} is not {spec.describe()}.",
                                  solution=f"set {path} to {spec.describe()} ({spec.doc}).")
        for path in _walk_keys(self.data, self.schema.specs):
            raise ConfigError(f"{self.source}: unknown key '{path}'." + _suggest(path, self),
                              solution="remove it or fix its spelling.")


def _split_key(key: str) -> list[str]:
    """``Train.transforms[0].size`` and ``Train.transforms.0.size`` both give 4 parts."""
    return [p for p in re.split(r"\.|\[(\d+)\]", key) if p]


def _walk_keys(data: dict, specs: dict[str, KeySpec], prefix: str = "") -> Iterable[str]:
    """Yield the dotted keys in ``data`` that the schema does not declare."""
    for key, value in data.items():
        path = f"{prefix}{key}"
        spec = specs.get(path)
        if spec is None:
            yield path
        elif spec.is_section and isinstance(value, dict):
            yield from _walk_keys(value, specs, path + ".")


def _short(text: str, width: int = 80) -> str:
    """``text`` cut to ``width`` characters for a one-line message."""
    return text if len(text) <= width else text[:width - 3] + "..."


def _suggest(key: str, cfg: Config) -> str:
    return did_you_mean(key, (set(cfg.schema.specs) | set(_all_paths(cfg.data))) - {key})


def _all_paths(data: Any, prefix: str = "") -> Iterable[str]:
    if isinstance(data, dict):
        for k, v in data.items():
            yield f"{prefix}{k}"
            yield from _all_paths(v, f"{prefix}{k}.")


def load_config(path: str | Path, overrides: Iterable[str] = (), *,
                model_name: str | None = None) -> Config:
    """Load a model config file, upgrade it to the current version, apply overrides, validate.

    Args:
        path: a YAML file (a model YAML, a user YAML with ``_base_``, or a run's config.yaml).
            Model names are resolved by :func:`segx.zoo.registry.load_model_config`.
        overrides: ``Dotted.key=value`` strings, applied left to right (later wins).
        model_name: ``Global.model`` to record (a zoo file's name); otherwise the file's own
            ``Global.model``, or its stem.

    Raises:
        ConfigError: unknown key, bad value type, bad YAML, a config from a newer segx.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file '{path}' does not exist.",
                          solution="check the path, or pass a model name from --list-models.")
    path = path.resolve()
    data = read_config_file(path)
    version = data.pop("_version_", 1)
    if not isinstance(version, int):
        raise ConfigError(f"{path}: _version_={version!r} is not an integer.",
                          solution="remove the _version_ line or restore the one segx wrote.")
    upgrade(data, version, str(path))
    if model_name or not data.get("Global", {}).get("model"):
        data.setdefault("Global", {})["model"] = model_name or path.stem
    cfg = Config(data, str(path))
    cfg.validate()
    for option in overrides:
        cfg.override(option)
    cfg.validate()
    return cfg
