"""The few facts every layer shares: the ignore index, image suffixes and segx's home folder."""
from __future__ import annotations

import os
from pathlib import Path

IGNORE_INDEX = 255
"""Label value that is never trained on nor counted (PaddleSeg's and PaddleX's convention)."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""Suffixes read as images when a folder is listed (compared lower-case)."""


def segx_home() -> Path:
    """``$SEGX_HOME`` (default ``~/.segx``): the weights cache and the models fetched by name."""
    return Path(os.environ.get("SEGX_HOME") or Path.home() / ".segx").expanduser()
