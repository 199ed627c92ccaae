"""evaluate mode: metrics of a trained model on the validation split.

The network, class count and class names come from the training run's ``config.yaml``; the
dataset from ``Global.dataset_dir``. Writes ``<Global.output>/evaluate_result.json`` (the
reference ``metrics`` plus a per-class table and the confusion matrix) and
``<Global.output>/evaluate/confusion_matrix.png`` (rows normalised).
"""
from __future__ import annotations

import time
from pathlib import Path

from segx.config import Config
from segx.datasets.layout import dataset_root, read_layout
from segx.errors import DatasetError
from segx.evaluation import confusion_png, evaluate_samples
from segx.runs import build_network, class_names, default_weights, run_config
from segx.tta import TTA


def run(cfg: Config) -> dict:
    from segx import backend
    from segx.preprocess import preprocessor
    from segx.backend.engine import predict_logits
    weights = default_weights(cfg, "Evaluate.weight_path")
    run_cfg = run_config(weights)
    root = dataset_root(cfg)
    val = read_layout(root).samples.get("val")
    if not val:
        raise DatasetError(f"no validation samples in {root / 'val.txt'}.",
                           solution="run check_dataset on the dataset first.")
    tta = TTA.from_section(cfg["Evaluate"])
    backend.set_device(backend.resolve_device(cfg.get("Global.device")))
    names = class_names(run_cfg)
    model = build_network(run_cfg, weights)
    prepare = preprocessor(run_cfg.get("Train.val_transforms"), "Train.val_transforms")
    t0 = time.perf_counter()
    conf = evaluate_samples(lambda batch: predict_logits(model, batch, tta),
                            [(s.image, s.label) for s in val], prepare,
                            run_cfg.get("Train.num_classes"), cfg.get("Evaluate.batch_size"))
    seconds = time.perf_counter() - t0
    m = conf.metrics(names)
    out = Path(cfg.get("Global.output"))
    confusion_png(conf.matrix, names, out / "evaluate" / "confusion_matrix.png")
    _print(m, f"evaluated {weights} on {len(val)} images in {seconds:.1f} s")
    return {"metrics": {k: m[k] for k in ("mIoU", "Acc", "Kappa", "Dice")},
            "per_class": m["per_class"], "confusion_matrix": conf.matrix.tolist(),
            "confusion_matrix_png": "evaluate/confusion_matrix.png",
            "weight_path": str(weights), "num_images": len(val),
            "model_name": run_cfg.get("Global.model"), "options": tta.as_dict()}


def _print(m: dict, head: str) -> None:
    print(head)
    print(f"  mIoU {m['mIoU']:.4f}  Acc {m['Acc']:.4f}  Kappa {m['Kappa']:.4f}  "
          f"Dice {m['Dice']:.4f}")
    for row in m["per_class"]:
        print(f"  {row['id']:>3} {row['name']:<20} IoU {row['IoU']:.4f}  precision "
              f"{row['precision']:.4f}  recall {row['recall']:.4f}")
