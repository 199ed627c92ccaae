"""Configs: schemas, ``_base_`` inheritance, versions and upgrades, strict typed ``-o`` overrides.

Every key segx reads is declared once in a schema file with its default and a ``# (type)
meaning`` comment: ``configs/_base_/schema.yaml`` for model configs (model YAMLs inherit from
family bases which inherit from it, so a model file holds only what differs), and
``pipelines/semantic_segmentation.yaml`` for pipelines.

Every saved config records its schema version (``_version_``); loading an older one applies
:data:`UPGRADES` (renames, removals) and fills keys added since with their defaults, so a run
folder written by any earlier segx keeps loading. This module knows files and paths only; model
names are the registry's (:func:`segx.zoo.registry.load_model_config`).

Values are typed like YAML 1.2 scalars (``1e-3`` is a float, ``on`` is a string, ``null`` and
``None`` are null) and are never evaluated as code. Keys are strict: an unknown key is an error
that suggests the closest known keys. Only the inside of a free-form value (a key typed ``dict``
or ``list``, such as ``Arch`` or ``Train.transforms``) may gain new keys; those are checked when
the component is built.
"""
from __future__ import annotations

import copy
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from segx.utils.errors import ConfigError, did_you_mean

MODEL_SCHEMA_PATH = Path(__file__).resolve().parents[1] / "configs" / "_base_" / "schema.yaml"


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


# --------------------------------------------------------------------------- schemas
@dataclass(frozen=True)
class KeySpec:
    """One declared key: its type spec (``int?``, ``str|int``, ``choice:a|b``) and its meaning."""

    path: str
    type: str
    doc: str
    default: Any

    @property
    def nullable(self) -> bool:
        return self.type.endswith("?")

    @property
    def base_types(self) -> list[str]:
        t = self.type.rstrip("?")
        return ["choice"] if t.startswith("choice:") else t.split("|")

    @property
    def choices(self) -> list[str]:
        t = self.type.rstrip("?")
        return t[len("choice:"):].split("|") if t.startswith("choice:") else []

    @property
    def free_form(self) -> bool:
        """True for a ``dict``/``list``/``any`` value whose inside the schema does not fix."""
        return any(b in ("dict", "list", "any") for b in self.base_types)

    @property
    def is_section(self) -> bool:
        return self.type == "section"

    def describe(self) -> str:
        if self.choices:
            text = "one of " + ", ".join(self.choices)
        else:
            text = " or ".join(self.base_types)
        return text + (" or null" if self.nullable else "")


_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w]*):(?P<rest>.*)$")
_TYPE_COMMENT = re.compile(r"#\s*\((?P<type>[^)]+)\)\s*(?P<doc>.*)$")
_RESERVED = ("_base_", "_version_")  # file-level keys, never part of a config's data


@dataclass(frozen=True)
class Schema:
    """The declared keys of one kind of config, read from a YAML file whose every key carries a
    ``# (type) meaning`` comment (sections have type ``section``)."""

    path: Path
    specs: dict[str, KeySpec]
    defaults: dict
    version: int | None

    def __iter__(self):
        return iter(self.specs.values())


def _parse_schema(path: Path) -> Schema:
    """Read key types and docs from the schema's ``# (type) doc`` comments."""
    text = read_small_text(path, "schema")
    defaults = parse_yaml(text, str(path))
    version = defaults.pop("_version_", None)
    specs: dict[str, KeySpec] = {}
    stack: list[tuple[int, str]] = []
    free_form_depth: int | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        m = _KEY_LINE.match(line)
        if not m or line.lstrip().startswith("#") or m["key"] in _RESERVED:
            continue
        indent = len(m["indent"])
        if free_form_depth is not None and indent > free_form_depth:
            continue  # children of a free-form value are defaults, not declared keys
        free_form_depth = None
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m["key"]))
        dotted = ".".join(k for _, k in stack)
        cm = _TYPE_COMMENT.search(m["rest"])
        if not cm:
            raise ConfigError(f"{path}:{lineno}: schema key '{dotted}' has no '# (type) doc' comment.")
        default: Any = defaults
        for part in dotted.split("."):
            default = default[part]
        spec = KeySpec(dotted, cm["type"].strip(), cm["doc"].strip(), default)
        specs[dotted] = spec
        if not spec.is_section and spec.free_form:
            free_form_depth = indent
    return Schema(path, specs, defaults, version)


_SCHEMAS: dict[Path, Schema] = {}


def load_schema(path: Path) -> Schema:
    """The schema declared by ``path`` (parsed once per process)."""
    if path not in _SCHEMAS:
        _SCHEMAS[path] = _parse_schema(path)
    return _SCHEMAS[path]


def model_schema() -> Schema:
    """The schema of model configs (``configs/_base_/schema.yaml``)."""
    return load_schema(MODEL_SCHEMA_PATH)


def schema() -> dict[str, KeySpec]:
    """The model-config keys, by dotted path (sections have type ``section``)."""
    return model_schema().specs


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
