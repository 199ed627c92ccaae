"""segx: a model-zoo command line and Python API for semantic segmentation.

Public API (each name loads its module on first use; importing segx imports no paddle)::

    from segx import create_model
    with create_model("PP-LiteSeg-T") as model:
        for res in model.predict("img.jpg"):
            res.print(); res.save_to_img("out/"); res.save_to_json("out/")

The layers and where each concept lives: docs/architecture.md.
"""
from __future__ import annotations

import zlib  # noqa: F401  (must run before the first `import paddle`; see segx.backend)

import importlib
from typing import Any

__version__ = "0.2.0"

_API = {
    "create_model": "segx.api.model", "SegModel": "segx.api.model",
    "SegResult": "segx.inference.result", "decode_pred": "segx.inference.result",
    "create_pipeline": "segx.pipelines",
    "list_models": "segx.zoo.registry", "model_info": "segx.zoo.registry",
    "load_config": "segx.zoo.registry:load_model_config", "Config": "segx.config",
    "run_mode": "segx.modules.table", "MODES": "segx.modules.table",
    "SegxError": "segx.utils.errors", "ConfigError": "segx.utils.errors",
    "DatasetError": "segx.utils.errors", "WeightsError": "segx.utils.errors",
}
__all__ = ["Config", "ConfigError", "DatasetError", "MODES", "SegModel", "SegResult",
           "SegxError", "WeightsError", "__version__", "create_model", "create_pipeline",
           "decode_pred", "list_models", "load_config", "model_info", "run_mode"]
assert set(__all__) == {*_API, "__version__"}


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'segx' has no attribute '{name}'")
    module, _, attr = _API[name].partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
