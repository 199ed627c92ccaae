"""create_model(...).predict(): every input kind, mixed sizes, exactness, results and errors."""
from __future__ import annotations

import zlib  # noqa: F401

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from helpers import run_cli
from segx import SegxError, create_model, decode_pred


@pytest.fixture(scope="module")
def model(run_dir):
    m = create_model(run_dir, device="cpu")
    yield m
    m.close()


@pytest.fixture(scope="module")
def images(data, tmp_path_factory) -> Path:
    """A nested folder with upper-case, TIFF, WebP, grey and RGBA files of mixed sizes."""
    root = tmp_path_factory.mktemp("imgs")
    src = sorted((data / "images").glob("*.jpg"))
    (root / "sub").mkdir()
    shutil.copy(src[0], root / "A.JPG")
    Image.open(src[1]).save(root / "sub" / "b.PNG")
    Image.open(src[2]).save(root / "sub" / "c.tif")
    Image.open(src[3]).save(root / "d.webp")
    Image.open(src[4]).convert("L").save(root / "grey.png")
    Image.open(src[10]).convert("RGBA").save(root / "rgba.png")  # 96 x 64
    (root / "notes.txt").write_text("not an image")
    return root


def reference(run_dir, rgb: np.ndarray) -> np.ndarray:
    """The training-time (dynamic graph) model's argmax for an RGB image."""
    from segx.backend import data as D
    from segx.backend.predictor import predict_logits
    from segx.runs.folder import build_network, run_config
    weights = run_dir / "best_model" / "model.pdparams"
    net = build_network(run_config(weights), weights)
    x = D.apply_transforms(D.build_transforms([{"type": "Normalize"}], "t"), rgb, None)["img"]
    return predict_logits(net, x[None])[0].argmax(0)


def test_folder_recursive_case_insensitive_mixed_sizes(model, images):
    results = list(model.predict(images, batch_size=4))
    names = [Path(r.input_path).name for r in results]
    assert names == ["A.JPG", "d.webp", "grey.png", "rgba.png", "b.PNG", "c.tif"]
    for r in results:
        img = cv2.imread(r.input_path, cv2.IMREAD_COLOR)
        assert r.pred.shape == img.shape[:2] and r.pred.dtype == np.int32
    assert {r.pred.shape for r in results} == {(64, 64), (64, 96)}


def test_batch_size_does_not_change_results(model, images):
    one = [r.pred for r in model.predict(images, batch_size=1)]
    four = [r.pred for r in model.predict(images, batch_size=4)]
    assert all(np.array_equal(a, b) for a, b in zip(one, four))


def test_static_engine_matches_training_model(model, run_dir, data):
    for path in sorted((data / "images").glob("*.jpg"))[:3] + [data / "images" / "011.jpg"]:
        res = next(model.predict(str(path)))
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        assert (res.pred == reference(run_dir, rgb)).mean() >= 0.999


def test_pdparams_uses_dynamic_graph_exactly(run_dir, data):
    m = create_model(run_dir / "best_model" / "model.pdparams", device="cpu")
    assert m.engine == "dynamic"
    path = data / "images" / "000.jpg"
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(next(m.predict(path)).pred, reference(run_dir, rgb))


def test_arrays_and_lists(model, data):
    path = data / "images" / "000.jpg"
    bgr = cv2.imread(str(path))
    from_file = next(model.predict(str(path))).pred
    from_array = next(model.predict(bgr)).pred
    assert np.array_equal(from_file, from_array)  # BGR arrays, as OpenCV gives them
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    results = list(model([bgra, str(path), grey, bgr[:40, :50]], batch_size=3))
    assert [r.input_path for r in results] == [None, str(path), None, None]
    assert np.array_equal(results[0].pred, from_file)
    assert results[2].pred.shape == (64, 64) and results[3].pred.shape == (40, 50)
    assert [r.name for r in results] == ["array_0", "000", "array_2", "array_3"]


