"""predict mode: run an exported model on ``Predict.input`` and save every result.

For each image, ``<Global.output>/<name>.png`` (class ids as a palette PNG),
``<name>_overlay.jpg`` and ``<name>.json`` (compact) are written; names that repeat (the same
file name in two folders) get a ``_<k>`` suffix. A summary line per image is printed.
"""
from __future__ import annotations

import sys
from pathlib import Path

from segx.config import Config
from segx.errors import ConfigError


def run(cfg: Config) -> dict:
    from segx.predictor import create_model, iter_inputs
    from segx.result import ResultSaver
    inputs = cfg.get("Predict.input")
    if not inputs:
        raise ConfigError("Predict.input is not set.",
                          solution="pass -o Predict.input=path/to/image_or_folder.")
    out = Path(cfg.get("Global.output"))
    model_dir = cfg.get("Predict.model_dir") or out / "best_model" / "inference"
    model = create_model(model_dir, cfg.get("Global.device"), cfg.get("Predict.batch_size"),
                         run_mode=cfg.get("Predict.run_mode"),
                         cpu_threads=cfg.get("Predict.cpu_threads"))
    total = len(iter_inputs(inputs))
    bar = None
    if sys.stderr.isatty():
        from rich.progress import Progress
        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("predicting", total=total)
    saver = ResultSaver(out)
    saved = []
    try:
        for res in model.predict(inputs):
            files = saver.save(res)
            line = res.summary()
            if bar:
                bar.console.print(line, markup=False, highlight=False)
                bar.advance(task)
            else:
                print(line, flush=True)
            saved.append({"input_path": res.input_path,
                          "files": [str(f.relative_to(out)) for f in files]})
    finally:
        if bar:
            bar.stop()
        model.close()
    print(f"saved {len(saved)} result(s) to {out} ({model!r})")
    return {"model_dir": str(model_dir), "results": saved}
