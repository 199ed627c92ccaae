"""Training bookkeeping cost: segx's loop versus a bare loop of the same components;
and training speed across stacks (Paddle 3 against Paddle 2.6.2).

    python bench/train.py [--iters 60] [--size 256]
    python bench/train.py --stacks .venv-paddle26/bin/python .venv/bin/python [--iters 60]

With ``--stacks A B`` the bare loop (same model, data, seed and iterations) runs under each
interpreter in turn, A B A B, each in its own process; the best seconds per iteration of each are
compared (B / A; target <= 1.1 for Paddle 3 against 2.6.2).

Same model (PP-LiteSeg-T), config, seed, data stream and iterations. The bare loop does only
forward, loss, backward, optimiser and scheduler steps; segx adds logging, the progress line,
VisualDL, checkpoints and train_result.json. segx's time is its loop from the first to the last
iteration minus validation (the bare loop has none; setup and the final export are outside both);
both final models are then evaluated the same way.
Prints seconds per iteration, their ratio (target <= 1.05) and both final mIoU (within 2%).
"""
from __future__ import annotations

import zlib  # noqa: F401

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bare_loop(cfg, train, iters: int, num_classes: int):
    from segx import backend
    from segx.backend import data as D
    from segx.backend import optim as O
    seed = cfg.get("Global.seed")
    O.seed_everything(seed)
    model = backend.build_model(cfg["Arch"], num_classes)
    losses, coef = O.build_losses(cfg.get("Train.losses"))
    opt, sched = O.build_optimizer(model, cfg.get("Train.optimizer"),
                                   cfg.get("Train.lr_scheduler"), cfg.get("Train.learning_rate"),
                                   iters, 0, 0.0)
    data = D.SegData(train, D.build_transforms(cfg.get("Train.transforms"), "t"), seed)
    loader = iter(D.train_loader(data, D.StreamSampler(len(train), cfg.get("Train.batch_size"),
                                                       seed), 0))
    step = O.TrainStep(model, opt, sched, losses, coef)
    t0 = time.perf_counter()
    for it in range(1, iters + 1):
        batch = next(loader)
        O.reseed(seed, it)
        step(batch)
    return model, (time.perf_counter() - t0) / iters


class Stopwatch:
    """Hooks placed around another hook measure the time spent in it: ``start`` goes right
    before it, ``stop`` right after it (their ``after_step`` run in list order)."""

    def __init__(self):
        from segx.training import HookBase
        watch = self
        self.seconds = 0.0
        self.loop = 0.0

        class Start(HookBase):
            def before_train(self, trainer):
                watch.t_loop = None

            def before_step(self, trainer):
                if watch.t_loop is None:
                    watch.t_loop = time.perf_counter()

            def after_step(self, trainer):
                watch.t0 = time.perf_counter()

        class Stop(HookBase):
            def after_step(self, trainer):
                watch.seconds += time.perf_counter() - watch.t0

            def after_train(self, trainer):
                pass

        class LoopEnd(HookBase):
            def after_step(self, trainer):
                if trainer.iter == trainer.run.total:
                    watch.loop = time.perf_counter() - watch.t_loop

        self.start, self.stop, self.end = Start(), Stop(), LoopEnd()


def evaluate(model, val, num):
    from segx.backend.predictor import predict_logits
    from segx.inference.evaluation import evaluate_samples
    from segx.inference.preprocess import preprocessor
    return evaluate_samples(lambda b: predict_logits(model, b), val,
                            preprocessor([{"type": "Normalize"}]), num).metrics()["mIoU"]


def _config(tmp: Path, iters: int, size: int):
    from segx.apps.demo import make_demo_dataset
    from segx.zoo.registry import load_model_config
    data = make_demo_dataset(tmp / "data", n=40, size=(size, size))
    return load_model_config("PP-LiteSeg-T", [
        f"Global.dataset_dir={data}", f"Global.output={tmp / 'out'}",
        "Global.device=cpu", f"Train.epochs_iters={iters}", "Train.batch_size=4",
        f"Train.eval_interval={iters}", "Train.log_interval=10", "Train.pretrained=none",
        f"Train.transforms.1.crop_size=[{size // 2},{size // 2}]"])


