"""The training recipes of docs/train.md, run on data segx generates (or ships beside it), with
the mIoU and time each reaches on this machine.

    python bench/recipes.py [--only street|binary|membrane] [--iters N]

* street: road scenes / natural images: 8 generated street-scene classes at 320x240;
* binary: foreground masks stored 0/255 (fixed by check_dataset first);
* membrane: thin structures / microscopy (../shared/data/membrane, when present).

Every run starts from random weights: this machine reaches no weights host. With the default
Train.pretrained=imagenet the same commands start from official weights.
"""
from __future__ import annotations

import zlib  # noqa: F401

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

COMMON = ["Global.device=cpu", "Train.pretrained=none", "Train.batch_size=4",
          "Train.optimizer={type: AdamW, weight_decay: 0.01}", "Train.learning_rate=0.002",
          "Train.warmup_steps=50"]
RECIPES = {
    # natural images: flips left-right only, colour jitter, moderate zoom; crop = image size
    "street": COMMON + [
        "Train.transforms=[{type: ResizeStepScaling, min_scale_factor: 0.75, max_scale_factor: "
        "1.5, scale_step_size: 0.25}, {type: RandomPaddingCrop, crop_size: [320, 240]}, "
        "{type: RandomHorizontalFlip}, {type: RandomDistort, brightness_range: 0.4, "
        "contrast_range: 0.4, saturation_range: 0.4}, {type: Normalize}]"],
    # one foreground class: Dice on the main head against the imbalance; any flip is fine
    "binary": COMMON + [
        "Train.transforms=[{type: ResizeStepScaling, min_scale_factor: 0.75, max_scale_factor: "
        "1.5, scale_step_size: 0.25}, {type: RandomPaddingCrop, crop_size: [128, 96]}, "
        "{type: RandomHorizontalFlip}, {type: RandomVerticalFlip}, {type: Normalize}]",
        "Train.losses.types=[{type: MixedLoss, losses: [{type: CrossEntropyLoss}, "
        "{type: DiceLoss}], coef: [1, 1]}, {type: CrossEntropyLoss}, {type: CrossEntropyLoss}]"],
}


def binary_dataset(root: Path) -> Path:
    """The demo's shapes as one foreground class, saved 0/255 as many tools export masks."""
    from segx.apps.demo import make_demo_dataset
    data = make_demo_dataset(root, n=80, size=(96, 128))
    for path in (data / "annotations").glob("*.png"):
        Image.fromarray(np.where(np.asarray(Image.open(path)) > 0, 255, 0).astype(np.uint8)).save(
            path)
    (data / "class_names.txt").write_text("background\nobject\n")
    return data


def fixed(data: Path, out: Path) -> Path:
    """check_dataset with fix_labels: the 0/255 masks become 0/1 in a new folder."""
    from segx.modules.table import run
    from segx.utils.errors import SegxError
    from segx.zoo.registry import load_model_config
    try:
        run(load_model_config("PP-LiteSeg-T", [f"Global.dataset_dir={data}",
                                               f"Global.output={out}",
                                               "CheckDataset.fix_labels=True"]))
    except SegxError:
        pass
    return out / "fixed_dataset"


def train(data: Path, out: Path, iters: int, overrides: list[str]) -> tuple[float, float]:
    from segx.modules.table import run
    from segx.zoo.registry import load_model_config
    t0 = time.perf_counter()
    result = run(load_model_config("PP-LiteSeg-T", [
        "Global.mode=train", f"Global.dataset_dir={data}", f"Global.output={out}",
        f"Train.epochs_iters={iters}", f"Train.eval_interval={max(iters // 5, 1)}",
        f"Train.log_interval={max(iters // 10, 1)}", *overrides]))
    return result["best_mIoU"], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=("street", "binary", "membrane"))
    ap.add_argument("--iters", type=int, default=1000)
    args = ap.parse_args()
    from segx.apps.demo import make_street_dataset
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        jobs = {"street": lambda: (make_street_dataset(tmp / "street"), RECIPES["street"]),
                "binary": lambda: (fixed(binary_dataset(tmp / "bin"), tmp / "bin_check"),
                                   RECIPES["binary"])}
        if (ROOT.parent / "shared" / "data" / "membrane").is_dir():
            from finetune import RECIPE, membrane
            jobs["membrane"] = lambda: (membrane(tmp), COMMON[:2] + [
                o.replace("SIZE", "256") for o in RECIPE])
        for name, make in jobs.items():
            if args.only and name != args.only:
                continue
            data, overrides = make()
            results[name] = train(data, tmp / f"out_{name}", args.iters, overrides)
    for name, (miou, seconds) in results.items():
        print(f"{name:<9} {args.iters} iterations from random weights: best val mIoU "
              f"{miou:.4f} in {seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
