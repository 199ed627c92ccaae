"""train / evaluate / export on a tiny generated dataset (CPU, a few iterations each)."""
from __future__ import annotations

import zlib  # noqa: F401

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, base_args, run_cli
from segx.apps.demo import make_demo_dataset
from segx.imaging.metrics import Confusion
from segx.zoo.registry import load_model_config as load_config
from segx.runs.paddlex import paddle_major

PROGRAM = "pdmodel" if paddle_major() == 2 else "json"  # what this Paddle's export writes

def load_params(path: Path) -> dict:
    import paddle
    return {k: v.numpy() for k, v in paddle.load(str(path)).items()}


def same_params(a: Path, b: Path) -> bool:
    pa, pb = load_params(a), load_params(b)
    return pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)


def test_train_output_layout_and_result(run_dir):
    for rel in ("config.yaml", "train.log", "train_result.json", "training_curves.png",
                "best_model/model.pdparams", "best_model/model.pdstates",
                f"best_model/inference/inference.{PROGRAM}",
                "best_model/inference/inference.pdiparams",
                "best_model/inference/inference.yml"):
        assert (run_dir / rel).is_file(), rel
    for it in (4, 8):
        for f in ("model.pdparams", "model.pdopt", "model.pdstates"):
            assert (run_dir / f"iter_{it}" / f).is_file()
    res = json.loads((run_dir / "train_result.json").read_text())
    assert res["done_flag"] is True and res["num_classes"] == 3
    assert res["class_names"] == ["background", "disc", "box"]
    assert res["models"]["last_1"]["pdparams"] == "iter_8/model.pdparams"
    assert res["models"]["last_2"]["pdparams"] == "iter_4/model.pdparams"
    best = res["models"]["best"]
    assert best["score"] == max(m["score"] for k, m in res["models"].items() if k != "best")
    for key in ("pdparams", "pdstates", "inference_config", "pdmodel", "pdiparams"):
        assert (run_dir / best[key]).is_file()
    if importlib.util.find_spec("visualdl"):  # optional: paddleseg used to bring it along
        assert list(run_dir.glob("vdlrecords.*")) and res["visualdl_log"].startswith("vdlrecords")
    else:
        assert not list(run_dir.glob("vdlrecords.*")) and res["visualdl_log"] == ""
    log = (run_dir / "train.log").read_text()
    assert "[TRAIN] iter 8/8 loss" in log and "img/s" in log and "ETA" in log
    assert log.count("[EVAL] iter") == 2
    from segx.zoo.registry import load_model_config as load_config
    cfg = load_config(str(run_dir / "config.yaml"))
    assert cfg.get("Train.num_classes") == 3 and cfg.get("Global.model") == "PP-LiteSeg-T"
    assert Image.open(run_dir / "training_curves.png").format == "PNG"
    assert not list(run_dir.glob("*.tmp"))


def test_resume_from_checkpoint_gives_identical_weights(run_dir, data, tmp_path):
    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copytree(run_dir / "iter_4", out / "iter_4")
    r = run_cli(*base_args(data, out, "-o", "Train.resume_path=auto"))
    assert r.returncode == 0, r.stderr
    assert "resumed from" in (out / "train.log").read_text()
    assert same_params(out / "iter_8" / "model.pdparams", run_dir / "iter_8" / "model.pdparams")
    again = run_cli(*base_args(data, out, "-o", "Train.resume_path=auto"))
    assert again.returncode == 0 and "already finished" in again.stdout


