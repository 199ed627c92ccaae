"""check_dataset on small generated datasets: every bad case gives its own problem, a failing
exit and leaves the source untouched; plus the two real-data acceptance checks."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import SHARED, run_cli
from helpers import check_dataset as check  # also imported from here by other tests
from segx.zoo.registry import load_model_config as load_config
from segx.modules.table import run
from segx.utils.errors import DatasetError


def make_dataset(root: Path, n_train=4, n_val=2, hw=(24, 32), ids=(0, 1, 2), label_mode="L",
                 label_fmt="PNG", sep=" ") -> Path:
    """images/k.png + annotations/k.png with stripes of ``ids``; train.txt/val.txt."""
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for k in range(n_train + n_val):
        img = rng.integers(0, 255, (*hw, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / "images" / f"{k}.png")
        lbl = np.zeros(hw, np.uint8)
        for j, v in enumerate(ids):
            lbl[:, j * hw[1] // len(ids):] = v
        ext = "jpg" if label_fmt == "JPEG" else "png"
        Image.fromarray(lbl).convert(label_mode).save(root / "annotations" / f"{k}.{ext}",
                                                      format=label_fmt)
        lines.append(f"images/{k}.png{sep}annotations/{k}.{ext}")
    (root / "train.txt").write_text("\n".join(lines[:n_train]) + "\n")
    (root / "val.txt").write_text("\n".join(lines[n_train:]) + "\n")
    return root


def digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def codes(report: dict, severity: str = "error") -> set[str]:
    return {p["code"] for p in report["problems"] if p["severity"] == severity}


def test_good_dataset_report_schema(tmp_path):
    root = make_dataset(tmp_path / "d", ids=(0, 1, 2))
    before = digest(root)
    rep = check(root, tmp_path / "out")
    assert rep["done_flag"] and rep["check_pass"], rep["problems"]
    a = rep["attributes"]
    assert (a["train_samples"], a["val_samples"], a["num_classes"]) == (4, 2, 3)
    for key in ("train_sample_paths", "val_sample_paths", "class_ids", "class_names",
                "label_encoding"):
        assert key in a
    assert rep["dataset_type"] == "SegDataset" and rep["show_type"] == "image"
    assert rep["analysis"]["histogram"] == "check_dataset/histogram.png"
    px = rep["analysis"]["classes"]["train"]["pixels"]
    assert sum(px.values()) == 4 * 24 * 32  # pixels, not images
    assert rep["analysis"]["classes"]["train"]["images"] == {"0": 4, "1": 4, "2": 4}
    samples = a["train_sample_paths"] + a["val_sample_paths"]
    assert len(set(samples)) == 6 and all((tmp_path / "out" / p).is_file() for p in samples)
    assert Image.open(tmp_path / "out" / "check_dataset" / "histogram.png").size[0] > 0
    assert digest(root) == before


def test_non_contiguous_ids_counted_by_id(tmp_path):
    rep = check(make_dataset(tmp_path / "d", ids=(0, 2, 5)), tmp_path / "out")
    assert rep["attributes"]["num_classes"] == 6  # max id + 1, not a count of distinct values
    assert rep["attributes"]["class_ids"] == [0, 2, 5]
    assert "sparse_ids" in codes(rep, "warning")
    assert set(rep["analysis"]["classes"]["train"]["pixels"]) == {"0", "2", "5"}


def test_list_file_variants(tmp_path):
    root = make_dataset(tmp_path / "d", sep="\t")
    (root / "images" / "a b.png").write_bytes((root / "images" / "0.png").read_bytes())
    (root / "annotations" / "a b.png").write_bytes((root / "annotations" / "0.png").read_bytes())
    abs_img, abs_lbl = root / "images" / "1.png", root / "annotations" / "1.png"
    (root / "train.txt").write_bytes(
        b"images/0.png    annotations/0.png\r\n\r\nimages/a b.png annotations/a b.png\r\n"
        + f"{abs_img} {abs_lbl}\n".encode() + b"images/2.png\tannotations/2.png")
    rep = check(root, tmp_path / "out")
    assert rep["check_pass"], rep["problems"]
    assert rep["attributes"]["train_samples"] == 4


BAD_CASES = {
    "malformed_line": lambda r: (r / "train.txt").write_text(
        (r / "train.txt").read_text() + "images/0.png\n"),
    "missing_image": lambda r: (r / "images" / "1.png").unlink(),
    "missing_label": lambda r: (r / "annotations" / "1.png").unlink(),
    "unreadable_image": lambda r: (r / "images" / "1.png").write_bytes(
        (r / "images" / "1.png").read_bytes()[:200]),
    "size_mismatch": lambda r: Image.new("L", (10, 10)).save(r / "annotations" / "1.png"),
    "leakage": lambda r: (r / "val.txt").write_text(
        (r / "val.txt").read_text() + "images/0.png annotations/0.png\n"),
    "empty_split": lambda r: (r / "val.txt").write_text("\n\n"),
    "missing_list": lambda r: (r / "val.txt").unlink(),
    "colour_label": lambda r: Image.fromarray(np.dstack([np.asarray(Image.open(
        r / "annotations" / "1.png")) * 100] + [np.zeros((24, 32), np.uint8)] * 2)).save(
        r / "annotations" / "1.png"),
    "multichannel_label": lambda r: Image.open(r / "annotations" / "1.png").convert("RGB").save(
        r / "annotations" / "1.png"),
    "label_16bit": lambda r: Image.fromarray(np.full((24, 32), 300, np.uint16)).save(
        r / "annotations" / "1.png"),
}


@pytest.mark.parametrize("code", sorted(BAD_CASES))
def test_bad_case(tmp_path, code):
    root = make_dataset(tmp_path / "d")
    BAD_CASES[code](root)
    before = digest(root)
    rep = check(root, tmp_path / "out")
    assert not rep["check_pass"] and code in codes(rep)
    problem = next(p for p in rep["problems"] if p["code"] == code)
    assert problem["message"] and problem["fix"]
    assert digest(root) == before


def test_jpeg_labels_and_duplicates(tmp_path):
    root = make_dataset(tmp_path / "d", label_fmt="JPEG", ids=(0, 1))
    (root / "train.txt").write_text((root / "train.txt").read_text() + "images/0.png "
                                    "annotations/0.jpg\n")
    rep = check(root, tmp_path / "out")
    assert "jpeg_label" in codes(rep) and "duplicate_line" in codes(rep, "warning")
    dup = next(p for p in rep["problems"] if p["code"] == "duplicate_line")
    assert (dup["file"], dup["line"]) == ("train.txt", 5)


def test_ids_beyond_num_classes(tmp_path):
    rep = check(make_dataset(tmp_path / "d", ids=(0, 1, 4)), tmp_path / "out",
                "Train.num_classes=3")
    assert "id_out_of_range" in codes(rep)
    assert "Train.num_classes=5" in next(p["fix"] for p in rep["problems"]
                                         if p["code"] == "id_out_of_range")


def test_odd_images_are_handled(tmp_path):
    root = make_dataset(tmp_path / "d")
    Image.open(root / "images" / "0.png").convert("L").save(root / "images" / "0.png")
    Image.open(root / "images" / "1.png").convert("RGBA").save(root / "images" / "1.png")
    Image.fromarray(np.full((24, 32), 40000, np.uint16)).save(root / "images" / "2.png")
    rep = check(root, tmp_path / "out")
    assert rep["check_pass"], rep["problems"]


def test_binary_0_255_fixed_into_new_folder(tmp_path):
    root = make_dataset(tmp_path / "d", ids=(0, 255))
    before = digest(root)
    rep = check(root, tmp_path / "out")
    assert "binary_0_255" in codes(rep) and rep["attributes"]["label_encoding"]["needs_fix"]
    rep = check(root, tmp_path / "out2", "CheckDataset.fix_labels=True")
    assert rep["check_pass"] and rep["attributes"]["num_classes"] == 2
    assert rep["fix"]["encoding"]["mapping"] == {"0": 0, "255": 1}
    fixed = Path(rep["dataset_path"])
    assert np.unique(np.asarray(Image.open(fixed / "annotations" / "0.png"))).tolist() == [0, 1]
    assert digest(root) == before


def test_colour_labels_table_and_fix(tmp_path):
    root = make_dataset(tmp_path / "d", ids=(0, 1, 2))
    colours = {0: (0, 0, 0), 1: (255, 0, 0), 2: (0, 255, 0)}
    for p in (root / "annotations").iterdir():
        ids = np.asarray(Image.open(p))
        rgb = np.zeros((*ids.shape, 3), np.uint8)
        for k, c in colours.items():
            rgb[ids == k] = c
        Image.fromarray(rgb).save(p)
    rep = check(root, tmp_path / "out")
    table = rep["attributes"]["label_encoding"]["colour_table"]
    assert "colour_label" in codes(rep) and table["0,0,0"] == 0 and len(table) == 3
    rep = check(root, tmp_path / "out2", "CheckDataset.fix_labels=True")
    assert rep["check_pass"] and rep["attributes"]["num_classes"] == 3


def test_missing_dataset_dir_exits_nonzero(tmp_path):
    r = run_cli("-c", "PP-LiteSeg-T", "-o", f"Global.dataset_dir={tmp_path}/nope",
                "-o", f"Global.output={tmp_path}/out")
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_failed_check_exits_2_after_writing_report(tmp_path):
    root = make_dataset(tmp_path / "d", ids=(0, 255))
    r = run_cli("-c", "PP-LiteSeg-T", "-o", f"Global.dataset_dir={root}",
                "-o", f"Global.output={tmp_path}/out")
    assert r.returncode == 2 and "binary_0_255" in r.stderr
    rep = json.loads((tmp_path / "out" / "check_dataset_result.json").read_text())
    assert rep["done_flag"] is True and rep["check_pass"] is False


# ----------------------------------------------------------------------------- split
def split(root, out, *extra):
    return check(root, out, "CheckDataset.split.enable=True", *extra)


def test_split_reproducible_nothing_dropped_backups_kept(tmp_path):
    root = make_dataset(tmp_path / "d", n_train=3, n_val=2)
    original = (root / "train.txt").read_text()
    rep = split(root, tmp_path / "o1", "CheckDataset.split.train_percent=50",
                "CheckDataset.split.val_percent=50")
    assert rep["split"]["counts"] == {"train": 3, "val": 2}  # 5 at 50/50: nothing dropped
    first = (root / "train.txt").read_text()
    assert (root / "train.txt.bak").read_text() == original
    split(root, tmp_path / "o2", "CheckDataset.split.train_percent=50",
          "CheckDataset.split.val_percent=50")
    assert (root / "train.txt").read_text() == first  # same seed, same split
    assert (root / "train.txt.bak").read_text() == original  # older backup never overwritten
    assert (root / "train.txt.bak1").read_text() == first
    rep = split(root, tmp_path / "o3", "CheckDataset.split.train_percent=50",
                "CheckDataset.split.val_percent=50", "Global.seed=7")
    assert rep["check_pass"]


def test_split_discovers_pairs_without_lists(tmp_path):
    root = make_dataset(tmp_path / "d", n_train=7, n_val=3)
    (root / "train.txt").unlink()
    (root / "val.txt").unlink()
    rep = split(root, tmp_path / "o", "CheckDataset.split.train_percent=70",
                "CheckDataset.split.val_percent=20", "CheckDataset.split.test_percent=10")
    assert rep["check_pass"] and rep["split"]["counts"] == {"train": 7, "val": 2, "test": 1}


@pytest.mark.parametrize("percents,message", [
    (("CheckDataset.split.train_percent=80", "CheckDataset.split.val_percent=30"), "add up to 110"),
    (("CheckDataset.split.train_percent=100", "CheckDataset.split.val_percent=0"), "above 0"),
    (("CheckDataset.split.val_percent=20",), "train_percent is not set"),
])
def test_split_bad_percents(tmp_path, percents, message):
    root = make_dataset(tmp_path / "d")
    before = digest(root)
    cfg = load_config("PP-LiteSeg-T", [f"Global.dataset_dir={root}",
                                       f"Global.output={tmp_path}/o",
                                       "CheckDataset.split.enable=True", *percents])
    with pytest.raises(DatasetError, match=message):
        run(cfg)
    assert digest(root) == before


# ----------------------------------------------------------------------------- LabelMe
def _labelme_json(path: Path, image: str, shapes: list, hw=(40, 60)):
    path.write_text(json.dumps({"version": "5.0.0", "flags": {}, "shapes": shapes,
                                "imagePath": image, "imageData": None,
                                "imageHeight": hw[0], "imageWidth": hw[1]}))


def test_labelme_flat_folder_every_shape_type(tmp_path):
    src = tmp_path / "lm"
    src.mkdir()
    shapes = [
        {"label": "cat", "points": [[2, 2], [20, 2], [20, 20]], "shape_type": "polygon"},
        {"label": "dog", "points": [[30, 5], [50, 25]], "shape_type": "rectangle"},
        {"label": "sun", "points": [[10, 30], [14, 30]], "shape_type": "circle"},
        {"label": "road", "points": [[0, 38], [59, 38]], "shape_type": "line"},
        {"label": "road", "points": [[0, 35], [30, 33], [59, 35]], "shape_type": "linestrip"},
        {"label": "dot", "points": [[55, 3]], "shape_type": "point"},
    ]
    for k in range(5):
        Image.new("RGB", (60, 40), (k * 20, 0, 0)).save(src / f"p{k}.jpg")
        _labelme_json(src / f"p{k}.json", f"p{k}.jpg", shapes)
    before = digest(src)
    rep = check(src, tmp_path / "out", "CheckDataset.convert.enable=True",
                "CheckDataset.convert.src_dataset_type=LabelMe")
    assert rep["check_pass"], rep["problems"]
    conv = rep["conversion"]
    assert conv["samples"] == {"train": 4, "val": 1}
    assert conv["class_ids"]["_background_"] == 0 and conv["class_ids"]["cat"] == 1
    assert rep["attributes"]["class_names"] == ["_background_", "cat", "dog", "sun", "road", "dot"]
    mask = np.asarray(Image.open(Path(rep["dataset_path"]) / "annotations" / "p0.png"))
    assert set(np.unique(mask)) == {0, 1, 2, 3, 4, 5}
    assert digest(src) == before  # the source folder is untouched


@pytest.mark.skipif(not (SHARED / "labelme_examples").is_dir(), reason="needs ../shared")
def test_labelme_matches_labelme_reference_masks(tmp_path):
    src = tmp_path / "lm"
    shutil.copytree(SHARED / "labelme_examples", src)
    rep = check(src, tmp_path / "out", "CheckDataset.convert.enable=True",
                "CheckDataset.convert.src_dataset_type=LabelMe")
    assert rep["check_pass"], rep["problems"]
    assert rep["attributes"]["num_classes"] == 21  # labels.txt declares the id space
    conv = Path(rep["dataset_path"])
    refs = sorted((src / "reference_voc" / "SegmentationClass").glob("*.png"))
    assert len(refs) == 3
    for ref in refs:
        want = np.asarray(Image.open(ref))
        got = np.asarray(Image.open(conv / "annotations" / ref.name))
        assert got.shape == want.shape
        # labelme's README allows a pixel or two on polygon edges across Pillow versions
        assert (got != want).sum() <= 2, ref.name


@pytest.mark.skipif(not (SHARED / "membrane").is_dir(), reason="needs ../shared")
def test_membrane_0_255_flagged_then_fixed(tmp_path):
    root = tmp_path / "membrane"
    shutil.copytree(SHARED / "membrane" / "images", root / "images")
    shutil.copytree(SHARED / "membrane" / "labels", root / "annotations")
    (root / "train.txt").write_text("".join(f"images/{i}.png annotations/{i}.png\n"
                                            for i in range(24)))
    (root / "val.txt").write_text("".join(f"images/{i}.png annotations/{i}.png\n"
                                          for i in range(24, 30)))
    rep = check(root, tmp_path / "out")
    assert not rep["check_pass"] and "binary_0_255" in codes(rep)
    assert rep["attributes"]["label_encoding"]["name"] == "binary_0_255"
    rep = check(root, tmp_path / "out2", "CheckDataset.fix_labels=True")
    assert rep["check_pass"] and rep["attributes"]["num_classes"] == 2


def test_convert_needs_a_source_type(tmp_path):
    rep_dir = tmp_path / "out"
    root = make_dataset(tmp_path / "d")
    cfg = load_config("PP-LiteSeg-T", [f"Global.dataset_dir={root}", f"Global.output={rep_dir}",
                                       "CheckDataset.convert.enable=True"])
    with pytest.raises(DatasetError, match="src_dataset_type=LabelMe"):
        run(cfg)


def test_class_list_through_the_python_api(tmp_path):
    from segx import run_mode
    root = make_dataset(tmp_path / "d", ids=(0, 1, 2))
    (root / "class_names.txt").write_text("bg\na\nb\n")
    result = run_mode("PP-LiteSeg-T", "check_dataset", [f"Global.dataset_dir={root}"],
                      Global__output=str(tmp_path / "ok"))
    assert result["done_flag"] and result["attributes"]["num_classes"] == 3
    assert result["attributes"]["class_names"] == ["bg", "a", "b"]
    bad = make_dataset(tmp_path / "bad", ids=(0, 255))
    with pytest.raises(DatasetError):
        run_mode("PP-LiteSeg-T", "check_dataset", [f"Global.dataset_dir={bad}",
                                                   f"Global.output={tmp_path / 'no'}"])
