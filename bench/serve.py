"""Serving throughput against the direct predictor, side by side in one run, and the server's
memory under a mixed load against its budget.

    python bench/serve.py [--images 24] [--size 512] [--memory-only] [--budget-mb 2048]

PP-LiteSeg-T (random weights, exported) is served on 127.0.0.1. The direct figure is
create_model(...).predict over the same JPEG files, one by one (images/s). The served figure
is good requests/s for the same images sent as base64 by 1, 4 and 8 concurrent clients (answers
are read in full), with one bad request (a truncated PNG the server must refuse with 400) among
every eight, so each batch of eight holds one image that must fail alone. Prints each and its ratio to direct
(target at concurrency 8: >= 0.7).

Memory: the same model served by a separate process with ``memory_budget_mb`` set; after a
warm-up its RSS is "the model". 16 clients then send a mix (base64 JPEGs of 0.25-9 MP in
jittered sizes, the largest over the budget, URLs of 2-4 MP images and of a small PNG padded to
18 MB, from a loopback site the server treats as public) and the server's peak RSS (VmHWM,
reset after the warm-up) is printed as a ratio to budget + model (target: <= 1.5).
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
    from segx.export.exporter import export_run
    from segx.utils.fileio import write_text
    from segx.zoo.registry import load_model_config
    cfg = load_model_config("PP-LiteSeg-T", ["Train.num_classes=19",
                                             f"Global.output={root / 'run'}"])
    run = root / "run"
    run.mkdir(parents=True)
    write_text(run / "config.yaml", cfg.to_yaml())
    seed_everything(0)
    backend.save(backend.build_model(cfg["Arch"], 19).state_dict(), run / "model.pdparams")
    export_run(run / "config.yaml", run / "model.pdparams", run / "inference")
    return run


LAUNCH = """
import sys, uvicorn
from segx.pipelines import load_pipeline_config
from segx.apps.serving.app import create_app
from segx.apps.serving.untrusted import UrlFetcher, blocked_address
config = load_pipeline_config("semantic_segmentation", model=sys.argv[1], device="cpu",
                              engine=sys.argv[4])
config["Serving"].update({"memory_budget_mb": float(sys.argv[3]), "max_pixels": 10**8})
fetcher = UrlFetcher(["*"], 20, 20 << 20,
                     blocked=lambda ip: str(ip) != "127.0.0.2" and blocked_address(ip))
uvicorn.run(create_app(config, fetcher=fetcher), host="127.0.0.1", port=int(sys.argv[2]),
            log_level="warning")
"""


def vm(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def jpeg(rng, w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(buf, format="JPEG",
                                                                     quality=90)
    return buf.getvalue()


def mixed_load(rng, site_url: str) -> list[dict]:
    """The requests of the memory check, shuffled: base64 images of many sizes and URLs."""
    sides = [(512, 512), (1000, 700), (1400, 1400), (2000, 1500), (3000, 3000)]
    items = []
    for k in range(40):
        w, h = sides[k % len(sides)]
        w, h = w + int(rng.integers(0, 64)), h + int(rng.integers(0, 64))  # new shapes
        items.append({"image": base64.b64encode(jpeg(rng, w, h)).decode()})
    for k in range(8):
        items.append({"image": f"{site_url}/{k}.jpg"})
        items.append({"image": f"{site_url}/fat.png"})
    return [items[k] for k in rng.permutation(len(items))]


def free_port() -> int:
    """A loopback port no one listens on (at the time of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, pause: float) -> None:
    """Poll ``url``/health every ``pause`` seconds until the server answers."""
    import httpx
    while True:
        try:
            httpx.get(f"{url}/health")
            return
        except httpx.HTTPError:
            time.sleep(pause)


def memory_check(run: Path, budget_mb: float, engine: str = "auto") -> None:
    import collections
    import subprocess

    import httpx
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    rng = np.random.default_rng(1)
    files = {f"/{k}.jpg": jpeg(rng, 1600 + 100 * k, 1400) for k in range(8)}
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, format="PNG")
    files["/fat.png"] = buf.getvalue()[:-12] + b"\0" * (18 << 20) + buf.getvalue()[-12:]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):  # noqa: N802
            data = files.get(self.path, b"")
            self.send_response(200 if data else 404)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except OSError:  # the server stopped reading (budget full): expected
                pass
    site = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(run / "inference"), str(port),
                             str(budget_mb), engine], cwd=Path(__file__).resolve().parents[1])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, 0.2)
        with httpx.Client(timeout=300) as client:
            client.post(f"{url}/semantic-segmentation",
                        json={"image": base64.b64encode(jpeg(rng, 256, 256)).decode()})
            model = vm(proc.pid, "VmRSS")
            Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
            load = mixed_load(rng, f"http://127.0.0.2:{site.server_address[1]}")
            with ThreadPoolExecutor(16) as pool:
                codes = list(pool.map(lambda p: client.post(f"{url}/semantic-segmentation",
                                                            json=p).status_code, load))
        peak = vm(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        proc.wait(30)
        site.shutdown()
    budget = budget_mb * 2**20
    print(f"memory ({engine} engine): model {model / 2**20:.0f} MB, budget {budget_mb:g} MB, peak RSS under the "
          f"mixed load {peak / 2**20:.0f} MB, answers {dict(collections.Counter(codes))}")
    print(f"peak RSS / (budget + model) = {peak / (budget + model):.2f}  (target <= 1.5)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--memory-only", action="store_true", help="only the memory check")
    ap.add_argument("--budget-mb", type=float, default=2048)
    ap.add_argument("--engine", default="auto", help="the engine of the memory check")
    args = ap.parse_args()
    if args.memory_only:
        with tempfile.TemporaryDirectory() as tmp:
            memory_check(make_run(Path(tmp)), args.budget_mb, args.engine)
        return
    import httpx
    import uvicorn
    from segx import create_model
    from segx.pipelines import load_pipeline_config
    from segx.apps.serving.app import create_app
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
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port,
                                               log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, 0.1)
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
        memory_check(run, args.budget_mb, args.engine)


if __name__ == "__main__":
    main()