def test_url_input_and_offline_error(model, data):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(data))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/images/000.jpg"
        res = next(model.predict(url))
        assert res.input_path == url and res.name == "000"
        assert np.array_equal(res.pred, next(model.predict(data / "images" / "000.jpg")).pred)
    finally:
        server.shutdown()
    with pytest.raises(SegxError, match="cannot fetch http://127.0.0.1:9/x.jpg"):
        next(model.predict("http://127.0.0.1:9/x.jpg"))


def test_result_views_and_savers(model, data, tmp_path):
    res = next(model.predict(data / "images" / "000.jpg"))
    round_trip = json.loads(json.dumps(res.json))
    assert np.array_equal(decode_pred(round_trip["pred"]), res.pred)
    assert round_trip["input_path"].endswith("000.jpg")
    assert sum(res.class_pixels.values()) == res.pred.size
    files = res.save_to_img(tmp_path)
    png = Image.open(files[0])
    assert files[0].name == "000.png" and png.format == "PNG" and png.mode == "P"
    assert np.array_equal(np.asarray(png), res.pred)
    assert Image.open(files[1]).format == "JPEG" and files[1].name == "000_overlay.jpg"
    named = res.save_to_img(tmp_path / "custom.jpg")[0]
    assert named.name == "custom.png" and Image.open(named).format == "PNG"
    compact = res.save_to_json(tmp_path)
    full = res.save_to_json(tmp_path / "full.json", full=True)
    ref = json.loads(full.read_text())
    assert set(ref) == {"input_path", "pred"} and np.array(ref["pred"]).shape == (1, 64, 64)
    assert np.array_equal(decode_pred(ref["pred"]), res.pred)
    assert compact.stat().st_size < full.stat().st_size
    assert "background" in str(res) and "%" in str(res) and "[[" not in str(res)


@pytest.mark.parametrize("bad, message", [
    ("missing.jpg", "does not exist"),
    ("notes.txt", r"notes.txt:1: image 'not an image' does not exist"),  # .txt: a list file
    (np.zeros((4, 4, 5), np.uint8), "is not an image"),
    (3.5, "cannot predict on a float"),
])
def test_bad_inputs_name_the_problem(model, images, bad, message):
    if isinstance(bad, str):
        bad = str(images / bad)
    with pytest.raises(SegxError, match=message):
        list(model.predict(bad))


def test_unknown_model_and_empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGX_HOME", str(tmp_path))
    monkeypatch.setenv("SEGX_WEIGHTS_MIRROR", "http://127.0.0.1:9")  # offline
    with pytest.raises(SegxError, match=f"cannot download .* put it at {tmp_path / 'weights'}"):
        create_model("PP-LiteSeg-T")  # offline: the official weights cannot be fetched
    with pytest.raises(SegxError, match="neither a file"):
        create_model("no-such-model")


def test_cached_model_name_resolves(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGX_HOME", str(tmp_path))
    shutil.copytree(run_dir / "best_model" / "inference", tmp_path / "models" / "PP-LiteSeg-T")
    assert create_model("PP-LiteSeg-T", device="cpu").class_names == ["background", "disc", "box"]


def test_augmented_prediction_needs_scores(run_dir, tmp_path, data):
    with pytest.raises(SegxError, match="output_op=softmax"):
        create_model(run_dir, device="cpu", flip_horizontal=True)
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=export", "-o", f"Global.output={out}",
                "-o", "Export.output_op=softmax")
    assert r.returncode == 0, r.stderr
    m = create_model(out, device="cpu", flip_horizontal=True, scales=[0.75, 1.0],
                     crop_size=[48, 48], stride=[32, 32])
    res = next(m.predict(data / "images" / "011.jpg"))
    assert res.pred.shape == (128, 64)


