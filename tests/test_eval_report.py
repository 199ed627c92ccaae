"""evaluate's report.html: the metrics and classes of evaluate_result.json, a heat map, the worst
images with maps whose IoU the page states correctly, escaping, nothing remote; and the split
chosen by Evaluate.split."""
from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import run_cli

EVIL = "<script>alert(1)</script>"


class Page(HTMLParser):
    """What a browser would fetch and show: every src/href, the text, the tags."""

    def __init__(self, text: str):
        super().__init__()
        self.refs, self.text, self.tags = [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]

    def handle_data(self, data):
        self.text.append(data)


def _evaluate(run_dir: Path, data: Path, out: Path, *extra: str):
    return run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=evaluate", "-o",
                   f"Global.dataset_dir={data}", "-o", f"Global.output={out}", *extra)


@pytest.fixture(scope="module")
def report(run_dir, data, tmp_path_factory):
    """An evaluation of the trained run whose class 1 is called '<script>...'."""
    out = tmp_path_factory.mktemp("evalreport") / "run"
    shutil.copytree(run_dir, out)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    cfg["Train"]["class_names"] = ["background", EVIL, "box & co"]
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = _evaluate(run_dir, data, out, "-o", "Evaluate.report_worst=2")
    assert r.returncode == 0, r.stderr + r.stdout
    return out, r


def test_page_shows_the_metrics_and_classes_of_the_result(report):
    out, r = report
    page = out / "evaluate" / "report.html"
    assert f"report: {page}" in r.stdout.strip().splitlines()[-1]  # the CLI's last line
    result = json.loads((out / "evaluate_result.json").read_text())
    assert result["report"] == "evaluate/report.html"
    text = page.read_text()
    parsed = Page(text)
    shown = " ".join(parsed.text)
    assert f"{result['metrics']['mIoU']:.4f}" in shown
    for row in result["per_class"]:
        assert row["name"] in shown and f"{row['IoU']:.4f}" in shown
    assert EVIL not in text and "&lt;script&gt;" in text  # the class name stays text
    assert "script" not in parsed.tags
    # the heat map: one row per class, row-normalised percentages of the JSON matrix
    m = np.array(result["confusion_matrix"], float)
    heat = text[text.index("<table class=heat>"):]
    heat = heat[:heat.index("</table>")]
    cells = re.findall(r"<td[^>]*>(\d*)</td>", heat)
    assert len(cells) == m.size
    expect = [f"{v * 100:.0f}" if c else "" for v, c in
              zip((m / np.maximum(m.sum(1, keepdims=True), 1)).ravel(), m.ravel())]
    assert cells == expect
    assert "paddle dynamic graph" in shown and "fp32" in shown  # what was evaluated


def test_no_remote_references_and_every_image_exists(report):
    out, _ = report
    page = out / "evaluate" / "report.html"
    refs = Page(page.read_text()).refs
    assert refs and not [u for u in refs if re.match(r"^[a-z]+:|^//", u)]
    for u in refs:
        assert (page.parent / u).resolve().is_file(), u


def test_worst_images_are_the_lowest_and_their_iou_is_right(report, data):
    """The gallery's first image has the lowest per-image mIoU of all val images, recomputed
    here from its saved label and prediction; the thumbnails are JPEG/PNG of <= 320 px."""
    out, _ = report
    result = json.loads((out / "evaluate_result.json").read_text())
    worst = result["worst_images"]
    assert len(worst) == 2 and worst[0]["mIoU"] <= worst[1]["mIoU"]
    folder = out / "evaluate" / "worst"
    label = np.asarray(Image.open(folder / "001_label.png"))
    pred = np.asarray(Image.open(folder / "001_pred.png"))
    assert Image.open(folder / "001_pred.png").mode == "P"  # the segx palette
    ious = []
    for c in range(3):
        lab, prd = (label == c) & (label != 255), (pred == c) & (label != 255)
        union = (lab | prd).sum()
        if union:
            ious.append((lab & prd).sum() / union)
    assert np.mean(ious) == pytest.approx(worst[0]["mIoU"], abs=1e-9)
    text = (out / "evaluate" / "report.html").read_text()
    assert f"mIoU {worst[0]['mIoU']:.4f}" in text
    with Image.open(folder / "001_image.jpg") as im:
        assert im.format == "JPEG" and im.width <= 320
    errors = np.asarray(Image.open(folder / "001_errors.png").convert("RGB"))
    wrong = (pred != label) & (label != 255)
    assert (errors[wrong] == (230, 30, 30)).all()
    assert not (errors[~wrong] == (230, 30, 30)).all(axis=-1).any()


