"""Prediction speed: end to end through create_model(...).predict versus the raw engine.

    python bench/predict.py [--images 16] [--threads N]

PP-LiteSeg-T with random weights (19 classes) is exported once, then for 512x512 and 1024x512,
batch 1 and 8, measured side by side in one run:
  * end to end: JPEG files on disk in, SegResult objects out (decode, normalise, engine, result);
  * raw engine: the same Paddle Inference predictor on preloaded, normalised tensors (the floor);
  * dynamic graph: the paddle model on the same preloaded tensors (batch 1).
Prints images/s and the ratios (targets: end to end >= 0.8 x raw; static >= 5 x dynamic).
"""
from __future__ import annotations

import zlib  # noqa: F401

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_run(root: Path) -> Path:
    """A fake training run (config.yaml + random weights) exported to root/run/inference."""
    from segx.backend import build_model
    from segx.backend import training as T
    from segx.config import dump_yaml, load_config
    from segx.fileio import write_text
    from segx.modules.export import export_run
    cfg = load_config("PP-LiteSeg-T", ["Train.num_classes=19", f"Global.output={root / 'run'}"])
    run = root / "run"
    run.mkdir(parents=True)
    write_text(run / "config.yaml", dump_yaml(cfg.data))
    T.seed_everything(0)
    T.save(build_model(cfg["Arch"], 19).state_dict(), run / "model.pdparams")
    export_run(cfg, run / "config.yaml", run / "model.pdparams", run / "inference")
    return run


def rate(fn, n_images: int, repeats: int = 3) -> float:
    """Best images/s over ``repeats`` runs of ``fn`` (after one warm-up)."""
    fn()
    best = min(_timed(fn) for _ in range(repeats))
    return n_images / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    from segx import create_model
    from segx.backend import training as T
    from segx.modules.run_info import run_config
    from segx.modules.train import build_network
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = make_run(root)
        model = create_model(run / "inference", device="cpu", cpu_threads=args.threads)
        net = build_network(run_config(run / "model.pdparams"), run / "model.pdparams")
        rng = np.random.default_rng(0)
        print(f"PP-LiteSeg-T, random weights, {os.cpu_count()} cores, engine {model.run_mode}, "
              f"{args.images} images per measurement")
        print(f"{'size':>9} {'batch':>5} {'end-to-end':>11} {'raw engine':>11} {'ratio':>6} "
              f"{'dynamic':>8} {'static/dyn':>10}")
        for w, h in ((512, 512), (1024, 512)):
            folder = root / f"img{w}"
            folder.mkdir()
            for k in range(args.images):
                Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
                    folder / f"{k}.jpg", quality=90)
            files = sorted(str(p) for p in folder.glob("*.jpg"))
            tensors = np.stack([model._prepare(f, Path(f))[2] for f in files])
            n_dyn = min(4, len(files))
            dyn = rate(lambda t=tensors, n=n_dyn: [T.predict_logits(net, t[k:k + 1])
                                                   for k in range(n)], n_dyn)
            for bs in (1, 8):
                e2e = rate(lambda f=files, b=bs: list(model.predict(f, batch_size=b)),
                           len(files))
                raw = rate(lambda t=tensors, b=bs: [model.engine(t[k:k + b])
                                                    for k in range(0, len(t), b)], len(files))
                print(f"{w}x{h:<5} {bs:>5} {e2e:>9.1f}/s {raw:>9.1f}/s {e2e / raw:>6.2f} "
                      f"{dyn:>6.1f}/s {raw / dyn:>10.1f}")
        model.close()
    print("targets: ratio >= 0.8, static/dyn >= 5")


if __name__ == "__main__":
    main()
