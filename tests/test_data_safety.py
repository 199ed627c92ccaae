"""User data is never mixed up, lost or overwritten: LabelMe names, predict outputs, fixes,
re-splits (killed at any instant), copies, worker processes, permissions and one-line errors."""
from __future__ import annotations

import zlib  # noqa: F401

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, run_cli
from test_check_dataset import _labelme_json, check, digest, make_dataset


# ----------------------------------------------------------------------------- LabelMe
def test_labelme_samples_with_the_same_name_in_two_folders_stay_apart(tmp_path):
    src = tmp_path / "lm"
    for cam, colour in (("cam_a", 40), ("cam_b", 200)):
        (src / cam).mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (60, 40), (colour, k * 30, 0)).save(src / cam / f"00{k}.jpg")
            x = 5 + 10 * k + (20 if cam == "cam_b" else 0)
            _labelme_json(src / cam / f"00{k}.json", f"00{k}.jpg",
                          [{"label": "box", "points": [[x, 5], [x + 8, 30]],
                            "shape_type": "rectangle"}])
    (src / "notes.json").write_text(json.dumps({"not": "labelme"}))  # skipped, not an error
    rep = check(src, tmp_path / "out", "CheckDataset.convert.enable=True",
                "CheckDataset.convert.src_dataset_type=LabelMe")
    assert rep["check_pass"], rep["problems"]
    conv = Path(rep["dataset_path"])
    labels = sorted((conv / "annotations").glob("*.png"))
    assert [p.stem for p in labels] == [f"{c}_00{k}" for c in ("cam_a", "cam_b") for k in range(3)]
    for label in labels:  # every image carries its own labels
        cam, k = label.stem.rsplit("_", 1)
        image = np.asarray(Image.open(conv / "images" / f"{label.stem}.jpg"))
        assert abs(int(image[0, 0, 0]) - (40 if cam == "cam_a" else 200)) < 8
        ids = np.asarray(Image.open(label))
        x = 5 + 10 * int(k) + (20 if cam == "cam_b" else 0)
        assert ids[10, x + 4] == 1 and ids[10, (x + 30) % 60] == 0
    before = digest(src)
    inside = check(src, tmp_path / "out", "CheckDataset.convert.enable=True",
                   "CheckDataset.convert.src_dataset_type=LabelMe",
                   f"CheckDataset.convert.output_dir={src / 'converted'}")
    assert "is inside the LabelMe source" in inside["err_msg"] and digest(src) == before
    for _ in range(2):  # into a new folder, then over that conversion
        again = check(src, tmp_path / "out", "CheckDataset.convert.enable=True",
                      "CheckDataset.convert.src_dataset_type=LabelMe",
                      f"CheckDataset.convert.output_dir={tmp_path / 'converted'}")
        assert again["conversion"]["samples"] == rep["conversion"]["samples"]


SHAPES = [
    {"label": "cat", "points": [[2.5, 2], [20, 2.7], [20, 20], [7, 15.5]], "shape_type": "polygon"},
    {"label": "dog", "points": [[50, 25], [30, 5]], "shape_type": "rectangle"},
    {"label": "sun", "points": [[10.3, 30], [14, 31.2]], "shape_type": "circle"},
    {"label": "road", "points": [[0, 38], [59, 37]], "shape_type": "line"},
    {"label": "road", "points": [[0, 35], [30, 33], [59, 35.5]], "shape_type": "linestrip"},
    {"label": "dot", "points": [[55.4, 3.6]], "shape_type": "point"},
    {"label": "cat", "points": [[40, 30], [55, 31], [54, 39], [41, 38]],
     "shape_type": "oriented_rectangle"},
    {"label": "dog", "points": [[3, 22], [7, 25]], "shape_type": "mask"},
    {"label": "sun", "points": [[25, 12], [33, 14], [28, 19]], "shape_type": None},
]


