"""The paddle side of train, evaluate and export: data, losses, optimiser, steps, checkpoints,
multi-scale/flip/sliding inference, static export and the Paddle Inference engine.

The mode modules (``segx.modules.*``) drive these pieces and own every policy (what to save,
when to evaluate, how to resume); nothing here knows about segx's config keys.
"""
from __future__ import annotations

import zlib  # noqa: F401  (must precede paddle; see segx.backend)

import os
import random
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import paddle
import paddle.nn.functional as F
from paddleseg.cvlibs import manager
from paddleseg.transforms import Compose
from paddleseg.transforms import functional as TF
from PIL import Image, ImageOps

from segx.backend import _build
from segx.errors import ConfigError, DatasetError


# --------------------------------------------------------------------------- data
def read_image(path: str | Path) -> np.ndarray:
    """An image as H x W x 3 RGB uint8: EXIF orientation applied; grey, alpha and 16-bit folded."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"cannot read image '{path}'.",
                           solution="run check_dataset to find every unreadable file.")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_label(path: str | Path) -> np.ndarray:
    """A label as an H x W id array (EXIF orientation applied, as check_dataset measures it)."""
    try:
        with Image.open(path) as lb:
            if lb.getexif().get(0x0112, 1) != 1:
                lb = ImageOps.exif_transpose(lb)
            return np.asarray(lb)
    except OSError as exc:
        raise DatasetError(f"cannot read label '{path}' ({exc}).",
                           solution="run check_dataset to find every unreadable file.") from None


def build_transforms(specs: list, where: str) -> Compose:
    """PaddleSeg transforms from ``[{type: ..., ...}]`` (images are fed already RGB)."""
    ops = [_build(s, manager.TRANSFORMS, f"{where}.{i}") for i, s in enumerate(specs or [])]
    return Compose(ops, to_rgb=False)


def apply_transforms(transforms: Compose, img: np.ndarray, label: np.ndarray | None) -> dict:
    data = {"img": img.astype(np.float32), "trans_info": [], "gt_fields": []}
    if label is not None:
        data["label"] = label
        data["gt_fields"].append("label")
    return transforms(data)


class SegData(paddle.io.Dataset):
    """Training samples: ``key = (stream position, sample index)``.

    Augmentation is seeded from the stream position, so a sample's crops and flips depend only
    on (seed, position): the same with any number of loader workers, and after a resume.
    """

    def __init__(self, pairs: Sequence[tuple[Path, Path]], transforms: Compose, seed: int,
                 edge_classes: int | None = None):
        self.pairs, self.transforms, self.seed = list(pairs), transforms, seed
        self.edge_classes = edge_classes

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key):
        pos, idx = key
        state = (self.seed * 1_000_003 + int(pos)) % (2 ** 32)
        random.seed(state)
        np.random.seed(state)
        image, label = self.pairs[int(idx)]
        data = apply_transforms(self.transforms, read_image(image), read_label(label))
        out = [data["img"], data["label"].astype(np.int64)]
        if self.edge_classes:
            out.append(TF.mask_to_binary_edge(data["label"], radius=2,
                                              num_classes=self.edge_classes).astype(np.int64))
        return tuple(out)


class StreamSampler(paddle.io.BatchSampler):
    """An endless, seeded stream of batches: epoch ``e`` is a permutation seeded by (seed, e).

    Batch ``i`` of rank ``r`` is a pure function of (seed, i, r), which is what makes resume and
    multi-process training reproducible.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start_iter: int = 0,
                 rank: int = 0, world: int = 1):
        self.n, self.bs, self.seed = n, batch_size, seed
        self.start, self.rank, self.world = start_iter, rank, world
        self._perms: dict[int, np.ndarray] = {}

    def _index(self, pos: int) -> int:
        epoch, k = divmod(pos, self.n)
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng((self.seed, epoch)).permutation(self.n)}
        return int(self._perms[epoch][k])

    def __iter__(self) -> Iterator[list]:
        it = self.start
        while True:
            first = (it * self.world + self.rank) * self.bs
            yield [(p, self._index(p)) for p in range(first, first + self.bs)]
            it += 1

    def __len__(self) -> int:
        return 2 ** 62


def train_loader(data: SegData, sampler: StreamSampler, num_workers: int):
    return paddle.io.DataLoader(data, batch_sampler=sampler, num_workers=num_workers,
                                return_list=True, persistent_workers=num_workers > 0)


# --------------------------------------------------------------------------- losses, optimiser
def build_losses(spec: dict) -> tuple[list, list[float]]:
    types = spec.get("types") or []
    coef = spec.get("coef") or [1.0] * len(types)
    if len(coef) != len(types):
        raise ConfigError(f"Train.losses has {len(types)} types but {len(coef)} coef values.",
                          solution="give one coefficient per loss type.")
    return [_build(t, manager.LOSSES, f"Train.losses.types.{i}")
            for i, t in enumerate(types)], [float(c) for c in coef]


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
def set_device(device: str) -> None:
    paddle.set_device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    paddle.seed(seed)


def reseed(seed: int, iteration: int) -> None:
    """Seed paddle's generator for one iteration (dropout etc. then survive a resume)."""
    paddle.seed((seed * 7919 + iteration) % (2 ** 31))


