"""predict mode: run a model on ``Predict.input`` and save every result in ``Global.output``.

The model is ``Predict.model_dir`` (an exported folder, a training output folder or a run's
``model.pdparams``); when it is not set, the official trained model of ``-c``'s name
(``create_model(name)``). For each image, ``<name>.png`` (class ids as a palette PNG),
``<name>_overlay.jpg`` and ``<name>.json`` (compact) are written; names that repeat (the same
file name in two folders) get a ``_<k>`` suffix; an output folder where a result would replace
an input is refused before anything is written.
"""
from __future__ import annotations

from pathlib import Path

from segx.config import Config
from segx.utils.errors import ConfigError, WeightsError
from segx.inference.inputs import expand
from segx.api.model import create_model
from segx.utils.progress import Progress
from segx.inference.result import ResultSaver, SegResult


def _model(cfg: Config):
    value = cfg.get("Predict.model_dir") or cfg.get("Global.model")
    kwargs = dict(device=cfg.get("Global.device"), engine=cfg.get("Predict.engine"),
                  precision=cfg.get("Predict.precision"), batch_size=cfg.get("Predict.batch_size"),
                  onednn=cfg.get("Predict.onednn"), tensorrt=cfg.get("Predict.tensorrt"),
                  cpu_threads=cfg.get("Predict.cpu_threads"))
    try:
        return value, create_model(value, **kwargs)
    except WeightsError as exc:
        out = Path(cfg.get("Global.output"))
        near = sorted({str(p.parent) for p in out.glob("**/inference.yml")})[:5]
        if not near:
            raise
        raise WeightsError(f"{exc.message} Exported models under {out}: {', '.join(near)}.",
                           solution="pass one of them with -o Predict.model_dir=...") from None


def run(cfg: Config) -> dict:
    inputs = cfg.get("Predict.input")
    if not inputs:
        raise ConfigError("Predict.input is not set.",
                          solution="pass -o Predict.input=path/to/image_or_folder.")
    out = Path(cfg.get("Global.output"))
    todo = expand(inputs)
    saver = ResultSaver(out, protected=[name for name, src in todo if not isinstance(src, str)],
                        plain=cfg.get("Predict.plain_ids"))
    saver.check([SegResult.stem_for(name, k) for k, (name, _) in enumerate(todo)])
    model_dir, model = _model(cfg)
    progress = Progress("predicting", len(todo))
    saved = []
    with model:
        try:
            for res in model.predict(todo):  # expanded once, above
                files = saver.save(res)
                progress.print(res.summary())
                progress.update()
                saved.append({"input_path": res.input_path,
                              "files": [str(f.relative_to(out)) for f in files]})
        finally:
            progress.close()
    print(f"saved {len(saved)} result(s) to {out} ({model!r})")
    return {"model_dir": str(model_dir), "results": saved}
