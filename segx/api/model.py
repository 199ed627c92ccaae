"""``create_model(...)``: load a segx model once and predict on anything image-like.

A model is an exported folder (``inference.yml``), a training output folder (its
``best_model/inference``), a ``.pdparams`` file inside a training run (dynamic graph), or a model
name from the zoo (its official trained weights, fetched and exported once into
``$SEGX_HOME/models/<name>``). The engine is built once per model object; decoding and
pre-processing of the next batch overlap inference of the current one.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from segx.utils.errors import ConfigError, WeightsError
from segx.inference.evaluation import class_map, infer_by_size
from segx.inference.inputs import InputError, expand, read_input
from segx.inference.result import SegResult
from segx.runs.folder import RunFolder
from segx.imaging.tta import NO_TTA, TTA, scores


def locate(model: str | Path) -> tuple[Path | None, Path | None]:
    """(exported folder, pdparams file) for ``model``; exactly one is set."""
    from segx.runs.paddlex import refuse_pir
    path = Path(str(model)).expanduser()
    if path.is_file() and path.suffix == ".pdparams":
        return None, path
    run = RunFolder(path)
    for cand in (path, run.best_inference, run.inference):
        if (cand / "inference.yml").is_file():
            refuse_pir(cand)
            return cand, None
    if run.best_weights.is_file():
        raise WeightsError(f"the training run '{path}' has no exported model "
                           "(best_model/inference).",
                           solution=f"pass {run.best_weights} to predict "
                                    "with the dynamic graph, or export it (Global.mode=export).")
    if path.is_file():
        raise WeightsError(f"'{path}' is a file, but not a .pdparams of a training run.",
                           solution="pass an exported folder, a training output folder or a "
                                    "model.pdparams in a run folder.")
    if path.exists():
        raise WeightsError(f"'{path}' holds no exported model (inference.yml).",
                           solution="pass an exported folder, a training output folder (with "
                                    "best_model/inference) or a model.pdparams in a run folder.")
    from segx.zoo.official import model_folder, run_weights
    folder = model_folder(str(model))
    return (folder, None) if (folder / "inference.yml").is_file() else (None, run_weights(folder))


class _Deployed:
    """An exported folder on an inference engine."""

    def __init__(self, folder: Path, engine: str, precision: str, device: str,
                 threads: int | None, onednn: bool | None, tensorrt: bool, tta: TTA):
        from segx.inference.engines import open_engine, read_deploy_info
        from segx.inference.preprocess import preprocessor
        info = read_deploy_info(folder)
        deploy, glob = info["Deploy"], info.get("Global", {})
        self.model_name = glob.get("model_name", folder.name)
        self.class_names = list(glob.get("class_names") or [])
        self.num_classes = glob.get("num_classes") or len(self.class_names) or None
        self.output_op = deploy.get("output_op", "argmax")
        if tta.active and self.output_op == "argmax":
            raise ConfigError(
                "multi-scale, flip and sliding-window prediction need class scores, but "
                f"{folder} was exported with output_op=argmax.",
                solution="export with -o Export.output_op=softmax, or pass the run's "
                         "model.pdparams to use the dynamic graph.")
        self.prepare = preprocessor(deploy.get("transforms"), "Deploy.transforms")
        self.min_input = deploy.get("min_input")  # not in exports before segx 0.2
        self.engine, self.engine_name = open_engine(folder, info, engine, precision, device,
                                                    threads, onednn, tensorrt)
        self.tta = tta

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return scores(self.engine, batch, self.tta, probabilities=self.output_op == "softmax")


class _Dynamic:
    """A training run's ``.pdparams`` on the dynamic graph (any model, also not exportable)."""

    engine_name = "dynamic"

    def __init__(self, weights: Path, device: str, tta: TTA, class_scores: bool = False):
        from segx import backend
        from segx.inference.preprocess import preprocessor
        from segx.runs.folder import build_network, class_names, run_config
        backend.set_device(device)
        run_cfg = run_config(weights)
        self.network = build_network(run_cfg, weights)
        self.model_name = run_cfg.get("Global.model")
        self.class_names = class_names(run_cfg)
        self.num_classes = run_cfg.get("Train.num_classes")
        self.prepare = preprocessor(run_cfg.get("Train.val_transforms"), "Train.val_transforms")
        self.min_input = run_cfg.get("Meta.min_input")
        self.tta, self.class_scores = tta, class_scores

    def infer(self, batch: np.ndarray) -> np.ndarray:
        from segx.backend.predictor import predict_labels, predict_logits
        if not self.tta.active and not self.class_scores:  # as an export with argmax
            return predict_labels(self.network, batch)
        return predict_logits(self.network, batch, self.tta)


