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


# The peak RSS of a command, measured so that the test process's own size does not count. On
# Linux a forked child's max RSS starts at its parent's RSS at the fork (and exec keeps that high
# water mark), so a child forked from a test process that has grown to GBs (in-process engines
# earlier in the suite) would report GBs. A small wrapper interpreter forks the command instead,
# caps its address space and reports its wait4 usage.
_MEASURE = """
import json, os, resource, sys, time, subprocess
limit, timeout, out, err = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
def cap():
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
with open(out, "w") as so, open(err, "w") as se:
    proc = subprocess.Popen(sys.argv[5:], stdout=so, stderr=se, preexec_fn=cap)
    deadline = time.monotonic() + timeout  # a hang fails the test instead of blocking it
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
        time.sleep(0.1)
print(json.dumps({"rc": os.waitstatus_to_exitcode(status), "peak_kib": usage.ru_maxrss}))
"""


def measured_run(args: list[str], folder: Path, *, cwd: Path = ROOT, env: dict | None = None,
                 limit: int = 3 << 30, timeout: float = 300
                 ) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``args`` with its address space capped at ``limit``; returns the completed process
    (stdout and stderr as text, also kept in ``folder``) and its peak RSS in KiB (with the
    processes it waited for)."""
    folder.mkdir(parents=True, exist_ok=True)
    out, err = folder / "stdout", folder / "stderr"
    wrapper = subprocess.run([sys.executable, "-c", _MEASURE, str(limit), str(timeout),
                              str(out), str(err), *args], cwd=cwd, env=env, text=True,
                             capture_output=True, timeout=timeout + 60)
    assert wrapper.returncode == 0, wrapper.stderr[-2000:]
    report = json.loads(wrapper.stdout.strip().splitlines()[-1])
    done = subprocess.CompletedProcess(args, report["rc"], out.read_text(), err.read_text())
    return done, report["peak_kib"]
