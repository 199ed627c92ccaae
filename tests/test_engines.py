"""Deployment engines: the choice of engine and precision, agreement of OpenVINO with Paddle on
every exportable family, int8 with its measured accuracy, ONNX, evaluating what you ship, and
prediction and serving with paddle blocked."""
from __future__ import annotations

import zlib  # noqa: F401

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from helpers import ROOT, run_cli
from segx.inference.engines import Plan, installed, plan
from segx.utils.errors import ConfigError
from segx.zoo.registry import list_models, load_model_config, model_info

ALL = {"paddle", "openvino", "onnxruntime"}
RECORDS = {"engines": {"paddle": {"exact": True, "ms": 80.0},
                       "openvino": {"exact": True, "ms": 60.0}}}
INT8 = {"int8": {"model": "inference_int8.xml", "accepted": True, "drop": 0.2, "max_drop": 1.0}}


# ----------------------------------------------------------------------------- the choice
@pytest.mark.parametrize("engine, precision, device, deploy, available, bf16, want", [
    ("auto", "fp32", "cpu", RECORDS, ALL, False, Plan("openvino", "fp32")),  # measured faster
    ("auto", "fp32", "cpu", RECORDS, {"paddle"}, False, Plan("paddle", "fp32")),
    ("auto", "fp32", "cpu", {}, {"paddle", "openvino"}, False, Plan("paddle", "fp32")),
    ("auto", "fp32", "cpu", {}, {"openvino"}, False, Plan("openvino", "fp32")),  # no paddle
    ("auto", "fp32", "cpu", {"engines": {"paddle": {"exact": True, "ms": 80},
                                         "openvino": {"exact": False, "ms": 10}}},
     ALL, True, Plan("paddle", "fp32")),  # never an engine export found inexact
    ("auto", "auto", "cpu", {**RECORDS, **INT8}, ALL, False, Plan("openvino", "int8")),
    ("auto", "auto", "cpu", RECORDS, ALL, True, Plan("openvino", "fp32")),  # never bf16
    ("auto", "bf16", "cpu", RECORDS, ALL, True, Plan("openvino", "bf16")),
    ("auto", "fp32", "gpu:0", RECORDS, ALL, False, Plan("paddle", "fp32")),  # GPU: Paddle
    ("paddle", "auto", "gpu:1", {**RECORDS, **INT8}, ALL, False, Plan("paddle", "fp32")),
])
def test_engine_and_precision_are_chosen_from_facts(engine, precision, device, deploy,
                                                    available, bf16, want):
    assert plan(engine, precision, device, deploy, available, bf16) == want


@pytest.mark.parametrize("engine, precision, device, deploy, available, bf16, message", [
    ("openvino", "fp32", "gpu:0", RECORDS, ALL, False, "run on the CPU here"),
    ("openvino", "bf16", "cpu", RECORDS, ALL, False, "native bf16"),
    ("paddle", "int8", "cpu", {**RECORDS, **INT8}, ALL, False, "use engine=openvino"),
    ("openvino", "int8", "cpu", RECORDS, ALL, False, "no int8 version"),
    ("openvino", "int8", "cpu", {"int8": {"accepted": False, "drop": 3.1, "max_drop": 1.0}},
     ALL, False, "lost 3.10 mIoU points"),
    ("onnxruntime", "fp32", "cpu", RECORDS, ALL, False, "no ONNX export"),
    ("openvino", "fp32", "cpu", RECORDS, {"paddle"}, False, "not installed"),
    ("tensorflow", "fp32", "cpu", RECORDS, ALL, False, "engines are"),
])
def test_impossible_choices_say_why(engine, precision, device, deploy, available, bf16,
                                    message):
    with pytest.raises(ConfigError, match=message):
        plan(engine, precision, device, deploy, available, bf16)


