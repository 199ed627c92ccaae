"""What several test files share: the repository's paths, running the CLI in a subprocess, a
short training command, the small demo dataset and an in-process check_dataset run. Fixtures and hooks stay in conftest.py;
tests import these with ``from helpers import ...``."""
from __future__ import annotations

import zlib  # noqa: F401  (before paddle)

import json
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["ITERS", "ROOT", "SHARED", "TRANSFORMS", "base_args", "check_dataset", "make_data",
           "run_cli"]

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python main.py ARGS`` and capture its output."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


TRANSFORMS = "Train.transforms=[{type: RandomHorizontalFlip}, {type: Normalize}]"
ITERS = 8


def base_args(data: Path, out: Path, *extra: str) -> list[str]:
    """A short PP-LiteSeg-T training run from random weights (no download): 8 iterations,
    validation every 4, batch 2."""
    return ["-c", "PP-LiteSeg-T", "-o", "Global.mode=train", "-o", f"Global.dataset_dir={data}",
            "-o", f"Global.output={out}", "-o", f"Train.epochs_iters={ITERS}",
            "-o", "Train.eval_interval=4", "-o", "Train.log_interval=1",
            "-o", "Train.batch_size=2", "-o", "Train.pretrained=none", "-o", TRANSFORMS, *extra]


def make_data(root: Path) -> Path:
    """12 demo samples at 64x64 under ``root``; two val images have other sizes (mixed-size
    batches)."""
    from PIL import Image

    from segx.apps.demo import make_demo_dataset
    root = make_demo_dataset(root, n=12, size=(64, 64))
    for stem, size in (("010", (96, 64)), ("011", (64, 128))):
        for sub, ext, mode in (("images", "jpg", Image.BILINEAR),
                               ("annotations", "png", Image.NEAREST)):
            p = root / sub / f"{stem}.{ext}"
            Image.open(p).resize(size, mode).save(p)
    return root


def check_dataset(root: Path, out: Path, *overrides: str) -> dict:
    """Run check_dataset in-process on ``root`` (PP-LiteSeg-T's config, ``-o`` style
    ``overrides``); returns the report this run wrote, whether the check passed or failed (a
    failure beside an earlier result goes to ``check_dataset_result.failed.json``)."""
    from segx.modules.table import run
    from segx.utils.errors import DatasetError
    from segx.zoo.registry import load_model_config
    cfg = load_model_config("PP-LiteSeg-T", [f"Global.dataset_dir={root}", f"Global.output={out}",
                                             "CheckDataset.num_workers=1", *overrides])
    try:
        run(cfg)
    except DatasetError:
        pass
    written = [p for p in (out / "check_dataset_result.json",
                           out / "check_dataset_result.failed.json") if p.is_file()]
    return json.loads(max(written, key=lambda p: p.stat().st_mtime_ns).read_text())
