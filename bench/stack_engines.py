"""Each inference engine's speed on each supported stack, side by side in one run.

    python bench/stack_engines.py .venv-paddle26/bin/python .venv/bin/python .venv313/bin/python

For each interpreter (one process each): the v2 fixture run (PP-LiteSeg-T) is exported the way
that stack exports (Paddle 2.6: ``inference.pdmodel``; Paddle 3: ``inference.json`` plus ONNX where
paddle2onnx exists), then every engine that can read the export runs a 1 x 3 x 512 x 512 batch,
best of 5 after one warm-up, and its class map is compared with the Paddle engine's. Prints one
row per stack and engine with the CPU named (docs/install.md keeps the figures).
"""
from __future__ import annotations

import zlib  # noqa: F401

import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SIZE = 512


def measure() -> dict:
    """This interpreter's export and engines (run in the child)."""
    import numpy as np
    import paddle
    from segx.inference.engines import installed, open_engine, read_deploy_info
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(ROOT / "tests" / "fixtures" / "run_v2", run)
        subprocess.run([sys.executable, str(ROOT / "main.py"), "-c", "PP-LiteSeg-T", "-o",
                        "Global.mode=export", "-o", f"Global.output={run}"], check=True,
                       capture_output=True)
        folder = run / "best_model" / "inference"
        info = read_deploy_info(folder)
        x = np.random.default_rng(0).normal(0, 1, (1, 3, SIZE, SIZE)).astype(np.float32)
        rows, ref = {}, None
        for name in ("paddle", "openvino", "onnxruntime"):
            if not installed(name):
                continue
            try:
                engine, label = open_engine(folder, info, name)
            except Exception as exc:  # noqa: BLE001 - an engine this export cannot use
                rows[name] = {"error": str(exc).splitlines()[0][:120]}
                continue
            out = engine(x)
            ref = out if ref is None else ref
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                engine(x)
                best = min(best, time.perf_counter() - t0)
            rows[name] = {"engine": label, "ms": round(best * 1000, 1),
                          "same_as_paddle": float((out == ref).mean())}
    return {"python": platform.python_version(), "paddle": paddle.__version__,
            "numpy": np.__version__, "program": info["Deploy"]["model"],
            "onnx": "onnx" in info["Deploy"], "engines": rows}


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    if sys.argv[1:] == ["--child"]:
        print(json.dumps(measure()))
        return
    print(f"PP-LiteSeg-T (v2 fixture weights), 1x3x{SIZE}x{SIZE}, best of 5; CPU: {cpu()}")
    for py in sys.argv[1:]:
        out = subprocess.run([py, __file__, "--child"], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{py}: failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        stack = f"Python {r['python']}, Paddle {r['paddle']}, numpy {r['numpy']}"
        print(f"{stack}: exports {r['program']}{' + ONNX' if r['onnx'] else ''}")
        for name, e in r["engines"].items():
            print(f"  {name:<12} " + (f"cannot: {e['error']}" if "error" in e else
                                      f"{e['engine']:<18} {e['ms']:8.1f} ms  "
                                      f"same classes as paddle: {e['same_as_paddle']:.4f}"))


if __name__ == "__main__":
    main()
