"""train mode: segx's own loop over PaddleSeg models, losses and transforms.

Output layout (the reference's): ``config.yaml`` (effective config, class count filled in),
``train.log``, ``train_result.json``, ``iter_N/{model.pdparams, model.pdopt, model.pdstates}``,
``best_model/{model.pdparams, model.pdstates, inference/}``, VisualDL records and
``training_curves.png`` and ``train_report.html`` (the curves in one page, rewritten at each
evaluation; the last line printed names it).

Reproducibility: data order and augmentation are pure functions of (seed, iteration), and the
paddle generator is re-seeded every iteration, so a resumed run ends with the same weights as an
uninterrupted one. Checkpoints are written to a temporary folder and renamed into place. The
work is :mod:`segx.training`.
"""
from __future__ import annotations

import zlib  # noqa: F401  (must precede paddle)

from pathlib import Path

from segx.config import Config
from segx.training import train
from segx.training.report_page import PAGE


def run(cfg: Config) -> dict:
    report = train(cfg)
    page = Path(cfg.get("Global.output")) / PAGE
    if page.is_file():
        print(f"report: {page} (open it in a browser)")
        report = {**report, "report": PAGE}
    return report
