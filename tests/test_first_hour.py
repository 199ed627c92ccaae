"""What a new user trips on in the first hour: honest counts, a training ETA that includes
evaluation, class names everywhere, a palette that separates classes, names in any case, and
errors that point at what exists."""
from __future__ import annotations

import zlib  # noqa: F401

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import run_cli
from test_check_dataset import check, make_dataset


def test_problem_counts_are_the_real_counts(tmp_path):
    root = make_dataset(tmp_path / "d", n_train=30, n_val=2)
    lines = (root / "train.txt").read_text().splitlines()
    for line in lines:
        (root / line.split()[0]).unlink()  # 30 missing images: 20 listed, "... and 10 more"
    r = run_cli("-c", "PP-LiteSeg-T", "-o", f"Global.dataset_dir={root}",
                "-o", f"Global.output={tmp_path / 'o'}")
    assert r.returncode == 2 and "failed with 30 error(s)" in r.stderr
    report = json.loads((tmp_path / "o" / "check_dataset_result.json").read_text())
    more = [p for p in report["problems"] if p["message"].startswith("... and")]
    assert more and more[0]["count"] == 10


def test_class_names_from_the_config_reach_the_summary_and_the_report(tmp_path):
    root = make_dataset(tmp_path / "d")
    (root / "class_names.txt").unlink(missing_ok=True)
    r = run_cli("-c", "PP-LiteSeg-T", "-o", f"Global.dataset_dir={root}",
                "-o", f"Global.output={tmp_path / 'o'}",
                "-o", "CheckDataset.class_names=[sky, road, car]")
    assert r.returncode == 0, r.stderr
    assert "3 classes (0 sky, 1 road, 2 car)" in r.stdout
    names = tmp_path / "names.txt"
    names.write_text("sky\nroad\n")
    rep = check(root, tmp_path / "o2", f"CheckDataset.class_names={names}")
    assert not rep["check_pass"] and any(p["code"] == "unnamed_ids" and
                                         p["file"] == "CheckDataset.class_names"
                                         for p in rep["problems"])


def test_eval_lines_and_the_result_carry_class_names(run_dir):
    log = (run_dir / "train.log").read_text()
    assert "class IoU [background: " in log and ", disc: " in log and ", box: " in log
    assert "estimated time left:" in log and "2 evaluation(s)" in log
    result = json.loads((run_dir / "train_result.json").read_text())
    assert result["label_dict"] == {"0": "background", "1": "disc", "2": "box"}


def test_the_eta_counts_the_evaluations_still_to_come():
    from segx.training.hooks import LoggingHook
    from segx.training.trainer import RunInfo
    run = RunInfo(Path("."), "m", "cpu", 3, [], total=8, batch_size=2, train_samples=10,
                  val_samples=40)
    hook = LoggingHook(None, 1, False, eval_every=4)

    class T:
        pass
    trainer = T()
    trainer.run, trainer.iter, trainer.start_iter = run, 4, 0
    trainer.timing = {"eval_s": [2.0]}
    hook.t_start = time.perf_counter() - 10.0  # 10 s in: 8 s training + one 2 s evaluation
    left, training, evals, each, measured = hook.eta(trainer)
    assert measured and evals == 1 and each == pytest.approx(2.0)
    assert training == pytest.approx(8.0, rel=0.05) and left == pytest.approx(10.0, rel=0.05)
    trainer.timing = {"eval_s": []}  # before the first evaluation: an estimate, not zero
    hook.t_start = time.perf_counter() - 8.0
    left, _, evals, each, measured = hook.eta(trainer)
    assert not measured and evals == 1 and each == pytest.approx(0.5 * 2 * 40 / 2, rel=0.05)


def test_the_palette_separates_neighbouring_classes():
    from segx.imaging.palette import palette
    table = palette().astype(float)
    assert table[0].mean() > 80  # class 0 is not black: a background is not "unlabelled"
    dist = lambda a, b: float(np.sqrt(((table[a] - table[b]) ** 2).sum()))  # noqa: E731
    assert min(dist(i, j) for i in range(20) for j in range(i + 1, 20)) >= 80
    assert min(dist(i, i + 1) for i in range(150)) >= 40
    assert tuple(table[255]) == (255, 255, 255)  # ignore


def test_saved_ids_are_exact_and_plain_ids_read_with_opencv(run_dir, data, tmp_path):
    from PIL import Image

    from segx import create_model
    with create_model(run_dir, device="cpu") as m:
        res = next(m.predict(data / "images" / "000.jpg"))
    palette_png = res.save_to_img(tmp_path / "a")[0]
    plain_png = res.save_to_img(tmp_path / "b", plain=True)[0]
    assert np.array_equal(np.asarray(Image.open(palette_png)), res.pred)
    assert np.array_equal(cv2.imread(str(plain_png), cv2.IMREAD_UNCHANGED), res.pred)


def test_model_names_are_case_insensitive_everywhere():
    from segx.zoo.registry import load_model_config, model_info
    assert load_model_config("pp-liteseg-t").model_name == "PP-LiteSeg-T"
    assert model_info("SEGFORMER-b0").name == "SegFormer-B0"
    r = run_cli("-c", "pp-liteseg-T", "--print-config")
    assert r.returncode == 0 and "model: PP-LiteSeg-T" in r.stdout


def test_a_mistyped_model_folder_lists_the_exported_ones(run_dir, data, tmp_path):
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=predict",
                "-o", f"Global.output={run_dir}", "-o", f"Predict.input={data / 'images'}",
                "-o", f"Predict.model_dir={run_dir / 'best_modle' / 'inference'}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"Exported models under {run_dir}: {run_dir / 'best_model' / 'inference'}" in r.stderr


def test_help_lists_every_command_and_evaluate_says_what_is_missing(run_dir, data, tmp_path):
    r = run_cli("--help")
    for command in ("segx models", "segx weights list", "segx weights fetch",
                    "segx weights import", "segx demo", "--dataset-only street", "--pipeline",
                    "--serve"):
        assert command in r.stdout, command
    bare = tmp_path / "d"
    bare.mkdir()
    for f in ("images", "annotations", "train.txt", "class_names.txt"):
        src = data / f
        (bare / f).symlink_to(src, target_is_directory=src.is_dir())
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=evaluate", "-o",
                f"Global.dataset_dir={bare}", "-o", f"Global.output={run_dir}")
    assert r.returncode == 2 and f"{bare / 'val.txt'} does not exist" in r.stderr
