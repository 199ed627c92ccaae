"""Paddle inference model -> ONNX with paddle2onnx (the one place segx calls it)."""
from __future__ import annotations

from pathlib import Path

from segx.utils.errors import ConfigError

OPSET = 11  # what paddle2onnx 1.3.1 converts every segx network at


def paddle_to_onnx(folder: Path) -> Path:
    """``folder/inference.onnx`` from ``inference.pdmodel`` + ``inference.pdiparams``, checked by
    the ONNX checker; a missing paddle2onnx is a one-line error naming the extra."""
    try:
        import paddle2onnx
    except ImportError:
        raise ConfigError("an ONNX export needs paddle2onnx 1.3.1 and onnxruntime.",
                          solution="pip install 'segx[export-onnx]'.") from None
    target = folder / "inference.onnx"
    paddle2onnx.export(str(folder / "inference.pdmodel"), str(folder / "inference.pdiparams"),
                       save_file=str(target), opset_version=OPSET, enable_onnx_checker=True,
                       verbose=False)
    return target
