"""``segx demo``: generate a small dataset in code and run the main job on it end to end.

It runs check_dataset, a short CPU training, evaluate, export and predict (on the dataset's
images), printing each command and where its output went. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageDraw

from segx.utils.fileio import save_image

CLASS_NAMES = ["background", "disc", "box"]


def _write_dataset(root: Path, samples: Iterable[tuple[Image.Image, Image.Image]],
                   class_names: list[str], quality: int) -> Path:
    """Save (picture, label) pairs in the reference layout: images/NNN.jpg, annotations/NNN.png,
    train.txt (the first 80%), val.txt (the rest) and class_names.txt."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    lines = []
    for k, (picture, label) in enumerate(samples):
        save_image(root / "images" / f"{k:03d}.jpg", picture, quality=quality)
        save_image(root / "annotations" / f"{k:03d}.png", label)
        lines.append(f"images/{k:03d}.jpg annotations/{k:03d}.png")
    cut = int(0.8 * len(lines))
    (root / "train.txt").write_text("\n".join(lines[:cut]) + "\n")
    (root / "val.txt").write_text("\n".join(lines[cut:]) + "\n")
    (root / "class_names.txt").write_text("\n".join(class_names) + "\n")
    return root


def _shapes_scene(rng: np.random.Generator, h: int, w: int) -> tuple[Image.Image, Image.Image]:
    """A noisy picture with one or two discs (class 1) and boxes (class 2), and its label."""
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
    return picture, label


def make_demo_dataset(root: Path, n: int = 40, size: tuple[int, int] = (96, 128),
                      seed: int = 0) -> Path:
    """Write ``n`` noisy images with discs (class 1) and boxes (class 2) in the reference
    layout: images/, annotations/, train.txt (80%), val.txt (20%), class_names.txt."""
    rng = np.random.default_rng(seed)
    return _write_dataset(root, (_shapes_scene(rng, *size) for _ in range(n)), CLASS_NAMES, 92)


STREET_CLASSES = ["sky", "building", "road", "sidewalk", "tree", "car", "pole", "sign"]


def _street_scene(rng: np.random.Generator, h: int, w: int) -> tuple[Image.Image, Image.Image]:
    """One street-like picture and its label: sky, buildings on the horizon, road and sidewalk
    in perspective, trees, cars, poles and signs, each class with its own colour range,
    texture and lighting, so the classes must be told apart by more than one colour."""
    light = rng.uniform(0.7, 1.2)
    horizon = int(h * rng.uniform(0.35, 0.5))
    img, lab = Image.new("RGB", (w, h)), Image.new("L", (w, h))
    di, dl = ImageDraw.Draw(img), ImageDraw.Draw(lab)

    def paint(shape: str, box, cls: int, base) -> None:
        colour = tuple(int(np.clip(c * light + rng.normal(0, 12), 0, 255)) for c in base)
        getattr(di, shape)(box, fill=colour)
        getattr(dl, shape)(box, fill=cls)
    paint("rectangle", [0, 0, w, horizon], 0, (110, 160, 225))
    x = 0
    while x < w:
        bw, bh = int(rng.integers(w // 10, w // 4)), int(rng.integers(h // 8, horizon))
        paint("rectangle", [x, horizon - bh, x + bw, horizon + 2], 1,
              rng.choice([(150, 120, 100), (120, 120, 130), (170, 150, 120)]))
        x += bw
    paint("rectangle", [0, horizon, w, h], 3, (160, 155, 150))
    spread = int(w * rng.uniform(0.05, 0.2))
    paint("polygon", [(w // 2 - spread, horizon), (w // 2 + spread, horizon), (w, h), (0, h)],
          2, (80, 80, 85))
    for _ in range(int(rng.integers(1, 4))):
        tx, ty, r = int(rng.integers(0, w)), int(horizon - rng.integers(0, h // 6)), \
            int(rng.integers(h // 14, h // 7))
        paint("ellipse", [tx - r, ty - r, tx + r, ty + r], 4, (60, 130, 55))
    for _ in range(int(rng.integers(1, 4))):
        cy = int(rng.integers(horizon + h // 10, h - h // 10))
        cw = int((cy - horizon) / (h - horizon) * w * 0.35) + 8
        cx = int(rng.integers(0, max(w - cw, 1)))
        paint("rectangle", [cx, cy - cw // 2, cx + cw, cy], 5,
              rng.choice([(180, 30, 30), (30, 60, 160), (220, 220, 220), (40, 40, 40)]))
    for _ in range(int(rng.integers(1, 3))):
        px = int(rng.integers(0, w))
        paint("rectangle", [px, horizon - h // 5, px + max(w // 120, 2), horizon + h // 6], 6,
              (70, 70, 70))
        paint("rectangle", [px - 4, horizon - h // 5, px + 8, horizon - h // 5 + 10], 7,
              (230, 200, 40))
    pixels = np.asarray(img).astype(np.float32)
    pixels += rng.normal(0, 8, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), lab


def make_street_dataset(root: Path, n: int = 120, size: tuple[int, int] = (240, 320),
                        seed: int = 0) -> Path:
    """A generated road-scene dataset with 8 classes (``STREET_CLASSES``) in the reference
    layout, 80/20 split: for trying multi-class recipes without downloading anything."""
    rng = np.random.default_rng(seed)
    return _write_dataset(root, (_street_scene(rng, *size) for _ in range(n)), STREET_CLASSES,
                          90)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="segx demo", description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="demo_output", help="where the dataset and outputs go")
    ap.add_argument("--model", default="PP-LiteSeg-T")
    ap.add_argument("--dataset-only", choices=("shapes", "street"),
                    help="only write a generated dataset (shapes: the demo's; street: 8-class "
                         "road scenes for the recipes in docs/train.md) into --workdir")
    args = ap.parse_args(argv)
    if args.dataset_only:
        make = make_street_dataset if args.dataset_only == "street" else make_demo_dataset
        print(f"wrote {make(Path(args.workdir).resolve())}")
        return 0
    from segx.modules.table import MODES, run
    from segx.zoo.registry import load_model_config
    from segx.runs.folder import RunFolder
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
        print(f"[{mode}] result: {RunFolder(cfg.get('Global.output')).result(mode)}")
    print("\noutputs:")
    for path in sorted(p for p in out.glob("*")):
        print(f"  {path}{'/' if path.is_dir() else ''}")
    print(f"\ndemo finished: {', '.join(done)}.")
    return 0