def test_the_gpu_engine_takes_tensorrt(monkeypatch):
    """No GPU is lent here: check what segx asks of Paddle Inference on one."""
    from segx.backend import predictor as E
    calls = []

    class FakeConfig:
        def __init__(self, *a):
            pass

        def __getattr__(self, name):
            return lambda *a, **k: calls.append(name)

    class FakePredictor:
        def get_input_names(self):
            return ["x"]

        get_output_names = get_input_names

        def get_input_handle(self, name):
            return None

        get_output_handle = get_input_handle

    monkeypatch.setattr(E.paddle.inference, "Config", FakeConfig)
    monkeypatch.setattr(E.paddle.inference, "create_predictor", lambda c: FakePredictor())
    E.PaddleInference(Path("m.pdmodel"), Path("m.pdiparams"), "gpu:1", tensorrt=True)
    assert "enable_use_gpu" in calls and "enable_tensorrt_engine" in calls
    assert "set_trt_dynamic_shape_info" in calls and "enable_mkldnn" not in calls


# ----------------------------------------------------------------------------- agreement
def _families() -> list[str]:
    smallest: dict[str, tuple[float, str]] = {}
    for name in list_models():
        info = model_info(name)
        if info.no_static_export:
            continue
        key = (info.family, info.architecture)
        size = info.params_m or 1e9
        if key not in smallest or size < smallest[key][0]:
            smallest[key] = (size, name)
    return sorted(name for _, name in smallest.values())


# OpenVINO 2026.4's Paddle reader cannot convert the flow-warping division of paddleseg's two
# (a float32 flow divided by the int32 shape); export records that, and auto leaves OpenVINO out
# for them (docs/deployment.md). segx's own flow warp divides by the shape cast to float32,
# which OpenVINO reads.
OPENVINO_CANNOT_READ_PADDLESEG = {"DecoupledSegNet-R50", "SFNet-R18"}
# OpenVINO 2026.4's Paddle reader cannot convert ISANet's padding by a shape tensor in a .pdmodel
# ("Fail to convert pad3d"): recorded, auto uses Paddle; from a Paddle 3 export it reads the ONNX
OPENVINO_CANNOT_READ_PDMODEL = {"ISANet-R50"}
# paddle2onnx 2.1 cannot convert these PIR programs ("the 0th elementwise MUST be
# ir::FloatAttribute", their upsampling by a scale factor): on Paddle 3 they deploy on Paddle
# Inference (docs/deployment.md)
PADDLE2ONNX_CANNOT_CONVERT_PIR = {"Attention_U-Net", "U-Net++", "U-Net3+"}


