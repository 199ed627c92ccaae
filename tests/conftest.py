"""Shared fixtures: no network, and a helper to run the CLI in a subprocess."""
from __future__ import annotations

import zlib  # noqa: F401  (before paddle)

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any accidental download fails the test, except loopback (used to test offline errors)."""
    real = urllib.request.urlopen

    def guarded(url, *args, **kwargs):
        target = url if isinstance(url, str) else url.full_url
        if "127.0.0.1" not in target and "localhost" not in target:
            raise AssertionError(f"test tried to reach the network: {target}")
        return real(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)


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


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> Path:
    """12 demo samples at 64x64; two val images have other sizes (mixed-size batches)."""
    from PIL import Image

    from segx.demo import make_demo_dataset
    root = make_demo_dataset(tmp_path_factory.mktemp("d") / "data", n=12, size=(64, 64))
    for stem, size in (("010", (96, 64)), ("011", (64, 128))):
        for sub, ext, mode in (("images", "jpg", Image.BILINEAR),
                               ("annotations", "png", Image.NEAREST)):
            p = root / sub / f"{stem}.{ext}"
            Image.open(p).resize(size, mode).save(p)
    return root


@pytest.fixture(scope="session")
def run_dir(data, tmp_path_factory) -> Path:
    """A finished training run on ``data`` (shared by the train, predict and serving tests)."""
    out = tmp_path_factory.mktemp("run") / "out"
    r = run_cli(*base_args(data, out))
    assert r.returncode == 0, r.stderr + r.stdout
    return out
