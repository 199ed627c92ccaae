"""Official weights: training from the ImageNet backbone by default, models by name, and the
downloader, all against a real HTTP server on 127.0.0.1 reached through SEGX_WEIGHTS_MIRROR."""
from __future__ import annotations

import zlib  # noqa: F401

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from helpers import ROOT, base_args, run_cli
from segx.utils.errors import WeightsError
from segx.zoo.registry import load_model_config
from weights_server import WeightsServer, official_checkpoint
from segx.runs.paddlex import paddle_major

LITESEG = load_model_config("PP-LiteSeg-T").get("Meta.weights")
BACKBONE_URL = LITESEG["backbone"]["url"]
CITYSCAPES_URL = LITESEG["trained"]["cityscapes"]["url"]
HRNET_URL = load_model_config("FCN_HRNet-W18").get("Meta.weights.backbone.url")


def path_of(url: str) -> str:
    return urlsplit(url).path


def state_bytes(model_name: str, num_classes: int, backbone_only: bool = False,
                seed: int = 0) -> bytes:
    """paddle.save of a model's (or its backbone's) random state: an official file's layout."""
    import paddle

    from segx import backend
    paddle.seed(seed)
    state = backend.build_model(load_model_config(model_name)["Arch"], num_classes).state_dict()
    if backbone_only:
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    buf = io.BytesIO()
    paddle.save(state, buf)
    return buf.getvalue()


def tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def default_start(args: list[str]) -> list[str]:
    """``base_args`` without its ``-o Train.pretrained=none``: the default start (imagenet)."""
    k = args.index("Train.pretrained=none")
    return args[:k - 1] + args[k + 1:]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SEGX_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def mirror(monkeypatch, server: WeightsServer) -> None:
    monkeypatch.setenv("SEGX_WEIGHTS_MIRROR", server.url)


@pytest.mark.slow
def test_training_starts_from_the_official_backbone_by_default(data, tmp_path, home,
                                                               monkeypatch):
    backbone = state_bytes("PP-LiteSeg-T", 19, backbone_only=True)
    with WeightsServer({path_of(BACKBONE_URL): backbone}) as server:
        mirror(monkeypatch, server)
        r = run_cli(*default_start(base_args(data, tmp_path / "o", "-o", "Train.epochs_iters=2",
                                             "-o", "Train.eval_interval=2")))
        assert r.returncode == 0, r.stderr
        assert [rng for rng, _ in server.gets(path_of(BACKBONE_URL))] == [None]
    line = next(x for x in (tmp_path / "o" / "train.log").read_text().splitlines()
                if "pretrained" in x)
    from segx.zoo.weights import entry_dir
    cached = entry_dir(BACKBONE_URL) / Path(path_of(BACKBONE_URL)).name
    assert f"pretrained backbone weights (official ImageNet backbone) from {cached}" in line
    import paddle
    n = len(paddle.load(str(cached)))
    assert f"loaded {n} of" in line and "skipped" not in line
    source = json.loads((cached.parent / "source.json").read_text())
    assert source["url"] == BACKBONE_URL and len(source["sha256"]) == 64


def test_offline_default_stops_before_the_first_step_naming_the_file(data, tmp_path, home,
                                                                     monkeypatch):
    monkeypatch.setenv("SEGX_WEIGHTS_MIRROR", "http://127.0.0.1:9")
    r = run_cli(*default_start(base_args(data, tmp_path / "o")))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    from segx.zoo.weights import entry_dir
    assert BACKBONE_URL in lines[0] and str(entry_dir(BACKBONE_URL)) in lines[0]
    assert "Train.pretrained=none" in lines[0]
    assert not list((tmp_path / "o").glob("iter_*"))


