"""Run folders written by earlier segx versions keep working, and the schema cannot change
without a version bump."""
from __future__ import annotations

import zlib  # noqa: F401

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import ROOT, run_cli
from segx.config import load_config, model_schema, upgrade
from segx.utils.errors import ConfigError

FIXTURE = ROOT / "tests" / "fixtures" / "run_v1"
FIXTURE_V2 = ROOT / "tests" / "fixtures" / "run_v2"  # written by segx 0.2.0 (config v3)
KEYS = ROOT / "tests" / "fixtures" / "schema_keys.txt"


@pytest.fixture(scope="module")
def old_run(tmp_path_factory) -> tuple[Path, Path]:
    """The landed-format run folder, next to the demo dataset it was trained on."""
    from segx.apps.demo import make_demo_dataset
    work = tmp_path_factory.mktemp("compat")
    data = make_demo_dataset(work / "data", n=12, size=(64, 64))
    run = work / "run"
    shutil.copytree(FIXTURE, run)
    return run, data


def test_an_unversioned_run_config_loads_upgraded():
    cfg = load_config(FIXTURE / "config.yaml")
    assert cfg.get("Train.pretrained") == "none"  # pretrain_weight_path: null
    assert cfg.get("Predict.engine") == "auto" and cfg.get("Predict.onednn") is None
    assert cfg.get("Meta.weights") is None and cfg.get("Train.num_classes") == 3
    assert f"_version_: {model_schema().version}" in cfg.to_yaml().splitlines()[0]


def test_a_run_from_before_no_static_export_loads(tmp_path):
    text = (FIXTURE / "config.yaml").read_text().replace("  no_static_export: null\n", "")
    (tmp_path / "config.yaml").write_text(text)
    assert load_config(tmp_path / "config.yaml").get("Meta.no_static_export") is None


def test_engine_choices_map_from_run_mode():
    for old, engine, onednn in (("auto", "auto", None), ("paddle", "paddle", False),
                                ("mkldnn", "paddle", True)):
        data = {"Predict": {"run_mode": old}}
        upgrade(data, 1, "test")
        assert (data["Predict"]["engine"], data["Predict"]["onednn"]) == (engine, onednn)


def test_a_config_from_a_newer_segx_is_refused(tmp_path):
    (tmp_path / "c.yaml").write_text("_version_: 99\n" + (FIXTURE / "config.yaml").read_text())
    with pytest.raises(ConfigError, match="newer segx"):
        load_config(tmp_path / "c.yaml")


def test_the_schema_changes_only_with_its_version():
    keys = "\n".join(s.path for s in model_schema()) + "\n"
    recorded = KEYS.read_text()
    version = int(recorded.splitlines()[0].split()[-1])
    assert version == model_schema().version and keys == "".join(
        recorded.splitlines(keepends=True)[1:]), (
        "the schema's keys changed: bump _version_ in schema.yaml, add an upgrade step to "
        "segx.config.UPGRADES, and record the keys in tests/fixtures/schema_keys.txt")


def test_misspelt_paths_raise_with_a_suggestion():
    cfg = load_config(FIXTURE / "config.yaml")
    with pytest.raises(ConfigError, match="no config key 'Train.bach_size'.*Train.batch_size"):
        cfg.get("Train.bach_size")
    assert cfg.get("Arch.no_such_arg", None) is None  # an explicit default is allowed


