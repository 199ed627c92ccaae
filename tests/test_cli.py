"""The command line, through a subprocess: exit codes, one-line errors, listing."""
from __future__ import annotations

import json
import subprocess
import sys

from helpers import ROOT, run_cli
from segx.zoo.registry import list_models


def test_typo_key_exits_2_with_suggestion():
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mod=train")
    assert r.returncode == 2
    assert "Global.mode" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_print_config_shows_override():
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.output=dir", "--print-config")
    assert r.returncode == 0 and "  output: dir\n" in r.stdout


def test_config_by_path_equals_by_name():
    a = run_cli("-c", "segx/configs/PP-LiteSeg-T.yaml", "--print-config")
    b = run_cli("-c", "PP-LiteSeg-T", "--print-config")
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout


def test_bad_mode_lists_modes():
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=fit")
    assert r.returncode == 2
    assert "check_dataset, train, evaluate, export, predict" in r.stderr


def test_unknown_model():
    r = run_cli("-c", "Deeplabv3-R5O")
    assert r.returncode == 2 and "Did you mean Deeplabv3-R50" in r.stderr


def test_no_config():
    r = run_cli()
    assert r.returncode == 2 and "-c MODEL_NAME" in r.stderr


def test_debug_shows_traceback():
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.debug=True", "-o", "Train.batch_size=x")
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_list_models_lists_every_model():
    r = run_cli("--list-models")
    assert r.returncode == 0
    listed = {line.split()[0] for line in r.stdout.splitlines()[1:] if line.strip()}
    assert set(list_models()) <= listed
    assert "73.10" in r.stdout and "published" in r.stdout
    tail = r.stdout.split("Not exportable to a static graph")[1]
    assert "GSCNN-R50: its forward pass runs OpenCV" in tail
    assert "PP-LiteSeg-T" not in tail and "ISANet-R50" not in tail  # segx's ISANet exports


def test_models_subcommand_and_module_entry():
    r = subprocess.run([sys.executable, "-m", "segx", "models", "SeaFormer*"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0
    assert [l.split()[0] for l in r.stdout.splitlines()[1:5]] == [
        "SeaFormer_base", "SeaFormer_large", "SeaFormer_small", "SeaFormer_tiny"]
    r = run_cli("--list-models", "zzz")
    assert r.returncode == 2


def test_failure_writes_reference_result_json(tmp_path):
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=check_dataset",
                "-o", f"Global.output={tmp_path}", "-o", f"Global.dataset_dir={tmp_path}/none")
    assert r.returncode == 2
    result = json.loads((tmp_path / "check_dataset_result.json").read_text())
    assert result["done_flag"] is False and result["err_type"] and result["err_msg"]


def test_internal_error_exits_1(monkeypatch, capsys):
    from segx.apps import cli

    from segx.modules import table as engine

    def boom(cfg):
        raise RuntimeError("bug")

    monkeypatch.setattr(engine, "run", boom)
    assert cli.main(["-c", "PP-LiteSeg-T"]) == 1
    assert "internal error" in capsys.readouterr().err


def test_debug_set_in_yaml_shows_traceback(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text(f"_base_: {ROOT / 'segx/configs/PP-LiteSeg-T.yaml'}\nGlobal:\n  debug: true\n")
    r = run_cli("-c", str(mine), "-o", f"Global.dataset_dir={tmp_path}/none",
                "-o", f"Global.output={tmp_path}/out")
    assert r.returncode == 2 and "Traceback" in r.stderr and "does not exist" in r.stderr


def test_train_rank_is_a_command_of_the_cli(tmp_path, capsys):
    """The process paddle's launcher starts is `segx train-rank CONFIG` (the library reads no
    argv): a wrong call is one line with the usage, a missing config one line naming it."""
    from segx.apps.cli import main
    assert main(["train-rank"]) == 2
    assert "train-rank takes one argument" in capsys.readouterr().err
    assert main(["train-rank", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml" in err and "Traceback" not in err and len(err.splitlines()) == 1
