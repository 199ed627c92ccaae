"""check_dataset speed against its physical floor: a plain parallel decode of the same files.

    python bench/check_dataset.py [--pairs 2000] [--size 512]

Generates a dataset of N image/label pairs (JPEG images, PNG labels), then times, side by side
in one run: (a) every image and label decoded once with PIL on all cores, (b) the full
`check_dataset` mode (scan, checks, encoding, statistics, overlays, histogram, report.html)
with the leakage search (hashes in the scan, exact and near-duplicate search), and (c) the same
without it (``CheckDataset.leakage=False`` and the scan's hashing switched off). Prints the
times, check/decode (target: at most 1.3 without leakage) and leakage on/off (target: at most
2, the issue's bound; the search must not double the check).
"""
from __future__ import annotations

import zlib  # noqa: F401

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _make(args):
    root, k, size = args
    rng = np.random.default_rng(k)
    img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(img).save(root / "images" / f"{k}.jpg", quality=90)
    lbl = np.zeros((size, size), np.uint8)
    lbl[size // 4:, :] = 1
    lbl[:, size // 2:] = 2
    Image.fromarray(lbl).save(root / "annotations" / f"{k}.png")


def _decode(pair):
    for p in pair:
        with Image.open(p) as im:
            im.load()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        (root / "images").mkdir(parents=True)
        (root / "annotations").mkdir()
        with ProcessPoolExecutor() as pool:
            list(pool.map(_make, [(root, k, args.size) for k in range(args.pairs)], chunksize=32))
        lines = [f"images/{k}.jpg annotations/{k}.png" for k in range(args.pairs)]
        n_val = args.pairs // 5
        (root / "train.txt").write_text("\n".join(lines[n_val:]) + "\n")
        (root / "val.txt").write_text("\n".join(lines[:n_val]) + "\n")
        pairs = [(root / "images" / f"{k}.jpg", root / "annotations" / f"{k}.png")
                 for k in range(args.pairs)]

        timings = _time_all(root, Path(tmp) / "out", pairs)
    decode, check, plain = (min(timings[k]) for k in ("decode", "check", "no_leakage"))
    print(f"{args.pairs} pairs at {args.size}x{args.size}, {os.cpu_count()} cores, {_cpu()}")
    print(f"plain parallel decode          : {decode:.2f} s")
    print(f"check_dataset without leakage  : {plain:.2f} s")
    print(f"check_dataset with leakage     : {check:.2f} s")
    print(f"check (no leakage) / decode    : {plain / decode:.2f}  (target <= 1.3)")
    print(f"leakage on / off               : {check / plain:.2f}  (target <= 2)")


def _time_all(root: Path, out: Path, pairs: list) -> dict[str, list[float]]:
    """Alternate the three runs twice (to share any machine noise)."""
    from segx import load_config
    from segx.data import scan
    from segx.modules.table import run
    cfg = load_config("PP-LiteSeg-T", [f"Global.dataset_dir={root}", f"Global.output={out}"])
    off = load_config("PP-LiteSeg-T", [f"Global.dataset_dir={root}", f"Global.output={out}",
                                       "CheckDataset.leakage=False"])
    hashing = scan.fingerprint
    timings: dict[str, list[float]] = {"decode": [], "check": [], "no_leakage": []}
    for _ in range(2):
        t0 = time.perf_counter()
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(_decode, pairs, chunksize=32))
        timings["decode"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run(cfg)
        timings["check"].append(time.perf_counter() - t0)
        scan.fingerprint = lambda im: None  # forked workers inherit it
        t0 = time.perf_counter()
        run(off)
        timings["no_leakage"].append(time.perf_counter() - t0)
        scan.fingerprint = hashing
    return timings


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
