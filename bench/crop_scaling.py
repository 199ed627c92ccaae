"""How one training iteration's time grows with the crop (the image size the network sees).

    python bench/crop_scaling.py [--model PP-LiteSeg-T] [--batch 4] [--crops 128,256,384,512]

Times forward, loss, backward and the optimiser step of the model's default training setup on
random batches at each crop, in interleaved rounds (best round kept, so a busy machine slows
every crop alike), and prints seconds per iteration and the ratio to the smallest crop. Data
loading is left out: it grows with the source image size, not the crop, and runs in workers.
"""
from __future__ import annotations

import zlib  # noqa: F401

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="PP-LiteSeg-T")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crops", default="128,256,384,512")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()
    import paddle

    from segx import backend
    from segx.backend import optim as O
    from segx.zoo.registry import load_model_config
    cfg = load_model_config(args.model)
    arch = dict(cfg["Arch"], backbone={**cfg["Arch"]["backbone"], "pretrained": None}) \
        if isinstance(cfg["Arch"].get("backbone"), dict) else cfg["Arch"]
    model = backend.build_model(arch, 8)
    losses, coef = O.build_losses(cfg.get("Train.losses"))
    opt, sched = O.build_optimizer(model, cfg.get("Train.optimizer"),
                                   cfg.get("Train.lr_scheduler"), 0.001, 1000, 0, 0.0)
    step = O.TrainStep(model, opt, sched, losses, coef)
    crops = [int(c) for c in args.crops.split(",")]
    batches = {c: [paddle.randn([args.batch, 3, c, c]),
                   paddle.randint(0, 8, [args.batch, c, c], dtype="int64")] for c in crops}
    for c in crops:  # warm-up: first calls allocate and pick kernels
        step(batches[c])
    best = {c: float("inf") for c in crops}
    for _ in range(args.rounds):
        for c in crops:
            t0 = time.perf_counter()
            for _ in range(args.iters):
                step(batches[c])
            best[c] = min(best[c], (time.perf_counter() - t0) / args.iters)
    print(f"{args.model}, batch {args.batch}, {platform.processor() or platform.machine()}, "
          f"paddle {paddle.__version__}")
    for c in crops:
        print(f"crop {c:>4}²: {best[c]:.3f} s/iter, {best[c] / best[crops[0]]:.1f}x crop "
              f"{crops[0]}² (pixels {c * c / crops[0] ** 2:.0f}x)")


if __name__ == "__main__":
    main()
