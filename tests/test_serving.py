"""Pipelines and the HTTP service, offline, on a segx-exported model."""
from __future__ import annotations

import zlib  # noqa: F401

import base64
import io
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from helpers import run_cli
from segx import SegxError, create_model, create_pipeline
from segx.pipelines import load_pipeline_config


ROUTE_PATH = "/semantic-segmentation"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(app) -> tuple[str, object, threading.Thread]:
    """``app`` on a real uvicorn on 127.0.0.1: (its URL, the server, its thread) once
    ``/health`` answers (within 60 s)."""
    import uvicorn
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                        timeout_keep_alive=5))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return url, srv, thread
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


@pytest.fixture(scope="module")
def server(run_dir):
    from segx.apps.serving.app import create_app
    config = load_pipeline_config("semantic_segmentation", model=str(run_dir), device="cpu")
    config["Serving"]["max_body_mb"] = 1
    url, srv, thread = start_server(create_app(config))
    yield url
    srv.should_exit = True
    thread.join(timeout=30)
    assert not thread.is_alive()  # clean shutdown


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_pipeline_yields_create_model_results(run_dir, data):
    files = sorted(str(p) for p in (data / "images").glob("*.jpg"))[:5]
    pipe = create_pipeline("semantic_segmentation", model=str(run_dir), device="cpu",
                           batch_size=2)
    direct = create_model(run_dir, device="cpu")
    for a, b in zip(pipe(files), direct.predict(files)):
        assert a.input_path == b.input_path and np.array_equal(a.pred, b.pred)
    with pytest.raises(SegxError, match="no input given"):
        pipe.predict()
    with pytest.raises(SegxError, match="unknown option 'batchsize'"):
        create_pipeline("semantic_segmentation", batchsize=2)


def test_pipeline_command_offline_uses_yaml_input(run_dir, data, tmp_path):
    r = run_cli("--get_pipeline_config", "semantic_segmentation", "--save_path", str(tmp_path))
    assert r.returncode == 0
    yaml_path = tmp_path / "semantic_segmentation.yaml"
    text = yaml_path.read_text().replace("  input: null", f"  input: {data / 'images'}")
    text = text.replace("model: PP-LiteSeg-T", f"model: {run_dir}")
    yaml_path.write_text(text)
    again = run_cli("--get_pipeline_config", "semantic_segmentation", "--save_path",
                    str(tmp_path))
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert yaml_path.read_text() == text  # not overwritten
    out = tmp_path / "res"
    r = run_cli("--pipeline", str(yaml_path), "--save_path", str(out), "--device", "cpu",
                "--batch_size", "4")
    assert r.returncode == 0, r.stderr
    assert len(list(out.glob("*.png"))) == 12 and r.stdout.count("%") >= 12


def test_server_answers_a_concurrent_burst_like_create_model(server, run_dir, data):
    files = sorted((data / "images").glob("*.jpg"))
    model = create_model(run_dir, device="cpu")
    direct = {str(p): next(model.predict(str(p))).pred for p in files}
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda p: client.post(f"{server}/semantic-segmentation",
                                                      json={"image": b64(p)}), files * 2))
    for p, resp in zip(files * 2, answers):
        assert resp.status_code == 200
        body = resp.json()
        assert body["errorCode"] == 0 and body["errorMsg"] == "Success" and body["logId"]
        h, w = body["result"]["size"]
        label_map = np.array(body["result"]["labelMap"]).reshape(h, w)
        assert np.array_equal(label_map, direct[str(p)])
        png = Image.open(io.BytesIO(base64.b64decode(body["result"]["image"])))
        assert png.format == "PNG" and np.array_equal(np.asarray(png), label_map)


@pytest.mark.parametrize("payload, status, message", [
    (b"{not json", 400, "not valid JSON"),
    (b'{"img": "x"}', 422, 'string field "image"'),
    (b'{"image": "%%%not-base64"}', 400, "valid base64"),
    (b'{"image": "' + base64.b64encode(b"hello world") + b'"}', 415, "must be PNG, JPEG, BMP"),
    (b'{"image": "' + base64.b64encode(b"\x89PNG\r\n\x1a\n garbage") + b'"}', 400,
     "not a readable PNG"),
    (b'{"image": "http://127.0.0.1:9/x.jpg"}', 400, "image URLs are turned off"),
    (b'{"image": "' + b"A" * (2 * 1024 * 1024) + b'"}', 413, "larger than 1 MB"),
])
def test_client_mistakes_get_4xx_and_server_survives(server, data, payload, status, message):
    resp = httpx.post(f"{server}/semantic-segmentation", content=payload,
                      headers={"content-type": "application/json"}, timeout=30)
    assert resp.status_code == status
    assert message in resp.json()["errorMsg"] and resp.json()["errorCode"] == status
    ok = httpx.post(f"{server}/semantic-segmentation",
                    json={"image": b64(data / "images" / "000.jpg")}, timeout=30)
    assert ok.status_code == 200


def test_health_and_unknown_route(server):
    health = httpx.get(f"{server}/health").json()
    assert health["errorCode"] == 0 and health["errorMsg"] == "Healthy"
    assert ROUTE_PATH in httpx.get(f"{server}/openapi.json").json()["paths"]  # no key: open
    assert httpx.get(f"{server}/docs").status_code == 200
    missing = httpx.get(f"{server}/nope")
    assert missing.status_code == 404 and missing.json()["errorCode"] == 404


def test_a_pdparams_model_serves_from_the_engine_thread(run_dir, data):
    """The dynamic graph runs in the server's engine thread (paddle keeps its mode per
    thread)."""
    from segx.apps.serving.app import create_app
    config = load_pipeline_config("semantic_segmentation", device="cpu",
                                  model=str(run_dir / "best_model" / "model.pdparams"))
    url, srv, thread = start_server(create_app(config))
    try:
        r = httpx.post(f"{url}/semantic-segmentation", timeout=60,
                       json={"image": b64(data / "images" / "000.jpg")})
        assert r.status_code == 200 and r.json()["result"]["size"] == [64, 64]
    finally:
        srv.should_exit = True
        thread.join(timeout=30)


def test_the_start_up_line_names_model_engine_precision_and_classes(run_dir):
    from segx import create_model
    from segx.apps.serving.app import startup_line
    source = str(run_dir / "best_model" / "inference")
    with create_model(source, device="cpu", engine="paddle") as model:
        line = startup_line(model, source)
    assert line.startswith(f"serving PP-LiteSeg-T from {source} on cpu, engine paddle-")
    assert line.endswith("(fp32), 3 classes: background, disc, box")
