"""Losses written for segx: PaddleSeg's arguments, defaults and values, with every dtype cast
spelled out so that Paddle 3's strict type promotion (no float32 x int64) accepts them."""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from segx.backend.nets import LOSSES

EPS = 1e-8


@LOSSES.add
class CrossEntropyLoss(nn.Layer):
    """Pixel-wise cross entropy, averaged over the pixels that count.

    Args:
        weight: one rescaling weight per class (None: all 1).
        ignore_index: label value that contributes nothing (255).
        top_k_percent_pixels: in (0, 1]; below 1 only the hardest share of pixels is averaged.
        avg_non_ignore: average over non-ignored pixels only (True) or over all pixels.
        data_format: ``NCHW`` or ``NHWC`` logits.

    The value is ``sum(w_i * ce_i) / sum(w_i)`` over the counted pixels, where ``w_i`` is the
    weight of pixel i's class (1 without ``weight``); exactly PaddleSeg's, including its
    ``1e-8`` in the denominator.
    """

    def __init__(self, weight=None, ignore_index: int = 255, top_k_percent_pixels: float = 1.0,
                 avg_non_ignore: bool = True, data_format: str = "NCHW"):
        super().__init__()
        self.ignore_index = ignore_index
        self.top_k_percent_pixels = top_k_percent_pixels
        self.avg_non_ignore = avg_non_ignore
        self.data_format = data_format
        self.weight = None if weight is None else paddle.to_tensor(weight, dtype="float32")

    def forward(self, logit, label, semantic_weights=None):
        classes = logit.shape[1 if self.data_format == "NCHW" else -1]
        if self.weight is not None and classes != len(self.weight):
            raise ValueError(f"CrossEntropyLoss has {len(self.weight)} class weights but the "
                             f"network gives {classes} classes")
        if self.data_format == "NCHW":
            logit = paddle.transpose(logit, [0, 2, 3, 1])
        label = label.astype("int64")
        per_pixel = F.cross_entropy(logit, label, ignore_index=self.ignore_index,
                                    reduction="none", weight=self.weight).astype("float32")
        if per_pixel.ndim > label.ndim:
            per_pixel = paddle.squeeze(per_pixel, axis=-1)
        if self.avg_non_ignore:
            counted = (label != self.ignore_index).astype("float32")
        else:
            counted = paddle.ones(label.shape, dtype="float32")
        counted.stop_gradient = True
        per_pixel = per_pixel * counted
        if semantic_weights is not None:
            per_pixel = per_pixel * semantic_weights.astype("float32")
        pixel_weight = self._pixel_weight(label, counted, classes)
        return self._average(per_pixel, counted, pixel_weight)

    def _pixel_weight(self, label, counted, classes: int):
        """Each pixel's class weight (float32; 1 without class weights)."""
        if self.weight is None:
            return paddle.ones(label.shape, dtype="float32")
        safe = label * counted.astype("int64")  # ignored pixels point at class 0
        return paddle.sum(F.one_hot(safe, classes) * self.weight, axis=-1)

    def _average(self, per_pixel, counted, pixel_weight):
        pixel_weight.stop_gradient = True
        if self.top_k_percent_pixels == 1.0:
            return paddle.mean(per_pixel) / (paddle.mean(counted * pixel_weight) + EPS)
        flat = per_pixel.reshape([-1])
        k = int(self.top_k_percent_pixels * flat.numel())
        hardest, where = paddle.topk(flat, k)
        chosen = paddle.gather(pixel_weight.reshape([-1]), where)
        return hardest.mean() / (paddle.mean(chosen) + EPS)


# --------------------------------------------------------------------------- h20tf: more losses
# DiceLoss, OhemCrossEntropyLoss, LovaszSoftmaxLoss, LovaszHingeLoss, MixedLoss,
# BootstrappedCrossEntropyLoss, FocalLoss and MultiClassFocalLoss, with
# PaddleSeg 2.8's arguments, defaults, values and gradients (tests/test_own_losses.py). Two
# deliberate differences: DiceLoss leaves the caller's label tensor as it was (PaddleSeg's
# writes 0 over ignored pixels, so a loss after it in a MixedLoss counted them as class 0), and
# a Lovasz loss over no counted pixel is a zero scalar (PaddleSeg's: an empty tensor).
def _as_labels(label, ignore_index: int):
    """(int64 labels with ignored pixels set to 0, float32 mask of the counted pixels)."""
    label = label.astype("int64")
    counted = (label != ignore_index).astype("float32")
    counted.stop_gradient = True
    return label * counted.astype("int64"), counted


