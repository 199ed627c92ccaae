"""evaluate mode: metrics of a trained model on the validation split.

What is evaluated is ``Evaluate.weight_path``: a run's ``.pdparams`` on the dynamic graph (the
default, ``<Global.output>/best_model/model.pdparams``; network, classes and names come from the
run's ``config.yaml``), or an exported folder on ``Evaluate.engine`` at ``Evaluate.precision``
(what you deploy: OpenVINO int8, say). The dataset comes from ``Global.dataset_dir``. Writes ``<Global.output>/evaluate_result.json`` (the
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
from segx.model import SegModel
from segx.preprocess import preprocessor
from segx.runs import build_network, class_names, default_weights, run_config
from segx.tta import TTA


def run(cfg: Config) -> dict:
    root = dataset_root(cfg)
    val = read_layout(root).samples.get("val")
    if not val:
        state = "lists no samples" if (root / "val.txt").is_file() else "does not exist"
        raise DatasetError(f"{root / 'val.txt'} {state}; evaluate measures the validation split.",
                           solution="run check_dataset on the dataset (it can re-split: "
                                    "-o CheckDataset.split.enable=True ...).")
    tta = TTA.from_section(cfg["Evaluate"])
    what, predict, prepare, num, names, model_name = _subject(cfg, tta)
    t0 = time.perf_counter()
    conf = evaluate_samples(predict, [(s.image, s.label) for s in val], prepare, num,
                            cfg.get("Evaluate.batch_size"))
    seconds = time.perf_counter() - t0
    m = conf.metrics(names)
    out = Path(cfg.get("Global.output"))
    confusion_png(conf.matrix, names, out / "evaluate" / "confusion_matrix.png")
    _print(m, f"evaluated {what} on {len(val)} images in {seconds:.1f} s")
    return {"metrics": {k: m[k] for k in ("mIoU", "Acc", "Kappa", "Dice")},
            "per_class": m["per_class"], "confusion_matrix": conf.matrix.tolist(),
            "confusion_matrix_png": "evaluate/confusion_matrix.png",
            "weight_path": what, "num_images": len(val),
            "model_name": model_name, "options": tta.as_dict()}


def _subject(cfg: Config, tta: TTA) -> tuple:
    """(description, predict, prepare, classes, names, model name): an exported folder on the
    chosen engine and precision (what you ship), or a run's .pdparams on the dynamic graph."""
    value = cfg.get("Evaluate.weight_path")
    if value and (Path(value) / "inference.yml").is_file():
        model = SegModel(value, device=cfg.get("Global.device"), tta=tta,
                         engine=cfg.get("Evaluate.engine"),
                         precision=cfg.get("Evaluate.precision"))
        if not model.num_classes:
            raise DatasetError(f"{value}/inference.yml does not say how many classes it has.",
                               solution="re-export the model with segx.")
        return (f"{value} ({model.engine})", model.infer, model.preprocess, model.num_classes,
                model.class_names, model.model_name)
    from segx import backend
    from segx.backend.engine import predict_logits
    weights = default_weights(cfg, "Evaluate.weight_path")
    run_cfg = run_config(weights)
    backend.set_device(backend.resolve_device(cfg.get("Global.device")))
    network = build_network(run_cfg, weights)
    prepare = preprocessor(run_cfg.get("Train.val_transforms"), "Train.val_transforms")
    return (str(weights), lambda batch: predict_logits(network, batch, tta), prepare,
            run_cfg.get("Train.num_classes"), class_names(run_cfg), run_cfg.get("Global.model"))


def _print(m: dict, head: str) -> None:
    print(head)
    print(f"  mIoU {m['mIoU']:.4f}  Acc {m['Acc']:.4f}  Kappa {m['Kappa']:.4f}  "
          f"Dice {m['Dice']:.4f}")
    for row in m["per_class"]:
        print(f"  {row['id']:>3} {row['name']:<20} IoU {row['IoU']:.4f}  precision "
              f"{row['precision']:.4f}  recall {row['recall']:.4f}")