def test_sigint_saves_checkpoint_and_resume_matches(run_dir, data, tmp_path):
    out = tmp_path / "interrupted"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *base_args(data, out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    log = out / "train.log"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and "iter 2/8" in log.read_text()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at iteration" in err and "Train.resume_path=auto" in err
    saved = [p for p in out.glob("iter_*") if p.name.split("_")[1].isdigit()]
    assert saved and all((p / "model.pdstates").is_file() for p in saved)
    result = json.loads((out / "train_result.json").read_text())
    assert result["done_flag"] is False
    r = run_cli(*base_args(data, out, "-o", "Train.resume_path=auto"))
    assert r.returncode == 0, r.stderr
    assert same_params(out / "iter_8" / "model.pdparams", run_dir / "iter_8" / "model.pdparams")


def independent_metrics(preds: list[np.ndarray], labels: list[np.ndarray], n: int) -> dict:
    """mIoU/Acc/Kappa/Dice from per-class masks, without segx.imaging.metrics."""
    p = np.concatenate([x.ravel() for x in preds])
    g = np.concatenate([x.ravel() for x in labels])
    keep = g != 255
    p, g = p[keep], g[keep]
    ious, dices = [], []
    for c in range(n):
        inter = np.sum((p == c) & (g == c))
        union = np.sum((p == c) | (g == c))
        ious.append(inter / union if union else 1.0)
        size = np.sum(p == c) + np.sum(g == c)
        dices.append(2 * inter / size if size else 0.0)
    acc = np.mean(p == g)
    pe = sum(np.mean(p == c) * np.mean(g == c) for c in range(n))
    return {"mIoU": np.mean(ious), "Acc": acc, "Kappa": (acc - pe) / (1 - pe),
            "Dice": np.mean(dices)}


def test_evaluate_matches_independent_computation(run_dir, data, tmp_path):
    from segx.backend import data as D
    from segx.backend.predictor import predict_logits
    from segx.imaging.images import read_image
    from segx.runs.folder import build_network, run_config
    out = tmp_path / "eval"
    shutil.copytree(run_dir, out)
    results = {}
    for bs in (1, 3):
        r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=evaluate", "-o",
                    f"Global.dataset_dir={data}", "-o", f"Global.output={out}", "-o",
                    f"Evaluate.batch_size={bs}")
        assert r.returncode == 0, r.stderr
        results[bs] = json.loads((out / "evaluate_result.json").read_text())
    assert results[1]["metrics"] == results[3]["metrics"]  # mixed sizes, any batch size
    res = results[1]
    weights = out / "best_model" / "model.pdparams"
    model = build_network(run_config(weights), weights)
    tf = D.build_transforms([{"type": "Normalize"}], "t")
    preds, labels = [], []
    for line in (data / "val.txt").read_text().split("\n"):
        if line.strip():
            img, lbl = line.split()
            x = D.apply_transforms(tf, read_image(data / img), None)["img"][None]
            preds.append(predict_logits(model, x)[0].argmax(0))
            labels.append(np.asarray(Image.open(data / lbl)))
    want = independent_metrics(preds, labels, 3)
    for k, v in want.items():
        assert res["metrics"][k] == pytest.approx(v, abs=1e-9), k
    matrix = np.array(res["confusion_matrix"])
    assert matrix.sum() == sum(x.size for x in labels)
    assert [r["name"] for r in res["per_class"]] == ["background", "disc", "box"]
    assert Image.open(out / "evaluate" / "confusion_matrix.png").format == "PNG"
    aug = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=evaluate", "-o",
                  f"Global.dataset_dir={data}", "-o", f"Global.output={out}",
                  "-o", "Evaluate.flip_horizontal=true", "-o", "Evaluate.scales=[0.75,1.0]",
                  "-o", "Evaluate.crop_size=[48,48]", "-o", "Evaluate.stride=[32,32]")
    assert aug.returncode == 0, aug.stderr
    assert json.loads((out / "evaluate_result.json").read_text())["options"]["crop_size"] == [48,
                                                                                            48]