@pytest.mark.slow
@pytest.mark.skipif(not installed("openvino"), reason="needs openvino")
@pytest.mark.parametrize("name", _families())
def test_openvino_agrees_with_paddle_on_every_exportable_family(name, tmp_path):
    from segx import backend
    from segx.backend.predictor import PaddleInference, export_static
    from segx.backend.optim import seed_everything
    from segx.inference.engines import OpenVINOEngine
    from segx.export.exporter import engine_records
    from segx.inference.engines import openvino_source
    seed_everything(0)
    net = backend.build_model(load_model_config(name)["Arch"], 3)
    net.eval()
    program = export_static(net, tmp_path / "inference", [1, 3, 128, 128], "none")
    deploy = {"model": program.name, "params": "inference.pdiparams", "onednn_resize": False}
    if program.suffix == ".json":  # Paddle 3: OpenVINO reads the PIR program's ONNX
        from segx.backend.onnx import converter_available, paddle_to_onnx
        if not converter_available():
            pytest.skip("OpenVINO reads a PIR program only through ONNX; no paddle2onnx here")
        from segx.backend.onnx import ConversionError
        try:
            paddle_to_onnx(program, tmp_path / "inference.onnx")
            deploy["onnx"] = {"model": "inference.onnx", "input_shape": [1, 3, 128, 128]}
        except ConversionError as exc:  # export records it (onnx_skipped); auto uses Paddle
            assert name in PADDLE2ONNX_CANNOT_CONVERT_PIR, exc.message
            x = np.zeros((1, 3, 128, 128), np.float32)
            record = engine_records(tmp_path, x, "none", deploy)["openvino"]
            assert record["exact"] is False and "cannot read a PIR" in record["error"]
            return
    x = np.random.default_rng(0).normal(0, 1, (1, 3, 128, 128)).astype(np.float32)
    record = engine_records(tmp_path, x, "none", deploy)["openvino"]
    from segx.backend import nets
    cannot = OPENVINO_CANNOT_READ_PDMODEL | (OPENVINO_CANNOT_READ_PADDLESEG
                                             if not nets.prefer_own() else set())
    if name in cannot and program.suffix == ".pdmodel":
        assert record["exact"] is False and "Fail to convert" in record["error"]
        return
    # on the ONNX of a PIR program a near-tie of random logits may flip a pixel (ANN): export
    # then records "not exact" and auto leaves OpenVINO out; the logits must still agree
    assert record["exact"] or program.suffix == ".json", record
    ref = PaddleInference(program, tmp_path / "inference.pdiparams")(x)
    out = OpenVINOEngine(tmp_path / openvino_source(deploy)[0], "fp32", None)(x)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= 1e-2 * (np.abs(ref).max() or 1.0), name


def test_an_engine_export_found_unusable_is_refused_with_its_reason():
    deploy = {"engines": {"paddle": {"exact": True, "ms": 9},
                          "openvino": {"exact": False, "error": "Fail to convert elementwise_div"}}}
    assert plan("auto", "fp32", "cpu", deploy, ALL, False) == Plan("paddle", "fp32")
    with pytest.raises(ConfigError, match="cannot run this model.*elementwise_div"):
        plan("openvino", "fp32", "cpu", deploy, ALL, False)


# ----------------------------------------------------------------------------- int8, ONNX
@pytest.fixture(scope="module")
def exported(run_dir, data, tmp_path_factory) -> Path:
    """The test run exported for 128 x 128 inputs with ONNX and int8 (its drop refused)."""
    from segx.backend.onnx import converter_available
    if not converter_available():  # Python 3.13: test_stack.py checks the route is named
        pytest.skip("no paddle2onnx here")
    out = tmp_path_factory.mktemp("deploy") / "out"
    shutil.copytree(run_dir, out, ignore=shutil.ignore_patterns("iter_*"))
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=export", "-o", f"Global.output={out}",
                "-o", f"Global.dataset_dir={data}", "-o", "Export.quantize=int8",
                "-o", "Export.formats=[paddle,onnx]", "-o", "Export.input_shape=[1,3,128,128]",
                "-o", "Export.int8_max_drop=-100")  # a threshold nothing can meet
    assert r.returncode == 0, r.stderr
    assert "REFUSED" in r.stdout
    return out


def test_the_int8_export_records_both_mious_and_its_refusal(exported):
    result = json.loads((exported / "export_result.json").read_text())
    q = result["int8"]
    assert 0 <= q["miou_int8"] <= 1 and 0 <= q["miou_fp32"] <= 1
    assert q["drop"] == pytest.approx(100 * (q["miou_fp32"] - q["miou_int8"]))
    assert q["accepted"] is False and len(q["per_class"]) == 3
    from segx.config import parse_yaml
    info = parse_yaml((exported / "best_model" / "inference" / "inference.yml").read_text())
    assert info["Deploy"]["int8"]["accepted"] is False and info["Deploy"]["int8"]["ms"] > 0
    assert (exported / "best_model" / "inference" / "inference_int8.xml").is_file()
    assert set(info["Deploy"]["engines"]) == {"paddle", "openvino", "onnxruntime"}
    from segx import create_model
    with pytest.raises(ConfigError, match="does not use it"):
        create_model(exported, precision="int8")  # the run folder reaches its int8 export
    with create_model(exported, precision="auto") as m:
        assert m.engine.endswith("fp32")  # auto never uses a refused int8 model


