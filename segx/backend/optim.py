"""The paddle side of optimisation: losses, optimiser and schedule, one training step, seeds and
data-parallel helpers. Nothing here knows segx's config keys beyond the section it is given."""
from __future__ import annotations

import zlib  # noqa: F401  (must precede paddle; see segx.backend)

import random

import numpy as np
import paddle
from segx.backend import _build, nets, paddleseg_manager
from segx.utils.errors import ConfigError


# --------------------------------------------------------------------------- losses, optimiser
def build_losses(spec: dict, use_paddleseg: bool | None = None) -> tuple[list, list[float]]:
    """The loss layers and coefficients of ``Train.losses``; a loss type segx owns
    (:mod:`segx.backend.nets`) comes from segx's code unless ``use_paddleseg`` (default:
    ``$SEGX_NETWORKS``) says otherwise."""
    own = nets.prefer_own(use_paddleseg)
    types = spec.get("types") or []
    coef = spec.get("coef") or [1.0] * len(types)
    if len(coef) != len(types):
        raise ConfigError(f"Train.losses has {len(types)} types but {len(coef)} coef values.",
                          solution="give one coefficient per loss type.")
    return [_build(t, _loss_table(t, own, f"Train.losses.types.{i}"), f"Train.losses.types.{i}")
            for i, t in enumerate(types)], [float(c) for c in coef]


def _loss_table(spec: object, own: bool, where: str):
    """segx's loss table when it has ``spec``'s type (and every loss nested in it), else
    paddleseg's (an optional extra)."""
    def owned(s: object) -> bool:
        nested = s.get("losses") if isinstance(s, dict) else None
        return (isinstance(s, dict) and s.get("type") in nets.LOSSES
                and all(owned(n) for n in (nested if isinstance(nested, list) else [])))
    if not isinstance(spec, dict) or (own and owned(spec)):
        return nets.LOSSES  # (a spec that is no mapping fails in _build with its own message)
    return paddleseg_manager(where, spec.get("type"), nets.LOSSES).LOSSES


def uses_edges(losses: list) -> bool:
    return any(getattr(loss, "edge_label", False) for loss in losses)


def loss_terms(outputs: list, label, edge, losses: list, coef: list[float]) -> list:
    """One weighted loss tensor per term (a MixedLoss gives one per member)."""
    terms = []
    for out, loss, c in zip(outputs, losses, coef):
        if getattr(loss, "edge_label", False):
            terms.append(c * loss(out, edge))
        elif type(loss).__name__ == "MixedLoss":
            terms.extend(c * t for t in loss(out, label))
        else:
            terms.append(c * loss(out, label))
    return terms


def build_optimizer(model, opt_spec: dict, lr_spec: dict, base_lr: float, iters: int,
                    warmup_steps: int, warmup_start_lr: float):
    """(optimizer, lr scheduler); warm-up is linear from ``warmup_start_lr`` to ``base_lr``."""
    lr_spec = dict(lr_spec or {"type": "PolynomialDecay"})
    kind = lr_spec.pop("type", "PolynomialDecay")
    decay_steps = max(iters - warmup_steps, 1)
    if kind == "PolynomialDecay":
        sched = paddle.optimizer.lr.PolynomialDecay(
            base_lr, decay_steps, end_lr=lr_spec.pop("end_lr", 0.0),
            power=lr_spec.pop("power", 0.9))
    elif kind == "CosineAnnealingDecay":
        sched = paddle.optimizer.lr.CosineAnnealingDecay(
            base_lr, T_max=decay_steps, eta_min=lr_spec.pop("eta_min", 0.0))
    elif kind == "Constant":
        sched = paddle.optimizer.lr.LambdaDecay(base_lr, lambda _: 1.0)
    else:
        raise ConfigError(f"Train.lr_scheduler.type='{kind}' is not supported.",
                          solution="use PolynomialDecay, CosineAnnealingDecay or Constant.")
    if lr_spec:
        raise ConfigError(f"Train.lr_scheduler.{next(iter(lr_spec))}: not an argument of {kind}.",
                          solution="PolynomialDecay takes power, end_lr; CosineAnnealingDecay "
                                   "takes eta_min.")
    if warmup_steps > 0:
        sched = paddle.optimizer.lr.LinearWarmup(sched, warmup_steps, warmup_start_lr, base_lr)
    opt_spec = dict(opt_spec or {"type": "SGD"})
    kind = opt_spec.pop("type", "SGD")
    names = {"SGD": "Momentum" if opt_spec.get("momentum") else "SGD", "Momentum": "Momentum",
             "Adam": "Adam", "AdamW": "AdamW"}
    if kind not in names:
        raise ConfigError(f"Train.optimizer.type='{kind}' is not supported.",
                          solution="use SGD, Momentum, Adam or AdamW.")
    cls = getattr(paddle.optimizer, names[kind])
    if names[kind] == "SGD":
        opt_spec.pop("momentum", None)
    try:
        opt = cls(learning_rate=sched, parameters=model.parameters(), **opt_spec)
    except TypeError as exc:
        raise ConfigError(f"Train.optimizer: {exc}.",
                          solution=f"check the arguments of {kind}.") from None
    return opt, sched


