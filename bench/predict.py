"""Prediction speed: end to end through create_model(...).predict versus the raw engine.

    python bench/predict.py [--images 16] [--threads N]

PP-LiteSeg-T with random weights (19 classes) is exported once, then for 512x512 and 1024x512,
batch 1 and 8, measured side by side in one run:
  * end to end: JPEG files on disk in, SegResult objects out (decode, normalise, engine, result);
  * raw engine: the same Paddle Inference predictor on preloaded, normalised tensors (the floor);
  * plain: the raw engine with Paddle's plain CPU kernels (onednn=False), for comparison;
  * dynamic graph: the paddle model on the same preloaded tensors and batch size, with the
    same output (the class map, argmax taken in paddle).
All four are timed in interleaved rounds, best round kept.
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
    from segx import backend
    from segx.backend.optim import seed_everything
    from segx.exporting import export_run
    from segx.fileio import write_text
    from segx.registry import load_model_config
    cfg = load_model_config("PP-LiteSeg-T", ["Train.num_classes=19",
                                             f"Global.output={root / 'run'}"])
    run = root / "run"
    run.mkdir(parents=True)
    write_text(run / "config.yaml", cfg.to_yaml())
    seed_everything(0)
    backend.save(backend.build_model(cfg["Arch"], 19).state_dict(), run / "model.pdparams")
    export_run(run / "config.yaml", run / "model.pdparams", run / "inference")
    return run


def rates(fns: dict, counts: dict, repeats: int = 5) -> dict:
    """Best images/s of each function, measured interleaved (one warm-up each, then ``repeats``
    rounds of all), so that a noisy machine slows every candidate alike."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: counts[name] / best[name] for name in fns}


def measure(model, plain, net, files: list, tensors: np.ndarray, bs: int) -> dict:
    """Images/s at batch ``bs``: end to end, raw engine, plain kernels, dynamic graph."""
    from segx.backend.engine import predict_labels
    n_dyn = min(bs * 2, len(files))

    def engine(m):
        return lambda: [m._runner.engine(tensors[k:k + bs]) for k in range(0, len(tensors), bs)]

    return rates({
        "e2e": lambda: list(model.predict(files, batch_size=bs)),
        "raw": engine(model),
        "plain": engine(plain),
        # the same class map as the exported graph (argmax taken in paddle)
        "dyn": lambda: [predict_labels(net, tensors[k:k + bs]) for k in range(0, n_dyn, bs)],
    }, {"e2e": len(files), "raw": len(files), "plain": len(files), "dyn": n_dyn})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    from segx import create_model
    from segx.runs import build_network, run_config
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = make_run(root)
        model = create_model(run / "inference", device="cpu", cpu_threads=args.threads)
        plain = create_model(run / "inference", device="cpu", cpu_threads=args.threads,
                             onednn=False)
        net = build_network(run_config(run / "model.pdparams"), run / "model.pdparams")
        rng = np.random.default_rng(0)
        print(f"PP-LiteSeg-T, random weights, {os.cpu_count()} cores, engine {model.engine}, "
              f"{args.images} images per measurement")
        print(f"{'size':>9} {'batch':>5} {'end-to-end':>11} {'raw engine':>11} {'ratio':>6} "
              f"{'dynamic':>8} {'static/dyn':>10} {'plain':>8} {'raw/plain':>9}")
        for w, h in ((512, 512), (1024, 512)):
            folder = root / f"img{w}"
            folder.mkdir()
            for k in range(args.images):
                Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
                    folder / f"{k}.jpg", quality=90)
            files = sorted(str(p) for p in folder.glob("*.jpg"))
            tensors = np.stack([model._prepare(f, Path(f))[2] for f in files])
            for bs in (1, 8):
                r = measure(model, plain, net, files, tensors, bs)
                print(f"{w}x{h:<5} {bs:>5} {r['e2e']:>9.1f}/s {r['raw']:>9.1f}/s "
                      f"{r['e2e'] / r['raw']:>6.2f} {r['dyn']:>6.1f}/s "
                      f"{r['raw'] / r['dyn']:>10.1f} {r['plain']:>6.1f}/s "
                      f"{r['raw'] / r['plain']:>9.2f}")
        model.close()
        plain.close()
    print("targets: ratio >= 0.8, static/dyn >= 5")


if __name__ == "__main__":
    main()