def test_the_old_run_evaluates_exports_and_predicts(old_run, tmp_path):
    run, data = old_run
    r = run_cli("-c", str(run / "config.yaml"), "-o", "Global.mode=evaluate",
                "-o", f"Global.dataset_dir={data}", "-o", f"Global.output={run}")
    assert r.returncode == 0, r.stderr
    result = json.loads((run / "evaluate_result.json").read_text())
    assert result["metrics"]["mIoU"] == pytest.approx(0.2653537326388889)  # as it trained
    shutil.copytree(run / "best_model" / "inference", tmp_path / "old_export")
    r = run_cli("-c", str(run / "config.yaml"), "-o", "Global.mode=export",
                "-o", f"Global.output={run}")
    assert r.returncode == 0, r.stderr
    from segx import create_model
    image = str(data / "images" / "000.jpg")
    with create_model(tmp_path / "old_export", device="cpu") as old, \
            create_model(run, device="cpu") as new, \
            create_model(run / "best_model" / "model.pdparams", device="cpu") as dynamic:
        preds = [next(m.predict(image)).pred for m in (old, new, dynamic)]
        assert old.class_names == ["background", "disc", "box"]
    assert np.array_equal(preds[0], preds[1]) and np.array_equal(preds[0], preds[2])


@pytest.fixture(scope="module")
def run_v2(tmp_path_factory) -> tuple[Path, Path]:
    """The version-3 run folder (PP-LiteSeg-T, segx's own network), next to its dataset."""
    from helpers import make_data
    work = tmp_path_factory.mktemp("compat_v2")
    data = make_data(work / "data")
    run = work / "run"
    shutil.copytree(FIXTURE_V2, run)
    return run, data


def test_the_v2_run_evaluates_exports_and_predicts(run_v2):
    """Its evaluation reproduces the mIoU it trained to, its export agrees with its weights,
    and both predict the label map they predicted when the run was written."""
    run, data = run_v2
    trained = json.loads((FIXTURE_V2 / "train_result.json").read_text())["best_mIoU"]
    r = run_cli("-c", str(run / "config.yaml"), "-o", "Global.mode=evaluate",
                "-o", f"Global.dataset_dir={data}", "-o", f"Global.output={run}")
    assert r.returncode == 0, r.stderr
    result = json.loads((run / "evaluate_result.json").read_text())
    assert result["metrics"]["mIoU"] == pytest.approx(trained)
    r = run_cli("-c", str(run / "config.yaml"), "-o", "Global.mode=export",
                "-o", f"Global.output={run}")
    assert r.returncode == 0, r.stderr
    assert any((run / "best_model" / "inference" / f"inference.{ext}").is_file()
               for ext in ("pdmodel", "json"))  # Paddle 2.6 / Paddle 3
    from segx import create_model
    image = str(data / "images" / "000.jpg")
    with create_model(run, device="cpu") as exported, \
            create_model(run / "best_model" / "model.pdparams", device="cpu") as dynamic:
        preds = [next(m.predict(image)).pred for m in (exported, dynamic)]
        assert exported.class_names == dynamic.class_names == ["background", "disc", "box"]
    assert np.array_equal(preds[0], preds[1])
    # pixels per class of 000.jpg when the run was written (segx 0.2.0)
    assert np.bincount(preds[0].ravel(), minlength=3).tolist() == [235, 468, 3393]


def test_models_and_pipelines_upgrade_run_mode_with_one_step():
    """run_mode -> engine + onednn is one function for both tables: a pipeline written before
    versions (Pipeline.run_mode) maps exactly as a model config's Predict.run_mode does."""
    from segx.config import UPGRADES as MODEL_UPGRADES
    from segx.pipelines import UPGRADES as PIPELINE_UPGRADES
    for old in ("auto", "paddle", "mkldnn", "gpu"):
        model = {"Predict": {"run_mode": old}}
        pipeline = {"Pipeline": {"run_mode": old}}
        MODEL_UPGRADES[1](model)
        PIPELINE_UPGRADES[1](pipeline)
        assert "run_mode" not in pipeline["Pipeline"]
        assert {k: model["Predict"].get(k, "unset") for k in ("engine", "onednn")} == \
            {k: pipeline["Pipeline"].get(k, "unset") for k in ("engine", "onednn")}, old
    empty = {"Predict": None}  # an empty section in an old YAML is no crash of the step
    from segx.config import upgrade_run_mode
    upgrade_run_mode(empty["Predict"])
    assert empty == {"Predict": None}
