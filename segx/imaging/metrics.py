"""Segmentation metrics from a confusion matrix (numpy only).

Definitions follow the reference (PaddleSeg's ``metrics``): pixels labelled 255 are ignored;
IoU is 1 for a class absent from both label and prediction; Dice is 0 for it; Acc is the pixel
accuracy; Kappa is Cohen's kappa over all counted pixels.
"""
from __future__ import annotations

import numpy as np

from segx.utils.constants import IGNORE_INDEX


class Confusion:
    """An accumulating C x C confusion matrix: rows are labels, columns predictions."""

    def __init__(self, num_classes: int):
        self.n = num_classes
        self.matrix = np.zeros((num_classes, num_classes), np.int64)

    def update(self, pred: np.ndarray, label: np.ndarray) -> np.ndarray:
        """Add one prediction/label pair (same shape; label 255 = ignored); returns the pair's
        own C x C matrix (for per-image scores)."""
        if pred.shape != label.shape:
            raise ValueError(f"prediction {pred.shape} and label {label.shape} differ in shape")
        keep = label != IGNORE_INDEX
        lab = label[keep].astype(np.int64)
        if lab.size and (lab.min() < 0 or lab.max() >= self.n):
            raise ValueError(f"label ids outside 0..{self.n - 1} (and 255)")
        idx = lab * self.n + pred[keep].astype(np.int64)
        one = np.bincount(idx, minlength=self.n * self.n).reshape(self.n, self.n)
        self.matrix += one
        return one

    def merge(self, other: np.ndarray) -> None:
        self.matrix += other

    def metrics(self, names: list[str] | None = None) -> dict:
        """The reference metrics plus a per-class table."""
        m = self.matrix.astype(np.float64)
        inter = np.diag(m)
        label_area, pred_area = m.sum(1), m.sum(0)
        union = label_area + pred_area - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, inter / union, 1.0)
            dice = np.where(label_area + pred_area > 0, 2 * inter / (label_area + pred_area), 0.0)
            precision = np.where(pred_area > 0, inter / pred_area, 0.0)
            recall = np.where(label_area > 0, inter / label_area, 0.0)
        total = m.sum()
        acc = inter.sum() / total if total else 0.0
        pe = (pred_area * label_area).sum() / total ** 2 if total else 0.0
        kappa = (acc - pe) / (1 - pe) if total and pe != 1 else 0.0
        names = names or []
        per_class = [{"id": c, "name": names[c] if c < len(names) else str(c),
                      "IoU": float(iou[c]), "precision": float(precision[c]),
                      "recall": float(recall[c]), "Dice": float(dice[c]),
                      "label_pixels": int(label_area[c]), "pred_pixels": int(pred_area[c])}
                     for c in range(self.n)]
        return {"mIoU": float(iou.mean()), "Acc": float(acc), "Kappa": float(kappa),
                "Dice": float(dice.mean()), "per_class": per_class}


def image_scores(matrix: np.ndarray) -> tuple[float | None, dict[int, float]]:
    """One image's (mIoU, {class id: IoU}) from its own confusion matrix, over the classes
    present in its label or its prediction (classes absent from both are left out, not counted
    as 1 as in the dataset metric); (None, {}) when every pixel is ignored."""
    m = matrix.astype(np.float64)
    inter = np.diag(m)
    union = m.sum(1) + m.sum(0) - inter
    present = np.flatnonzero(union > 0)
    if not present.size:
        return None, {}
    ious = {int(c): float(inter[c] / union[c]) for c in present}
    return float(np.mean(list(ious.values()))), ious
