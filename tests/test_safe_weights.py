"""Weights files are data, never code: a planted pickle is refused wherever segx reads weights,
and every real checkpoint still loads."""
from __future__ import annotations

import zlib  # noqa: F401

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import base_args, run_cli
from segx.utils import safe_pickle
from segx.utils.errors import WeightsError


class Planted:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def plant(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"backbone.conv.weight": Planted(marker)}))
    return path


def test_the_loader_refuses_code_and_reads_arrays(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(safe_pickle.UnsafePickleError, match="posix.system|os.system"):
        safe_pickle.load(plant(tmp_path / "m.pdparams", marker))
    assert not marker.exists()
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.float32(2.5)}
    (tmp_path / "ok.pdparams").write_bytes(pickle.dumps(arrays, protocol=2))
    loaded = safe_pickle.load(tmp_path / "ok.pdparams")
    assert np.array_equal(loaded["a"], arrays["a"]) and loaded["n"] == 2.5
    with pytest.raises(WeightsError, match="not a readable weights file"):
        (tmp_path / "junk.pdparams").write_bytes(b"\x80\x04junk")
        safe_pickle.load(tmp_path / "junk.pdparams")


def test_paddles_sliced_arrays_are_joined(tmp_path):
    big = np.arange(10, dtype=np.float32)
    state = {"w@@.0": big[:6], "w@@.1": big[6:], "b": np.ones(2, np.float32),
             "UnpackBigParamInfor@@": {"w": {"OriginShape": (2, 5), "slices": ["w@@.0", "w@@.1"]}},
             "StructuredToParameterName@@": {"b": "linear_0.b_0"}}
    (tmp_path / "s.pdparams").write_bytes(pickle.dumps(state))
    loaded = safe_pickle.load_state_dict(tmp_path / "s.pdparams")
    assert set(loaded) == {"w", "b"} and np.array_equal(loaded["w"], big.reshape(2, 5))


def test_real_checkpoints_load(run_dir):
    import paddle
    for name in ("model.pdparams", "model.pdopt", "model.pdstates"):
        ours, theirs = safe_pickle.load(run_dir / "iter_8" / name), paddle.load(
            str(run_dir / "iter_8" / name))
        assert set(ours) == set(theirs), name
    state = safe_pickle.load_state_dict(run_dir / "best_model" / "model.pdparams")
    ref = paddle.load(str(run_dir / "best_model" / "model.pdparams"))
    assert all(np.array_equal(state[k], ref[k].numpy()) for k in ref)


@pytest.mark.parametrize("where", ["pipeline", "evaluate", "export", "pretrained", "resume"])
def test_a_planted_checkpoint_is_refused_everywhere(run_dir, data, tmp_path, where):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("inference"))
    planted = plant(run / "best_model" / "model.pdparams", marker)
    plant(run / "iter_8" / "model.pdparams", marker)
    common = ["-c", "PP-LiteSeg-T", "-o", f"Global.output={run}", "-o",
              f"Global.dataset_dir={data}"]
    args = {
        "pipeline": ["--pipeline", "semantic_segmentation", "--model", str(planted),
                     "--input", str(data / "images" / "000.jpg"), "--device", "cpu"],
        "evaluate": [*common, "-o", "Global.mode=evaluate"],
        "export": [*common, "-o", "Global.mode=export"],
        "pretrained": base_args(data, tmp_path / "o", "-o", f"Train.pretrained={planted}"),
        "resume": base_args(data, run, "-o", "Train.resume_path=auto",
                            "-o", "Train.epochs_iters=12"),
    }[where]
    r = run_cli(*args)
    assert r.returncode == 2, r.stderr
    assert "not a plain weights file" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists()
