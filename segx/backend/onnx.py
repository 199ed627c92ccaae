"""Paddle inference model -> ONNX with paddle2onnx (the one place segx calls it).

paddle2onnx runs in a child process: on a model it cannot convert, paddle2onnx 2.x aborts the
whole process (SIGABRT from its C++ core, e.g. "Adaptive only support static input shape" for a
PIR program with a dynamic size), which would take a training run's export or a server with it.
The child's "[ERROR]" line becomes the one-line reason.
"""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from segx.utils.errors import ConfigError, SegxError

OPSET = 11  # what paddle2onnx converts every segx network at (1.3.1 on .pdmodel, 2.1 on PIR)
TIMEOUT_S = 900  # the largest zoo network (SegFormer-B5) converts in about a minute here
_CHILD = """
import sys, zlib
import paddle2onnx
model, params, target, opset = sys.argv[1:5]
paddle2onnx.export(model, params, save_file=target, opset_version=int(opset),
                   enable_onnx_checker=True, verbose=False)
"""


class ConversionError(SegxError):
    """paddle2onnx could not convert this program (its reason in the message)."""


def converter_available() -> bool:
    """Whether paddle2onnx can be imported here (it has no build for Python 3.13)."""
    return importlib.util.find_spec("paddle2onnx") is not None


def no_converter_reason() -> str:
    return (f"paddle2onnx is not installed here (it has builds for Python 3.8-3.12; this is "
            f"{sys.version_info.major}.{sys.version_info.minor})")


def paddle_to_onnx(model_file: Path, target: Path) -> Path:
    """``target`` (an ONNX file checked by the ONNX checker) from the Paddle program
    ``model_file`` (``.json`` or ``.pdmodel``) and the ``.pdiparams`` beside it."""
    if not converter_available():
        raise ConfigError(f"an ONNX export needs paddle2onnx: {no_converter_reason()}.",
                          solution="pip install 'segx[export-onnx]' on Python 3.12 or older, or "
                                   "deploy with engine=paddle.")
    params = model_file.with_suffix(".pdiparams")
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD, str(model_file), str(params),
                               str(target), str(OPSET)], capture_output=True, text=True,
                              timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise ConversionError(f"paddle2onnx did not finish within {TIMEOUT_S} s.",
                              solution="export without ONNX (Export.formats=[paddle]).") from None
    if done.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
        # (paddle2onnx 1.3.1 reports "Failed to load program" and writes an empty file)
        target.unlink(missing_ok=True)
        raise ConversionError(f"paddle2onnx cannot convert this model: {_reason(done)}.",
                              solution="export at a fixed size (-o Export.input_shape=[1,3,H,W]) "
                                       "or without ONNX.")
    return target


def _reason(done: subprocess.CompletedProcess) -> str:
    """The line of paddle2onnx's output that says what failed."""
    lines = [ln.strip() for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ("[ERROR]" in ln or "Failed to" in ln)
              and "unsupported features" not in ln]
    picked = errors or [ln for ln in lines if "Error" in ln] or [f"exit code {done.returncode}"]
    line = re.sub(r"\x1b\[[0-9;]*m", "", picked[0])  # colours
    line = re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\S*\s*", "", line.strip())  # time
    return re.sub(r"^(\[ERROR\])?\s*(\[Paddle2ONNX\])?\s*", "", line)[:300]