def test_onnx_agrees_with_paddle_and_takes_any_size(exported, data):
    from segx import create_model
    images = [str(data / "images" / "000.jpg"), str(data / "images" / "010.jpg")]  # 64², 96x64
    preds = {}
    for engine in ("paddle", "onnxruntime", "openvino"):
        with create_model(exported, engine=engine) as m:
            preds[engine] = [r.pred for r in m.predict(images)]
            assert m.engine == f"{engine}-fp32" or m.engine.startswith("paddle-")
    for engine in ("onnxruntime", "openvino"):
        for a, b in zip(preds[engine], preds["paddle"]):
            assert a.shape == b.shape and (a == b).mean() >= 0.999
    assert preds["paddle"][1].shape == (64, 96)


def test_evaluate_measures_the_deployed_form(exported, data, tmp_path):
    runs = {}
    for engine, precision in (("paddle", "fp32"), ("openvino", "int8")):
        out = tmp_path / f"{engine}{precision}"
        args = ["-c", "PP-LiteSeg-T", "-o", "Global.mode=evaluate", "-o",
                f"Global.dataset_dir={data}", "-o", f"Global.output={out}", "-o",
                f"Evaluate.weight_path={exported / 'best_model' / 'inference'}", "-o",
                f"Evaluate.engine={engine}", "-o", f"Evaluate.precision={precision}"]
        r = run_cli(*args)
        if precision == "int8":  # refused: never silently used
            assert r.returncode == 2 and "does not use it" in r.stderr
            continue
        assert r.returncode == 0, r.stderr
        runs[engine] = json.loads((out / "evaluate_result.json").read_text())
    q = json.loads((exported / "export_result.json").read_text())["int8"]
    assert runs["paddle"]["metrics"]["mIoU"] == pytest.approx(q["miou_fp32"], abs=0.02)
    assert "(paddle-" in runs["paddle"]["weight_path"]


# ----------------------------------------------------------------------------- without paddle
BLOCK = textwrap.dedent("""
    import sys
    for name in ("paddle", "paddleseg", "paddle2onnx"):
        sys.modules[name] = None  # import paddle now fails, as on a machine without it
""")


def test_predict_and_serve_without_paddle(exported, data):
    code = BLOCK + textwrap.dedent(f"""
        import base64, threading, time, socket
        import httpx, uvicorn
        from segx import create_model
        from segx.pipelines import load_pipeline_config
        from segx.apps.serving.app import create_app
        with create_model({str(exported)!r}) as m:
            res = next(m.predict({str(data / 'images' / '000.jpg')!r}))
            print("engine", m.engine, res.pred.shape)
        config = load_pipeline_config("semantic_segmentation",
                                      model={str(exported)!r})
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
        srv = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port,
                                            log_level="warning"))
        threading.Thread(target=srv.run, daemon=True).start()
        url = f"http://127.0.0.1:{{port}}"
        for _ in range(600):
            try:
                httpx.get(url + "/health"); break
            except httpx.HTTPError:
                time.sleep(0.1)
        image = base64.b64encode(open({str(data / 'images' / '000.jpg')!r}, "rb").read())
        r = httpx.post(url + "/semantic-segmentation", json={{"image": image.decode()}},
                       timeout=60)
        print("served", r.status_code, r.json()["result"]["size"])
        srv.should_exit = True
        print("paddle imported:", any(k.split(".")[0] in ("paddle", "paddleseg")
                                      and v is not None for k, v in sys.modules.items()))
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "engine openvino-fp32 (64, 64)" in r.stdout or "engine onnxruntime-fp32" in r.stdout
    assert "served 200 [64, 64]" in r.stdout and "paddle imported: False" in r.stdout
