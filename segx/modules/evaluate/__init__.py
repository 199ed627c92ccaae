"""evaluate mode: metrics of a trained model on the validation split.

The network, class count and class names come from the training run's ``config.yaml``; the
dataset from ``Global.dataset_dir``. Writes ``<Global.output>/evaluate_result.json`` (the
reference ``metrics`` plus a per-class table and the confusion matrix) and
``<Global.output>/evaluate/confusion_matrix.png`` (rows normalised).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from segx.config import Config
from segx.errors import ConfigError, DatasetError
from segx.metrics import Confusion
from segx.predictor import restore


def evaluate_samples(model, pairs: Sequence[tuple[Path, Path]], transforms, num_classes: int,
                     batch_size: int = 1, scales: Sequence[float] = (1.0,),
                     flip_h: bool = False, flip_v: bool = False,
                     crop: Sequence[int] | None = None, stride: Sequence[int] | None = None,
                     on_batch: Callable[[int], None] | None = None) -> Confusion:
    """Accumulate the confusion matrix of ``model`` over ``pairs``.

    A batch may mix image sizes: it is split into runs of equal size, so every image is seen at
    its own resolution and results do not depend on the batch size.
    """
    from segx.backend import training as T
    conf = Confusion(num_classes)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        items = []
        for image, label in chunk:
            data = T.apply_transforms(transforms, T.read_image(image), None)
            items.append((data["img"], data["trans_info"], T.read_label(label)))
        by_shape: dict[tuple, list[int]] = {}
        for k, (img, _, _) in enumerate(items):
            by_shape.setdefault(img.shape, []).append(k)
        for ks in by_shape.values():
            batch = np.stack([items[k][0] for k in ks])
            scores = T.predict_logits(model, batch, scales, flip_h, flip_v, crop, stride)
            for k, score in zip(ks, scores):
                _, info, label = items[k]
                pred = restore(score, info).argmax(0)
                if label.ndim != 2 or pred.shape != label.shape:
                    raise DatasetError(f"label '{chunk[k][1]}' has shape {label.shape} but its "
                                       f"image gives {pred.shape}.",
                                       solution="run check_dataset and fix what it reports.")
                conf.update(pred, label)
        if on_batch:
            on_batch(len(chunk))
    return conf


def _window(cfg: Config) -> tuple[list | None, list | None]:
    crop, stride = cfg.get("Evaluate.crop_size"), cfg.get("Evaluate.stride")
    if stride and not crop:
        raise ConfigError("Evaluate.stride is set but Evaluate.crop_size is not.",
                          solution="set both for sliding-window evaluation, e.g. "
                                   "-o Evaluate.crop_size=[512,512] -o Evaluate.stride=[384,384].")
    for key, v in (("crop_size", crop), ("stride", stride)):
        if v is not None and (len(v) != 2 or any(not isinstance(x, int) or x <= 0 for x in v)):
            raise ConfigError(f"Evaluate.{key}={v} must be two positive integers [w, h].",
                              solution=f"write -o Evaluate.{key}=[512,512].")
    return crop, stride


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def run(cfg: Config) -> dict:
    from segx.backend import resolve_device
    from segx.backend import training as T
    from segx.modules.check_dataset.dataset import dataset_root, read_layout
    from segx.modules.run_info import default_weights, run_config
    from segx.modules.train import build_network
    weights = default_weights(cfg, "Evaluate.weight_path")
    run_cfg = run_config(weights)
    root = dataset_root(cfg)
    val = read_layout(root).samples.get("val")
    if not val:
        raise DatasetError(f"no validation samples in {root / 'val.txt'}.",
                           solution="run check_dataset on the dataset first.")
    crop, stride = _window(cfg)
    T.set_device(resolve_device(cfg.get("Global.device")))
    num_classes = run_cfg.get("Train.num_classes")
    names = run_cfg.get("Train.class_names") or []
    model = build_network(run_cfg, weights)
    transforms = T.build_transforms(run_cfg.get("Train.val_transforms"), "Train.val_transforms")
    t0 = time.perf_counter()
    conf = evaluate_samples(model, [(s.image, s.label) for s in val], transforms, num_classes,
                            cfg.get("Evaluate.batch_size"), cfg.get("Evaluate.scales"),
                            cfg.get("Evaluate.flip_horizontal"),
                            cfg.get("Evaluate.flip_vertical"), crop, stride)
    seconds = time.perf_counter() - t0
    m = conf.metrics(names)
    out = Path(cfg.get("Global.output"))
    confusion_png(conf.matrix, names, out / "evaluate" / "confusion_matrix.png")
    print(f"evaluated {weights} on {len(val)} images in {seconds:.1f} s")
    print(f"  mIoU {m['mIoU']:.4f}  Acc {m['Acc']:.4f}  Kappa {m['Kappa']:.4f}  "
          f"Dice {m['Dice']:.4f}")
    for row in m["per_class"]:
        print(f"  {row['id']:>3} {row['name']:<20} IoU {row['IoU']:.4f}  precision "
              f"{row['precision']:.4f}  recall {row['recall']:.4f}")
    return {"metrics": {k: m[k] for k in ("mIoU", "Acc", "Kappa", "Dice")},
            "per_class": m["per_class"], "confusion_matrix": conf.matrix.tolist(),
            "confusion_matrix_png": "evaluate/confusion_matrix.png",
            "weight_path": str(weights), "num_images": len(val),
            "model_name": run_cfg.get("Global.model"),
            "options": {"scales": cfg.get("Evaluate.scales"),
                        "flip_horizontal": cfg.get("Evaluate.flip_horizontal"),
                        "flip_vertical": cfg.get("Evaluate.flip_vertical"),
                        "crop_size": crop, "stride": stride}}
