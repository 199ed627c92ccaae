"""The schema files: every key segx reads, declared once with its default and a ``# (type)
meaning`` comment (``configs/_base_/schema.yaml`` for models, ``pipelines/*.yaml`` for
pipelines), parsed into :class:`Schema` / :class:`KeySpec`."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segx.config.yaml_io import parse_yaml, read_small_text
from segx.utils.errors import ConfigError

MODEL_SCHEMA_PATH = Path(__file__).resolve().parents[1] / "configs" / "_base_" / "schema.yaml"


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