def _mask_b64() -> str:
    import base64
    import io
    buf = io.BytesIO()
    Image.fromarray((np.indices((4, 5)).sum(0) % 2).astype(bool)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_the_rasteriser_matches_labelme_for_every_shape_type():
    utils = pytest.importorskip("labelme.utils")  # the oracle; segx itself needs no labelme
    from segx.data.rasterise import shapes_to_ids
    shapes = [dict(s) for s in SHAPES]
    shapes[7]["mask"] = _mask_b64()
    ids = {"_background_": 0, "cat": 1, "dog": 2, "sun": 3, "road": 4, "dot": 5}
    ours = shapes_to_ids((40, 60), shapes, ids)
    theirs_shapes = [dict(s) for s in shapes]
    from labelme.utils import img_b64_to_arr
    theirs_shapes[7]["mask"] = img_b64_to_arr(shapes[7]["mask"]).astype(bool)
    theirs, _ = utils.shapes_to_label((40, 60), theirs_shapes, ids)
    assert np.array_equal(ours, theirs)
    assert set(np.unique(ours)) == {0, 1, 2, 3, 4, 5}


def test_a_killed_image_copy_leaves_no_partial_file(tmp_path, monkeypatch):
    import shutil

    from segx.utils import fileio
    calls = []

    def broken(src, dst, length=0):
        dst.write(src.read(10))
        calls.append(1)
        raise OSError("disk went away")
    monkeypatch.setattr(shutil, "copyfileobj", broken)
    (tmp_path / "a.jpg").write_bytes(os.urandom(1000))
    with pytest.raises(OSError):
        fileio.copy_file(tmp_path / "a.jpg", tmp_path / "out" / "a.jpg")
    assert calls and list((tmp_path / "out").iterdir()) == []


# ----------------------------------------------------------------------------- predict
def test_predict_refuses_to_overwrite_its_inputs(run_dir, data, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(3):
        Image.open(data / "images" / f"00{k}.jpg").save(photos / f"00{k}.png")
    before = digest(photos)
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=predict", "-o", f"Global.output={photos}",
                "-o", f"Predict.model_dir={run_dir}", "-o", f"Predict.input={photos}")
    assert r.returncode == 2 and "would overwrite the input" in r.stderr
    r = run_cli("--pipeline", "semantic_segmentation", "--model", str(run_dir), "--input",
                str(photos), "--save_path", str(photos), "--device", "cpu")
    assert r.returncode == 2 and "would overwrite the input" in r.stderr
    after = digest(photos)
    assert {k: after[k] for k in before} == before  # (predict_result.json says what failed)


# ----------------------------------------------------------------------------- fixes
def test_fix_labels_never_rewrites_source_labels(tmp_path):
    src = make_dataset(tmp_path / "src", label_mode="L", ids=(0, 255))
    lists = tmp_path / "lists"
    lists.mkdir()
    for split in ("train", "val"):
        rows = [" ".join(str(src / p) for p in line.split())
                for line in (src / f"{split}.txt").read_text().splitlines()]
        (lists / f"{split}.txt").write_text("\n".join(rows) + "\n")
    before = digest(src)
    rep_dir = tmp_path / "out"
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=check_dataset", "-o",
                f"Global.dataset_dir={lists}", "-o", f"Global.output={rep_dir}", "-o",
                "CheckDataset.fix_labels=True", "-o", f"CheckDataset.fix_output_dir={src}")
    assert r.returncode == 2 and "would overwrite" in r.stderr
    assert digest(src) == before


# ----------------------------------------------------------------------------- re-split
def _split_state(root: Path) -> dict[str, list[str]]:
    from segx.data.layout import read_layout
    layout = read_layout(root)  # finishes or undoes a killed re-split first
    return {sp: sorted(str(s.image) for s in v) for sp, v in layout.samples.items()}


@pytest.mark.slow
def test_a_resplit_killed_at_any_instant_leaves_one_whole_split(tmp_path):
    root = make_dataset(tmp_path / "d", n_train=150, n_val=50)
    everything = sorted(x for v in _split_state(root).values() for x in v)
    code = ("import sys; from pathlib import Path; from segx.data.split import "
            "split_dataset\nfor seed in range(1000): split_dataset(Path(sys.argv[1]), 70, 30, 0, "
            "seed)")
    rng = np.random.default_rng(0)
    kills = 0
    deadline = time.time() + 90
    while kills < 12 and time.time() < deadline:
        proc = subprocess.Popen([sys.executable, "-c", code, str(root)], cwd=ROOT)
        time.sleep(0.6 + rng.uniform(0, 0.8))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        state = _split_state(root)
        members = [x for v in state.values() for x in v]
        assert sorted(members) == everything, "a sample was lost or doubled"
        assert len(state["train"]) == 140 and len(state["val"]) == 60
        assert not (root / ".segx_split").exists()
    assert kills >= 5


