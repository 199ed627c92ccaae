"""A run's records survive a failed command: resuming never needs the pretrained start, and a
command that fails leaves every file of an existing run as it was (its failure record goes to
``<mode>_result.failed.json`` beside the result it must not replace)."""
from __future__ import annotations

import hashlib
import json
import shutil
import socket
from pathlib import Path

import pytest

from conftest import base_args, run_cli
from test_train import same_params


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty weights cache and a mirror on a closed 127.0.0.1 port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    monkeypatch.setenv("SEGX_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SEGX_WEIGHTS_MIRROR", f"http://127.0.0.1:{port}")


@pytest.fixture
def finished(run_dir, tmp_path) -> Path:
    """A copy of the session's finished run (the original is shared by other tests)."""
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    return out


def test_resuming_a_finished_run_offline_changes_nothing(finished, data, offline):
    before = digest(finished)
    r = run_cli(*base_args(data, finished, "-o", "Train.resume_path=auto",
                           "-o", "Train.pretrained=imagenet"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "already finished" in r.stdout
    assert digest(finished) == before  # config.yaml, train_result.json, train.log, all


def test_resuming_offline_trains_from_the_checkpoint(run_dir, data, tmp_path, offline):
    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copytree(run_dir / "iter_4", out / "iter_4")
    r = run_cli(*base_args(data, out, "-o", "Train.resume_path=auto",
                           "-o", "Train.pretrained=imagenet"))
    assert r.returncode == 0, r.stderr[-2000:]
    log = (out / "train.log").read_text()
    assert "resumed from" in log and "random weights" not in log and "pretrained:" not in log
    assert "Warning" not in r.stderr  # no raw paddle warning reaches the user
    assert same_params(out / "iter_8" / "model.pdparams", run_dir / "iter_8" / "model.pdparams")
    assert json.loads((out / "train_result.json").read_text())["done_flag"] is True


@pytest.mark.parametrize("extra", [
    ["-o", "Train.batch_size=64"],  # found by the data check: fewer samples than one batch
    ["-o", "Train.resume_path=auto", "-o", "Train.epochs_iters=16",
     "-o", "Train.num_classes=5"],  # found when the checkpoint is loaded: it does not fit
])
def test_a_failing_train_command_leaves_the_run_as_it_was(finished, data, extra):
    before = digest(finished)
    r = run_cli(*base_args(data, finished, *extra))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    after = digest(finished)
    assert {k: after.get(k) for k in before} == before  # config.yaml, train_result.json, ...
    assert after.keys() - before.keys() == {"train_result.failed.json"}
    record = json.loads((finished / "train_result.failed.json").read_text())
    assert record["done_flag"] is False and record["err_msg"] in r.stderr


def test_a_failing_evaluation_keeps_the_last_result(finished, data):
    result = finished / "evaluate_result.json"
    result.write_text(json.dumps({"done_flag": True, "metrics": {"mIoU": 0.5}}))
    before = digest(finished)
    args = ["-c", "PP-LiteSeg-T", "-o", "Global.mode=evaluate", "-o", f"Global.output={finished}",
            "-o", f"Global.dataset_dir={data}", "-o", "Evaluate.weight_path=missing.pdparams"]
    r = run_cli(*args)
    assert r.returncode == 2, r.stderr[-2000:]
    after = digest(finished)
    assert {k: after.get(k) for k in before} == before
    assert after.keys() - before.keys() == {"evaluate_result.failed.json"}
    (finished / "evaluate_result.failed.json").unlink()
    result.write_text(json.dumps({"done_flag": False, "err_type": "X", "err_msg": "old"}))
    r = run_cli(*args)  # an earlier failure record is replaced, as the reference does
    assert json.loads(result.read_text())["err_msg"] != "old"
    assert not (finished / "evaluate_result.failed.json").exists()
