"""segx: a model-zoo command line and Python API for semantic segmentation.

Public API (heavy dependencies load lazily, on first use)::

    from segx import create_model, list_models, load_config, run_mode
    for res in create_model("output").predict("img.jpg"):
        res.print(); res.save_to_img("out/"); res.save_to_json("out/")
"""
from __future__ import annotations

import zlib  # noqa: F401  (must run before the first `import paddle`; see segx.backend)

from segx.config import Config, load_config
from segx.engine import MODES, run_mode
from segx.errors import ConfigError, DatasetError, SegxError
from segx.pipelines import create_pipeline
from segx.predictor import SegModel, create_model
from segx.result import SegResult, decode_pred
from segx.registry import list_models, model_info

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "DatasetError", "MODES", "SegModel", "SegResult",
           "SegxError", "create_model", "create_pipeline", "decode_pred", "list_models",
           "load_config", "model_info", "run_mode", "__version__"]
