"""``create_model(...)``: load a segx model once and predict on anything image-like.

A model is an exported folder (``inference.yml``), a training output folder (its
``best_model/inference``), a ``.pdparams`` file inside a training run (dynamic graph), or a model
name resolved in the local model cache (``$SEGX_HOME/models/<name>``). The Paddle Inference
engine is built once per model object; decoding and pre-processing of the next batch overlap
inference of the current one.
"""
from __future__ import annotations

import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import cv2
import numpy as np

from segx.config import parse_yaml
from segx.errors import ConfigError, SegxError, WeightsError
from segx.result import IMAGE_SUFFIXES, SegResult
from segx.tta import resize_scores, scores


class InputError(SegxError):
    """An input that cannot be read as an image."""


def models_dir() -> Path:
    return Path(os.environ.get("SEGX_HOME", Path.home() / ".segx")) / "models"


def restore(score: np.ndarray, trans_info: list, nearest: bool = False) -> np.ndarray:
    """Undo the transforms' resizes and paddings on one C x h x w (or h x w) map."""
    for item in reversed(trans_info):
        kind = item[0][0] if isinstance(item[0], list) else item[0]
        h, w = item[1]
        if kind == "resize":
            if score.ndim == 2 or nearest:
                idx_h = (np.arange(h) * score.shape[-2] / h).astype(int)
                idx_w = (np.arange(w) * score.shape[-1] / w).astype(int)
                score = score[..., idx_h[:, None], idx_w]
            else:
                score = resize_scores(score[None], h, w)[0]
        elif kind == "padding":
            score = score[..., :h, :w]
    return score


# --------------------------------------------------------------------------- inputs
def _expand(inputs: Any) -> list[tuple[str | None, Any]]:
    """Inputs as (display path, source) pairs in order; folders walked recursively."""
    if not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    out: list[tuple[str | None, Any]] = []
    for item in inputs:
        if isinstance(item, np.ndarray):
            out.append((None, item))
            continue
        if not isinstance(item, (str, Path)):
            raise InputError(f"cannot predict on a {type(item).__name__}.",
                             solution="pass a file path, folder, URL, numpy array or a list "
                                      "of them.")
        text = str(item)
        if text.startswith(("http://", "https://")):
            out.append((text, text))
            continue
        path = Path(text).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise InputError(f"folder '{path}' holds no images "
                                 f"({', '.join(IMAGE_SUFFIXES)}).",
                                 solution="check the folder.")
            out.extend((str(p), p) for p in files)
        elif path.is_file():
            out.append((str(path), path))
        else:
            raise InputError(f"input '{text}' does not exist.",
                             solution="give an existing image file, folder or an http(s) URL.")
    return out


def _fetch(url: str) -> np.ndarray:
    try:
        with urllib.request.urlopen(url, timeout=15) as resp:
            data = resp.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise InputError(f"cannot fetch {url} ({getattr(exc, 'reason', exc)}).",
                         solution="download the image and pass its file path.") from None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"{url} is not an image.", solution="check the URL.")
    return img


def read_input(name: str | None, source: Any) -> np.ndarray:
    """One input as H x W x 3 RGB uint8."""
    if isinstance(source, np.ndarray):
        arr = source
        if arr.dtype != np.uint8:
            if not np.issubdtype(arr.dtype, np.number):
                raise InputError(f"array of dtype {arr.dtype} is not an image.",
                                 solution="pass uint8 (or numeric) pixels.")
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        if arr.ndim == 2:
            return np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim == 3 and arr.shape[2] in (3, 4):
            return np.ascontiguousarray(arr[..., 2::-1])  # BGR(A) -> RGB
        raise InputError(f"array of shape {arr.shape} is not an image.",
                         solution="pass H x W, H x W x 3 (BGR) or H x W x 4 (BGRA).")
    if isinstance(source, str):
        bgr = _fetch(source)
    else:
        bgr = cv2.imread(str(source), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"cannot read image '{source}' (not an image, or truncated).",
                             solution="check or remove the file.")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------- model