def test_export_reads_class_count_and_agrees(run_dir, tmp_path):
    out = tmp_path / "exp"
    shutil.copytree(run_dir, out)
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=export", "-o", f"Global.output={out}",
                "-o", "Export.output_op=softmax", "-o", "Export.input_shape=[1,3,64,64]")
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "export_result.json").read_text())
    assert res["num_classes"] == 3 and res["agreement"]["ok"]
    assert res["agreement"]["argmax_equal"] >= 0.999
    from segx.config import parse_yaml
    exported = out / "best_model" / "inference"  # beside the weights, where create_model looks
    info = parse_yaml((exported / "inference.yml").read_text())
    assert info["Deploy"]["output_op"] == "softmax" and info["Deploy"]["output_dtype"] == "float32"
    assert info["Deploy"]["input_shape"] == [1, 3, 64, 64]
    assert info["Global"] == {"model_name": "PP-LiteSeg-T", "num_classes": 3,
                              "class_names": ["background", "disc", "box"]}
    from segx.backend.predictor import PaddleInference
    engine = PaddleInference(exported / info["Deploy"]["model"],
                             exported / "inference.pdiparams")
    probs = engine(np.zeros((1, 3, 64, 64), np.float32))
    assert probs.shape == (1, 3, 64, 64) and np.allclose(probs.sum(1), 1, atol=1e-4)


@pytest.mark.parametrize("by_scale, exact", [(False, True), (True, False)])
def test_onednn_resizing_is_enabled_only_where_exact(tmp_path, by_scale, exact):
    from tiny_nets import ResizeNet

    from segx.backend.predictor import export_static
    from segx.backend.optim import seed_everything
    from segx.export.exporter import _resize_exact
    seed_everything(0)
    net = ResizeNet(by_scale)
    program = export_static(net, tmp_path / "inference", None, "none")
    files = (program, tmp_path / "inference.pdiparams")
    rng = np.random.default_rng(0)
    even = rng.normal(0, 1, (1, 3, 64, 64)).astype(np.float32)
    odd = rng.normal(0, 1, (1, 3, 37, 53)).astype(np.float32)
    if PROGRAM == "json":  # Paddle 3: a PIR program never runs oneDNN, so never its resizing
        assert _resize_exact(net, files, [even]) is False
        return
    assert _resize_exact(net, files, [even])  # sizes that divide: exact either way
    assert _resize_exact(net, files, [even, odd]) is exact


@pytest.mark.parametrize("mkldnn", [False, True])
def test_engine_avoids_paddles_wrong_attention_fusion(tmp_path, mkldnn):
    # Paddle Inference 2.6 fuses reshape-transpose-matmul (ANN's attention) wrongly: with the
    # fusion, this net's outputs are off by about their own size
    from tiny_nets import AttentionNet

    from segx.backend.predictor import PaddleInference, export_static, predict_logits
    from segx.backend.optim import seed_everything
    seed_everything(0)
    net = AttentionNet()
    x = np.random.default_rng(0).normal(0, 1, (1, 3, 32, 40)).astype(np.float32)
    ref = predict_logits(net, x)
    program = export_static(net, tmp_path / "inference", None, "none")
    out = PaddleInference(program, tmp_path / "inference.pdiparams", mkldnn=mkldnn)(x)
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()


def test_final_export_records_onednn_resizing(run_dir):
    from segx.config import parse_yaml
    info = parse_yaml((run_dir / "best_model" / "inference" / "inference.yml").read_text())
    # PP-LiteSeg-T resizes to sizes only; a PIR program (Paddle 3) never runs oneDNN
    assert info["Deploy"]["onednn_resize"] is (PROGRAM == "pdmodel")


def test_export_rejects_weights_of_another_class_count(run_dir, tmp_path):
    out = tmp_path / "bad"
    shutil.copytree(run_dir, out)
    cfg = (out / "config.yaml").read_text().replace("num_classes: 3", "num_classes: 5")
    cfg = cfg.replace("class_names: [background, disc, box]", "class_names: null")
    (out / "config.yaml").write_text(cfg)
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=export", "-o", f"Global.output={out}")
    assert r.returncode == 2 and "does not fit" in r.stderr and "Traceback" not in r.stderr


