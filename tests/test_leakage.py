"""Leakage: every planted duplicate and near-duplicate is found, no false pair among distinct
pictures, and fix_leakage moves each group into one split as one unit."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from helpers import check_dataset
from segx.data import leakage
from segx.data.analyse import analyse
from segx.data.layout import read_layout
from segx.data.leakage import find_leakage, near_pairs
from segx.utils.html_page import esc

NAMES = ["background", "<script>alert(1)</script>", "disc & box", "sign"]
W, H = 160, 120


def scene(seed: int, shift: int = 0) -> tuple[Image.Image, Image.Image]:
    """A distinct picture per seed: a smooth random colour field (its own grid size) with 3-6
    random discs and boxes of classes 1-3; ``shift`` pans the camera by that many pixels and
    moves the shapes by as much again (the next frame of a video)."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 256, (int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3),
                        dtype=np.uint8)
    canvas = Image.fromarray(grid).resize((W + 32, H), Image.BICUBIC)
    label = Image.new("L", canvas.size, 0)
    draw, draw_l = ImageDraw.Draw(canvas), ImageDraw.Draw(label)
    for _ in range(int(rng.integers(3, 7))):
        cls = int(rng.integers(1, 4))
        x, y = int(rng.integers(0, W)), int(rng.integers(0, H - 20))
        s = int(rng.integers(14, 50))
        box = [x + shift, y, x + shift + s, y + s]
        shape = "ellipse" if cls == 1 else "rectangle"
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        getattr(draw, shape)(box, fill=colour)
        getattr(draw_l, shape)(box, fill=cls)
    crop = (16 + shift, 0, 16 + shift + W, H)
    return canvas.crop(crop), label.crop(crop)


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def make_leaky_dataset(root: Path) -> tuple[Path, dict[str, tuple[str, str]]]:
    """40 distinct pictures (30 train, 10 val) plus planted copies; returns the root and
    {kind: (image a, image b)} of every planted pair (images/ names)."""
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}

    def add(split: str, name: str, picture: Image.Image, label: Image.Image, **save) -> None:
        picture.save(root / "images" / name, **save)
        label.save(root / "annotations" / f"{Path(name).stem}.png")
        lists[split].append(f"images/{name} annotations/{Path(name).stem}.png")

    pictures = {}
    for k in range(40):
        pictures[k] = scene(k)
        add("train" if k < 30 else "val", f"d{k:02d}.jpg", *pictures[k], quality=92)
    # byte-identical copy, and the same pixels in another file format
    shutil.copy(root / "images" / "d00.jpg", root / "images" / "copy_of_d00.jpg")
    Image.open(root / "annotations" / "d00.png").save(root / "annotations" / "copy_of_d00.png")
    lists["val"].append("images/copy_of_d00.jpg annotations/copy_of_d00.png")
    add("val", "png_of_d01.png", Image.open(root / "images" / "d01.jpg"), pictures[1][1])
    # re-encoded at a low quality, and a half-size copy
    add("val", "q30_of_d02.jpg", _jpeg(Image.open(root / "images" / "d02.jpg"), 30),
        pictures[2][1], quality=30)
    half = Image.open(root / "images" / "d03.jpg").resize((W // 2, H // 2), Image.LANCZOS)
    add("val", "half_of_d03.jpg", half, pictures[3][1].resize(half.size, Image.NEAREST),
        quality=90)
    # two consecutive video frames: train and test
    add("train", "frame_0.jpg", *scene(100, 0), quality=92)
    add("test", "frame_1.jpg", *scene(100, 2), quality=92)
    # the same picture twice in train with a different label
    other = Image.fromarray(np.asarray(pictures[4][1]) * 0 + 2)
    shutil.copy(root / "images" / "d04.jpg", root / "images" / "relabelled_d04.jpg")
    other.save(root / "annotations" / "relabelled_d04.png")
    lists["train"].append("images/relabelled_d04.jpg annotations/relabelled_d04.png")
    for split, rows in lists.items():
        (root / f"{split}.txt").write_text("\n".join(rows) + "\n")
    (root / "class_names.txt").write_text("\n".join(NAMES) + "\n")
    planted = {"exact": ("d00.jpg", "copy_of_d00.jpg"), "exact_png": ("d01.jpg", "png_of_d01.png"),
               "jpeg30": ("d02.jpg", "q30_of_d02.jpg"), "half": ("d03.jpg", "half_of_d03.jpg"),
               "frames": ("frame_0.jpg", "frame_1.jpg"),
               "conflict": ("d04.jpg", "relabelled_d04.jpg")}
    return root, planted


def _search(root: Path):
    layout = read_layout(root)
    scans: dict = {}
    analyse(layout, workers=1, scans_out=scans)
    return layout, find_leakage(layout, scans)


def test_every_planted_pair_is_found_and_no_other(tmp_path):
    root, planted = make_leaky_dataset(tmp_path / "data")
    _, leak = _search(root)
    found = {(p.kind, frozenset((p.a.image.name, p.b.image.name))) for p in leak.pairs}
    expected = {("exact", frozenset(planted["exact"])), ("exact", frozenset(planted["exact_png"])),
                ("near", frozenset(planted["jpeg30"])), ("near", frozenset(planted["half"])),
                ("near", frozenset(planted["frames"])),
                ("conflict", frozenset(planted["conflict"]))}
    assert found == expected
    by_kind = {p.kind: p for p in leak.pairs}
    assert by_kind["near"].distance <= leak.threshold
    same_bytes = {frozenset((p.a.image.name, p.b.image.name)): p.same_file for p in leak.pairs
                  if p.kind == "exact"}
    assert same_bytes == {frozenset(planted["exact"]): True,
                          frozenset(planted["exact_png"]): False}
    codes = {p.code: p.severity for p in leak.problems}
    assert codes == {"duplicate_across_splits": "error", "near_duplicate_across_splits": "warning",
                     "conflicting_labels": "warning"}
    assert len(leak.mixed_groups) == 5  # 4 train/val pairs and the train/test frames


def test_distinct_pictures_are_far_apart():
    """The margin behind the default threshold: 40 distinct scenes against their JPEG copies
    at quality 30, half-size copies and next frames."""
    fine = [leakage.phash(scene(k)[0])[1] for k in range(40)]
    apart = [leakage.distance(a, b) for i, a in enumerate(fine) for b in fine[i + 1:]]
    copies = [leakage.distance(fine[k], leakage.phash(copy)[1]) for k in range(40)
              for copy in (_jpeg(scene(k)[0], 30), scene(k)[0].resize((W // 2, H // 2)),
                           scene(k, 2)[0])]
    assert min(apart) > leakage.NEAR_DUP_THRESHOLD >= max(copies)


def test_blocked_search_equals_brute_force(monkeypatch):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2 ** 63, 50, dtype=np.int64).astype(np.uint64)
    flips = rng.integers(0, 64, (150, 3))
    hashes = np.concatenate([base, base[rng.integers(0, 50, 150)]
                             ^ (np.uint64(1) << flips.astype(np.uint64)).sum(1, dtype=np.uint64)])
    brute = {(i, j, bin(int(hashes[i]) ^ int(hashes[j])).count("1"))
             for i in range(len(hashes)) for j in range(i + 1, len(hashes))}
    brute = {t for t in brute if t[2] <= 5}
    monkeypatch.setattr(leakage, "_BLOCK", 7 * len(hashes))  # 7 rows per block
    found, truncated = near_pairs(hashes, 5)
    assert set(found) == brute and len(found) == len(brute) and not truncated
    assert near_pairs(hashes, 5, limit=10) == (found[:10], True)


def _lines(root: Path) -> dict[str, list[str]]:
    return {sp: (root / f"{sp}.txt").read_text().split("\n") for sp in ("train", "val", "test")}


def test_fix_moves_each_group_into_one_split(tmp_path):
    root, planted = make_leaky_dataset(tmp_path / "data")
    before = _lines(root)
    twin = shutil.copytree(root, tmp_path / "twin")
    report = check_dataset(root, tmp_path / "out", "CheckDataset.fix_leakage=True")
    fix = report["leakage_fix"]
    page = (tmp_path / "out" / "check_dataset" / "report.html").read_text()
    assert "Fixes written" in page and all(esc(b) in page for b in fix["backups"].values())
    assert fix["groups"] == 5 and fix["moved"] == 5
    for split, backup in fix["backups"].items():  # each changed list backed up as it was
        assert Path(backup).read_text().split("\n") == before[split]
    after = _lines(root)
    assert sorted(sum(after.values(), [])) == sorted(sum(before.values(), []))  # nothing lost
    split_of = {line.split()[0].split("/")[1]: sp for sp, rows in after.items()
                for line in rows if line}
    for a, b in planted.values():
        assert split_of[a] == split_of[b]
    assert split_of["frame_0.jpg"] == "test"  # the test set never loses an image
    assert not report["leakage"]["groups_across_splits"]
    assert "duplicate_across_splits" not in {p["code"] for p in report["problems"]}
    check_dataset(twin, tmp_path / "out2", "CheckDataset.fix_leakage=True")
    assert _lines(twin) == after  # seeded: the same moves again


def test_a_fix_that_would_empty_val_is_refused(tmp_path):
    root, _ = make_leaky_dataset(tmp_path / "data")
    rows = (root / "train.txt").read_text().split("\n")
    (root / "val.txt").write_text("images/copy_of_d00.jpg annotations/copy_of_d00.png\n")
    (root / "test.txt").write_text("images/d00.jpg annotations/d00.png\n")
    (root / "train.txt").write_text("\n".join(r for r in rows if "d00.jpg" not in r))
    before = _lines(root)
    report = check_dataset(root, tmp_path / "out", "CheckDataset.fix_leakage=True")
    assert "no samples" in report["err_msg"] and _lines(root) == before
    assert not list(root.glob("*.bak*"))


def test_leakage_can_be_switched_off(tmp_path):
    root, _ = make_leaky_dataset(tmp_path / "data")
    report = check_dataset(root, tmp_path / "out", "CheckDataset.leakage=False")
    assert "leakage" not in report
    assert not {p["code"] for p in report["problems"]} & {
        "duplicate_across_splits", "near_duplicate_across_splits", "conflicting_labels"}


@pytest.mark.parametrize("value", [-1, 97])
def test_a_threshold_out_of_range_is_refused(tmp_path, value):
    root, _ = make_leaky_dataset(tmp_path / "data")
    report = check_dataset(root, tmp_path / "out", f"CheckDataset.near_dup_threshold={value}")
    assert "near_dup_threshold" in report["err_msg"]
