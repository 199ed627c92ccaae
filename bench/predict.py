"""Prediction speed of every engine and precision, side by side in one run.

    python bench/predict.py [--images 8] [--threads N] [--train-iters 300]

A PP-LiteSeg-T is trained by the bench (on ../shared/data/membrane when present, its 0/255
masks fixed by segx, else on a generated dataset), then exported once with int8 (calibrated on
its training images, evaluated on its validation images: the mIoU drop is printed), and once
more for a fixed size per resolution for ONNX Runtime. For 512x512 and 1024x512, batch 1 and 8,
measured in interleaved rounds (best round kept):

  * raw: each engine on preloaded, normalised tensors: Paddle Inference (oneDNN), OpenVINO fp32,
    bf16 (where the CPU has it natively), int8, ONNX Runtime, the plain Paddle kernels and the
    dynamic graph (the same class-map output);
  * end to end: create_model(...).predict on JPEG files (generated street scenes), per engine.

Targets: OpenVINO fp32 / Paddle >= 1.0 with identical class maps; int8 / fp32 >= 2.0 with its
mIoU drop; end to end >= 0.8 of each raw engine; static / dynamic >= 5 (issue 5).
"""
from __future__ import annotations

import zlib  # noqa: F401

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def rates(fns: dict, counts: dict, repeats: int = 5) -> dict:
    """Best images/s of each function, measured interleaved (one warm-up each, then ``repeats``
    rounds of all), so that a noisy machine slows every candidate alike."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: counts[name] / best[name] for name in fns}


def train_model(root: Path, iters: int) -> tuple[Path, Path]:
    """(run folder, dataset) of a PP-LiteSeg-T the bench trains."""
    from segx.apps.demo import make_demo_dataset
    from segx.modules.table import run
    from segx.zoo.registry import load_model_config
    if (ROOT.parent / "shared" / "data" / "membrane").is_dir():
        from finetune import RECIPE, membrane
        data, extra = membrane(root), [o.replace("SIZE", "256") for o in RECIPE]
    else:
        data, extra = make_demo_dataset(root / "demo", n=60, size=(256, 256)), []
    out = root / "run"
    run(load_model_config("PP-LiteSeg-T", [
        "Global.mode=train", f"Global.dataset_dir={data}", f"Global.output={out}",
        "Global.device=cpu", f"Train.epochs_iters={iters}", f"Train.eval_interval={iters}",
        "Train.pretrained=none", *extra]))
    return out, data


def export(run: Path, data: Path, target: Path, *overrides: str) -> dict:
    from segx.modules.table import run as run_mode
    from segx.zoo.registry import load_model_config
    return run_mode(load_model_config(str(run / "config.yaml"), [
        "Global.mode=export", f"Global.output={target}", f"Global.dataset_dir={data}",
        f"Export.weight_path={run / 'best_model' / 'model.pdparams'}", *overrides]))


def engines(folder: Path, onnx: Path, threads: int | None) -> dict:
    """Every engine and precision that can run here, as create_model objects."""
    from segx import create_model
    from segx.inference.engines import native_bf16
    kinds = {"paddle": dict(engine="paddle"), "plain": dict(engine="paddle", onednn=False),
             "openvino": dict(engine="openvino"), "int8": dict(engine="openvino",
                                                               precision="int8"),
             "onnxruntime": dict(engine="onnxruntime")}
    if native_bf16():
        kinds["bf16"] = dict(engine="openvino", precision="bf16")
    return {k: create_model(onnx if k == "onnxruntime" else folder, device="cpu",
                            cpu_threads=threads, **v) for k, v in kinds.items()}


def measure(models: dict, net, files: list, tensors: np.ndarray, bs: int) -> dict:
    from segx.backend.predictor import predict_labels
    n_dyn = min(bs * 2, len(files))

    def raw(m):
        return lambda: [m.infer(tensors[k:k + bs]) for k in range(0, len(tensors), bs)]

    def e2e(m):
        return lambda: list(m.predict(files, batch_size=bs))
    fns = {f"raw {k}": raw(m) for k, m in models.items()}
    fns.update({f"e2e {k}": e2e(m) for k, m in models.items() if k != "plain"})
    fns["dynamic"] = lambda: [predict_labels(net, tensors[k:k + bs]) for k in range(0, n_dyn, bs)]
    return rates(fns, {k: (n_dyn if k == "dynamic" else len(files)) for k in fns})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--train-iters", type=int, default=300)
    args = ap.parse_args()
    from segx.runs.folder import build_network, run_config
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run, data = train_model(root, args.train_iters)
        main_export = export(run, data, root / "exp", "Export.quantize=int8")
        q = main_export["int8"]
        net = build_network(run_config(run / "config.yaml"), run / "best_model" / "model.pdparams")
        print(f"PP-LiteSeg-T trained {args.train_iters} iterations on {data.name}; int8: val mIoU "
              f"{q['miou_int8']:.4f} vs fp32 {q['miou_fp32']:.4f} (drop {q['drop']:.2f} points, "
              f"{'accepted' if q['accepted'] else 'refused'}); {os.cpu_count()} cores, "
              f"{args.images} images per measurement")
        for w, h in ((512, 512), (1024, 512)):
            export(run, data, root / f"onnx{w}", "Export.formats=[paddle,onnx]",
                   f"Export.input_shape=[1,3,{h},{w}]")
            models = engines(root / "exp" / "inference", root / f"onnx{w}" / "inference",
                             args.threads)
            files = images(root / f"img{w}", w, h, args.images)
            tensors = np.stack([models["paddle"].preprocess(
                np.asarray(Image.open(f).convert("RGB")))[0] for f in files])
            same = (models["openvino"].infer(tensors) == models["paddle"].infer(tensors)).mean()
            for bs in (1, 8):
                report(w, h, bs, measure(models, net, files, tensors, bs), same)
            for m in models.values():
                m.close()
    print("targets: openvino/paddle >= 1.0 (identical maps), int8/fp32 >= 2.0, "
          "e2e/raw >= 0.8, static/dynamic >= 5")


def images(folder: Path, w: int, h: int, n: int) -> list[str]:
    """``n`` JPEG photos of generated street scenes at w x h (random noise would make JPEG
    decoding, part of end to end, several times slower than photos decode)."""
    from segx.apps.demo import make_street_dataset
    scenes = make_street_dataset(folder / "scenes", n=n, size=(h, w), seed=1)
    return sorted(str(p) for p in (scenes / "images").glob("*.jpg"))


def report(w: int, h: int, bs: int, r: dict, same: float) -> None:
    print(f"\n{w}x{h}, batch {bs}: images/s (raw engine | end to end, ratio)")
    for k in [x[4:] for x in r if x.startswith("raw ")]:
        e2e = r.get(f"e2e {k}")
        tail = f" | {e2e:6.1f} ({e2e / r[f'raw {k}']:.2f})" if e2e else ""
        print(f"  {k:<12} {r[f'raw {k}']:7.1f}{tail}")
    print(f"  dynamic      {r['dynamic']:7.1f}")
    print(f"  openvino/paddle {r['raw openvino'] / r['raw paddle']:.2f} (equal pixels "
          f"{same:.4%}), int8/openvino fp32 {r['raw int8'] / r['raw openvino']:.2f}"
          + (f", bf16/fp32 {r['raw bf16'] / r['raw openvino']:.2f}" if "raw bf16" in r else "")
          + f", paddle/dynamic {r['raw paddle'] / r['dynamic']:.1f}")


if __name__ == "__main__":
    main()
