"""segx: a model-zoo command line and Python API for semantic segmentation.

Public API (heavy dependencies load lazily, on first use)::

    from segx import list_models, load_config, run_mode
"""
from __future__ import annotations

import zlib  # noqa: F401  (must run before the first `import paddle`; see segx.backend)

from segx.config import Config, load_config
from segx.engine import MODES, run_mode
from segx.errors import ConfigError, DatasetError, SegxError
from segx.registry import list_models, model_info

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "DatasetError", "MODES", "SegxError", "list_models",
           "load_config", "model_info", "run_mode", "__version__"]
