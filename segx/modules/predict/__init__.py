"""predict mode: run an exported model on ``Predict.input`` and save every result.

For each image, ``<Global.output>/<name>.png`` (class ids as a palette PNG),
``<name>_overlay.jpg`` and ``<name>.json`` (compact) are written; names that repeat (the same
file name in two folders) get a ``_<k>`` suffix. A summary line per image is printed.
"""
from __future__ import annotations

from pathlib import Path

from segx.config import Config
from segx.errors import ConfigError
from segx.progress import Progress


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
    progress = Progress("predicting", len(iter_inputs(inputs)))
    saver = ResultSaver(out)
    saved = []
    try:
        for res in model.predict(inputs):
            files = saver.save(res)
            progress.print(res.summary())
            progress.update()
            saved.append({"input_path": res.input_path,
                          "files": [str(f.relative_to(out)) for f in files]})
    finally:
        progress.close()
        model.close()
    print(f"saved {len(saved)} result(s) to {out} ({model!r})")
    return {"model_dir": str(model_dir), "results": saved}
