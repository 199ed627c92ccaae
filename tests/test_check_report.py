"""check_dataset's report.html, looked at in headless Chromium: it renders without errors,
shows the counts, names and problems, loads every image, escapes names, needs no script and
nothing remote, and its gallery filters work with CSS alone."""
from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from browser import render
from conftest import run_cli
from segx.utils.html_page import esc
from test_leakage import NAMES, make_leaky_dataset

TAG = NAMES[1]  # a class called <script>alert(1)</script>


@pytest.fixture(scope="module")
def checked(tmp_path_factory) -> tuple[Path, Path, str]:
    """The leaky dataset with one more hostile file name, checked by the CLI with 6 sampled
    overlays; returns (data, output, CLI output)."""
    work = tmp_path_factory.mktemp("report")
    root, _ = make_leaky_dataset(work / "data")
    odd = "odd <b>&'name\".jpg"
    shutil.copy(root / "images" / "d05.jpg", root / "images" / odd)
    shutil.copy(root / "annotations" / "d05.png", root / "annotations" / "odd.png")
    with open(root / "train.txt", "a") as f:
        f.write(f"images/{odd}\tannotations/odd.png\n")
    out = work / "out"
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=check_dataset",
                "-o", f"Global.dataset_dir={root}", "-o", f"Global.output={out}",
                "-o", "CheckDataset.report_images=6", "-o", "CheckDataset.num_workers=2")
    return root, out, r.stdout + r.stderr


def test_the_cli_links_the_page(checked):
    _, out, text = checked
    page = out / "check_dataset" / "report.html"
    assert page.is_file()
    assert str(page) in text.strip().splitlines()[-1]  # the failing check's last line


def test_the_page_renders_with_counts_names_and_problems(checked, tmp_path):
    root, out, _ = checked
    shown = render(out / "check_dataset" / "report.html", tmp_path)
    assert shown.console_errors == [] and shown.broken_images == []
    assert shown.remote_requests == [] and shown.scripts == []
    assert shown.screenshot.stat().st_size > 10_000
    text = shown.text
    train = len([x for x in (root / "train.txt").read_text().splitlines() if x])
    assert f"train {train}, val 14, test 1" in text
    assert "FAILED" in text and "duplicate_across_splits" in text
    for name in NAMES:
        assert name in text  # as text, escaped in the source
    assert "odd <b>&'name\".jpg" in text
    assert "<script>alert" not in shown.dom and "<b>&" not in shown.dom
    # every problem of the JSON is a row; every image on the page is one of its files
    rows = re.findall(r"<tr><td><span class=(?:bad|warn|dim)>", page_source(shown.page))
    report = json.loads((out / "check_dataset_result.json").read_text())
    assert len(rows) == len(report["problems"])
    srcs = set(shown.images)
    assert all((shown.page.parent / s).resolve().is_file() for s in srcs)


def test_thumbnails_are_small_and_the_gallery_bounded(checked):
    _, out, _ = checked
    thumbs = sorted((out / "check_dataset" / "report_img").glob("*.jpg"))
    for t in thumbs:
        with Image.open(t) as im:
            assert max(im.width, im.height - 80) <= 320  # the legend rows add height
    gallery = [t for t in thumbs if t.name.startswith("g")]
    # 6 sampled + images with listed problems (6 pairs) + up to 2 per class not shown yet
    assert 6 < len(gallery) <= 6 + 12 + 2 * len(NAMES)


def test_the_gallery_filters_without_script(checked, tmp_path):
    """Checking the radio button of the '<script>' class (as a click would) hides every figure
    whose overlay does not contain that class."""
    _, out, _ = checked
    page = out / "check_dataset" / "report.html"
    source = page.read_text()
    assert 'id="gf-c1" class=flt>' in source
    filtered = page.with_name("filtered.html")
    filtered.write_text(source.replace(" checked>", ">", 1).replace(
        'id="gf-c1" class=flt>', 'id="gf-c1" class=flt checked>'))
    shown = render(filtered, tmp_path)
    gallery = source[source.index('<div class=gallery>'):]
    figures = re.findall(r'<figure class="g ([^"]*)">', gallery)
    names = re.findall(r"<figcaption><b>\w+</b> ([^<]*) <span", gallery)
    assert len(figures) == len(names)
    with_tag = [n for marks, n in zip(figures[:len(names)], names) if "c1" in marks.split()]
    without = [n for marks, n in zip(figures[:len(names)], names) if "c1" not in marks.split()]
    assert with_tag and without
    visible = shown.text[shown.text.index("Gallery ("):]
    assert all(_plain(n) in visible for n in with_tag)
    assert not any(_plain(n) in visible for n in without)
    assert f"{TAG} (" in visible


def _plain(escaped: str) -> str:
    return " " + html.unescape(escaped) + " ("


def page_source(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_esc_keeps_a_script_tag_as_text():
    assert esc(TAG) == "&lt;script&gt;alert(1)&lt;/script&gt;"