def _resolve_device(device: str | None, engine: str) -> str:
    """``cpu`` or ``gpu:N``; paddle is imported only where it decides (a GPU, or ``auto`` with
    an engine that may be Paddle)."""
    from segx.inference.engines import installed
    text = (device or "auto").strip().lower()
    if text == "cpu" or (text == "auto" and (engine not in ("auto", "paddle")
                                              or not installed("paddle"))):
        return "cpu"
    if not installed("paddle"):
        raise ConfigError(f"device='{device}' needs paddlepaddle-gpu 2.6.2 (the GPU engine).",
                          solution="install it, or use device=cpu.")
    from segx.backend import resolve_device
    return resolve_device(text)


class SegModel:
    """A loaded model: ``predict`` (or calling it) yields :class:`SegResult` objects.

    Use it as a context manager (``with create_model(...) as model:``) or call :meth:`close`
    to release the engine's threads. See :func:`create_model` for the arguments;
    ``class_scores`` makes the dynamic graph return class scores also without test-time
    augmentation (evaluate restores scores to the label's size before the argmax, as training's
    validation does, where predict takes the argmax as an export does).
    """

    def __init__(self, model: str | Path, *, device: str | None = None, engine: str = "auto",
                 precision: str = "fp32", batch_size: int = 1, cpu_threads: int | None = None,
                 onednn: bool | None = None, tensorrt: bool = False, tta: TTA = NO_TTA,
                 class_scores: bool = False):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be at least 1.",
                              solution="use batch_size=1 or more.")
        folder, weights = locate(model)
        if folder is None and (engine not in ("auto", "paddle") or precision not in ("fp32",
                                                                                     "auto")):
            raise ConfigError(f"{weights} runs on the dynamic graph (paddle, fp32); engine="
                              f"{engine}, precision={precision} need an exported model.",
                              solution="export it (Global.mode=export) and pass the folder.")
        self.device = _resolve_device(device, engine if folder is not None else "paddle")
        self.batch_size, self.tta = batch_size, tta
        self._runner = (_Deployed(folder, engine, precision, self.device, cpu_threads, onednn,
                                  tensorrt, tta)
                        if folder is not None else _Dynamic(weights, self.device, tta,
                                                            class_scores))
        self.model_name = self._runner.model_name
        self.class_names = self._runner.class_names
        self.num_classes: int | None = self._runner.num_classes
        self.min_input: int | None = self._runner.min_input
        self.engine = self._runner.engine_name
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="segx-read")

    def preprocess(self, rgb: np.ndarray) -> tuple[np.ndarray, list]:
        """The model's pre-processing of one RGB image: (3 x h x w input, trans_info)."""
        return self._runner.prepare(rgb)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The engine (with test-time augmentation) on one N x 3 x h x w batch of equal sizes:
        N x h x w class ids or N x C x h x w scores, before undoing the pre-processing."""
        return self._runner.infer(batch)

    def _prepare(self, name: str | None, source: Any) -> tuple:
        t0 = time.perf_counter()
        rgb = read_input(source)
        img, info = self._runner.prepare(rgb)
        return name, rgb, img, info, (time.perf_counter() - t0) * 1000

    def _infer(self, batch: np.ndarray, names: list) -> np.ndarray:
        """The engine on one same-size batch; an engine failure on images below the model's
        documented minimum size is the input's fault, and says so."""
        try:
            return self._runner.infer(batch)
        except Exception:  # noqa: BLE001 - re-raised unless the input explains it
            h, w = batch.shape[2:]
            if not self.min_input or min(h, w) >= self.min_input:
                raise
        raise InputError(f"{names[0] or 'the image'} reaches the network as {w}x{h}, too small "
                         f"for {self.model_name} (it needs about {self.min_input} pixels on each "
                         "side).", solution="use a larger image (or upscale it first).")

    def _results(self, items: list[tuple], start: int) -> list[SegResult]:
        preds: list[np.ndarray | None] = [None] * len(items)
        infer_ms = [0.0] * len(items)
        post_ms = [0.0] * len(items)
        for ks, out, ms in infer_by_size(
                lambda batch, ks: self._infer(batch, [items[k][0] for k in ks]),
                [item[2] for item in items]):
            for k, o in zip(ks, out):
                t1 = time.perf_counter()
                preds[k] = class_map(o, items[k][3])
                infer_ms[k], post_ms[k] = ms / len(ks), (time.perf_counter() - t1) * 1000
        return [SegResult(name, pred, self.class_names, rgb, start + k,
                          speed={"preprocess_ms": pre, "inference_ms": infer_ms[k],
                                 "postprocess_ms": post_ms[k]})
                for k, ((name, rgb, _, _, pre), pred) in enumerate(zip(items, preds))]

    def predict(self, input: Any, batch_size: int | None = None) -> Iterator[SegResult]:  # noqa: A002
        """Yield one :class:`SegResult` per image, in input order.

        Args:
            input: a file, folder (recursive), http(s) URL, numpy array (H x W, H x W x 3 BGR,
                H x W x 4 BGRA) or a list mixing them.
            batch_size: images per engine call for this call (the engine is not rebuilt).
        """
        bs = batch_size or self.batch_size
        todo = expand(input)
        batches = [todo[i:i + bs] for i in range(0, len(todo), bs)]
        if not batches:
            return
        submit = self._pool.submit
        pending = [submit(self._prepare, *item) for item in batches[0]]
        for b, _ in enumerate(batches):
            items = [f.result() for f in pending]
            if b + 1 < len(batches):  # decode the next batch while this one runs
                pending = [submit(self._prepare, *item) for item in batches[b + 1]]
            yield from self._results(items, b * bs)

    __call__ = predict

    def close(self) -> None:
        """Release the decoding threads (the engine goes with the object)."""
        self._pool.shutdown(wait=False)

    def __enter__(self) -> "SegModel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def precision(self) -> str:
        """The precision that runs: ``bf16``/``int8`` when the engine name says so (OpenVINO),
        else ``fp32`` (Paddle, ONNX Runtime and the dynamic graph run fp32 only)."""
        last = self.engine.rsplit("-", 1)[-1]
        return last if last in ("bf16", "int8") else "fp32"

    def __repr__(self) -> str:
        return (f"SegModel({self.model_name}, device={self.device}, engine={self.engine}, "
                f"classes={len(self.class_names) or '?'})")


