"""evaluate mode: metrics of a trained model on a split of the dataset (``Evaluate.split``:
val by default, test or train).

What is evaluated is ``Evaluate.weight_path``: a run's ``.pdparams`` on the dynamic graph (the
default, ``<Global.output>/best_model/model.pdparams``; network, classes and names come from the
run's ``config.yaml``), or an exported folder on ``Evaluate.engine`` at ``Evaluate.precision``
(what you deploy: OpenVINO int8, say). The dataset comes from ``Global.dataset_dir``. Writes ``<Global.output>/evaluate_result.json`` (the
reference ``metrics`` plus a per-class table and the confusion matrix) and
``<Global.output>/evaluate/confusion_matrix.png`` (rows normalised) and
``<Global.output>/evaluate/report.html``: metrics, per-class table, the confusion matrix as a
heat map and the ``Evaluate.report_worst`` images with the lowest mIoU (thumbnails in
``evaluate/worst/``), naming the model, engine and precision evaluated.
"""
from __future__ import annotations

import time
from pathlib import Path

from segx.config import Config
from segx.data.layout import dataset_root, read_layout
from segx.utils.errors import ConfigError, DatasetError
from segx.inference.eval_report import WorstImages, write_report
from segx.inference.evaluation import confusion_png, evaluate_samples
from segx.api.model import SegModel
from segx.runs.folder import RunFolder, default_weights
from segx.imaging.tta import TTA

MAX_WORST = 200  # gallery size limit: thumbnails in memory and on disk grow with it


def run(cfg: Config) -> dict:
    root = dataset_root(cfg)
    split = cfg.get("Evaluate.split")
    samples = _split_samples(root, split)
    worst_n = cfg.get("Evaluate.report_worst")
    if not 0 <= worst_n <= MAX_WORST:
        raise ConfigError(f"Evaluate.report_worst={worst_n} must be between 0 and {MAX_WORST}.",
                          solution="set -o Evaluate.report_worst=12 (0: no gallery).")
    tta = TTA.from_section(cfg["Evaluate"])
    what, model, engine = _subject(cfg, tta)
    names, model_name = model.class_names, model.model_name
    pairs = [(s.image, s.label) for s in samples]
    worst = WorstImages(worst_n)
    t0 = time.perf_counter()
    with model:
        conf = evaluate_samples(model.infer, pairs, model.preprocess, model.num_classes,
                                cfg.get("Evaluate.batch_size"), on_image=worst)
    seconds = time.perf_counter() - t0
    m = conf.metrics(names)
    out = RunFolder(cfg.get("Global.output"))
    confusion_png(conf.matrix, names, out.evaluate_confusion)
    precision = model.precision  # "paddle-onednn" names no precision: fp32
    engine_name = engine.removesuffix(f"-{precision}")
    page = write_report(out.evaluate_report,
                        {"model": model_name, "weights": what, "engine": engine_name,
                         "precision": precision, "split": split, "seconds": seconds,
                         "options": str(tta.as_dict())}, m, conf.matrix, names, worst, pairs,
                        root)
    _print(m, f"evaluated {what} on {len(samples)} {split} images in {seconds:.1f} s")
    print(f"report: {page} (open it in a browser)")
    return {"metrics": {k: m[k] for k in ("mIoU", "Acc", "Kappa", "Dice")},
            "per_class": m["per_class"], "confusion_matrix": conf.matrix.tolist(),
            "confusion_matrix_png": out.relative(out.evaluate_confusion),
            "report": out.relative(out.evaluate_report), "split": split,
            "engine": engine_name, "precision": precision,
            "worst_images": [{"image": str(pairs[w.index][0]), "mIoU": w.miou,
                              "rank": k} for k, w in enumerate(worst.ranked(), 1)],
            "weight_path": what, "num_images": len(samples),
            "model_name": model_name, "options": tta.as_dict()}


def _split_samples(root: Path, split: str) -> list:
    """The samples of ``<split>.txt`` (val by default); a clear error when there are none."""
    samples = read_layout(root).samples.get(split)
    if not samples:
        state = "lists no samples" if (root / f"{split}.txt").is_file() else "does not exist"
        fix = ("run check_dataset on the dataset (it can re-split: -o "
               "CheckDataset.split.enable=True ...)." if split == "val" else
               f"write {split}.txt ('<image> <label>' per line), or evaluate another split "
               "with -o Evaluate.split=val.")
        raise DatasetError(f"{root / f'{split}.txt'} {state}; evaluate measures the {split} "
                           "split (Evaluate.split).", solution=fix)
    return samples


def _subject(cfg: Config, tta: TTA) -> tuple[str, SegModel, str]:
    """(description, model, engine-precision): an exported folder on the chosen engine and
    precision (what you ship), or a run's .pdparams on the dynamic graph; both a
    :class:`SegModel`, as predict loads them."""
    value = cfg.get("Evaluate.weight_path")
    if value and (Path(value) / "inference.yml").is_file():
        model = SegModel(value, device=cfg.get("Global.device"), tta=tta,
                         engine=cfg.get("Evaluate.engine"),
                         precision=cfg.get("Evaluate.precision"))
        if not model.num_classes:
            model.close()
            raise DatasetError(f"{value}/inference.yml does not say how many classes it has.",
                               solution="re-export the model with segx.")
        return f"{value} ({model.engine})", model, model.engine
    weights = default_weights(cfg, "Evaluate.weight_path")
    # class scores, restored to the label's size before the argmax (as training validates)
    model = SegModel(weights, device=cfg.get("Global.device"), tta=tta, engine="paddle",
                     precision="fp32", class_scores=True)
    return str(weights), model, "paddle dynamic graph-fp32"


def _print(m: dict, head: str) -> None:
    print(head)
    print(f"  mIoU {m['mIoU']:.4f}  Acc {m['Acc']:.4f}  Kappa {m['Kappa']:.4f}  "
          f"Dice {m['Dice']:.4f}")
    for row in m["per_class"]:
        print(f"  {row['id']:>3} {row['name']:<20} IoU {row['IoU']:.4f}  precision "
              f"{row['precision']:.4f}  recall {row['recall']:.4f}")
