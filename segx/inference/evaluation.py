"""The evaluation loop: a predictor over (image, label) pairs into a confusion matrix, and the
confusion-matrix picture. Used by train (validation), evaluate and export; the metrics
themselves are :mod:`segx.imaging.metrics`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from segx.utils.errors import DatasetError
from segx.imaging.images import read_image, read_label
from segx.imaging.metrics import Confusion
from segx.imaging.tta import restore

Prepare = Callable[[np.ndarray], tuple[np.ndarray, list]]
"""RGB H x W x 3 uint8 -> (3 x h x w float32 network input, the transforms' trans_info)."""
Predict = Callable[[np.ndarray], np.ndarray]
"""N x 3 x h x w batch -> N x C x h x w class scores, or N x h x w class ids."""
OnImage = Callable[[int, np.ndarray, np.ndarray, np.ndarray], None]
"""(index into pairs, prediction, label, the image's own C x C confusion matrix) -> None."""


def class_map(out: np.ndarray, trans_info: list) -> np.ndarray:
    """One image's class ids at its original size, from C x h x w scores or h x w ids."""
    if out.ndim == 2:
        return restore(out, trans_info).astype(np.int32, copy=False)
    return restore(out, trans_info).argmax(0).astype(np.int32, copy=False)


def infer_by_size(predict: Callable[[np.ndarray, list[int]], np.ndarray],
                  inputs: Sequence[np.ndarray]) -> Iterator[tuple[list[int], np.ndarray, float]]:
    """``predict(batch, indices)`` on each run of equal-size ``inputs`` stacked into one batch;
    yields (indices into ``inputs``, their outputs, milliseconds the call took). Every image is
    seen at its own resolution, so results do not depend on how images were batched (predict
    and evaluate both batch this way)."""
    by_shape: dict[tuple, list[int]] = {}
    for k, img in enumerate(inputs):
        by_shape.setdefault(img.shape, []).append(k)
    for ks in by_shape.values():
        t0 = time.perf_counter()
        out = predict(np.stack([inputs[k] for k in ks]), ks)
        yield ks, out, (time.perf_counter() - t0) * 1000


def evaluate_samples(predict: Predict, pairs: Sequence[tuple[Path, Path]], prepare: Prepare,
                     num_classes: int, batch_size: int = 1,
                     on_batch: Callable[[int], None] | None = None,
                     on_image: OnImage | None = None) -> Confusion:
    """Accumulate the confusion matrix of ``predict`` over ``pairs``.

    A batch may mix image sizes: it is split into runs of equal size, so every image is seen at
    its own resolution and results do not depend on the batch size. ``on_image`` sees every
    image's prediction as it is made (nothing is kept here).
    """
    conf = Confusion(num_classes)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        items = [(*prepare(read_image(image)), read_label(label)) for image, label in chunk]
        for ks, outs, _ in infer_by_size(lambda batch, _: predict(batch),
                                         [img for img, _, _ in items]):
            for k, out in zip(ks, outs):
                _, info, label = items[k]
                pred = class_map(out, info)
                if label.ndim != 2 or pred.shape != label.shape:
                    raise DatasetError(f"label '{chunk[k][1]}' has shape {label.shape} but its "
                                       f"image gives {pred.shape}.",
                                       solution="run check_dataset and fix what it reports.")
                one = conf.update(pred, label)
                if on_image:
                    on_image(start + k, pred, label, one)
        if on_batch:
            on_batch(len(chunk))
    return conf


def confusion_png(matrix: np.ndarray, names: list[str], path: Path) -> None:
    """The row-normalised confusion matrix as an image (recall on the diagonal)."""
    from matplotlib.figure import Figure
    n = len(matrix)
    rows = matrix.sum(1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    size = min(max(4.0, 0.35 * n + 2), 40.0)
    fig = Figure(figsize=(size, size), dpi=100)
    ax = fig.subplots()
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    labels = [f"{i} {names[i]}" if i < len(names) else str(i) for i in range(n)]
    ax.set_xticks(range(n), labels, rotation=90, fontsize=6 if n > 30 else 8)
    ax.set_yticks(range(n), labels, fontsize=6 if n > 30 else 8)
    if n <= 20:
        for r in range(n):
            for c in range(n):
                ax.text(c, r, f"{norm[r, c]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[r, c] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("label")
    ax.set_title("confusion matrix (each row sums to 1)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    from segx.utils.fileio import save_figure
    save_figure(path, fig)
