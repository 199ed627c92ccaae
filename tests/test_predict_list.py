"""Predict.input=<list file>.txt: the images of a dataset list, read from the list's folder."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import ROOT, run_cli
from segx.inference.inputs import InputError, expand


def test_list_file_gives_its_images_in_order(data, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(data, ds)
    (ds / "my images").mkdir()
    shutil.copy(ds / "images" / "001.jpg", ds / "my images" / "a b.jpg")
    outside = tmp_path / "elsewhere.jpg"
    shutil.copy(ds / "images" / "002.jpg", outside)
    (ds / "pick.txt").write_text(
        "\ufeffimages/003.jpg annotations/003.png\n\n"
        "images/000.jpg\n"
        "my images/a b.jpg\tannotations/001.png\n"
        f"{outside}\n")
    got = expand(str(ds / "pick.txt"))
    assert [name for name, _ in got] == [str(ds / "images" / "003.jpg"),
                                         str(ds / "images" / "000.jpg"),
                                         str(ds / "my images" / "a b.jpg"), str(outside)]
    assert all(p.is_file() for _, p in got)


@pytest.mark.parametrize("line, message", [
    ("../elsewhere.jpg", "leaves the list's folder"),
    ("images/../../elsewhere.jpg", "leaves the list's folder"),
    ("images/nope.jpg annotations/000.png", "does not exist"),
    ("train.txt", "is not an image file"),
])
def test_bad_line_is_refused_with_file_and_line(data, tmp_path, line, message):
    ds = tmp_path / "ds"
    shutil.copytree(data, ds)
    shutil.copy(ds / "images" / "002.jpg", tmp_path / "elsewhere.jpg")
    (ds / "bad.txt").write_text(f"images/000.jpg\n{line}\n")
    with pytest.raises(InputError, match=message) as err:
        expand(ds / "bad.txt")
    assert "bad.txt:2" in str(err.value)


def test_empty_list_is_refused(tmp_path):
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(InputError, match="names no images"):
        expand(tmp_path / "empty.txt")


def test_predict_mode_on_val_txt(run_dir, data, tmp_path):
    out = tmp_path / "pred"
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=predict", "-o", f"Global.output={out}",
                "-o", f"Predict.model_dir={run_dir / 'best_model' / 'inference'}",
                "-o", f"Predict.input={data / 'val.txt'}")
    assert r.returncode == 0, r.stderr
    want = [str(data / line.split()[0]) for line in (data / "val.txt").read_text().splitlines()
            if line.strip()]
    res = json.loads((out / "predict_result.json").read_text())
    assert [x["input_path"] for x in res["results"]] == want


# --------------------------------------------------------------------------- one expansion
V1_EXPORT = ROOT / "tests" / "fixtures" / "run_v1" / "best_model" / "inference"


@pytest.fixture
def walks(monkeypatch):
    """The folders walked for images (``Path.rglob``), in order."""
    seen, real = [], Path.rglob

    def rglob(self, pattern, *args, **kwargs):
        seen.append(self)
        return real(self, pattern, *args, **kwargs)

    monkeypatch.setattr(Path, "rglob", rglob)
    return seen


def test_expanded_inputs_expand_to_themselves(data):
    once = expand([str(data / "images"), str(data / "images" / "000.jpg")])
    assert expand(once) is once and len(once) == 13


def test_predict_mode_walks_its_input_folder_once(data, tmp_path, walks):
    from segx.modules.table import run_mode
    out = tmp_path / "pred"
    result = run_mode("PP-LiteSeg-T", "predict", [
        f"Global.output={out}", f"Predict.model_dir={V1_EXPORT}", "Global.device=cpu",
        f"Predict.input={data / 'images'}"])
    assert len(result["results"]) == 12
    assert walks.count(data / "images") == 1


def test_pipeline_cli_walks_its_input_folder_once(data, tmp_path, walks, capsys):
    from segx.apps.cli import main
    out = tmp_path / "saved"
    assert main(["--pipeline", "semantic_segmentation", "--model", str(V1_EXPORT), "--input",
                 str(data / "images"), "--save_path", str(out), "--device", "cpu"]) == 0
    assert len(list(out.glob("*.json"))) == 12
    assert walks.count(data / "images") == 1