@LOSSES.add
class DiceLoss(nn.Layer):
    """1 - soft Dice per class (softmax probabilities against one-hot labels, ignored pixels
    left out), averaged over the batch, weighted by ``weight`` and averaged over the classes.

    Args:
        weight: one weight per class (None: all 1).
        ignore_index: label value left out (255).
        smooth: added to the numerator and denominator (1.0).
    """

    def __init__(self, weight=None, ignore_index: int = 255, smooth: float = 1.0):
        super().__init__()
        self.weight, self.ignore_index, self.smooth = weight, ignore_index, smooth
        self.eps = 1e-8

    def forward(self, logits, labels):
        classes = logits.shape[1]
        if self.weight is not None and len(self.weight) != classes:
            raise ValueError(f"DiceLoss has {len(self.weight)} class weights but the network "
                             f"gives {classes} classes")
        if labels.ndim == logits.ndim:
            labels = labels.squeeze(1)
        safe, counted = _as_labels(labels, self.ignore_index)
        n = logits.shape[0]
        counted = counted.reshape([n, -1])
        probs = F.softmax(logits.astype("float32"), axis=1)
        onehot = F.one_hot(safe, classes).astype("float32")
        total = paddle.zeros([], dtype="float32")
        for c in range(classes):
            p = probs[:, c].reshape([n, -1]) * counted
            t = onehot[..., c].reshape([n, -1]) * counted
            overlap = paddle.sum(p * t, axis=1)
            size = paddle.sum(p + t, axis=1)
            term = (1 - (2 * overlap + self.smooth) / (size + self.smooth + self.eps)).mean()
            total = total + (term * float(self.weight[c]) if self.weight is not None else term)
        return total / float(classes)


@LOSSES.add
class OhemCrossEntropyLoss(nn.Layer):
    """Cross entropy over the hard pixels: those whose probability of the true class is below
    ``thresh``, or below the ``min_kept``-th smallest such probability when that is higher.
    Without more than ``min_kept`` counted pixels, or with ``min_kept`` 0, every counted pixel
    is kept (PaddleSeg's rule).

    Args:
        thresh: probability threshold (0.7).
        min_kept: at least this many pixels are kept (10000).
        ignore_index: label value left out (255).
    """

    def __init__(self, thresh: float = 0.7, min_kept: int = 10000, ignore_index: int = 255):
        super().__init__()
        self.thresh, self.min_kept, self.ignore_index = thresh, min_kept, ignore_index
        self.EPS = 1e-5

    def _kept(self, logit, safe, counted):
        """float32 mask (flat) of the pixels the loss averages."""
        c = logit.shape[1]
        valid = int(counted.sum())
        if not (0 < self.min_kept < valid):  # as PaddleSeg: min_kept 0 keeps every pixel
            return counted
        probs = F.softmax(logit, axis=1).transpose([1, 0, 2, 3]).reshape([c, -1])
        truth = paddle.sum(probs * F.one_hot(safe, c).astype("float32").transpose([1, 0]), 0)
        truth = truth + (1.0 - counted)  # ignored pixels sort last
        kth = float(paddle.sort(truth)[min(truth.shape[0], self.min_kept) - 1])
        threshold = max(kth, self.thresh)
        keep = counted * (truth < threshold).astype("float32")
        return keep.detach()

    def forward(self, logit, label):
        if label.ndim == logit.ndim:
            label = label.squeeze(1)
        n, _, h, w = logit.shape
        safe, counted = _as_labels(label.reshape([-1]), self.ignore_index)
        keep = self._kept(logit, safe, counted)
        target = (safe * keep.astype("int64")
                  + (1 - keep.astype("int64")) * self.ignore_index).reshape([n, 1, h, w])
        keep = keep.reshape([n, 1, h, w])
        per_pixel = F.softmax_with_cross_entropy(logit, target, ignore_index=self.ignore_index,
                                                 axis=1)
        return paddle.mean(per_pixel * keep) / (paddle.mean(keep) + self.EPS)