# --------------------------------------------------------------------------- devices, seeds
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    paddle.seed(seed)


def reseed(seed: int, iteration: int) -> None:
    """Seed paddle's generator for one iteration (dropout etc. then survive a resume)."""
    paddle.seed((seed * 7919 + iteration) % (2 ** 31))


def init_parallel(model):
    paddle.distributed.init_parallel_env()
    return paddle.DataParallel(model)


def broadcast_buffers(model) -> None:
    """Give every rank rank 0's BatchNorm running statistics (paddle keeps them as
    non-trainable parameters) and other buffers; trainable ones DataParallel keeps in sync."""
    for t in [p for p in model.parameters() if p.stop_gradient] + list(model.buffers()):
        paddle.distributed.broadcast(t, src=0)


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank (one tiny all-reduce)."""
    t = paddle.to_tensor([int(flag)], dtype="int32")
    paddle.distributed.all_reduce(t, op=paddle.distributed.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    paddle.distributed.barrier()


# --------------------------------------------------------------------------- steps
class TrainStep:
    """forward, loss, backward, optimiser and scheduler step for one batch."""

    def __init__(self, model, optimizer, scheduler, losses: list, coef: list[float],
                 amp: str | None = None):
        self.model, self.opt, self.sched = model, optimizer, scheduler
        self.losses, self.coef, self.amp = losses, coef, amp
        self.scaler = paddle.amp.GradScaler(init_loss_scaling=1024) if amp else None
        if amp == "O2":
            self.model, self.opt = paddle.amp.decorate(self.model, self.opt, level="O2")

    def _loss(self, img, label, edge):
        outs = self.model(img)
        if len(outs) != len(self.losses):
            raise ConfigError(f"the network has {len(outs)} training outputs but Train.losses "
                              f"has {len(self.losses)} types.",
                              solution=f"give {len(outs)} loss types and coefficients.")
        terms = loss_terms(outs, label, edge, self.losses, self.coef)
        return (paddle.add_n(terms) if len(terms) > 1 else terms[0]), terms

    def __call__(self, batch: list) -> tuple[float, list[float]]:
        img, label = batch[0], batch[1]
        edge = batch[2] if len(batch) > 2 else None
        self.model.train()
        if self.amp:
            with paddle.amp.auto_cast(level=self.amp):
                loss, terms = self._loss(img, label, edge)
            scaled = self.scaler.scale(loss)
            scaled.backward()
            self.scaler.minimize(self.opt, scaled)
        else:
            loss, terms = self._loss(img, label, edge)
            loss.backward()
            self.opt.step()
        self.opt.clear_grad()
        self.sched.step()
        return float(loss), [float(t) for t in terms]

    def lr(self) -> float:
        return float(self.opt.get_lr())