def test_predict_mode_saves_every_result(run_dir, images, tmp_path):
    out = tmp_path / "pred"
    shutil.copytree(images, tmp_path / "in" / "one")
    shutil.copytree(images, tmp_path / "in" / "two")  # the same names twice
    r = run_cli("-c", "PP-LiteSeg-T", "-o", "Global.mode=predict", "-o", f"Global.output={out}",
                "-o", f"Predict.model_dir={run_dir / 'best_model' / 'inference'}",
                "-o", f"Predict.input={tmp_path / 'in'}", "-o", "Predict.batch_size=4")
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "predict_result.json").read_text())
    assert len(res["results"]) == 12
    assert len(list(out.glob("*.json"))) == 12 + 1  # + predict_result.json
    assert (out / "A.png").is_file() and (out / "A_1.png").is_file()
    assert r.stdout.count("%") >= 12


def test_results_read_like_paddlex_dicts(model, data):
    res = next(model.predict(data / "images" / "000.jpg"))
    assert res["pred"] is res.pred and res["input_path"] == res.input_path
    assert "pred" in res and "nope" not in res
    as_dict = dict(res)
    assert set(as_dict) == {"input_path", "pred", "class_names", "speed"}
    assert np.array_equal(as_dict["pred"], res.pred)
    with pytest.raises(KeyError, match="a SegResult has"):
        res["img_path"]
    speed = res.speed
    assert set(speed) == {"preprocess_ms", "inference_ms", "postprocess_ms"}
    assert all(v >= 0 for v in speed.values()) and speed["inference_ms"] > 0
    assert res.json["speed"]["inference_ms"] > 0


def test_create_model_has_an_explicit_signature_and_is_a_context_manager(run_dir, data):
    import inspect
    params = inspect.signature(create_model).parameters
    assert not any(p.kind == p.VAR_KEYWORD for p in params.values())
    assert {"device", "engine", "batch_size", "cpu_threads", "scales", "crop_size"} <= set(params)
    assert all(params[k].kind == params[k].KEYWORD_ONLY for k in params if k != "model")
    for name in params:
        if name != "model":
            assert f"{name}:" in create_model.__doc__, name
    with create_model(run_dir, device="cpu") as m:
        assert next(m.predict(data / "images" / "000.jpg")).pred.shape == (64, 64)
    assert m._pool._shutdown


def test_one_batching_routine_groups_equal_sizes_in_input_order():
    from segx.inference.evaluation import infer_by_size
    inputs = [np.full((3, 4, 6), k, np.float32) for k in range(3)] + \
        [np.full((3, 8, 6), 3, np.float32), np.full((3, 4, 6), 4, np.float32)]
    calls = []

    def predict(batch, ks):
        calls.append((batch.shape, list(ks)))
        return batch[:, 0, 0, 0]

    got = {k: float(o) for ks, out, _ in infer_by_size(predict, inputs) for k, o in zip(ks, out)}
    assert calls == [((4, 3, 4, 6), [0, 1, 2, 4]), ((1, 3, 8, 6), [3])]
    assert got == {k: float(k) for k in range(5)}  # each output goes back to its own input


def test_dynamic_graph_class_scores_agree_with_its_class_map(data):
    """What evaluate asks for (class scores) and what predict uses (a class map in paddle) are
    one model: the argmax of the scores is the map."""
    from segx.imaging.images import read_image
    from segx.api.model import SegModel
    weights = Path(__file__).parent / "fixtures" / "run_v1" / "best_model" / "model.pdparams"
    with SegModel(weights, device="cpu", class_scores=True) as scored, \
            SegModel(weights, device="cpu") as plain:
        img, _ = plain.preprocess(read_image(data / "images" / "000.jpg"))
        batch = np.stack([img, img])
        scores, labels = scored.infer(batch), plain.infer(batch)
    assert scores.shape == (2, 3, *img.shape[1:]) and labels.shape == (2, *img.shape[1:])
    assert (scores.argmax(1) == labels).all()
