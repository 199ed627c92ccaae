"""check_dataset on datasets with one hostile file each (issue 18, part 2): every case is a named
problem in check_dataset_result.json, a failing exit without a traceback, the rest of the report
(histogram, overlays of the good samples) written, and a small process (peak RSS < 1 GB)."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, measured_run

PEAK_LIMIT_KB = 1024 * 1024  # 1 GiB, in ru_maxrss units (KiB on Linux)
AS_LIMIT = 3 << 30  # address space of the checked process: a regression hits MemoryError


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose IHDR (valid CRC) declares ``width`` x ``height`` 8-bit grey, with a few
    bytes of image data: anything that decodes it fails or allocates width * height bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _dataset(root: Path, bad: str, hw: tuple[int, int] = (32, 32)) -> Path:
    """3 good train + 2 good val samples (32x32, ids 0..2) and one train sample whose label
    (or image) is written by ``bad`` (a key of BAD)."""
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for k in range(5):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(
            root / "images" / f"{k}.png")
        lbl = np.zeros((32, 32), np.uint8)
        lbl[:, 10:], lbl[:, 20:] = 1, 2
        Image.fromarray(lbl).save(root / "annotations" / f"{k}.png")
        lines.append(f"images/{k}.png annotations/{k}.png")
    image, label = root / "images" / "bad.png", BAD[bad](root / "annotations")
    if bad == "huge_image":
        _png_header_only(image, 30000, 30000)
    else:
        shape = (256, 256) if bad == "many_ids" else (32, 32)
        Image.fromarray(rng.integers(0, 255, (*shape, 3), np.uint8)).save(image)
    train = lines[:3] + [f"images/bad.png annotations/{label.name}"]
    (root / "train.txt").write_text("\n".join(train) + "\n")
    (root / "val.txt").write_text("\n".join(lines[3:]) + "\n")
    return root


def _tiff(folder: Path, arr: np.ndarray) -> Path:
    path = folder / "bad.tiff"
    Image.fromarray(arr).save(path)
    return path


def _tiff_with(dtype, background, value):
    """A writer of a 32 x 32 TIFF of ``dtype`` filled with ``background`` but for one pixel
    holding ``value``."""
    def write(folder: Path) -> Path:
        arr = np.full((32, 32), background, dtype)
        arr[5, 5] = value
        return _tiff(folder, arr)
    return write


def _int32(value: int):
    return _tiff_with(np.int32, 0, value)


def _float32(value: float):
    return _tiff_with(np.float32, 1, value)


def _many_ids(folder: Path) -> Path:
    """256 x 256 16-bit PNG holding 60,000 distinct ids."""
    arr = (np.arange(256 * 256) % 60000).astype(np.uint16).reshape(256, 256)
    path = folder / "bad.png"
    Image.fromarray(arr).save(path)
    return path


def _huge_label(folder: Path) -> Path:
    _png_header_only(folder / "bad.png", 30000, 30000)
    return folder / "bad.png"


def _plain_label(folder: Path) -> Path:
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "bad.png")
    return folder / "bad.png"


BAD = {"int32_huge": _int32(2**31 - 1), "int32_negative": _int32(-1),
       "float_nan": _float32(float("nan")), "float_huge": _float32(1e30),
       "float_ids": _float32(1.0), "many_ids": _many_ids, "huge_label": _huge_label,
       "huge_image": _plain_label}
EXPECTED = {"int32_huge": "label_values", "int32_negative": "label_values",
            "float_nan": "label_values", "float_huge": "label_values",
            "float_ids": "label_values", "many_ids": "too_many_ids",
            "huge_label": "label_too_large", "huge_image": "image_too_large"}


def _check(root: Path, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess, int]:
    """check_dataset through the CLI in a capped process; returns (result, peak RSS in KiB of the
    process and every worker it waited for)."""
    args = [sys.executable, str(ROOT / "main.py"), "-c", "PP-LiteSeg-T",
            "-o", "Global.mode=check_dataset", "-o", f"Global.dataset_dir={root}",
            "-o", f"Global.output={out}", "-o", "CheckDataset.num_workers=2", *extra]
    return measured_run(args, out.parent / "proc", limit=AS_LIMIT,
                        env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.mark.slow  # a capped CLI process each (about 1.2 s)
@pytest.mark.parametrize("bad", sorted(BAD))
def test_hostile_label_is_a_named_problem(tmp_path, bad):
    root = _dataset(tmp_path / "d", bad)
    r, peak_kb = _check(root, tmp_path / "out")
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    rep = json.loads((tmp_path / "out" / "check_dataset_result.json").read_text())
    codes = {p["code"] for p in rep["problems"] if p["severity"] == "error"}
    assert EXPECTED[bad] in codes, rep["problems"]
    assert not rep["check_pass"]
    a = rep["attributes"]
    # the good samples are drawn, the bad one is not (or, for many_ids, drawn with its ids)
    drawn = [Path(p).name for p in a["train_sample_paths"] + a["val_sample_paths"]]
    assert len([n for n in drawn if "_bad" not in n]) == 5, drawn
    assert all((tmp_path / "out" / p).is_file()
               for p in a["train_sample_paths"] + a["val_sample_paths"])
    if bad == "many_ids":  # the overlay's legend lists the largest classes, not every id
        bad_overlay = next(p for p in a["train_sample_paths"] if "_bad" in p)
        with Image.open(tmp_path / "out" / bad_overlay) as im:
            assert im.height <= 256 + 14 * 21 + 4, im.size
        page = (tmp_path / "out" / "check_dataset" / "report.html").read_text()
        assert "more ids with fewer pixels" in page  # the class table is bounded too
        assert page.count("class=swatch") <= 256 + 20, page.count("class=swatch")
    hist = tmp_path / "out" / "check_dataset" / "histogram.png"
    with Image.open(hist) as im:
        assert im.width < 4000, im.size  # bounded bars, whatever the id count
    print(f"{bad}: peak {peak_kb / 1024:.0f} MiB")
    assert peak_kb < PEAK_LIMIT_KB, f"peak RSS {peak_kb / 1024:.0f} MiB"
    assert len((tmp_path / "out" / "check_dataset_result.json").read_bytes()) < 5_000_000


def test_huge_values_are_described(tmp_path):
    """The problem names the file and the offending range; the good classes are still counted."""
    root = _dataset(tmp_path / "d", "int32_huge")
    r, _ = _check(root, tmp_path / "out")
    rep = json.loads((tmp_path / "out" / "check_dataset_result.json").read_text())
    p = next(p for p in rep["problems"] if p["code"] == "label_values")
    assert "bad.tiff" in p["message"] and "2,147,483,647" in p["message"]
    assert "8-bit PNG" in p["fix"]
    assert rep["attributes"]["class_ids"] == [0, 1, 2]
    assert sum(rep["analysis"]["classes"]["train"]["pixels"].values()) == 3 * 32 * 32


def test_max_pixels_setting(tmp_path):
    """CheckDataset.max_pixels is the cap: 32x32 images fail under a 1000-pixel cap."""
    root = _dataset(tmp_path / "d", "float_ids")
    r, _ = _check(root, tmp_path / "out", "-o", "CheckDataset.max_pixels=1000")
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    rep = json.loads((tmp_path / "out" / "check_dataset_result.json").read_text())
    codes = {p["code"] for p in rep["problems"]}
    assert {"image_too_large", "label_too_large"} <= codes
    assert "CheckDataset.max_pixels" in next(p["fix"] for p in rep["problems"]
                                             if p["code"] == "image_too_large")
    assert rep["attributes"]["train_sample_paths"] == []


def test_images_without_lists_report_missing_list(tmp_path):
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "images" / "a.png")
    r, peak_kb = _check(root, tmp_path / "out")
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    rep = json.loads((tmp_path / "out" / "check_dataset_result.json").read_text())
    assert "missing_list" in {p["code"] for p in rep["problems"]}
    assert (tmp_path / "out" / "check_dataset" / "histogram.png").is_file()
    assert peak_kb < PEAK_LIMIT_KB


def test_readers_refuse_header_bombs(tmp_path):
    """Training's and evaluation's readers refuse a header that declares more than Pillow's
    limit before decoding, as a one-line DatasetError naming the file."""
    from segx.utils.errors import DatasetError
    from segx.imaging.images import read_image, read_label
    path = tmp_path / "bomb.png"
    _png_header_only(path, 60000, 60000)  # 3.6 G pixels
    for read in (read_image, read_label):
        with pytest.raises(DatasetError, match="declares"):
            read(path)


def test_fix_labels_is_not_attempted_with_unreadable_labels(tmp_path):
    """0/255 masks want a fix, but one label is a header bomb: the report is written and says
    why nothing was fixed, instead of a crash half-way through writing the fixed folder."""
    root = _dataset(tmp_path / "d", "huge_label")
    for k in range(5):
        mask = np.zeros((32, 32), np.uint8)
        mask[:, 16:] = 255
        Image.fromarray(mask).save(root / "annotations" / f"{k}.png")
    r, _ = _check(root, tmp_path / "out", "-o", "CheckDataset.fix_labels=True")
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    rep = json.loads((tmp_path / "out" / "check_dataset_result.json").read_text())
    assert {"label_too_large", "binary_0_255"} <= {p["code"] for p in rep["problems"]}
    assert rep["fix"]["written"] is False and not (tmp_path / "out" / "fixed_dataset").exists()
