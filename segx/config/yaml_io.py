"""Reading YAML as segx does everywhere: bounded (bytes, nodes, depth; refused before any work
grows with the input), YAML 1.2 scalars (``1e-3`` is a float, ``on`` a string), never code, and
one-line errors naming the file; plus the one writer (``dump_yaml``)."""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from segx.utils.errors import ConfigError


# --------------------------------------------------------------------------- bounded reading
MAX_YAML_DEPTH = 100
"""Deepest nesting of lists and mappings a YAML document (or a ``-o`` value) may have."""


def _env_limit(name: str, default: int) -> int:
    """A positive integer limit from the environment (``default`` when unset or invalid)."""
    text = os.environ.get(name, "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else default


def max_yaml_bytes() -> int:
    """The largest YAML file segx reads: ``$SEGX_MAX_CONFIG_BYTES`` (1 MiB)."""
    return _env_limit("SEGX_MAX_CONFIG_BYTES", 1 << 20)


def max_yaml_nodes() -> int:
    """The most values one YAML document may expand to, each alias counted as the values it
    repeats: ``$SEGX_MAX_YAML_NODES`` (100,000)."""
    return _env_limit("SEGX_MAX_YAML_NODES", 100_000)


class _Bounded(yaml.SafeLoader):
    """A composer that refuses, while it composes, documents nested deeper than
    :data:`MAX_YAML_DEPTH`, expanding (aliases included) past :func:`max_yaml_nodes` values, or
    holding an alias inside its own anchor (a recursive structure)."""

    def compose_document(self) -> yaml.Node:
        self._depth, self._count, self._sizes = 0, 0, {}
        self._limit = max_yaml_nodes()
        return super().compose_document()

    def _add(self, n: int, mark: Any) -> None:
        self._count += n
        if self._count > self._limit:
            raise _LimitError(mark, f"expands to more than {self._limit:,} values (aliases "
                                    "count each time they are used)", "SEGX_MAX_YAML_NODES")

    def compose_node(self, parent: Any, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None:
                if id(node) not in self._sizes:
                    raise _LimitError(event.start_mark, f"alias *{event.anchor} is used inside "
                                                        "its own anchor (a recursive structure)")
                self._add(self._sizes[id(node)], event.start_mark)
            return super().compose_node(parent, index)
        mark, before = self.peek_event().start_mark, self._count
        nested = not self.check_event(yaml.ScalarEvent)  # a list or mapping: one level deeper
        self._depth += nested
        if self._depth > MAX_YAML_DEPTH:
            raise _LimitError(mark, f"nests deeper than {MAX_YAML_DEPTH} levels")
        self._add(1, mark)
        node = super().compose_node(parent, index)
        self._depth -= nested
        self._sizes[id(node)] = self._count - before
        return node


class _LimitError(yaml.YAMLError):
    def __init__(self, mark: Any, problem: str, setting: str | None = None):
        super().__init__(problem)
        self.problem_mark, self.problem, self.setting = mark, problem, setting


# --------------------------------------------------------------------------- YAML with 1.2 scalars
class _Loader(_Bounded):
    """Bounded SafeLoader with YAML 1.2 core-schema scalars.

    PyYAML follows YAML 1.1, where ``on``/``yes`` are booleans and ``1e-3`` is a string. Users
    expect the opposite, so bools are only true/false, floats include exponent forms without a
    dot, and ``None`` is null as Python users write it.
    """


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag not in (
        "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float", "tag:yaml.org,2002:int",
        "tag:yaml.org,2002:null")]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|None|)$"), ["~", "n", "N", "", None])
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9][0-9_]*|0x[0-9a-fA-F_]+|0o[0-7_]+)$"),
    list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)?\.?[0-9]+(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*\.[0-9_]*"
               r"(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = loader.construct_scalar(node).replace("_", "")
    if text.startswith("0o"):
        return int(text[2:], 8)
    return int(text, 0) if text.startswith("0x") else int(text)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _construct_null(loader: yaml.SafeLoader, node: yaml.Node) -> None:
    return None


_Loader.add_constructor("tag:yaml.org,2002:null", _construct_null)


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML text with segx's scalar rules, bounded in size, nesting and alias expansion;
    any problem becomes a one-line ConfigError naming ``source``."""
    limit = max_yaml_bytes()
    if len(text) > limit:
        raise ConfigError(f"{source}: {len(text):,} characters of YAML, more than the "
                          f"{limit:,} segx reads.", solution="shorten it, or raise the limit "
                                                             "with SEGX_MAX_CONFIG_BYTES.")
    try:
        return yaml.load(text, Loader=_Loader)
    except _LimitError as exc:
        fix = (f"simplify it, or raise the limit with {exc.setting}." if exc.setting else
               "write the values out instead of nesting or repeating them.")
        raise ConfigError(f"{source}{_line(exc)}: refused: the YAML {exc.problem}.",
                          solution=fix) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}{_line(exc)}: invalid YAML ({getattr(exc, 'problem', exc)}).",
                          solution="check indentation and quoting on that line.") from None


def _line(exc: yaml.YAMLError) -> str:
    where = getattr(exc, "problem_mark", None)
    return f":{where.line + 1}" if where is not None else ""


def read_small_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of a regular file of at most :func:`max_yaml_bytes`, read without
    blocking on FIFOs or devices and never more than the limit (+1 byte to detect excess)."""
    path, limit = Path(path), max_yaml_bytes()
    fix = f"pass a regular {what} of at most {limit:,} bytes (SEGX_MAX_CONFIG_BYTES raises it)."
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ConfigError(f"{what} '{path}' is not a regular file.", solution=fix)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ConfigError(f"{what} '{path}' is not a regular file.", solution=fix)
            data = f.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} '{path}': {exc.strerror}.",
                          solution=f"pass a readable {what}.") from None
    if len(data) > limit:
        raise ConfigError(f"{what} '{path}' is larger than {limit:,} bytes.", solution=fix)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} '{path}' is not UTF-8 text (byte {exc.start}).",
                          solution="save it as UTF-8 text.") from None


def read_yaml(path: str | Path, what: str = "YAML file") -> Any:
    """Every YAML file segx reads from users: bounded read, then :func:`parse_yaml`."""
    return parse_yaml(read_small_text(path, what), str(path))


class _Dumper(yaml.SafeDumper):
    """Block-style mappings; lists of scalars and small component specs stay on one line."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flat = all(not isinstance(v, (list, dict)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


def _represent_dict(dumper: yaml.SafeDumper, data: dict) -> yaml.Node:
    flat = "type" in data and all(not isinstance(v, dict) for v in data.values())
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flat)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(dict, _represent_dict)


def dump_yaml(data: Any) -> str:
    """Dump a config to readable YAML, keeping key order."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