def _model_folder(model: str | Path) -> tuple[Path | None, Path | None]:
    """(exported folder, pdparams file) for ``model``; exactly one is set."""
    path = Path(str(model)).expanduser()
    if path.is_file() and path.suffix == ".pdparams":
        return None, path
    for cand in (path, path / "best_model" / "inference", path / "inference"):
        if (cand / "inference.yml").is_file():
            return cand, None
    if (path / "best_model" / "model.pdparams").is_file():
        raise WeightsError(f"the training run '{path}' has no exported model "
                           "(best_model/inference).",
                           solution=f"pass {path / 'best_model' / 'model.pdparams'} to predict "
                                    "with the dynamic graph, or export it (Global.mode=export).")
    if path.exists():
        raise WeightsError(f"'{path}' holds no exported model (inference.yml).",
                           solution="pass an exported folder, a training output folder (with "
                                    "best_model/inference) or a model.pdparams in a run folder.")
    from segx.registry import list_models
    if str(model) in list_models():
        cached = models_dir() / str(model)
        if (cached / "inference.yml").is_file():
            return cached, None
        raise WeightsError(
            f"no local copy of {model}: segx ships no weights and knows no download address "
            "for a paddle 2.6 inference model of it.",
            solution=f"train and export it (Global.mode=train) and pass the output folder, or "
                     f"put inference.yml, inference.pdmodel and inference.pdiparams in {cached}.")
    raise WeightsError(f"'{model}' is neither a file, a folder nor a model name.",
                       solution="see `segx --list-models`, or pass an exported folder.")