def bare_only(iters: int, size: int) -> None:
    """One bare loop in this interpreter; prints a JSON line with its speed and stack."""
    import json
    import platform

    import numpy as np
    import paddle
    from segx.training.build import check_data
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(Path(tmp), iters, size)
        train, _, num, _ = check_data(cfg, 1)
        _, seconds = bare_loop(cfg, train, iters, num)
    print(json.dumps({"s_per_iter": seconds, "paddle": paddle.__version__,
                      "numpy": np.__version__, "python": platform.python_version()}))


def compare_stacks(pythons: list[str], iters: int, size: int) -> None:
    import json
    import subprocess
    best: dict = {}
    for _ in range(2):  # alternate, so both share the machine's noise; keep the best
        for py in pythons:
            out = subprocess.run([py, __file__, "--bare-only", "--iters", str(iters),
                                  "--size", str(size)], capture_output=True, text=True,
                                 check=True).stdout
            rec = json.loads(out.strip().splitlines()[-1])
            if py not in best or rec["s_per_iter"] < best[py]["s_per_iter"]:
                best[py] = rec
    print(f"PP-LiteSeg-T bare training loop, {iters} iterations, batch 4, crop {size // 2}, CPU")
    for py in pythons:
        r = best[py]
        print(f"Paddle {r['paddle']:<7} numpy {r['numpy']:<7} Python {r['python']:<7}: "
              f"{r['s_per_iter']:.4f} s/iter")
    a, b = (best[p]["s_per_iter"] for p in pythons)
    print(f"ratio (second / first): {b / a:.3f}  (target <= 1.1)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--stacks", nargs=2, metavar="PYTHON")
    ap.add_argument("--bare-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_only:
        return bare_only(args.iters, args.size)
    if args.stacks:
        return compare_stacks(args.stacks, args.iters, args.size)
    from segx.runs.folder import build_network, run_config
    from segx.training import build_trainer
    from segx.training.build import check_data
    from segx.training.hooks import EvalHook
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(Path(tmp), args.iters, args.size)
        train, val, num, _ = check_data(cfg, 1)
        segx_times, bare_times = [], []
        for _ in range(2):  # alternate, so both share the machine's noise; keep the best
            shutil.rmtree(Path(tmp) / "out", ignore_errors=True)
            trainer = build_trainer(cfg, "cpu")
            watch = Stopwatch()  # validation is excluded: the bare loop has none
            at = next(k for k, h in enumerate(trainer.hooks) if isinstance(h, EvalHook))
            trainer.hooks[at:at + 1] = [watch.start, trainer.hooks[at], watch.stop]
            trainer.hooks.append(watch.end)
            trainer.train()
            segx_times.append((watch.loop - watch.seconds) / args.iters)
            bare, seconds = bare_loop(cfg, train, args.iters, num)
            bare_times.append(seconds)
        segx_s, bare_s = min(segx_times), min(bare_times)
        bare_miou = evaluate(bare, val, num)
        out = Path(tmp) / "out"
        weights = out / f"iter_{args.iters}" / "model.pdparams"
        segx_miou = evaluate(build_network(run_config(out / "config.yaml"), weights), val, num)
    print(f"PP-LiteSeg-T, {args.iters} iterations, batch 4, crop {args.size // 2}, CPU")
    print(f"bare loop : {bare_s:.4f} s/iter, final mIoU {bare_miou:.4f}")
    print(f"segx      : {segx_s:.4f} s/iter, final mIoU {segx_miou:.4f}")
    print(f"time ratio: {segx_s / bare_s:.3f}  (target <= 1.05)")
    print(f"mIoU diff : {abs(segx_miou - bare_miou):.4f}  (target <= 0.02)")


if __name__ == "__main__":
    main()