def _lovasz_weights(truth_sorted):
    """The Lovasz extension's weights for errors sorted in decreasing order: the increments of
    1 - IoU as pixels are added one by one (``truth_sorted``: float32 0/1)."""
    total = truth_sorted.sum()
    inter = total - paddle.cumsum(truth_sorted, axis=0)
    union = total + paddle.cumsum(1.0 - truth_sorted, axis=0)
    loss_curve = 1.0 - inter / union
    if truth_sorted.shape[0] > 1:
        loss_curve = paddle.concat([loss_curve[:1], loss_curve[1:] - loss_curve[:-1]])
    loss_curve.stop_gradient = True
    return loss_curve


def _lovasz_sum(errors, truth):
    order = paddle.argsort(errors, axis=0, descending=True)
    return paddle.sum(paddle.gather(errors, order) * _lovasz_weights(paddle.gather(truth, order)))


def _counted(values, labels, ignore_index: int):
    """Rows of ``values`` ([P, ...]) and entries of ``labels`` ([P]) not ignored."""
    where = paddle.nonzero(labels != ignore_index)[:, 0]
    where.stop_gradient = True
    return paddle.gather(values, where), paddle.gather(labels, where)


@LOSSES.add
class LovaszSoftmaxLoss(nn.Layer):
    """The Lovasz-Softmax surrogate of the Jaccard loss, averaged over the classes.

    Args:
        ignore_index: label value left out (255).
        classes: ``present`` (classes in the labels), ``all``, or a list of class ids.
    """

    def __init__(self, ignore_index: int = 255, classes="present"):
        super().__init__()
        self.ignore_index, self.classes = ignore_index, classes

    def forward(self, logits, labels):
        probs = F.softmax(logits.astype("float32"), axis=1)
        c = probs.shape[1]
        flat = probs.transpose([0, 2, 3, 1]).reshape([-1, c])
        probs, labels = _counted(flat, labels.astype("int64").reshape([-1]), self.ignore_index)
        if probs.shape[0] == 0:
            return flat.sum() * 0.0
        wanted = list(range(c)) if self.classes in ("all", "present") else list(self.classes)
        terms = []
        for k in wanted:
            truth = (labels == k).astype("float32")
            if self.classes == "present" and float(truth.sum()) == 0:
                continue
            truth.stop_gradient = True
            pred = probs[:, 0] if c == 1 else probs[:, k]
            terms.append(_lovasz_sum(paddle.abs(truth - pred), truth))
        if len(wanted) == 1:
            return terms[0]
        return paddle.mean(paddle.stack(terms))


@LOSSES.add
class LovaszHingeLoss(nn.Layer):
    """The binary Lovasz hinge loss; logits N x 1 x H x W, or N x 2 x H x W (turned into one
    channel from the softmax of the second), labels 0/1.

    Args:
        ignore_index: label value left out (255).
    """

    def __init__(self, ignore_index: int = 255):
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits, labels):
        logits = logits.astype("float32")
        if logits.shape[1] == 2:
            fg = F.softmax(logits, axis=1)[:, 1]
            logits = paddle.log(fg + 1e-9 / (1 - fg + 1e-9)).unsqueeze(1)
        scores, labels = _counted(logits.reshape([-1]),
                                  labels.astype("int64").reshape([-1]), self.ignore_index)
        if labels.shape[0] == 0:
            return logits.sum() * 0.0
        truth = labels.astype("float32")
        truth.stop_gradient = True
        errors = 1.0 - scores * (2.0 * truth - 1.0)
        order = paddle.argsort(errors, axis=0, descending=True)
        weights = _lovasz_weights(paddle.gather(truth, order))
        return paddle.sum(F.relu(paddle.gather(errors, order)) * weights)


@LOSSES.add
class MixedLoss(nn.Layer):
    """Several losses of one output: returns the list of ``coef[i] * losses[i](logits,
    labels)`` (segx's training step adds them up and logs each).

    Args:
        losses: the loss layers.
        coef: one weight per loss.
    """

    def __init__(self, losses, coef):
        super().__init__()
        if not isinstance(losses, list) or not isinstance(coef, list):
            raise TypeError("MixedLoss takes a list of losses and a list of coef")
        if len(losses) != len(coef):
            raise ValueError(f"MixedLoss has {len(losses)} losses but {len(coef)} coef values")
        self.losses, self.coef = losses, coef

    def forward(self, logits, labels):
        return [loss(logits, labels) * float(c) for loss, c in zip(self.losses, self.coef)]


