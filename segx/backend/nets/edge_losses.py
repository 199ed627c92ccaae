"""The edge-aware losses of GSCNN and DecoupledSegNet, written for segx with PaddleSeg's
arguments and defaults: ``EdgeAttentionLoss``, ``BCELoss``, ``RelaxBoundaryLoss`` and
``DualTaskLoss``.

Every operand of every arithmetic operation has one dtype: labels are int64 where they index
classes and are cast to float32 before they meet a float (PaddleSeg's versions multiply int64
labels by float32 tensors, which Paddle 3's strict type promotion refuses and Paddle 2 resolves
by casting the right operand to the left one's dtype; see ``RelaxBoundaryLoss`` for where that
changed PaddleSeg's value).
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from segx.backend.nets import LOSSES

EPS = 1e-10


def _as_nchw_label(label, ndim: int):
    """``label`` as int64 with a channel axis when the logits have one more axis."""
    label = label.astype("int64")
    return paddle.unsqueeze(label, 1) if label.ndim != ndim else label


def _masked_mean(per_pixel, mask):
    """mean(per_pixel * mask) / (mean(mask) + EPS), the mask constant."""
    mask.stop_gradient = True
    return paddle.mean(per_pixel * mask) / (paddle.mean(mask) + EPS)


@LOSSES.add
class EdgeAttentionLoss(nn.Layer):
    """Cross entropy of the segmentation logits over the pixels the edge branch is sure of.

    Called with ``((seg_logit, edge_prob), label)``: pixels whose edge probability is at most
    ``edge_threshold`` count as ignored, as do those labelled ``ignore_index``; the value is the
    mean cross entropy over the rest (0 when none is left)."""

    def __init__(self, edge_threshold: float = 0.8, ignore_index: int = 255):
        super().__init__()
        self.edge_threshold, self.ignore_index = edge_threshold, ignore_index

    def forward(self, logits, label):
        seg, edge = logits[0], logits[1]
        label = _as_nchw_label(label, seg.ndim)
        if edge.shape != label.shape:
            raise ValueError(f"EdgeAttentionLoss: the edge output {edge.shape} and the label "
                             f"{label.shape} differ in shape")
        label = paddle.where(edge > self.edge_threshold, label,
                             paddle.full_like(label, self.ignore_index))
        label = paddle.transpose(label, [0, 2, 3, 1])
        per_pixel = F.cross_entropy(paddle.transpose(seg, [0, 2, 3, 1]), label,
                                    ignore_index=self.ignore_index, reduction="none", axis=-1)
        return _masked_mean(per_pixel, (label != self.ignore_index).astype("float32"))


def _balance(label, eps: float):
    """(weight of positives, weight of negatives): 2 * the other kind's share of the 0/1
    entries of ``label`` (float32)."""
    pos = paddle.sum((label == 1).astype("float32"))
    neg = paddle.sum((label == 0).astype("float32"))
    return 2 * neg / (pos + neg + eps), 2 * pos / (pos + neg + eps)


def _check_weight(name: str, value, numbers: tuple):
    if value is None or isinstance(value, paddle.Tensor) or value == "dynamic":
        return value
    if isinstance(value, numbers) and not isinstance(value, bool):
        return paddle.to_tensor(value, dtype="float32")
    raise ValueError(f"BCELoss {name}={value!r}: give 'dynamic', "
                     f"{'a number' if numbers == (int, float) else 'a list of numbers'} or null")


@LOSSES.add
class BCELoss(nn.Layer):
    """Binary cross entropy with logits, averaged over the pixels not labelled
    ``ignore_index`` (ignored pixels count as negatives in the dynamic weights).

    Args:
        weight: per-element rescaling: None, ``'dynamic'`` (positives weighted by twice the
            share of negatives in the batch's labels and the other way round) or a tensor.
        pos_weight: weight of the positive term: None, ``'dynamic'`` (twice the share of
            negatives) or a number.
        ignore_index: label value that contributes nothing.
        edge_label: whether the loss reads the edge labels (segx's trainer passes them).

    A label with one channel where the logits have several is one-hot encoded first."""

    def __init__(self, weight=None, pos_weight=None, ignore_index: int = 255,
                 edge_label: bool = False):
        super().__init__()
        self.weight = _check_weight("weight", weight, (list, tuple))
        self.pos_weight = _check_weight("pos_weight", pos_weight, (int, float))
        self.ignore_index, self.edge_label = ignore_index, edge_label

    def forward(self, logit, label):
        label = _as_nchw_label(label, logit.ndim)
        valid = label != self.ignore_index
        label = paddle.where(valid, label, paddle.zeros_like(label))
        if label.shape[1] != logit.shape[1]:
            label = F.one_hot(label.squeeze(1), logit.shape[1]).transpose([0, 3, 1, 2])
        label = label.astype("float32")
        label.stop_gradient = True
        weight, pos_weight = self.weight, self.pos_weight
        if isinstance(weight, str) or isinstance(pos_weight, str):
            w_pos, w_neg = _balance(label, EPS)
            weight = w_pos * label + w_neg * (1 - label) if isinstance(weight, str) else weight
            pos_weight = w_pos if isinstance(pos_weight, str) else pos_weight
        per_pixel = F.binary_cross_entropy_with_logits(logit, label, weight=weight,
                                                       reduction="none", pos_weight=pos_weight)
        return _masked_mean(per_pixel, valid.astype("float32"))


@LOSSES.add
class RelaxBoundaryLoss(nn.Layer):
    """DecoupledSegNet's boundary-relaxed loss: each pixel's target is every class found within
    ``border`` pixels of it, and the pixel scores the log of the probability the network gives
    that set of classes, divided among them.

    For image i with H x W pixels, K_i the number of target classes of each pixel (0 where the
    whole neighbourhood is ignored or outside the image) and P_i the probability of the set:
    ``loss_i = -sum_j sum_pixels K_i log(P_i) / B_j / (H*W - ignored_i + 1)`` summed over the
    batch, with ``B_j = max(K_j, 1)``: as in PaddleSeg (and the authors' code) every image's
    log-likelihood is weighted by the border weights of every image of the batch.

    PaddleSeg 2.8.0 multiplies its int64 one-hot by the float32 log-probabilities, which Paddle
    2.6 does in int64: its value is built from log-probabilities truncated towards zero and its
    gradient is 0. Here the product is in float32 (the loss as published), with a gradient.

    Args:
        border: relaxation radius in pixels (1).
        calculate_weights: per-class weights; only False (PaddleSeg's fails when set).
        upper_bound: the bound of those weights (unused while they are off).
        ignore_index: label value that contributes nothing (255).
    """

    def __init__(self, border: int = 1, calculate_weights: bool = False,
                 upper_bound: float = 1.0, ignore_index: int = 255):
        super().__init__()
        if isinstance(border, bool) or not isinstance(border, int) or not 0 <= border <= 64:
            raise ValueError(f"RelaxBoundaryLoss border={border!r}: give an integer from 0 to 64")
        if calculate_weights:
            raise ValueError("RelaxBoundaryLoss calculate_weights=True is not supported "
                             "(PaddleSeg 2.8.0's fails with it too); leave it false")
        self.border, self.calculate_weights = border, calculate_weights
        self.upper_bound, self.ignore_index = upper_bound, ignore_index

    def relaxed_targets(self, label, classes: int):
        """(N, classes, H, W) float32: 1 where the class occurs within ``border`` pixels."""
        label = label.astype("int64")
        if label.ndim == 4:
            label = label.squeeze(1)
        known = (label >= 0) & (label < classes) & (label != self.ignore_index)
        label = paddle.where(known, label, paddle.full_like(label, classes))
        onehot = F.one_hot(label, classes + 1).transpose([0, 3, 1, 2])
        if self.border:
            b = self.border
            onehot = F.max_pool2d(F.pad(onehot, [b, b, b, b]), 2 * b + 1, stride=1)
        targets = onehot[:, :classes]
        targets.stop_gradient = True
        return targets

    def forward(self, logit, label):
        classes, (h, w) = logit.shape[1], logit.shape[2:]
        targets = self.relaxed_targets(label, classes)
        count = targets.sum(1)  # K: target classes per pixel
        ignored = (count == 0).astype("float32")
        inv_border = 1.0 / (count + ignored)  # 1 / B, every image of the batch
        chosen = paddle.logical_or(targets > 0, ignored.unsqueeze(1) > 0)
        floor = paddle.full_like(logit, float("-inf"))
        log_p = paddle.logsumexp(paddle.where(chosen, logit, floor), axis=1) - \
            paddle.logsumexp(logit, axis=1)  # log P, 0 where ignored
        loss = 0
        for i in range(logit.shape[0]):
            scored = (count[i] * log_p[i] * (1.0 - ignored[i])).unsqueeze(0)
            loss = loss + paddle.sum(-inv_border * scored) / (h * w - ignored[i].sum() + 1)
        return loss


def _gumbel_softmax(logit, tau: float, eps: float = 1e-10):
    """Softmax over classes of (logit + Gumbel noise) / tau, noise from paddle.rand."""
    uniform = paddle.rand(logit.shape, dtype="float32")
    gumbel = -paddle.log(eps - paddle.log(uniform + eps))
    return F.softmax((logit + gumbel) / tau, axis=1)


def _depthwise(x, taps, vertical: bool, padding):
    """Convolve every channel of ``x`` with the 1-D float32 filter ``taps`` along one axis."""
    c, k = x.shape[1], taps.shape[0]
    kernel = taps.reshape([1, 1, k, 1] if vertical else [1, 1, 1, k])
    return F.conv2d(x, kernel.tile([c, 1, 1, 1]), padding=padding, groups=c)


def triangle_blur(x, r: int = 4):
    """Separable triangle filter [1..r, r+1, r..1] / (r+1)^2 on each axis, the borders
    extended by mirroring (the edge pixel repeated); needs H and W of at least ``r``."""
    if x.shape[2] < r or x.shape[3] < r:
        raise ValueError(f"DualTaskLoss needs logits of at least {r}x{r} pixels, "
                         f"not {x.shape[2]}x{x.shape[3]}")
    ramp = list(range(1, r + 1)) + [r + 1] + list(range(r, 0, -1))
    taps = paddle.to_tensor(ramp, dtype="float32") / float((r + 1) ** 2)
    x = paddle.concat([x[:, :, :, :r].flip([3]), x, x[:, :, :, -r:].flip([3])], axis=3)
    x = paddle.concat([x[:, :, :r].flip([2]), x, x[:, :, -r:].flip([2])], axis=2)
    return _depthwise(_depthwise(x, taps, False, 0), taps, True, 0)


def gradient_magnitude(x):
    """Per-channel magnitude of the central-difference gradient of the blurred ``x`` (zeros
    beyond the border), divided by its largest value over the batch."""
    if x.shape[2] <= 1 or x.shape[3] <= 1:
        raise ValueError(f"DualTaskLoss needs logits larger than 1x1, not {x.shape[2:]}")
    x = triangle_blur(x, 4)
    taps = paddle.to_tensor([-0.5, 0.0, 0.5], dtype="float32")
    gx, gy = _depthwise(x, taps, False, [0, 1]), _depthwise(x, taps, True, [1, 0])
    mag = paddle.sqrt(gx * gx + gy * gy + 1e-6)
    return mag / mag.max()


def _mean_over(loss, where, th: float = 1e-8):
    """Sum of ``loss`` where ``where`` > th, over the count of such entries (when any)."""
    picked = (where > th).astype("float32")
    picked.stop_gradient = True
    return paddle.sum(loss * picked) / paddle.clip(paddle.sum(picked), min=1.0)


@LOSSES.add
class DualTaskLoss(nn.Layer):
    """GSCNN's dual-task loss: the L1 distance between the boundaries of a Gumbel-softmax
    sample of the segmentation (temperature ``tau``) and those of the one-hot labels, each
    boundary map being the normalised gradient magnitude of the triangle-blurred maps; averaged
    over the predicted boundary pixels and over the labelled ones, half each. Pixels labelled
    ``ignore_index`` count as class 0 with a zeroed logit and contribute nothing. The noise is
    drawn with paddle.rand (``paddle.seed`` makes it repeatable)."""

    def __init__(self, ignore_index: int = 255, tau: float = 0.5):
        super().__init__()
        self.ignore_index, self.tau = ignore_index, tau

    def forward(self, logit, label):
        label = _as_nchw_label(label, logit.ndim)
        valid = label != self.ignore_index
        mask = valid.astype("float32")
        mask.stop_gradient = True
        label = label * valid.astype("int64")
        onehot = F.one_hot(label.squeeze(1), logit.shape[1]).transpose([0, 3, 1, 2])
        onehot.stop_gradient = True
        sample = gradient_magnitude(_gumbel_softmax(logit * mask, self.tau))
        target = gradient_magnitude(onehot.astype("float32"))
        loss = paddle.abs(sample - target) * mask
        return 0.5 * _mean_over(loss, sample) + 0.5 * _mean_over(loss, target)
