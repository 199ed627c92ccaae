"""Serving throughput against the direct predictor, side by side in one run.

    python bench/serve.py [--images 24] [--size 512]

PP-LiteSeg-T (random weights, exported) is served on 127.0.0.1. The direct figure is
create_model(...).predict over the same JPEG files, one by one (images/s). The served figure
is good requests/s for the same images sent as base64 by 1, 4 and 8 concurrent clients (answers
are read in full), with one bad request (a truncated PNG the server must refuse with 400) among
every eight, so each batch of eight holds one image that must fail alone. Prints each and its ratio to direct
(target at concurrency 8: >= 0.7).
"""
from __future__ import annotations

import zlib  # noqa: F401

import argparse
import base64
import io
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def make_run(root: Path) -> Path:
    """A fake training run (config.yaml + random weights, 19 classes) exported to
    root/run/inference."""
    from segx import backend
    from segx.backend.optim import seed_everything
    from segx.exporting import export_run
    from segx.fileio import write_text
    from segx.registry import load_model_config
    cfg = load_model_config("PP-LiteSeg-T", ["Train.num_classes=19",
                                             f"Global.output={root / 'run'}"])
    run = root / "run"
    run.mkdir(parents=True)
    write_text(run / "config.yaml", cfg.to_yaml())
    seed_everything(0)
    backend.save(backend.build_model(cfg["Arch"], 19).state_dict(), run / "model.pdparams")
    export_run(run / "config.yaml", run / "model.pdparams", run / "inference")
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    import httpx
    import uvicorn
    from segx import create_model
    from segx.pipelines import load_pipeline_config
    from segx.serving import create_app
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = make_run(root)
        rng = np.random.default_rng(0)
        files = []
        for k in range(args.images):
            path = root / f"{k}.jpg"
            Image.fromarray(rng.integers(0, 255, (args.size, args.size, 3), np.uint8)).save(
                path, quality=90)
            files.append(path)
        payloads = [{"image": base64.b64encode(p.read_bytes()).decode()} for p in files]
        buf = io.BytesIO()
        Image.new("RGB", (64, 64)).save(buf, format="PNG")
        bad = {"image": base64.b64encode(buf.getvalue()[:40]).decode()}  # a truncated upload
        mixed = [x for k, p in enumerate(payloads) for x in ([p, bad] if k % 7 == 6 else [p])]

        model = create_model(run / "inference", device="cpu")
        list(model.predict([str(f) for f in files[:2]]))  # warm-up
        t0 = time.perf_counter()
        for f in files:
            next(model.predict(str(f)))
        direct = len(files) / (time.perf_counter() - t0)
        model.close()

        config = load_pipeline_config("semantic_segmentation", model=str(run / "inference"),
                                      device="cpu")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port,
                                               log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        while True:
            try:
                httpx.get(f"{url}/health")
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        print(f"PP-LiteSeg-T, {args.size}x{args.size}, {args.images} images, CPU")
        print(f"direct predictor      : {direct:6.2f} images/s")
        with httpx.Client(timeout=120) as client:
            def send(payload):
                r = client.post(f"{url}/semantic-segmentation", json=payload)
                assert r.status_code == (400 if payload is bad else 200), r.text[:200]
                return len(r.content)

            send(payloads[0])  # warm-up
            for c in (1, 4, 8):
                with ThreadPoolExecutor(c) as pool:
                    t0 = time.perf_counter()
                    list(pool.map(send, mixed))
                    rps = len(payloads) / (time.perf_counter() - t0)
                print(f"served, concurrency {c} : {rps:6.2f} good requests/s  ratio "
                      f"{rps / direct:.2f}  ({len(mixed) - len(payloads)} bad requests mixed in)")
        server.should_exit = True
        thread.join()
    print("target: ratio >= 0.7 at concurrency 8")


if __name__ == "__main__":
    main()
