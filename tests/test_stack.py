"""The stack segx runs on: whichever Paddle (2.6.2 or 3.x), numpy (1 or 2), Python (3.11-3.13)
and converter (paddle2onnx or none) this environment has. Every leg runs this file (make test,
test-paddle26, test-py313), so each claim below is checked on each stack:

* every zoo family is segx's own (no paddleseg needed) and trains a step with its zoo losses:
  Paddle 3's strict type promotion refused every loss of paddleseg 2.8 (float32 x int64);
* an export is the program this Paddle writes (``inference.json`` on 3, ``.pdmodel`` on 2.6),
  plus ONNX where paddle2onnx exists, and every engine that can read it gives the same classes;
  where no converter exists, export and OpenVINO say so in one line and name the route;
* exports made by earlier segx versions (``.pdmodel``) run on every engine;
* the install asks for the OpenCV build an environment already has (setup.py).
"""
from __future__ import annotations

import zlib  # noqa: F401  (before paddle)

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, run_cli
from segx.config import parse_yaml
from segx.inference.engines import installed
from segx.runs.paddlex import paddle_major
from segx.utils.errors import ConfigError, WeightsError
from segx.zoo.registry import list_models, load_model_config, model_info

paddle = pytest.importorskip("paddle")
from segx import backend  # noqa: E402
from segx.backend import nets  # noqa: E402
from segx.backend.onnx import converter_available  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"
PIR = paddle_major() != 2


def _families() -> list:
    """The smallest zoo model of each (family, architecture), all marked slow (one training
    step each: about 70 s for the 28 together)."""
    smallest: dict = {}
    for name in list_models():
        info = model_info(name)
        key = (info.family, info.architecture)
        size = info.params_m or 1e9
        if key not in smallest or size < smallest[key][0]:
            smallest[key] = (size, name)
    return [pytest.param(n, marks=pytest.mark.slow)
            for _, n in sorted(smallest.values(), key=lambda v: v[1])]


# ----------------------------------------------------------------------------- networks
def test_every_zoo_model_is_built_by_segx_without_paddleseg():
    """No zoo model, loss or transform needs paddleseg (it is not a dependency any more)."""
    from segx.imaging.transforms import TRANSFORMS
    for name in list_models():
        cfg = load_model_config(name)
        assert nets.owns(cfg["Arch"]), name
        for loss in cfg["Train"]["losses"]["types"]:
            assert loss["type"] in nets.LOSSES, (name, loss)
        for t in cfg["Train"]["transforms"] + cfg["Train"]["val_transforms"]:
            assert t["type"] in TRANSFORMS, (name, t)


@pytest.mark.parametrize("name", _families())
def test_every_family_trains_a_step_with_its_zoo_losses(name):
    """One optimiser step with the zoo's losses (edge losses fed their edge labels): finite,
    and the weights move. Paddle 3 refuses float32 x int64 arithmetic anywhere in the step."""
    from segx.backend.optim import TrainStep, build_losses, build_optimizer, seed_everything
    from segx.imaging.transforms import mask_to_binary_edge
    seed_everything(0)
    cfg = load_model_config(name)
    model = backend.build_model(cfg["Arch"], 3)
    losses, coef = build_losses(cfg["Train"]["losses"])
    opt, sched = build_optimizer(model, {"type": "SGD", "momentum": 0.9}, {}, 0.01, 10, 0, 0.0)
    size = 96
    label = np.random.default_rng(0).integers(0, 3, (2, size, size)).astype("int64")
    label[:, :8] = 255
    batch = [paddle.to_tensor(np.random.default_rng(1).normal(0, 1, (2, 3, size, size))
                              .astype("float32")), paddle.to_tensor(label)]
    if any(getattr(loss, "edge_label", False) for loss in losses):
        edges = np.stack([mask_to_binary_edge(lb, radius=2, num_classes=3) for lb in label])
        batch.append(paddle.to_tensor(edges.astype("int64")))
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    loss, terms = TrainStep(model, opt, sched, losses, coef)(batch)
    assert np.isfinite(loss) and all(np.isfinite(terms)), (name, terms)
    moved = [k for k, v in model.state_dict().items() if not np.array_equal(v.numpy(), before[k])]
    assert len(moved) > len(before) // 2, name


