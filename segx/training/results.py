"""What a training run reports besides its log: ``train_result.json`` (written as the
run goes and at its end), the closing advice, the flat-validation warning and the
``training_curves.png`` picture. The HTML page is :mod:`segx.training.report_page`."""
from __future__ import annotations

from pathlib import Path

from segx.utils.fileio import write_json
from segx.runs.folder import CHECKPOINT_FILES, RunFolder
from segx.training.trainer import Trainer


def train_result(trainer: Trainer, done: bool) -> dict:
    """``train_result.json``: the reference keys (models by checkpoint, best, logs) and more."""
    run, state = trainer.run, trainer.state
    scores = dict(zip(state["curves"]["eval_iter"], state["curves"]["mIoU"]))

    def score_at(it: int) -> float | None:
        done_evals = [i for i in scores if i <= it]
        return scores[max(done_evals)] if done_evals else None

    folder = RunFolder(run.out)
    models: dict = {}
    for k, (it, path) in enumerate(reversed(folder.checkpoints()), 1):
        models[f"last_{k}"] = {"iter": it, "score": score_at(it),
                               **{name.rsplit(".", 1)[1]: folder.relative(path / name)
                                  for name in CHECKPOINT_FILES}}
    best = state["best"]
    if best["iter"]:
        models["best"] = {"iter": best["iter"], "score": best["score"],
                          "pdparams": folder.relative(folder.best_weights),
                          "pdstates": folder.relative(folder.best_states)}
        exported = folder.best_inference
        if (exported / "inference.yml").is_file():
            program = "inference.json" if (exported / "inference.json").is_file() \
                else "inference.pdmodel"  # Paddle 3 writes a PIR program, 2.6 a .pdmodel
            models["best"].update({key: folder.relative(exported / name) for key, name in (
                ("inference_config", "inference.yml"), ("pdmodel", program),
                ("pdiparams", "inference.pdiparams"))})
    return {"model_name": run.model_name,
            "label_dict": {str(i): n for i, n in enumerate(run.class_names)},
            "train_log": RunFolder.TRAIN_LOG, "visualdl_log": run.visualdl_log,
            "config": RunFolder.CONFIG,
            "models": models, "done_flag": done, "iter": state["iter"],
            "total_iters": run.total, "num_classes": run.num_classes,
            "class_names": run.class_names,
            "best_mIoU": best["score"] if best["iter"] else None,
            "training_curves": RunFolder.CURVES if done else None}


def write_result(trainer: Trainer, report: dict) -> None:
    trainer.report = report
    if trainer.run.main:
        write_json(RunFolder(trainer.run.out).train_result, report, indent=None)


def flat_validation_warning(curves: dict) -> str | None:
    """A warning when validation mIoU is stuck while the training loss collapses: almost always
    a label problem."""
    if len(curves["mIoU"]) < 3 or len(curves["loss"]) < 2:
        return None
    if max(curves["mIoU"]) - min(curves["mIoU"]) < 1e-4 and \
            curves["loss"][-1] < 0.5 * curves["loss"][0]:
        return (f"WARNING: validation mIoU has stayed at {curves['mIoU'][-1]:.4f} for "
                f"{len(curves['mIoU'])} evaluations while the training loss fell from "
                f"{curves['loss'][0]:.4f} to {curves['loss'][-1]:.4f}. The model likely predicts "
                "one class everywhere: check the label encoding (check_dataset), "
                "Train.num_classes and Train.val_transforms.")
    return None


def previous_result(out: Path) -> dict | None:
    """The run's ``train_result.json`` as it is (None when absent or unreadable)."""
    import json
    try:
        result = json.loads(RunFolder(out).train_result.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def advice(trainer: Trainer) -> list[str]:
    """What to try when a run ends weak: classes it never learnt, a start from random weights."""
    lines = []
    metrics = trainer.events.get("eval")
    if metrics:
        missed = [r["name"] for r in metrics["per_class"]
                  if r["IoU"] < 0.05 and r["label_pixels"] > 0]
        if missed:
            lines.append(f"hint: {len(missed)} class(es) were not learnt (IoU < 0.05): "
                         f"{', '.join(missed[:10])}. Rare classes need more iterations, more "
                         "samples or a weighted loss; check_dataset's histogram shows how "
                         "rare they are (docs/train.md#recipes).")
    if trainer.run.pretrained == "none" and trainer.state["best"]["score"] < 0.6:
        lines.append("hint: this run started from random weights. Starting from official "
                     "weights (-o Train.pretrained=imagenet, the default, or a dataset such as "
                     "cityscapes; see segx models) usually reaches far more in the same time.")
    return lines


def curves_png(curves: dict, path: Path) -> None:
    """Loss, learning rate and validation mIoU against iterations, side by side."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(12, 3.6), dpi=100)
    axes = fig.subplots(1, 3)
    axes[0].plot(curves["iter"], curves["loss"])
    axes[0].set_title("training loss")
    axes[1].plot(curves["iter"], curves["lr"])
    axes[1].set_title("learning rate")
    axes[2].plot(curves["eval_iter"], curves["mIoU"], marker="o")
    axes[2].set_title("validation mIoU")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    from segx.utils.fileio import save_figure
    save_figure(path, fig)  # a killed run leaves the previous picture, never half of one
