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

The sections are modules: ``yaml_io`` (bounded YAML reading and writing), ``schemas`` (the key
declarations), ``upgrades`` (the one table of version steps, for model and pipeline configs) and
``loader`` (``_base_`` chains, overrides, :class:`Config`, :func:`load_config`). Import their
public names from ``segx.config``.
"""
from __future__ import annotations

from segx.config.loader import (MAX_BASE_FILES, Config, coerce, load_config, merge_configs,
                                read_config_file)
from segx.config.schemas import MODEL_SCHEMA_PATH, KeySpec, Schema, load_schema, model_schema, schema
from segx.config.upgrades import UPGRADES, upgrade, upgrade_run_mode
from segx.config.yaml_io import (MAX_YAML_DEPTH, dump_yaml, max_yaml_bytes, max_yaml_nodes,
                                 parse_yaml, read_small_text, read_yaml)

__all__ = ["MAX_BASE_FILES", "MAX_YAML_DEPTH", "MODEL_SCHEMA_PATH", "UPGRADES", "Config",
           "KeySpec", "Schema", "coerce", "dump_yaml", "load_config", "load_schema",
           "max_yaml_bytes", "max_yaml_nodes", "merge_configs", "model_schema", "parse_yaml",
           "read_config_file", "read_small_text", "read_yaml", "schema", "upgrade",
           "upgrade_run_mode"]