def test_exported_adaptive_pooling_equals_paddles_at_any_size():
    """segx's AdaptiveAvgPool2D, written as matrix products in a static graph (so its ONNX
    takes any size), gives paddle's adaptive pooling on odd sizes and bins."""
    from segx.backend.nets.layers import AdaptiveAvgPool2D
    from segx.backend.predictor import PaddleInference

    class Pools(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.pools = paddle.nn.LayerList([AdaptiveAvgPool2D(b) for b in (1, 2, 3, 6)])
            self.gain = self.create_parameter([1], default_initializer=paddle.nn.initializer
                                              .Constant(1.0))  # (Paddle 2.6 needs a weight)

        def forward(self, x):
            return paddle.concat([p(x * self.gain).flatten(1) for p in self.pools], axis=1)

    net, folder = Pools(), Path(pytest.importorskip("tempfile").mkdtemp())
    try:
        spec = [paddle.static.InputSpec([None, 4, None, None], "float32", "x")]
        paddle.jit.save(paddle.jit.to_static(net, input_spec=spec, full_graph=True),
                        str(folder / "inference"))
        program = folder / ("inference.json" if PIR else "inference.pdmodel")
        engine = PaddleInference(program, folder / "inference.pdiparams", mkldnn=False)
        for h, w in ((7, 9), (97, 131), (32, 32)):
            x = np.random.default_rng(h).normal(0, 1, (2, 4, h, w)).astype("float32")
            ref = paddle.concat([paddle.nn.functional.adaptive_avg_pool2d(
                paddle.to_tensor(x), b).flatten(1) for b in (1, 2, 3, 6)], axis=1).numpy()
            assert np.abs(engine(x) - ref).max() < 1e-5, (h, w)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------- export, engines
@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, str]:
    """The v2 fixture run (PP-LiteSeg-T) exported on this stack; (folder, export's stdout)."""
    out = tmp_path_factory.mktemp("stack") / "run"
    shutil.copytree(FIXTURES / "run_v2", out)
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=export", "-o", f"Global.output={out}",
                timeout=900)
    assert r.returncode == 0, r.stderr + r.stdout
    return out / "best_model" / "inference", r.stdout


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "odd.png"
    rng = np.random.default_rng(5)
    Image.fromarray((rng.random((181, 243, 3)) * 255).astype("uint8")).save(path)
    return path


@pytest.mark.slow
def test_export_writes_this_paddles_program_and_onnx_where_a_converter_exists(exported):
    folder, stdout = exported
    deploy = parse_yaml((folder / "inference.yml").read_text())["Deploy"]
    program = "inference.json" if PIR else "inference.pdmodel"
    assert deploy["model"] == program and (folder / program).is_file()
    if PIR and converter_available():
        assert deploy["onnx"]["input_shape"] == [None, 3, None, None]  # any size, PP-LiteSeg too
        assert (folder / "inference.onnx").is_file()
        assert {"openvino", "onnxruntime"} <= set(deploy["engines"]) or not installed("openvino")
        assert all(r["exact"] for r in deploy["engines"].values()), deploy["engines"]
    elif PIR:  # Python 3.13: no paddle2onnx build
        assert "onnx" not in deploy and "paddle2onnx" in deploy["onnx_skipped"]
        lines = [ln for ln in stdout.splitlines() if ln.strip().startswith("no ONNX")]
        assert len(lines) == 1 and "Python 3.12" in lines[0] and "Paddle Inference" in lines[0]
    assert not list(folder.parent.glob("inference.tmp*")) and not (folder / "_onnx_fixed").exists()


@pytest.mark.slow
def test_every_engine_that_reads_the_export_gives_the_same_classes(exported, photo):
    from segx import create_model
    folder, _ = exported
    deploy = parse_yaml((folder / "inference.yml").read_text())["Deploy"]
    readable = {"openvino": not PIR or "onnx" in deploy, "onnxruntime": "onnx" in deploy}
    engines = ["paddle"] + [e for e, ok in readable.items() if ok and installed(e)]
    maps = {}
    for engine in engines:
        with create_model(str(folder), engine=engine) as model:
            maps[engine] = next(iter(model.predict(str(photo))))["pred"]
    assert all(m.shape == (181, 243) for m in maps.values())
    for engine, m in maps.items():
        assert (m == maps["paddle"]).mean() >= 0.999, engine


@pytest.mark.slow
@pytest.mark.skipif(not installed("openvino"), reason="needs openvino")
def test_without_onnx_openvino_is_refused_in_one_line_naming_the_route(exported, tmp_path):
    from segx import create_model
    folder, _ = exported
    if not PIR:
        pytest.skip("a Paddle 2.6 export is a .pdmodel, which OpenVINO reads directly")
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare, ignore=shutil.ignore_patterns("inference.onnx"))
    info = parse_yaml((bare / "inference.yml").read_text())
    info["Deploy"].pop("onnx", None)
    info["Deploy"]["onnx_skipped"] = "paddle2onnx is not installed here"
    info["Deploy"].pop("engines", None)
    from segx.config import dump_yaml
    (bare / "inference.yml").write_text(dump_yaml(info))
    with pytest.raises(ConfigError, match="OpenVINO cannot read a Paddle 3") as err:
        create_model(str(bare), engine="openvino")
    assert "\n" not in str(err.value) and "Python 3.12" in str(err.value)
    with create_model(str(bare)) as model:  # auto: the engine that reads it
        assert model.engine.startswith("paddle")


@pytest.mark.slow
def test_exports_of_earlier_versions_run_on_every_engine(photo):
    """The v1 fixture's export (a .pdmodel from segx 0.1 on Paddle 2.6) on each engine here."""
    from segx import create_model
    folder = FIXTURES / "run_v1" / "best_model" / "inference"
    maps = {}
    for engine in ["paddle"] + [e for e in ("openvino",) if installed(e)]:
        with create_model(str(folder), engine=engine) as model:
            maps[engine] = next(iter(model.predict(str(photo))))["pred"]
    assert all((m == maps["paddle"]).mean() >= 0.999 for m in maps.values())