def create_model(model: str | Path, *, device: str | None = None, engine: str = "auto",
                 precision: str = "fp32", batch_size: int = 1, cpu_threads: int | None = None,
                 onednn: bool | None = None, tensorrt: bool = False,
                 scales: Sequence[float] = (1.0,),
                 flip_horizontal: bool = False, flip_vertical: bool = False,
                 crop_size: Sequence[int] | None = None,
                 stride: Sequence[int] | None = None) -> SegModel:
    """Load ``model`` for prediction.

    Args:
        model: an exported folder, a training output folder, a ``model.pdparams`` inside a
            training run, or a model name (``PP-LiteSeg-T``, any case: its official trained
            weights, fetched and exported once into ``$SEGX_HOME/models``); ``name@dataset``
            (``EMANet-R50@pascal_voc12``) picks another dataset's weights. A name predicts the
            way its published mIoU was measured: that checkpoint's architecture arguments and
            transforms, and its sliding window (SegFormer) unless ``crop_size`` is given.
        device: ``cpu``, ``gpu``, ``gpu:N`` or None (GPU when present and paddle installed).
        engine: ``auto`` (the fastest engine export found exact, Paddle on a GPU),
            ``paddle``, ``openvino`` or ``onnxruntime`` (see :mod:`segx.inference.engines`).
        precision: ``fp32``, ``bf16`` (OpenVINO, CPUs with native bf16), ``int8`` (OpenVINO,
            an export with ``Export.quantize=int8`` whose mIoU drop was accepted) or ``auto``
            (int8 where accepted, else fp32).
        batch_size: default images per engine call.
        cpu_threads: CPU threads for the engine (None: all cores).
        onednn: Paddle on CPU: oneDNN kernels (None: oneDNN, plain kernels if it cannot start).
        tensorrt: Paddle on a GPU: run supported subgraphs in TensorRT.
        scales: multi-scale factors (test-time augmentation; needs class scores).
        flip_horizontal: add horizontally flipped predictions.
        flip_vertical: add vertically flipped predictions.
        crop_size: sliding-window size [w, h] (None: the whole image at once, or a zoo
            name's published window).
        stride: sliding-window stride [w, h] (None: the window size).

    Example:
        >>> with create_model("output") as model:      # best_model/inference of a run
        ...     for res in model.predict(["a.jpg", "photos/"], batch_size=4):
        ...         res.print(); res.save_to_img("out/"); res.save_to_json("out/")
    """
    if crop_size is None and not Path(str(model)).expanduser().exists():
        from segx.zoo.official import published_prediction  # a zoo name: as published
        published = published_prediction(str(model))
        crop_size, stride = published.get("crop_size"), stride or published.get("stride")
    tta = TTA(tuple(scales), flip_horizontal, flip_vertical,
              tuple(crop_size) if crop_size else None, tuple(stride) if stride else None)
    return SegModel(model, device=device, engine=engine, precision=precision,
                    batch_size=batch_size, cpu_threads=cpu_threads, onednn=onednn,
                    tensorrt=tensorrt, tta=tta)
