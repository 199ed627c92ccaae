"""Training bookkeeping cost: segx's loop versus a bare loop of the same PaddleSeg components.

    python bench/train.py [--iters 60] [--size 256]

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
    from segx.backend import build_model
    from segx.backend import training as T
    seed = cfg.get("Global.seed")
    T.seed_everything(seed)
    model = build_model(cfg["Arch"], num_classes)
    losses, coef = T.build_losses(cfg.get("Train.losses"))
    opt, sched = T.build_optimizer(model, cfg.get("Train.optimizer"),
                                   cfg.get("Train.lr_scheduler"), cfg.get("Train.learning_rate"),
                                   iters, 0, 0.0)
    data = T.SegData(train, T.build_transforms(cfg.get("Train.transforms"), "t"), seed)
    loader = iter(T.train_loader(data, T.StreamSampler(len(train), cfg.get("Train.batch_size"),
                                                       seed), 0))
    step = T.TrainStep(model, opt, sched, losses, coef)
    t0 = time.perf_counter()
    for it in range(1, iters + 1):
        batch = next(loader)
        T.reseed(seed, it)
        step(batch)
    return model, (time.perf_counter() - t0) / iters


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    from segx.backend import training as T
    from segx.config import load_config
    from segx.demo import make_demo_dataset
    from segx.modules.evaluate import evaluate_samples
    from segx.modules.train import loop
    from segx.modules.train.loop import Trainer
    with tempfile.TemporaryDirectory() as tmp:
        data = make_demo_dataset(Path(tmp) / "data", n=40, size=(args.size, args.size))
        cfg = load_config("PP-LiteSeg-T", [
            f"Global.dataset_dir={data}", f"Global.output={Path(tmp) / 'out'}",
            "Global.device=cpu", f"Train.epochs_iters={args.iters}", "Train.batch_size=4",
            f"Train.eval_interval={args.iters}", "Train.log_interval=10",
            f"Train.transforms.1.crop_size=[{args.size // 2},{args.size // 2}]"])
        excluded = {"t": 0.0}

        def timed(fn):
            def wrapper(*a, **k):
                t0 = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    excluded["t"] += time.perf_counter() - t0
            return wrapper

        Trainer._validate = timed(Trainer._validate)
        train, val, num, _ = loop.check_data(cfg, 1)
        segx_times, bare_times = [], []
        for _ in range(2):  # alternate, so both share the machine's noise; keep the best
            excluded["t"] = 0.0
            shutil.rmtree(Path(tmp) / "out", ignore_errors=True)
            trainer = Trainer(cfg, "cpu")
            trainer.fit()
            segx_times.append((trainer.loop_seconds - excluded["t"]) / args.iters)
            T.set_device("cpu")
            bare, seconds = bare_loop(cfg, train, args.iters, num)
            bare_times.append(seconds)
        segx_s, bare_s = min(segx_times), min(bare_times)
        tf = T.build_transforms(cfg.get("Train.val_transforms"), "v")
        bare_miou = evaluate_samples(bare, val, tf, num).metrics()["mIoU"]
        from segx.modules.train import build_network
        out = Path(tmp) / "out"
        segx_model = build_network(load_config(str(out / "config.yaml")),
                                   out / f"iter_{args.iters}" / "model.pdparams")
        segx_miou = evaluate_samples(segx_model, val, tf, num).metrics()["mIoU"]
    print(f"PP-LiteSeg-T, {args.iters} iterations, batch 4, crop {args.size // 2}, CPU")
    print(f"bare loop : {bare_s:.4f} s/iter, final mIoU {bare_miou:.4f}")
    print(f"segx      : {segx_s:.4f} s/iter, final mIoU {segx_miou:.4f}")
    print(f"time ratio: {segx_s / bare_s:.3f}  (target <= 1.05)")
    print(f"mIoU diff : {abs(segx_miou - bare_miou):.4f}  (target <= 0.02)")


if __name__ == "__main__":
    main()
