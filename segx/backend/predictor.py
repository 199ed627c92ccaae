"""Inference on paddle: the dynamic graph (for evaluation and ``.pdparams`` prediction), static
export, and the Paddle Inference engine for exported models."""
from __future__ import annotations

import zlib  # noqa: F401  (must precede paddle; see segx.backend)

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import paddle
import paddle.nn.functional as F

from segx.backend import dygraph
from segx.imaging.tta import NO_TTA, TTA, scores


# --------------------------------------------------------------------------- dynamic graph
def _forward(model, x):
    outs = model(x)
    return outs[0] if isinstance(outs, (list, tuple)) else outs


def predict_logits(model, batch: np.ndarray, tta: TTA = NO_TTA) -> np.ndarray:
    """Class scores for an N x 3 x H x W batch as an N x C x H x W numpy array: the raw logits,
    or with test-time augmentation the mean softmax (see :func:`segx.imaging.tta.scores`)."""
    dygraph()
    return _predict_logits(model, batch, tta)


@paddle.no_grad()
def _predict_logits(model, batch: np.ndarray, tta: TTA) -> np.ndarray:
    model.eval()
    return scores(lambda x: _forward(model, paddle.to_tensor(x)).numpy(), batch, tta)


def predict_labels(model, batch: np.ndarray) -> np.ndarray:
    """The N x H x W int32 class map of an N x 3 x H x W batch, argmax taken in paddle (as the
    exported graph does with ``output_op=argmax``)."""
    dygraph()
    return _predict_labels(model, batch)


@paddle.no_grad()
def _predict_labels(model, batch: np.ndarray) -> np.ndarray:
    model.eval()
    logit = _forward(model, paddle.to_tensor(batch))
    return paddle.argmax(logit, axis=1, dtype="int32").numpy()


# --------------------------------------------------------------------------- export, Paddle Inference
INPUT = "x"  # the input name of segx's (and PaddleSeg's) exports
class _Deploy(paddle.nn.Layer):
    def __init__(self, model, output_op: str):
        super().__init__()
        self.model, self.output_op = model, output_op

    def forward(self, x):
        logit = _forward(self.model, x)
        if self.output_op == "argmax":
            return paddle.argmax(logit, axis=1, dtype="int32")
        if self.output_op == "softmax":
            return F.softmax(logit, axis=1)
        return logit


def export_static(model, prefix: Path, input_shape: Sequence | None, output_op: str) -> Path:
    """Write the program and ``<prefix>.pdiparams`` for Paddle Inference; returns the program
    file: ``<prefix>.json`` (Paddle 3 writes only PIR programs) or ``<prefix>.pdmodel``
    (Paddle 2.6)."""
    model.eval()
    shape = list(input_shape) if input_shape else [None, 3, None, None]
    net = paddle.jit.to_static(_Deploy(model, output_op), full_graph=True, input_spec=[
        paddle.static.InputSpec(shape=shape, dtype="float32", name=INPUT)])
    paddle.jit.save(net, str(prefix))
    pir = Path(f"{prefix}.json")
    return pir if pir.is_file() else Path(f"{prefix}.pdmodel")


def is_pir(model_file: Path) -> bool:
    """Whether ``model_file`` is a PIR program (Paddle 3's ``inference.json``)."""
    return Path(model_file).suffix == ".json"


# Paddle Inference 2.6 graph passes that change results on CPU (with or without oneDNN):
# reshape_transpose_matmul fuses ANN's attention wrongly (logits off by 2,100, 75 % of argmax
# pixels equal, against 0.0 with the pass removed).
_WRONG_CPU_PASSES = ("reshape_transpose_matmul_mkldnn_fuse_pass",)
# oneDNN keeps its primitives per input shape, unbounded by default: a long-running server fed
# images of many sizes grew about 50 MB per new 1 MP size. Keep the last few shapes (same-size
# batches, the common case, never miss).
ONEDNN_CACHED_SHAPES = 8


class PaddleInference:
    """A Paddle Inference predictor for an exported model, built once and reused."""

    def __init__(self, model_file: Path, params_file: Path, device: str = "cpu",
                 threads: int | None = None, mkldnn: bool = True, onednn_resize: bool = False,
                 tensorrt: bool = False):
        """A PIR program (``inference.json``, Paddle 3) runs on the plain CPU kernels, without
        oneDNN and without memory optimisation: Paddle 3.3's inference refuses both for PIR
        ("ConvertPirAttribute2RuntimeAttribute not support", "Not find ...
        memory_optimize_pass"). ``onednn_resize`` also runs bilinear/nearest resizing in oneDNN
        (with ``mkldnn``): several times faster than Paddle's own kernel, but oneDNN ignores
        Paddle's ``scale_factor`` rounding on sizes it does not divide, so segx export turns it
        on only where it reproduced the trained model (``Deploy.onednn_resize`` in
        inference.yml). ``tensorrt`` (GPU) runs supported subgraphs in TensorRT at fp32, with
        dynamic shapes from 64 x 64 to 2048 x 2048."""
        config = paddle.inference.Config(str(model_file), str(params_file))
        pir = is_pir(model_file)
        if device.startswith("gpu"):
            config.enable_use_gpu(200, int(device.partition(":")[2] or 0))
            if tensorrt:
                config.enable_tensorrt_engine(
                    workspace_size=1 << 30, max_batch_size=8, min_subgraph_size=3,
                    precision_mode=paddle.inference.PrecisionType.Float32, use_static=False,
                    use_calib_mode=False)
                config.set_trt_dynamic_shape_info({INPUT: [1, 3, 64, 64]},
                                                  {INPUT: [8, 3, 2048, 2048]},
                                                  {INPUT: [1, 3, 512, 1024]})
        else:
            config.disable_gpu()
            if pir:
                config.disable_mkldnn()
            elif mkldnn:
                config.enable_mkldnn()
                config.set_mkldnn_cache_capacity(ONEDNN_CACHED_SHAPES)
                if onednn_resize:
                    config.pass_builder().append_pass("interpolate_mkldnn_pass")
            config.set_cpu_math_library_num_threads(threads or os.cpu_count() or 1)
            for name in _WRONG_CPU_PASSES:
                config.delete_pass(name)
        if not pir:
            config.enable_memory_optim()
        config.switch_ir_optim(True)
        config.disable_glog_info()
        self.predictor = paddle.inference.create_predictor(config)
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.input.reshape(list(batch.shape))
        self.input.copy_from_cpu(np.ascontiguousarray(batch, np.float32))
        self.predictor.run()
        return self.output.copy_to_cpu()