@pytest.mark.skipif(PIR, reason="Paddle 2.6 only")
def test_paddle26_refuses_a_pir_export_in_one_line(tmp_path):
    """Paddle 2.6 crashes (segmentation fault) loading a PIR program: segx never hands it one."""
    from segx import create_model
    folder = tmp_path / "pir"
    folder.mkdir()
    (folder / "inference.json").write_text("{}")
    (folder / "inference.pdiparams").write_bytes(b"")
    (folder / "inference.yml").write_text(
        "Deploy: {model: inference.json, params: inference.pdiparams, transforms: "
        "[{type: Normalize}], output_op: argmax}\nGlobal: {model_name: PP-LiteSeg-T}\n")
    with pytest.raises(WeightsError, match="Paddle 2.6 cannot run"):
        create_model(str(folder))
    (folder / "inference.onnx").write_bytes(b"")  # with an ONNX, Paddle is still refused
    with pytest.raises(ConfigError, match="Paddle 2.6 cannot run"):
        create_model(str(folder), engine="paddle")


@pytest.mark.skipif(not converter_available(), reason="needs paddle2onnx")
def test_a_conversion_paddle2onnx_aborts_on_is_a_one_line_error(tmp_path):
    """paddle2onnx aborts its process on what it cannot convert; segx runs it in a child."""
    from segx.backend.onnx import ConversionError, paddle_to_onnx
    program = tmp_path / ("inference.json" if PIR else "inference.pdmodel")
    program.write_text("{not a program")
    (tmp_path / "inference.pdiparams").write_bytes(b"\0" * 16)
    with pytest.raises(ConversionError) as err:
        paddle_to_onnx(program, tmp_path / "inference.onnx")
    assert "\n" not in err.value.message and not (tmp_path / "inference.onnx").exists()


# ----------------------------------------------------------------------------- install
def _setup_module():
    spec = importlib.util.spec_from_file_location("segx_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # setup() runs only as __main__ (pip's build)
    return module


@pytest.mark.parametrize("present, wanted", [
    ([], "opencv-python-headless"),
    (["opencv_contrib_python-4.10.0.84.dist-info"], "opencv-contrib-python"),  # PaddleX 3.7
    (["opencv_python-4.12.0.88.dist-info"], "opencv-python"),
    (["opencv_python-4.6.0.66.dist-info"], "opencv-python-headless"),  # too old to keep
    (["opencv_python_headless-4.14.0.94.dist-info"], "opencv-python-headless"),
])
def test_install_asks_for_the_opencv_build_the_environment_has(present, wanted, tmp_path,
                                                               monkeypatch):
    setup = _setup_module()
    for name in present:
        (tmp_path / name).mkdir()
    monkeypatch.setattr(setup.sysconfig, "get_paths",
                        lambda: {"purelib": str(tmp_path), "platlib": str(tmp_path)})
    assert (setup.installed_opencv() or "opencv-python-headless") == wanted
    assert not any(r.startswith("opencv") for r in setup.BASE)


def test_this_environment_is_a_supported_stack():
    """What the legs promise (docs/install.md): Paddle 2.6.2 only with numpy 1 on 3.11-3.12;
    Paddle 3 with numpy 2 from 3.12 on; no paddleseg outside the oracle leg."""
    major = int(np.__version__.split(".")[0])
    if PIR:
        assert sys.version_info >= (3, 11)
    else:
        assert paddle.__version__ == "2.6.2" and major == 1 and sys.version_info < (3, 13)
    if importlib.util.find_spec("paddleseg") is not None:
        assert not PIR, "paddleseg 2.8 belongs only to the Paddle 2.6 oracle leg"


def test_the_fast_channel_max_has_paddles_value_and_gradient(monkeypatch):
    """Paddle 3's CPU max_grad is about 75x slower than 2.6's; segx's networks take the channel
    max through elementwise ops there: the same value, and Paddle 2.6's gradient (every element
    equal to the maximum gets the full gradient, ties included; Paddle 3's own max_grad splits it
    among ties), so training computes the same on both stacks."""
    from segx.backend.nets import layers
    monkeypatch.setattr(layers, "_SLOW_MAX_GRAD", True)
    rng = np.random.default_rng(0)
    data = np.maximum(rng.normal(0, 1, (2, 5, 6, 7)), 0).astype("float32")  # ReLU: zero ties
    data[0, :, 0, 0] = 0.0
    upstream = rng.normal(0, 1, (2, 1, 6, 7)).astype("float32")
    x = paddle.to_tensor(data, stop_gradient=False)
    out = layers.max_keepdim(x, axis=1)
    (out * paddle.to_tensor(upstream)).sum().backward()
    top = data.max(axis=1, keepdims=True)
    assert np.array_equal(out.numpy(), top)
    assert np.allclose(x.grad.numpy(), upstream * (data == top), atol=1e-6)
    assert (data[0, :, 0, 0] == top[0, 0, 0, 0]).all()  # (the tie is there)