@pytest.mark.slow
def test_create_model_by_name_downloads_exports_caches_and_works_offline(data, home,
                                                                       monkeypatch):
    from segx import create_model
    from segx.utils.class_lists import CITYSCAPES
    pytest.importorskip("paddleseg")  # the official network is built by paddleseg (oracle leg)
    full = official_checkpoint("PP-LiteSeg-T", "cityscapes")
    image = str(data / "images" / "000.jpg")
    with WeightsServer({path_of(CITYSCAPES_URL): full}) as server:
        mirror(monkeypatch, server)
        with create_model("pp-liteseg-t", device="cpu") as model:  # any case
            first = next(model.predict(image))
        assert len(server.gets(path_of(CITYSCAPES_URL))) == 1
    assert model.class_names == CITYSCAPES and first.pred.shape == (64, 64)
    assert (home / "models" / "PP-LiteSeg-T" / "inference.yml").is_file()
    report = home / "models" / "PP-LiteSeg-T" / "run" / "config.yaml"
    assert load_model_config(report).get("Train.num_classes") == 19
    with create_model("PP-LiteSeg-T", device="cpu") as again:  # server gone: from the cache
        assert np.array_equal(next(again.predict(image)).pred, first.pred)


def test_a_model_without_trained_weights_points_to_training(home):
    from segx import create_model
    with pytest.raises(WeightsError, match="no published trained weights.*train it"):
        create_model("U-Net++")


