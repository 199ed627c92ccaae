"""segx's own networks: backbones, models and losses written for segx, with PaddleSeg's
parameter names (every official checkpoint loads unchanged) and explicit dtype casts (no
float32 x int64 arithmetic, which Paddle 3's strict type promotion refuses).

Three tables, ``MODELS``, ``BACKBONES`` and ``LOSSES``, hold the types segx owns. An ``Arch``
whose model type, and backbone type if it has one, are both here is built from segx's code
(:func:`owns`); anything else still comes from paddleseg. ``SEGX_NETWORKS=paddleseg`` (or
``use_paddleseg=True`` where a builder takes it) builds everything from paddleseg instead: the
parity tests use it as the oracle.

Which families segx owns, and the tests that pin each against paddleseg, is the table in
docs/networks.md; ``segx models`` marks any zoo model still built by paddleseg. SeaFormer, which
paddleseg 2.8.0 lacks, is segx's even under ``SEGX_NETWORKS=paddleseg``.
"""
from __future__ import annotations

import os

ENV = "SEGX_NETWORKS"


class Table:
    """A name -> constructor table with the lookup interface segx's builder expects."""

    def __init__(self, name: str):
        self.name = name
        self.components_dict: dict = {}

    def __getitem__(self, type_name: str):
        return self.components_dict[type_name]

    def __contains__(self, type_name: object) -> bool:
        return type_name in self.components_dict

    def add(self, obj):
        self.components_dict[obj.__name__] = obj
        return obj


MODELS, BACKBONES, LOSSES = Table("models"), Table("backbones"), Table("losses")


def prefer_own(use_paddleseg: bool | None = None) -> bool:
    """Whether segx's own code is wanted: the argument when given, else ``$SEGX_NETWORKS``
    (``paddleseg`` turns segx's networks off; anything else, or unset, keeps them on)."""
    if use_paddleseg is not None:
        return not use_paddleseg
    return os.environ.get(ENV, "").strip().lower() != "paddleseg"


def owns(arch: object) -> bool:
    """True when the model type of ``arch`` and its backbone type (if any) are segx's own."""
    if not isinstance(arch, dict) or arch.get("type") not in MODELS:
        return False
    backbone = arch.get("backbone")
    return backbone is None or (isinstance(backbone, dict)
                                and backbone.get("type") in BACKBONES)


from segx.backend.nets import losses, pp_liteseg, stdc  # noqa: E402,F401  (fill the tables)
from segx.backend.nets import fcn, hrnet, ocrnet  # noqa: E402,F401
from segx.backend.nets import mix_transformer, segformer  # noqa: E402,F401
from segx.backend.nets import deeplab, resnet_vd  # noqa: E402,F401
from segx.backend.nets import seaformer  # noqa: E402,F401
from segx.backend.nets import attention_unet, u2net, unet, unet_3plus, unet_plusplus  # noqa: E402,F401
from segx.backend.nets import bisenetv2, fast_scnn, hardnet, lraspp, mobilenetv3, shufflenetv2  # noqa
from segx.backend.nets import decoupled_segnet, edge_losses, gscnn, sfnet  # noqa: E402,F401
from segx.backend.nets import ann, danet, gcnet, pspnet  # noqa: E402,F401
from segx.backend.nets import dnlnet, emanet, isanet  # noqa: E402,F401