def test_evaluate_without_run_config_is_clear(tmp_path, run_dir, data):
    (tmp_path / "w").mkdir()
    shutil.copy(run_dir / "best_model" / "model.pdparams", tmp_path / "w" / "model.pdparams")
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=evaluate", "-o",
                f"Global.dataset_dir={data}", "-o",
                f"Evaluate.weight_path={tmp_path / 'w' / 'model.pdparams'}")
    assert r.returncode == 2 and "no config.yaml" in r.stderr


@pytest.mark.parametrize("extra, message", [
    (["-o", "Train.batch_size=64"], "fewer than one batch"),
    (["-o", "Train.num_classes=2"], "Train.num_classes=2"),
    (["-o", "Train.amp=O1", "-o", "Global.device=cpu"], "needs a GPU"),
    (["-o", "Train.warmup_steps=8"], "warmup_steps"),
    (["-o", "Train.losses.types=[{type: CrossEntropyLoss}]", "-o", "Train.losses.coef=[1]"],
     "training outputs"),
])
@pytest.mark.slow  # a CLI process each (about 2 s)
def test_guards_fail_before_training(data, tmp_path, extra, message):
    r = run_cli(*base_args(data, tmp_path / "o", *extra))
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not list((tmp_path / "o").glob("iter_*"))


def test_binary_0_255_labels_are_refused(tmp_path):
    root = make_demo_dataset(tmp_path / "d", n=6, size=(64, 64))
    for p in (root / "annotations").glob("*.png"):
        a = np.asarray(Image.open(p))
        Image.fromarray(np.where(a > 0, 255, 0).astype(np.uint8)).save(p)
    (root / "class_names.txt").unlink()
    r = run_cli(*base_args(root, tmp_path / "o"))
    assert r.returncode == 2 and "binary_0_255" in r.stderr and "fix_labels" in r.stderr


@pytest.mark.parametrize("kind", ["full model", "backbone"])
def test_mixed_loss_and_pretrained_checkpoints(run_dir, data, tmp_path, kind):
    import paddle
    mixed = ("Train.losses.types=[{type: MixedLoss, losses: [{type: CrossEntropyLoss}, "
             "{type: DiceLoss}, {type: LovaszSoftmaxLoss}], coef: [1, 0.5, 0.5]}, "
             "{type: CrossEntropyLoss}, {type: CrossEntropyLoss}]")
    weights = run_dir / "best_model" / "model.pdparams"
    if kind == "backbone":  # a backbone-only file, as published ImageNet weights are
        state = paddle.load(str(weights))
        weights = tmp_path / "backbone.pdparams"
        paddle.save({k[len("backbone."):]: v for k, v in state.items()
                     if k.startswith("backbone.")}, str(weights))
    out = tmp_path / "o"
    r = run_cli(*base_args(data, out, "-o", mixed, "-o", "Train.epochs_iters=2",
                           "-o", "Train.eval_interval=2", "-o",
                           f"Train.pretrained={weights}"))
    assert r.returncode == 0, r.stderr
    log = (out / "train.log").read_text()
    assert f"pretrained {kind} weights" in log and "loaded" in log
    if kind == "backbone":
        assert "skipped" not in log.split(f"pretrained {kind} weights")[1].split("\n")[0]


@pytest.mark.slow
def test_two_cpu_ranks_keep_identical_parameters_and_statistics(data, tmp_path):
    from segx.training.launch import launch
    out = tmp_path / "dp"
    args = base_args(data, out, "-o", "Global.device=cpu", "-o", "Train.nprocs=2",
                     "-o", "Train.epochs_iters=3", "-o", "Train.eval_interval=3")
    cfg = load_config("PP-LiteSeg-T", [a for a in args[2:] if a != "-o"])
    launch(cfg, 2, entry=[str(ROOT / "tests" / "dp_rank.py")])  # segx's ranks, saving final states
    assert "cpu x2" in (out / "train.log").read_text()
    assert same_params(out / "iter_3" / "model.pdparams", out / "test_rank1_final.pdparams")
    launches = list((out / "distributed_train_logs").iterdir())  # one folder per launch
    assert len(launches) == 1 and (launches[0] / "workerlog.1").is_file()
    assert (launches[0] / "launch_config.yaml").is_file()
    assert not list((out / "distributed_train_logs").rglob("*.pdparams"))