class SegModel:
    """A loaded model; call ``predict`` (or the object) to get :class:`SegResult` objects."""

    def __init__(self, model: str | Path, device: str | None = None, batch_size: int = 1,
                 run_mode: str = "auto", cpu_threads: int | None = None,
                 scales: Sequence[float] = (1.0,), flip_horizontal: bool = False,
                 flip_vertical: bool = False, crop_size: Sequence[int] | None = None,
                 stride: Sequence[int] | None = None):
        from segx.backend import resolve_device
        from segx.backend import training as T
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be at least 1.",
                              solution="use batch_size=1 or more.")
        if run_mode not in ("auto", "paddle", "mkldnn"):
            raise ConfigError(f"run_mode='{run_mode}' is not one of auto, paddle, mkldnn.",
                              solution="use auto (fastest here), paddle or mkldnn.")
        self.device = resolve_device(device or "auto")
        self.batch_size = batch_size
        self.aug = {"scales": list(scales), "flip_h": flip_horizontal,
                    "flip_v": flip_vertical, "crop": list(crop_size) if crop_size else None,
                    "stride": list(stride or crop_size) if crop_size else None}
        self.augmented = self.aug["scales"] != [1.0] or flip_horizontal or flip_vertical \
            or crop_size is not None
        folder, weights = _model_folder(model)
        self.engine = self.network = None
        if folder is not None:
            info = parse_yaml((folder / "inference.yml").read_text(encoding="utf-8"),
                              str(folder / "inference.yml"))
            deploy, glob = info.get("Deploy", {}), info.get("Global", {})
            self.model_name = glob.get("model_name", folder.name)
            self.class_names = list(glob.get("class_names") or [])
            self.output_op = deploy.get("output_op", "argmax")
            transforms = deploy.get("transforms") or []
            if self.augmented and self.output_op == "argmax":
                raise ConfigError(
                    "multi-scale, flip and sliding-window prediction need class scores, but "
                    f"{folder} was exported with output_op=argmax.",
                    solution="export with -o Export.output_op=softmax, or pass the run's "
                             "model.pdparams to use the dynamic graph.")
            self.engine, self.run_mode = self._engine(folder, deploy, run_mode, cpu_threads)
            self.onednn_resize = self.run_mode == "mkldnn" and deploy.get("onednn_resize") is True
        else:
            from segx.modules.run_info import run_config
            from segx.modules.train import build_network
            T.set_device(self.device)
            run_cfg = run_config(weights)
            self.network = build_network(run_cfg, weights)
            self.model_name = run_cfg.get("Global.model")
            self.class_names = list(run_cfg.get("Train.class_names") or [])
            self.output_op, self.run_mode, self.onednn_resize = "none", "dynamic", False
            transforms = run_cfg.get("Train.val_transforms")
        self.transforms = T.build_transforms(transforms, "Deploy.transforms")
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="segx-read")

    def _engine(self, folder: Path, deploy: dict, run_mode: str, threads: int | None):
        from segx.backend import training as T
        files = (folder / deploy.get("model", "inference.pdmodel"),
                 folder / deploy.get("params", "inference.pdiparams"))
        for f in files:
            if not f.is_file():
                raise WeightsError(f"'{f}' is missing.", solution="re-export the model.")
        if self.device.startswith("gpu"):
            return T.Engine(*files, self.device, threads, mkldnn=False), "gpu"
        # oneDNN resizing only where segx export found it exact for this model
        resize = deploy.get("onednn_resize") is True
        if run_mode != "auto":
            return T.Engine(*files, self.device, threads, mkldnn=run_mode == "mkldnn",
                            onednn_resize=resize), run_mode
        # auto: oneDNN, the faster engine for PP-LiteSeg-T here once resizing runs in oneDNN
        # too (docs/benchmarks.md); the plain kernels where oneDNN cannot start
        try:
            engine = T.Engine(*files, self.device, threads, mkldnn=True, onednn_resize=resize)
            shape = [v if isinstance(v, int) and v > 0 else d for v, d in
                     zip(deploy.get("input_shape") or [None] * 4, (1, 3, 64, 64))]
            engine(np.zeros(shape, np.float32))
            return engine, "mkldnn"
        except Exception:  # noqa: BLE001 - any oneDNN start-up failure means: use plain CPU
            return T.Engine(*files, self.device, threads, mkldnn=False), "paddle"

    # ------------------------------------------------------------------ prediction
    def _prepare(self, name: str | None, source: Any) -> tuple:
        from segx.backend import training as T
        rgb = read_input(name, source)
        data = T.apply_transforms(self.transforms, rgb, None)
        return name, rgb, data["img"], data["trans_info"]

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        from segx.backend import training as T
        a = self.aug
        if self.network is not None:
            if not self.augmented:  # class map, as from an engine exported with argmax
                return T.predict_labels(self.network, batch)
            return T.predict_logits(self.network, batch, a["scales"], a["flip_h"], a["flip_v"],
                                    a["crop"], a["stride"])
        return scores(self.engine, batch, a["scales"], a["flip_h"], a["flip_v"], a["crop"],
                      a["stride"], probabilities=self.output_op == "softmax")

    def _results(self, items: list[tuple], start: int) -> list[SegResult]:
        preds: list[np.ndarray | None] = [None] * len(items)
        by_shape: dict[tuple, list[int]] = {}
        for k, item in enumerate(items):
            by_shape.setdefault(item[2].shape, []).append(k)
        for ks in by_shape.values():
            out = self._infer(np.stack([items[k][2] for k in ks]))
            for k, o in zip(ks, out):
                info = items[k][3]
                if o.ndim == 2:  # a class map (argmax in the graph or in paddle)
                    preds[k] = restore(o, info).astype(np.int32)
                else:
                    preds[k] = restore(o, info).argmax(0).astype(np.int32)
        return [SegResult(name, pred, self.class_names, rgb, start + k)
                for k, ((name, rgb, _, _), pred) in enumerate(zip(items, preds))]

    def predict(self, input: Any, batch_size: int | None = None) -> Iterator[SegResult]:  # noqa: A002
        """Yield one :class:`SegResult` per image, in input order.

        Args:
            input: a file, folder (recursive), http(s) URL, numpy array (H x W, H x W x 3 BGR,
                H x W x 4 BGRA) or a list mixing them.
            batch_size: images per engine call for this call (the engine is not rebuilt).
        """
        bs = batch_size or self.batch_size
        todo = _expand(input)
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
        self._pool.shutdown(wait=False)

    def __repr__(self) -> str:
        return (f"SegModel({self.model_name}, device={self.device}, engine={self.run_mode}, "
                f"classes={len(self.class_names) or '?'})")


def create_model(model: str | Path, device: str | None = None, batch_size: int = 1,
                 **options: Any) -> SegModel:
    """Load ``model`` for prediction.

    Args:
        model: an exported folder, a training output folder, a ``model.pdparams`` inside a
            training run, or a model name found in ``$SEGX_HOME/models`` (default ~/.segx).
        device: ``cpu``, ``gpu``, ``gpu:N`` or None (GPU when present).
        batch_size: default images per engine call.
        **options: ``run_mode`` (auto|paddle|mkldnn), ``cpu_threads``, ``scales``,
            ``flip_horizontal``, ``flip_vertical``, ``crop_size`` and ``stride`` ([w, h]).

    Example:
        >>> model = create_model("output")            # best_model/inference of a run
        >>> for res in model.predict(["a.jpg", "photos/"], batch_size=4):
        ...     res.print(); res.save_to_img("out/"); res.save_to_json("out/")
    """
    return SegModel(model, device, batch_size, **options)


def iter_inputs(inputs: Any) -> Iterable[str | None]:
    """The display names of what ``predict(inputs)`` will read, in order (no decoding)."""
    return [name for name, _ in _expand(inputs)]
