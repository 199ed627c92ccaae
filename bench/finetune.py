"""Fine-tuning from official weights versus training from scratch, side by side in one run.

    python bench/finetune.py [--pretrain-iters 300] [--iters 200] [--size 256]

No download: a local HTTP server plays the official weights host (SEGX_WEIGHTS_MIRROR).
1. Pretrain PP-LiteSeg-T from scratch on a generated dataset of cell-like images (random
   Voronoi cells whose thin walls are the foreground; grey texture, noise, blur).
2. Serve that checkpoint at PP-LiteSeg-T's official addresses: its backbone as the ImageNet
   backbone (``Train.pretrained=imagenet``, the default) and the whole model as its Cityscapes
   weights (``Train.pretrained=cityscapes``).
3. Fine-tune on ``../shared/data/membrane`` (0/255 masks fixed by segx; images 0-23 train,
   24-29 val) for the same budget from each start, with the small-data recipe of
   docs/train.md, and print the validation mIoU of each side by side.
"""
from __future__ import annotations

import zlib  # noqa: F401

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
MEMBRANE = ROOT.parent / "shared" / "data" / "membrane"
RECIPE = [
    "Train.batch_size=4", "Train.optimizer={type: AdamW, weight_decay: 0.01}",
    "Train.learning_rate=0.002", "Train.warmup_steps=20", "Train.log_interval=50",
    "Train.transforms=[{type: ResizeStepScaling, min_scale_factor: 1.0, max_scale_factor: 2.0, "
    "scale_step_size: 0.25}, {type: RandomPaddingCrop, crop_size: [SIZE, SIZE]}, "
    "{type: RandomHorizontalFlip}, {type: RandomVerticalFlip}, {type: RandomDistort, "
    "brightness_range: 0.3, contrast_range: 0.3}, {type: Normalize}]",
    "Train.losses.types=[{type: MixedLoss, losses: [{type: CrossEntropyLoss}, "
    "{type: DiceLoss}], coef: [1, 1]}, {type: CrossEntropyLoss}, {type: CrossEntropyLoss}]"]


def cells(root: Path, n: int, size: int, seed: int = 0) -> Path:
    """Voronoi cells with thin dark walls (class 1) on a grey texture (class 0)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    yy, xx = np.mgrid[0:size, 0:size]
    lines = []
    for k in range(n):
        pts = rng.uniform(0, size, (int(rng.integers(15, 40)), 2))
        d = np.sqrt((yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2)
        d.sort(axis=-1)
        wall = (d[..., 1] - d[..., 0]) < rng.uniform(1.5, 3.5)
        base = rng.normal(150, 25, (size, size)) * 0.5 + 75
        img = np.where(wall, base * 0.35, base) + rng.normal(0, 12, (size, size))
        pic = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(0.8)).convert("RGB")
        pic.save(root / "images" / f"{k:03d}.png")
        Image.fromarray(wall.astype(np.uint8)).save(root / "annotations" / f"{k:03d}.png")
        lines.append(f"images/{k:03d}.png annotations/{k:03d}.png")
    cut = int(0.85 * n)
    (root / "train.txt").write_text("\n".join(lines[:cut]) + "\n")
    (root / "val.txt").write_text("\n".join(lines[cut:]) + "\n")
    return root


def membrane(root: Path) -> Path:
    """The membrane data in the reference layout, its 0/255 masks fixed by segx."""
    from segx.data.analyse import analyse
    from segx.data.fix import write_fixed
    from segx.data.layout import read_layout
    src = root / "membrane_src"
    src.mkdir()
    stems = sorted((p.stem for p in (MEMBRANE / "images").glob("*.png")), key=int)
    lines = [f"{MEMBRANE / 'images' / (s + '.png')} {MEMBRANE / 'labels' / (s + '.png')}"
             for s in stems]
    (src / "train.txt").write_text("\n".join(lines[:24]) + "\n")
    (src / "val.txt").write_text("\n".join(lines[24:]) + "\n")
    layout = read_layout(src)
    _, enc, _ = analyse(layout)
    return write_fixed(layout, enc, root / "membrane", [])


def train(data: Path, out: Path, iters: int, size: int, pretrained: str) -> tuple[float, float]:
    """(best validation mIoU, seconds) of one run."""
    from segx.modules.table import run
    from segx.zoo.registry import load_model_config
    t0 = time.perf_counter()
    cfg = load_model_config("PP-LiteSeg-T", [
        "Global.mode=train", f"Global.dataset_dir={data}", f"Global.output={out}",
        "Global.device=cpu", f"Train.epochs_iters={iters}", f"Train.eval_interval={iters // 4}",
        f"Train.pretrained={pretrained}", *[o.replace("SIZE", str(size)) for o in RECIPE]])
    result = run(cfg)
    return result["best_mIoU"], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pretrain-iters", type=int, default=300)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    if not MEMBRANE.is_dir():
        sys.exit(f"needs {MEMBRANE}")
    from weights_server import WeightsServer

    from segx.zoo.registry import load_model_config
    official = load_model_config("PP-LiteSeg-T").get("Meta.weights")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["SEGX_HOME"] = str(tmp / "home")
        pre_miou, pre_s = train(cells(tmp / "cells", 60, args.size), tmp / "pre",
                                args.pretrain_iters, args.size, "none")
        full = (tmp / "pre" / "best_model" / "model.pdparams").read_bytes()
        backbone = backbone_only(tmp / "pre" / "best_model" / "model.pdparams")
        target = membrane(tmp)
        files = {urlsplit(official["backbone"]["url"]).path: backbone,
                 urlsplit(official["trained"]["cityscapes"]["url"]).path: full}
        with WeightsServer(files) as server:
            os.environ["SEGX_WEIGHTS_MIRROR"] = server.url
            runs = {start: train(target, tmp / start, args.iters, args.size, start)
                    for start in ("none", "imagenet", "cityscapes")}
    print(f"pretraining on generated cells: {args.pretrain_iters} iterations, val mIoU "
          f"{pre_miou:.4f} ({pre_s:.0f} s)")
    print(f"fine-tuning PP-LiteSeg-T on membrane (24 train / 6 val), {args.iters} iterations, "
          f"crop {args.size}, CPU:")
    for start, label in (("none", "from scratch"), ("imagenet", "pretrained backbone"),
                         ("cityscapes", "pretrained full model")):
        miou, seconds = runs[start]
        print(f"  {label:<22} Train.pretrained={start:<10} mIoU {miou:.4f}  ({seconds:.0f} s)")


def backbone_only(path: Path) -> bytes:
    """The backbone tensors of a checkpoint, named as published backbone files name them."""
    from segx import backend
    state = backend.load_weights(path)
    out = path.with_name("backbone.pdparams")
    backend.save({k[len("backbone."):]: v for k, v in state.items()
                  if k.startswith("backbone.")}, out)
    return out.read_bytes()


if __name__ == "__main__":
    main()