def test_confusion_metrics_by_hand():
    conf = Confusion(3)
    conf.update(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [255, 0]]))
    assert conf.matrix.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    m = conf.metrics(["a", "b", "c"])
    assert m["per_class"][2]["IoU"] == 1.0 and m["per_class"][2]["Dice"] == 0.0
    assert m["mIoU"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert m["Acc"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        conf.update(np.zeros((2, 2)), np.full((2, 2), 3))


def test_loader_workers_do_not_change_the_result(run_dir, data, tmp_path):
    out = tmp_path / "workers"
    r = run_cli(*base_args(data, out, "-o", "Train.num_workers=2"))
    assert r.returncode == 0, r.stderr
    assert same_params(out / "iter_8" / "model.pdparams", run_dir / "iter_8" / "model.pdparams")


def test_flat_validation_with_collapsing_loss_warns(tmp_path):
    from segx.training.results import flat_validation_warning
    curves = {"mIoU": [0.4, 0.4, 0.4], "loss": [2.0, 1.5, 0.6]}
    warning = flat_validation_warning(curves)
    assert warning and "WARNING" in warning and "label encoding" in warning
    curves["mIoU"] = [0.4, 0.45, 0.5]
    assert flat_validation_warning(curves) is None


@pytest.mark.slow
def test_ctrl_c_in_a_two_process_run_checkpoints_every_rank_at_one_iteration(data, tmp_path):
    out = tmp_path / "dp"
    args = base_args(data, out, "-o", "Global.device=cpu", "-o", "Train.nprocs=2",
                     "-o", "Train.epochs_iters=40", "-o", "Train.eval_interval=40")
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"},
                            start_new_session=True)  # its own group, like a terminal job
    log = out / "train.log"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and "iter 2/40" in log.read_text()):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    result = json.loads((out / "train_result.json").read_text())
    stopped = result["interrupted_at"]
    assert result["done_flag"] is False and 2 <= stopped < 40
    assert (out / f"iter_{stopped}" / "model.pdstates").is_file()
    r = run_cli(*[a.replace("epochs_iters=40", f"epochs_iters={stopped + 2}") for a in args],
                "-o", "Train.resume_path=auto")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resumed from {out / f'iter_{stopped}'}" in (out / "train.log").read_text()


@pytest.mark.slow
def test_a_model_that_cannot_be_exported_says_so(data, tmp_path):
    # GSCNN runs OpenCV on numpy inside forward; a PP-LiteSeg-T run marked the same way takes
    # the same path in seconds: training finishes without the export, export mode refuses
    out = tmp_path / "noexp"
    r = run_cli(*base_args(data, out, "-o", "Meta.no_static_export=it calls numpy in forward"))
    assert r.returncode == 0, r.stderr
    assert not (out / "best_model" / "inference").exists()
    assert "not exported: PP-LiteSeg-T cannot be exported" in (out / "train.log").read_text()
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=export", "-o", f"Global.output={out}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "cannot be exported to a static graph: it calls numpy in forward" in r.stderr
    assert "model.pdparams" in r.stderr
    from segx import create_model
    from segx.utils.errors import WeightsError
    with pytest.raises(WeightsError, match="has no exported model"):
        create_model(out, device="cpu")
    res = next(create_model(out / "best_model" / "model.pdparams", device="cpu").predict(
        str(data / "images" / "000.jpg")))
    assert res.pred.shape == (64, 64)


def test_gscnn_is_marked_not_exportable():
    from segx.zoo.registry import load_model_config as load_config
    assert "Canny" in load_config("GSCNN-R50").get("Meta.no_static_export")