def dist_info() -> tuple[int, int]:
    """(rank, world size) of this process under ``paddle.distributed.launch``."""
    return int(os.environ.get("PADDLE_TRAINER_ID", 0)), int(os.environ.get(
        "PADDLE_TRAINERS_NUM", 1))


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


def amp_supported(device: str) -> bool:
    return device.startswith("gpu")


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


# --------------------------------------------------------------------------- inference
def _forward(model, x):
    outs = model(x)
    return outs[0] if isinstance(outs, (list, tuple)) else outs


@paddle.no_grad()
def predict_logits(model, batch: np.ndarray, scales: Sequence[float] = (1.0,),
                   flip_h: bool = False, flip_v: bool = False,
                   crop: Sequence[int] | None = None, stride: Sequence[int] | None = None):
    """Class scores for an N x 3 x H x W batch as an N x C x H x W numpy array: the raw logits,
    or with scales/flips/windows the mean softmax (see :func:`segx.tta.scores`)."""
    from segx.tta import scores
    model.eval()
    return scores(lambda x: _forward(model, paddle.to_tensor(x)).numpy(), batch, scales,
                  flip_h, flip_v, crop, stride)


# --------------------------------------------------------------------------- checkpoints
def model_state(model) -> dict:
    return (model._layers if isinstance(model, paddle.DataParallel) else model).state_dict()


def save(obj, path: Path) -> None:
    paddle.save(obj, str(path))


def load(path: Path):
    return paddle.load(str(path))


def set_state(layer, state: dict) -> list[str]:
    """Load a full-model state strictly; returns the names of mismatching tensors (none = ok)."""
    own = layer.state_dict()
    bad = [k for k in own if k not in state or list(state[k].shape) != list(own[k].shape)]
    bad += [k for k in state if k not in own]
    if not bad:
        layer.set_state_dict(state)
    return bad


# --------------------------------------------------------------------------- export, engine
@paddle.no_grad()
def predict_labels(model, batch: np.ndarray) -> np.ndarray:
    """The N x H x W int32 class map of an N x 3 x H x W batch, argmax taken in paddle (as the
    exported graph does with ``output_op=argmax``)."""
    model.eval()
    logit = _forward(model, paddle.to_tensor(batch))
    return paddle.argmax(logit, axis=1, dtype="int32").numpy()


class _Deploy(paddle.nn.Layer):
    def __init__(self, model, output_op: str):
        super().__init__()
        self.model, self.output_op = model, output_op

    def forward(self, x):
        logit = _forward(self.model, x)
        if self.output_op == "argmax":
            return paddle.argmax(logit, axis=1, dtype="int32")
        if self.output_op == "softmax":
            return F.softmax(logit, axis=1)
        return logit


def export_static(model, prefix: Path, input_shape: Sequence | None, output_op: str) -> None:
    """Write ``<prefix>.pdmodel`` and ``<prefix>.pdiparams`` for Paddle Inference."""
    model.eval()
    shape = list(input_shape) if input_shape else [None, 3, None, None]
    net = paddle.jit.to_static(_Deploy(model, output_op), full_graph=True, input_spec=[
        paddle.static.InputSpec(shape=shape, dtype="float32", name="x")])
    paddle.jit.save(net, str(prefix))


# Paddle Inference 2.6 graph passes that change results on CPU (with or without oneDNN):
# reshape_transpose_matmul fuses ANN's attention wrongly (logits off by 2,100, 75 % of argmax
# pixels equal, against 0.0 with the pass removed).
_WRONG_CPU_PASSES = ("reshape_transpose_matmul_mkldnn_fuse_pass",)


class Engine:
    """A Paddle Inference predictor for an exported model, built once and reused."""

    def __init__(self, model_file: Path, params_file: Path, device: str = "cpu",
                 threads: int | None = None, mkldnn: bool = True, onednn_resize: bool = False):
        """``onednn_resize`` also runs bilinear/nearest resizing in oneDNN (with ``mkldnn``):
        several times faster than Paddle's own kernel, but oneDNN ignores Paddle's
        ``scale_factor`` rounding on sizes it does not divide, so segx export turns it on only
        where it reproduced the trained model (``Deploy.onednn_resize`` in inference.yml)."""
        config = paddle.inference.Config(str(model_file), str(params_file))
        if device.startswith("gpu"):
            config.enable_use_gpu(200, int(device.partition(":")[2] or 0))
        else:
            config.disable_gpu()
            if mkldnn:
                config.enable_mkldnn()
                if onednn_resize:
                    config.pass_builder().append_pass("interpolate_mkldnn_pass")
            config.set_cpu_math_library_num_threads(threads or os.cpu_count() or 1)
            for name in _WRONG_CPU_PASSES:
                config.delete_pass(name)
        config.enable_memory_optim()
        config.switch_ir_optim(True)
        config.disable_glog_info()
        self.predictor = paddle.inference.create_predictor(config)
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.input.reshape(list(batch.shape))
        self.input.copy_from_cpu(np.ascontiguousarray(batch, np.float32))
        self.predictor.run()
        return self.output.copy_to_cpu()