@LOSSES.add
class BootstrappedCrossEntropyLoss(nn.Layer):
    """Per image, the mean cross entropy of the pixels above ``loss_th`` when more than
    ``min_K`` are, else of the ``min_K`` largest (ignored pixels count as 0); averaged over the
    batch.

    Args:
        min_K: the fewest pixels averaged.
        loss_th: the loss above which a pixel is hard.
        weight: one weight per class (None: all 1).
        ignore_index: label value left out (255).
    """

    def __init__(self, min_K, loss_th, weight=None, ignore_index: int = 255):
        super().__init__()
        self.K, self.threshold, self.ignore_index = min_K, loss_th, ignore_index
        self.weight = None if weight is None else paddle.to_tensor(weight, dtype="float32")

    def forward(self, logit, label):
        n, c = logit.shape[0], logit.shape[1]
        if label.ndim == logit.ndim:
            label = label.squeeze(1)
        total = paddle.zeros([], dtype="float32")
        for i in range(n):
            x = logit[i].transpose([1, 2, 0]).reshape([-1, c]).astype("float32")
            y = label[i].reshape([-1]).astype("int64")
            losses = paddle.sort(F.cross_entropy(x, y, weight=self.weight, reduction="none",
                                                 ignore_index=self.ignore_index).reshape([-1]),
                                 descending=True)
            if self.K < losses.shape[0] and float(losses[self.K]) > self.threshold:
                losses = paddle.gather(losses, paddle.nonzero(losses > self.threshold))
            else:
                losses = losses[:self.K]
            total = total + paddle.mean(losses)
        return total / float(n)


@LOSSES.add
class FocalLoss(nn.Layer):
    """Sigmoid focal loss of a two-class output against one-hot 0/1 labels, averaged over the
    counted pixels and both channels.

    Args:
        alpha: weight of class 1 (class 0: 1 - alpha).
        gamma: focusing exponent.
        ignore_index: label value left out (255).
    """

    def __init__(self, alpha=0.25, gamma: float = 2.0, ignore_index: int = 255):
        super().__init__()
        self.alpha, self.gamma, self.ignore_index = alpha, gamma, ignore_index
        self.EPS = 1e-10

    def forward(self, logit, label):
        if logit.ndim != 4 or logit.shape[1] != 2 or label.ndim != 3:
            raise ValueError("FocalLoss takes N x 2 x H x W logits and N x H x W labels")
        logit = logit.transpose([0, 2, 3, 1])
        safe, counted = _as_labels(label, self.ignore_index)
        target = F.one_hot(safe, 2).astype(logit.dtype)
        target.stop_gradient = True
        per = F.sigmoid_focal_loss(logit, target, alpha=self.alpha, gamma=self.gamma,
                                   reduction="none")
        per = per * counted.unsqueeze(3).astype(per.dtype)
        return paddle.sum(per) / (paddle.sum(counted) * 2.0 + self.EPS)


@LOSSES.add
class MultiClassFocalLoss(nn.Layer):
    """Softmax focal loss: ``alpha * (1 - p)^gamma * CE`` per pixel, averaged over the counted
    pixels.

    Args:
        num_class: classes of the output.
        alpha: overall weight (1.0).
        gamma: focusing exponent (2.0).
        ignore_index: label value left out (255).
    """

    def __init__(self, num_class, alpha: float = 1.0, gamma: float = 2.0,
                 ignore_index: int = 255):
        super().__init__()
        self.num_class, self.alpha, self.gamma = num_class, alpha, gamma
        self.ignore_index = ignore_index
        self.EPS = 1e-10

    def forward(self, logit, label):
        if logit.ndim != 4 or label.ndim != 3:
            raise ValueError("MultiClassFocalLoss takes N x C x H x W logits and N x H x W "
                             "labels")
        label = label.astype("int64")
        ce = F.cross_entropy(logit.transpose([0, 2, 3, 1]), label,
                             ignore_index=self.ignore_index, reduction="none")
        if ce.ndim > label.ndim:
            ce = ce.squeeze(-1)
        focal = self.alpha * ((1 - paddle.exp(-ce)) ** self.gamma) * ce
        counted = (label != self.ignore_index).astype(focal.dtype)
        return paddle.mean(focal * counted) / (paddle.mean(counted) + self.EPS)
