"""``segx demo``: generate a small dataset in code and run the main job on it end to end.

It runs check_dataset, a short CPU training, evaluate, export and predict (on the dataset's
images), printing each command and where its output went. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES = ["background", "disc", "box"]


def make_demo_dataset(root: Path, n: int = 40, size: tuple[int, int] = (96, 128),
                      seed: int = 0) -> Path:
    """Write ``n`` noisy images with discs (class 1) and boxes (class 2) in the reference
    layout: images/, annotations/, train.txt (80%), val.txt (20%), class_names.txt."""
    rng = np.random.default_rng(seed)
    h, w = size
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    lines = []
    for k in range(n):
        base = rng.integers(60, 120, 3)
        img = np.clip(rng.normal(base, 25, (h, w, 3)), 0, 255).astype(np.uint8)
        label = Image.new("L", (w, h), 0)
        picture = Image.fromarray(img)
        draw_l, draw_i = ImageDraw.Draw(label), ImageDraw.Draw(picture)
        for cls in (1, 2):
            for _ in range(rng.integers(1, 3)):
                x, y = int(rng.integers(0, w - 24)), int(rng.integers(0, h - 24))
                s = int(rng.integers(12, 32))
                box = [x, y, min(x + s, w - 1), min(y + s, h - 1)]
                colour = (220, 60, 60) if cls == 1 else (60, 200, 90)
                shape = "ellipse" if cls == 1 else "rectangle"
                getattr(draw_l, shape)(box, fill=cls)
                getattr(draw_i, shape)(box, fill=colour)
        picture.save(root / "images" / f"{k:03d}.jpg", quality=92)
        label.save(root / "annotations" / f"{k:03d}.png")
        lines.append(f"images/{k:03d}.jpg annotations/{k:03d}.png")
    cut = int(0.8 * n)
    (root / "train.txt").write_text("\n".join(lines[:cut]) + "\n")
    (root / "val.txt").write_text("\n".join(lines[cut:]) + "\n")
    (root / "class_names.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    return root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="segx demo", description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="demo_output", help="where the dataset and outputs go")
    ap.add_argument("--model", default="PP-LiteSeg-T")
    args = ap.parse_args(argv)
    from segx.engine import MODES, run
    from segx.registry import load_model_config
    work = Path(args.workdir).resolve()
    data = make_demo_dataset(work / "dataset")
    print(f"demo dataset: {data} (40 generated images, 3 classes)")
    out = work / "output"
    done = []
    for mode in MODES:
        extra = {
            "train": ["Train.epochs_iters=150", "Train.batch_size=4", "Train.eval_interval=50",
                      "Train.log_interval=25", "Train.transforms.1.crop_size=[128,96]",
                      "Train.pretrained=none"],  # the demo never downloads
            "predict": [f"Global.output={out / 'predict'}", f"Predict.input={data / 'images'}",
                        f"Predict.model_dir={out / 'best_model' / 'inference'}",
                        "Predict.batch_size=8"],
        }.get(mode, [])
        print(f"\n[{mode}] segx -c {args.model} -o Global.mode={mode} "
              f"-o Global.dataset_dir={data} -o Global.output={out} "
              + " ".join(f"-o {e}" for e in extra))
        cfg = load_model_config(args.model, [f"Global.mode={mode}", f"Global.dataset_dir={data}",
                                       f"Global.output={out}", *extra])
        run(cfg)
        done.append(mode)
        print(f"[{mode}] result: {Path(cfg.get('Global.output')) / f'{mode}_result.json'}")
    print("\noutputs:")
    for path in sorted(p for p in out.glob("*")):
        print(f"  {path}{'/' if path.is_dir() else ''}")
    print(f"\ndemo finished: {', '.join(done)}.")
    return 0