def test_evaluate_split_test_and_bad_split(run_dir, data, tmp_path):
    """Evaluate.split=test measures test.txt (its images, not val's); a missing split says
    which file and how to fix it."""
    ds = tmp_path / "ds"
    shutil.copytree(data, ds)
    lines = (ds / "train.txt").read_text().split("\n")[:3]
    (ds / "test.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    shutil.copytree(run_dir, out)
    r = _evaluate(run_dir, ds, out, "-o", "Evaluate.split=test")
    assert r.returncode == 0, r.stderr
    result = json.loads((out / "evaluate_result.json").read_text())
    assert result["split"] == "test" and result["num_images"] == 3
    (ds / "test.txt").unlink()
    r = _evaluate(run_dir, ds, out, "-o", "Evaluate.split=test")
    assert r.returncode == 2 and "test.txt does not exist" in r.stderr


def test_report_worst_is_bounded(run_dir, data, tmp_path):
    r = _evaluate(run_dir, data, tmp_path / "o", "-o", "Evaluate.report_worst=100000")
    assert r.returncode == 2 and "Evaluate.report_worst" in r.stderr


def test_page_in_a_browser(report, tmp_path_factory):
    """Chromium shows the page without errors, every image loads (all thumbnails of the two
    worst images), the class name '<script>...' is visible text; a screenshot is kept."""
    from browser import render
    out, _ = report
    result = json.loads((out / "evaluate_result.json").read_text())
    seen = render(out / "evaluate" / "report.html", tmp_path_factory.mktemp("screens"))
    assert seen.console_errors == [] and seen.broken_images == []
    assert seen.remote_requests == [] and seen.scripts == []
    assert len([s for s in seen.images if "worst/" in s]) == 4 * len(result["worst_images"])
    assert EVIL in seen.text and "box & co" in seen.text
    assert f"mIoU {result['metrics']['mIoU']:.4f}" in seen.text
    assert seen.screenshot.stat().st_size > 10_000


def test_exported_model_page_names_engine_and_precision(run_dir, data, tmp_path):
    """The same page for what you ship: an exported folder on OpenVINO fp32."""
    out = tmp_path / "ov"
    r = _evaluate(run_dir, data, out, "-o",
                  f"Evaluate.weight_path={run_dir / 'best_model' / 'inference'}",
                  "-o", "Evaluate.engine=openvino", "-o", "Evaluate.precision=fp32")
    assert r.returncode == 0, r.stderr
    result = json.loads((out / "evaluate_result.json").read_text())
    assert (result["engine"], result["precision"]) == ("openvino", "fp32")
    text = (out / "evaluate" / "report.html").read_text()
    shown = " ".join(Page(text).text)
    assert "openvino" in shown and "fp32" in shown and "PP-LiteSeg-T" in shown
    assert text.count("<div class=worst") == min(12, result["num_images"])
    assert f"{result['metrics']['mIoU']:.4f}" in shown


def test_worst_images_keeps_only_the_n_lowest_as_thumbnails():
    """Fed 50 images, the heap holds the 3 lowest per-image mIoU (ties: the earlier image),
    with their maps shrunk into 320 x 320."""
    from segx.inference.eval_report import WorstImages
    from segx.imaging.metrics import Confusion
    rng = np.random.default_rng(0)
    worst, scores = WorstImages(3), {}
    for k in range(50):
        label = rng.integers(0, 3, (640, 1000)).astype(np.int32)
        pred = np.where(rng.random(label.shape) < (k % 17) / 17, label, (label + 1) % 3)
        one = Confusion(3).update(pred, label)
        worst(k, pred, label, one)
        inter, union = np.diag(one), one.sum(0) + one.sum(1) - np.diag(one)
        scores[k] = float(np.mean(inter[union > 0] / union[union > 0]))
    expect = sorted(scores, key=lambda k: (scores[k], k))[:3]
    assert [w.index for w in worst.ranked()] == expect == [0, 17, 34]
    assert all(w.label.shape == w.pred.shape == (205, 320) for w in worst.ranked())


def test_heat_map_names_both_axes_and_stays_small():
    from segx.inference.eval_report import heat_map
    names = [f"class{k}" for k in range(19)]
    m = np.diag(np.arange(1, 20)) + 1
    text = heat_map(m, names)
    for n in names:
        assert text.count(f"{n}<") == 2  # column head and row head
    big = heat_map(np.diag(np.arange(150) + 1), [f"c{k}" for k in range(150)])
    assert len(big) < 400_000  # 22,500 cells, mostly empty


def test_paddle_engine_names_are_not_read_as_precisions(run_dir, data, tmp_path):
    """Paddle Inference's name says how it runs (``paddle-onednn``), not a precision: fp32."""
    out = tmp_path / "pd"
    r = _evaluate(run_dir, data, out, "-o",
                  f"Evaluate.weight_path={run_dir / 'best_model' / 'inference'}",
                  "-o", "Evaluate.engine=paddle")
    assert r.returncode == 0, r.stderr
    result = json.loads((out / "evaluate_result.json").read_text())
    assert result["precision"] == "fp32" and result["engine"].startswith("paddle-")
