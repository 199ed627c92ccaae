"""segx.runs.folder.RunFolder: the one place that names a run folder's files. Its names are checked
against folders written by real runs (today's training, and the v1 fixture written by an earlier
segx), not against themselves."""
from __future__ import annotations

import json
from pathlib import Path

from helpers import ROOT
from segx.modules.table import MODES
from segx.runs.folder import CHECKPOINT_FILES, RunFolder, default_weights, run_config_path

FIXTURE = ROOT / "tests" / "fixtures" / "run_v1"


def recorded(run: Path) -> list[str]:
    """Every file name the run's train_result.json records (the reference keys)."""
    result = json.loads((run / "train_result.json").read_text(encoding="utf-8"))
    names = [result["train_log"], result["config"]]
    for entry in result["models"].values():
        names += [v for k, v in entry.items() if k not in ("iter", "score")]
    return names + ([result["training_curves"]] if result.get("training_curves") else [])


def test_the_v1_fixture_run_folder_resolves():
    run = RunFolder(FIXTURE)
    for path in (run.config, run.best_weights, run.best_states, run.train_log, run.train_result,
                 run.best_inference / "inference.yml"):
        assert path.is_file(), path
    assert run.train_result == run.result("train") == FIXTURE / "train_result.json"
    assert run_config_path(run.best_weights) == FIXTURE / "config.yaml"
    from segx.config import Config
    cfg = Config({"Global": {"output": str(FIXTURE)}, "Evaluate": {"weight_path": None}}, "test")
    assert default_weights(cfg, "Evaluate.weight_path") == FIXTURE / "best_model/model.pdparams"
    from segx.api.model import locate
    assert locate(FIXTURE) == (FIXTURE / "best_model" / "inference", None)
    # what the run recorded is what RunFolder names (iter_4/ was left out of the fixture)
    best = json.loads(run.train_result.read_text(encoding="utf-8"))["models"]["best"]
    assert best["pdparams"] == run.relative(run.best_weights)
    assert best["inference_config"] == run.relative(run.best_inference / "inference.yml")
    assert run.relative(run.checkpoint(4) / CHECKPOINT_FILES[1]) == "iter_4/model.pdopt"


def test_the_names_match_the_files_a_real_run_writes(run_dir):
    run = RunFolder(run_dir)
    for path in (run.config, run.best_weights, run.best_states, run.train_log, run.train_result,
                 run.train_report, run.training_curves, run.best_inference / "inference.yml"):
        assert path.is_file(), path
    checkpoints = run.checkpoints(complete=True)
    assert checkpoints and all(p == run.checkpoint(n) for n, p in checkpoints)
    for _, path in checkpoints:
        assert sorted(f.name for f in path.iterdir()) == sorted(CHECKPOINT_FILES)
    for name in recorded(run_dir):
        assert (run_dir / name).is_file(), name
    named = {run.config, run.best_model, run.train_log, run.train_result, run.train_report,
             run.training_curves, *(p for _, p in checkpoints),
             *(run.result(mode) for mode in MODES)}  # other tests evaluate and predict here
    visualdl = json.loads(run.train_result.read_text(encoding="utf-8"))["visualdl_log"]
    unnamed = [p.name for p in run_dir.iterdir() if p not in named and p.name != visualdl]
    assert unnamed == [], f"files of a run that RunFolder does not name: {unnamed}"


def test_results_and_exports_are_named_like_the_reference():
    run = RunFolder("/r")
    assert run.result("evaluate") == Path("/r/evaluate_result.json")
    assert run.failed_result("export") == Path("/r/export_result.failed.json")
    assert RunFolder.export_dir(Path("/r/iter_8/model.pdparams")) == Path("/r/iter_8/inference")
    assert run.relative(run.evaluate_report) == "evaluate/report.html"
    assert run.relative(run.evaluate_confusion) == "evaluate/confusion_matrix.png"
    assert run.distributed_logs == Path("/r/distributed_train_logs")
