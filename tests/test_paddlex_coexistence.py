"""segx installed into a PaddleX 3.7.2 environment changes none of PaddleX's packages.

A real install, with the package registry: a fresh venv gets Paddle 3.3.1 and ``paddlex[cv]``
3.7.2 (which pins opencv-contrib-python 4.10.0.84, numpy < 2.4 and PyYAML 6.0.2), then
``pip install "segx[train,deploy]"`` from this checkout. Afterwards every package that was there
has the same version, ``pip check`` is clean, the ``cv2`` module is still PaddleX's build (same
file, contrib modules present: segx asks for the OpenCV build an environment has, setup.py),
``paddlex`` imports and predicts with a model segx exported, and segx runs in the same venv.

Run by ``make test-paddlex`` (CI), which names the venv in ``SEGX_PADDLEX_VENV``; skipped
otherwise. The first run downloads about 600 MB.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, run_cli

VENV = os.environ.get("SEGX_PADDLEX_VENV")
PYTHON = os.environ.get("SEGX_PADDLEX_PYTHON", "python3.12")
PADDLEX = ["paddlepaddle==3.3.1", "paddlex[cv]==3.7.2"]
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not VENV, reason="make test-paddlex (a real install)")]

_CV2 = """
import cv2, hashlib, json, pathlib
so = sorted(pathlib.Path(cv2.__file__).parent.glob("cv2*.so"))
print(json.dumps({"version": cv2.__version__, "contrib": hasattr(cv2, "ximgproc"),
                  "binary": hashlib.sha256(so[0].read_bytes()).hexdigest() if so else None}))
"""
_PADDLEX_PREDICT = """
import json, sys
import numpy as np
import paddlex
# run_mode paddle: PaddleX's CPU default (oneDNN) fails on Paddle 3.3 for a PIR program whose
# resize takes its size from a tensor ("ConvertPirAttribute2RuntimeAttribute not support"), as
# segx's own Paddle engine does without oneDNN (docs/install.md)
model = paddlex.create_model(model_name="PP-LiteSeg-T", model_dir=sys.argv[1],
                             engine="paddle_static", engine_config={"run_mode": "paddle"})
pred = [np.asarray(r["pred"]) for r in model.predict(sys.argv[2])][0]
np.save(sys.argv[3], pred.reshape(pred.shape[-2:]))
"""


def _run(args: list, timeout: int = 1800, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)


def _freeze(py: Path) -> dict:
    r = _run([py, "-m", "pip", "list", "--format=json"])
    assert r.returncode == 0, r.stderr
    return {p["name"].lower(): p["version"] for p in json.loads(r.stdout)}


def _cv2(py: Path) -> dict:
    r = _run([py, "-c", _CV2])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def paddlex_env() -> dict:
    """A fresh PaddleX venv; segx installed into it; what was there before and after."""
    venv = Path(VENV)
    shutil.rmtree(venv, ignore_errors=True)
    assert _run([PYTHON, "-m", "venv", venv]).returncode == 0
    py = venv / "bin" / "python"
    r = _run([py, "-m", "pip", "install", "--quiet", *PADDLEX])
    assert r.returncode == 0, r.stderr[-3000:]
    before, cv2_before = _freeze(py), _cv2(py)
    r = _run([py, "-m", "pip", "install", "--quiet", f"{ROOT}[train,deploy]"])
    assert r.returncode == 0, r.stderr[-3000:]
    return {"py": py, "before": before, "after": _freeze(py), "cv2_before": cv2_before,
            "cv2_after": _cv2(py)}


def test_no_package_of_paddlex_changes_and_pip_check_is_clean(paddlex_env):
    before, after = paddlex_env["before"], paddlex_env["after"]
    changed = {n: (v, after.get(n)) for n, v in before.items() if after.get(n) != v}
    assert not changed, changed
    assert "segx" in after and "paddleseg" not in after
    assert not any(n.startswith("opencv") and n not in before for n in after), after
    r = _run([paddlex_env["py"], "-m", "pip", "check"])
    assert r.returncode == 0, r.stdout + r.stderr


def test_cv2_is_still_paddlexs_build(paddlex_env):
    assert paddlex_env["cv2_before"]["contrib"] is True  # opencv-contrib-python, PaddleX's pin
    assert paddlex_env["cv2_after"] == paddlex_env["cv2_before"]


def test_paddlex_predicts_with_a_segx_export_as_segx_does(paddlex_env, tmp_path):
    """PaddleX 3.7.2 reads the folder segx exported on Paddle 3 (inference.json and
    inference.yml) and gives the class map segx gives; segx predicts in the same venv."""
    run = tmp_path / "run"
    shutil.copytree(ROOT / "tests" / "fixtures" / "run_v2", run)
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=export", "-o", f"Global.output={run}",
                timeout=900)
    assert r.returncode == 0, r.stderr
    folder = run / "best_model" / "inference"
    photo = tmp_path / "photo.png"
    rng = np.random.default_rng(4)
    Image.fromarray((rng.random((200, 264, 3)) * 255).astype("uint8")).save(photo)
    py = paddlex_env["py"]
    r = _run([py, "-c", _PADDLEX_PREDICT, folder, photo, tmp_path / "paddlex.npy"], timeout=600,
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    script = ("import sys, numpy as np, segx\n"
              "with segx.create_model(sys.argv[1], engine='paddle') as m:\n"
              "    np.save(sys.argv[3], next(iter(m.predict(sys.argv[2])))['pred'])\n")
    r = _run([py, "-c", script, folder, photo, tmp_path / "segx.npy"], timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ours, theirs = np.load(tmp_path / "segx.npy"), np.load(tmp_path / "paddlex.npy")
    assert ours.shape == theirs.shape == (200, 264)
    assert (ours == theirs).mean() >= 0.999