def test_two_processes_asking_at_once_download_once(home, monkeypatch):
    payload = os.urandom(3 << 20)
    url = "https://example.invalid/paddleseg/dygraph/big.pdparams"
    code = "import sys; from segx.zoo.weights import fetch; print(fetch(sys.argv[1]))"
    with WeightsServer({path_of(url): payload}, delay_s=0.05, chunk=1 << 18) as server:
        mirror(monkeypatch, server)
        procs = [subprocess.Popen([sys.executable, "-c", code, url], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert outs[0][0] == outs[1][0]
    assert len(server.gets(path_of(url))) == 1
    assert Path(outs[0][0].strip()).read_bytes() == payload


def test_a_killed_download_resumes(home, monkeypatch):
    from segx.zoo.weights import entry_dir, fetch
    payload = os.urandom(4 << 20)
    url = "https://example.invalid/paddleseg/dygraph/resume.pdparams"
    part = entry_dir(url) / "resume.pdparams.part"
    code = "import sys; from segx.zoo.weights import fetch; fetch(sys.argv[1])"
    with WeightsServer({path_of(url): payload}, delay_s=0.05, chunk=1 << 17) as server:
        mirror(monkeypatch, server)
        proc = subprocess.Popen([sys.executable, "-c", code, url], cwd=ROOT)
        deadline = time.time() + 60
        while time.time() < deadline and not (part.is_file() and part.stat().st_size > 1 << 20):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        have = part.stat().st_size
        assert 0 < have < len(payload)
        server.delay_s = 0
        path = fetch(url)  # the lock died with the killed process
        assert path.read_bytes() == payload
        ranges = server.gets(path_of(url))
        assert ranges[-1][0] == f"bytes={have}-" and ranges[-1][1] == len(payload) - have


@pytest.mark.slow  # about 4 s
def test_archives_unpack_safely_and_failures_are_one_line(home, monkeypatch, tmp_path):
    from segx.zoo.weights import fetch
    backbone = state_bytes("FCN_HRNet-W18", 2, backbone_only=True)
    good = tar_gz({"hrnet_w18_ssld/model.pdparams": backbone})
    with WeightsServer({path_of(HRNET_URL): good}) as server:
        mirror(monkeypatch, server)
        r = run_cli("weights", "fetch", "FCN_HRNet-W18")
        assert r.returncode == 0, r.stderr
        assert Path(r.stdout.split(": ", 1)[1].strip()).read_bytes() == backbone
        listed = run_cli("weights", "list")
        assert HRNET_URL in listed.stdout and "1 cached file(s)" in listed.stdout
        bad_urls = {"https://example.invalid/a/corrupt.tar.gz": b"not a tar at all",
                    "https://example.invalid/a/escape.tar.gz": tar_gz({"../../evil.pdparams":
                                                                       b"x"})}
        server.files.update({path_of(u): d for u, d in bad_urls.items()})
        for url, message in (("https://example.invalid/a/corrupt.tar.gz", "is corrupt"),
                             ("https://example.invalid/a/escape.tar.gz", "outside its folder"),
                             ("https://example.invalid/a/missing.pdparams", "HTTP 404")):
            with pytest.raises(WeightsError, match=message) as info:
                fetch(url)
            assert "\n" not in str(info.value)
        assert not (home / "evil.pdparams").exists() and not (home.parent / "evil.pdparams").exists()


def test_cached_files_are_checked_against_their_recorded_sha256(home, monkeypatch):
    from segx.zoo.weights import fetch
    url = "https://example.invalid/paddleseg/dygraph/check.pdparams"
    with WeightsServer({path_of(url): b"original bytes"}) as server:
        mirror(monkeypatch, server)
        path = fetch(url)
    path.write_bytes(b"tampered bytes")
    with pytest.raises(WeightsError, match="does not match its sha256"):
        fetch(url)


def test_a_file_from_elsewhere_imports_offline(home, monkeypatch, tmp_path):
    monkeypatch.setenv("SEGX_WEIGHTS_MIRROR", "http://127.0.0.1:9")
    (tmp_path / "x.pdparams").write_bytes(b"weights from a connected machine")
    r = run_cli("weights", "import", str(tmp_path / "x.pdparams"), "--url", BACKBONE_URL)
    assert r.returncode == 0, r.stderr
    from segx.zoo.weights import fetch
    assert fetch(BACKBONE_URL).read_bytes() == b"weights from a connected machine"


@pytest.mark.slow
def test_wrong_shaped_official_weights_are_a_one_line_error(data, home, tmp_path, monkeypatch):
    wrong = state_bytes("FCN_HRNet-W18", 19)  # another architecture at the PP-LiteSeg address
    with WeightsServer({path_of(CITYSCAPES_URL): wrong}) as server:
        mirror(monkeypatch, server)
        r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=predict",
                    "-o", f"Predict.input={data / 'images' / '000.jpg'}",
                    "-o", f"Global.output={tmp_path / 'p'}", "-o", "Global.device=cpu")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "does not fit" in r.stderr


@pytest.mark.slow
def test_fine_tuning_from_trained_weights_reinitialises_the_head(data, tmp_path, home,
                                                               monkeypatch):
    pytest.importorskip("paddleseg")  # the official network is built by paddleseg (oracle leg)
    full = official_checkpoint("PP-LiteSeg-T", "cityscapes")
    with WeightsServer({path_of(CITYSCAPES_URL): full}) as server:
        mirror(monkeypatch, server)
        r = run_cli(*base_args(data, tmp_path / "o", "-o", "Train.pretrained=cityscapes",
                               "-o", "Train.epochs_iters=2", "-o", "Train.eval_interval=2"))
    assert r.returncode == 0, r.stderr
    line = next(x for x in (tmp_path / "o" / "train.log").read_text().splitlines()
                if "pretrained" in x)
    assert "pretrained full model weights (official cityscapes weights)" in line
    assert "skipped" in line and "conv_out" in line  # the 19-class head does not fit 3 classes


PADDLEX_CONFIG = """\
batch_size: 2
iters: 8
train_dataset:
  type: Dataset
  dataset_root: {data}
  train_path: {data}/train.txt
  num_classes: 3
  mode: train
  transforms:
  - type: RandomHorizontalFlip
  - type: Normalize
val_dataset:
  type: Dataset
  dataset_root: {data}
  val_path: {data}/val.txt
  num_classes: 3
  mode: val
  transforms:
  - type: Normalize
optimizer: {{type: SGD, momentum: 0.9, weight_decay: 4.0e-05}}
lr_scheduler: {{type: PolynomialDecay, learning_rate: 0.01, end_lr: 0, power: 0.9}}
loss:
  types:
  - type: CrossEntropyLoss
  - type: CrossEntropyLoss
  - type: CrossEntropyLoss
  coef: [1, 1, 1]
model:
  type: PPLiteSeg
  backbone:
    type: STDC1
    pretrained: https://bj.bcebos.com/paddleseg/dygraph/PP_STDCNet1.tar.gz
  arm_out_chs: [32, 64, 128]
  seg_head_inter_chs: [32, 64, 64]
  num_classes: 3
"""


@pytest.fixture(scope="module")
def paddlex_run(run_dir, data, tmp_path_factory) -> Path:
    """A PaddleX training output: PaddleSeg-format config.yaml, train_results.json,
    best_model/model.pdparams and a PaddleX inference.yml (no class names)."""
    import shutil
    out = tmp_path_factory.mktemp("paddlex") / "output"
    (out / "best_model").mkdir(parents=True)
    (out / "config.yaml").write_text(PADDLEX_CONFIG.format(data=data))
    (out / "train_results.json").write_text(json.dumps({"model_name": "PP-LiteSeg-T",
                                                        "done_flag": True}))
    shutil.copy(run_dir / "best_model" / "model.pdparams", out / "best_model")
    shutil.copytree(run_dir / "best_model" / "inference", out / "best_model" / "inference")
    program = next(p.name for p in (out / "best_model" / "inference").iterdir()
                   if p.name in ("inference.json", "inference.pdmodel"))  # Paddle 3 / 2.6
    (out / "best_model" / "inference" / "inference.yml").write_text(
        f"Deploy:\n  input_shape: [null, 3, null, null]\n  model: {program}\n"
        "  output_dtype: int32\n  output_op: argmax\n  params: inference.pdiparams\n"
        "  transforms:\n  - type: Normalize\nGlobal:\n  model_name: PP-LiteSeg-T\n")
    return out


def test_a_paddlex_run_evaluates_exports_and_predicts(paddlex_run, run_dir, data, tmp_path):
    from segx import create_model
    weights = paddlex_run / "best_model" / "model.pdparams"
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=evaluate", "-o",
                f"Global.dataset_dir={data}", "-o", f"Global.output={tmp_path / 'e'}",
                "-o", f"Evaluate.weight_path={weights}")
    assert r.returncode == 0, r.stderr
    ours = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=evaluate", "-o",
                   f"Global.dataset_dir={data}", "-o", f"Global.output={tmp_path / 'o'}",
                   "-o", f"Evaluate.weight_path={run_dir / 'best_model' / 'model.pdparams'}")
    assert ours.returncode == 0, ours.stderr
    metrics = [json.loads((tmp_path / d / "evaluate_result.json").read_text())["metrics"]
               for d in ("e", "o")]
    assert metrics[0] == metrics[1]  # the same weights: the same numbers
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=export", "-o",
                f"Global.output={tmp_path / 'x'}", "-o", f"Export.weight_path={weights}")
    assert r.returncode == 0, r.stderr
    image = str(data / "images" / "000.jpg")
    with create_model(paddlex_run, device="cpu") as px, \
            create_model(tmp_path / "x" / "inference", device="cpu") as exported, \
            create_model(weights, device="cpu") as dynamic:
        preds = [next(m.predict(image)).pred for m in (px, exported, dynamic)]
        assert px.model_name == "PP-LiteSeg-T" and dynamic.model_name == "PP-LiteSeg-T"
    assert np.array_equal(preds[0], preds[1]) and np.array_equal(preds[0], preds[2])


@pytest.mark.skipif(paddle_major() != 2, reason="Paddle 3 runs PIR exports (test_stack.py)")
def test_a_paddle3_pir_export_is_refused_with_the_route_that_works(paddlex_run, tmp_path):
    import shutil
    pir = tmp_path / "output"
    shutil.copytree(paddlex_run, pir)
    inference = pir / "best_model" / "inference"
    (inference / "inference.pdmodel").rename(inference / "inference.json")
    r = run_cli("--pipeline", "semantic_segmentation", "--model", str(pir), "--input",
                str(ROOT / "README.md"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "PIR" in r.stderr and str(pir / "best_model" / "model.pdparams") in r.stderr