def test_resplit_keeps_test_out_of_train_and_val_and_backs_up_every_list(tmp_path):
    root = make_dataset(tmp_path / "d", n_train=8, n_val=0)
    (root / "val.txt").unlink()
    lines = (root / "train.txt").read_text().splitlines()
    (root / "train.txt").write_text("\n".join(lines[:6]) + "\n")
    (root / "test.txt").write_text("\n".join(lines[6:]) + "\n")
    bad = check(root, tmp_path / "o1")
    fix = next(p["fix"] for p in bad["problems"] if p["code"] == "missing_list")
    overrides = [o for o in fix.split(" -o ")[1:]]
    overrides = [o.split(" (")[0] for o in overrides]  # run the suggestion as printed
    rep = check(root, tmp_path / "o2", *overrides)
    assert rep["check_pass"], rep["problems"]
    assert rep["split"]["test_kept"] and (root / "test.txt").read_text().splitlines() == lines[6:]
    assert rep["attributes"]["train_samples"] + rep["attributes"]["val_samples"] == 6
    assert (root / "train.txt.bak").is_file()
    rep = check(root, tmp_path / "o3", "CheckDataset.split.enable=True",
                "CheckDataset.split.train_percent=50", "CheckDataset.split.val_percent=50")
    assert (root / "val.txt.bak").is_file() and (root / "train.txt.bak1").is_file()


def test_names_that_cannot_be_listed_are_refused_by_name(tmp_path):
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for name in ("ok", "two  spaces", "tab\there"):
        Image.new("RGB", (8, 8)).save(root / "images" / f"{name}.png")
        Image.new("L", (8, 8)).save(root / "annotations" / f"{name}.png")
    from segx.data.split import split_dataset
    from segx.utils.errors import DatasetError
    with pytest.raises(DatasetError, match="two  spaces") as info:
        split_dataset(root, 50, 50, 0, 0)
    assert "tab\\there" in str(info.value)
    assert not (root / "train.txt").exists()


# ----------------------------------------------------------------------------- processes, files
@pytest.mark.slow
def test_check_dataset_workers_exit_with_a_killed_parent(tmp_path):
    root = make_dataset(tmp_path / "d", n_train=400, n_val=100, hw=(256, 256))
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "-c", "PP-LiteSeg-T",
                             "-o", f"Global.dataset_dir={root}", "-o",
                             f"Global.output={tmp_path / 'o'}", "-o",
                             "CheckDataset.num_workers=2"], cwd=ROOT)
    deadline = time.time() + 60
    children: list[int] = []
    while time.time() < deadline and not children:
        out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        children = [int(x) for x in out.stdout.split()]
        time.sleep(0.05)
    assert children, "no workers seen"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    alive = children
    while time.time() < deadline and alive:
        alive = [c for c in children if Path(f"/proc/{c}").exists()
                 and "Z" not in Path(f"/proc/{c}/stat").read_text().split()[2]]
        time.sleep(0.1)
    assert alive == []


def test_written_files_follow_the_umask(tmp_path):
    from segx.utils.fileio import write_text
    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "inference.yml", "x: 1\n")
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_path_and_weight_mistakes_are_one_line(tmp_path, data, run_dir):
    (tmp_path / "file").write_text("not a folder")
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=check_dataset",
                "-o", f"Global.dataset_dir={data}", "-o", f"Global.output={tmp_path / 'file'}")
    assert r.returncode == 2 and "is a file, not a folder" in r.stderr
    import tarfile
    with tarfile.open(tmp_path / "w.tar.gz", "w:gz") as tar:
        tar.add(run_dir / "best_model" / "model.pdparams", "m/model.pdparams")
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=evaluate", "-o",
                f"Global.dataset_dir={data}", "-o", f"Global.output={tmp_path / 'e'}",
                "-o", f"Evaluate.weight_path={tmp_path / 'w.tar.gz'}")
    assert r.returncode == 2 and "is not a .pdparams file" in r.stderr
    for result in (r,):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
