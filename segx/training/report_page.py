"""``<output>/train_report.html``: a training run's curves in one page that can be watched in a
browser while the run goes on (no VisualDL needed).

:class:`TrainReportHook` rewrites the page atomically at the start, after every evaluation and
at the end: loss and learning rate per logged iteration, mIoU and each class's IoU per
evaluation (inline SVG, no script), and a table of the evaluations. While training runs the
page reloads itself every ``REFRESH_S`` seconds; the final page does not. Each evaluation's
per-class IoU is kept in the checkpointed curves (``class_IoU``), so a resumed run's page keeps
the history; evaluations from a checkpoint written before this existed show no per-class IoU.
"""
from __future__ import annotations

from segx.utils import html_page as H
from segx.imaging.palette import palette
from segx.runs.folder import RunFolder
from segx.training.trainer import HookBase, Trainer

REFRESH_S = 60
PAGE = RunFolder.TRAIN_REPORT


def _rgb(cid: int) -> str:
    r, g, b = (int(c) for c in palette()[cid])
    return f"rgb({r},{g},{b})"


def _class_history(curves: dict, num: int) -> list[list[float | None]]:
    """Per class, its IoU at each evaluation (None where not recorded)."""
    rows = curves.get("class_IoU", [])
    return [[row[c] if row and c < len(row) else None for row in rows] for c in range(num)]


def charts(curves: dict, names: list[str], total: int) -> str:
    """The four charts, over iterations 0..total: loss, learning rate, mIoU, per-class IoU."""
    evals, per_class = curves["eval_iter"], _class_history(curves, len(names))
    x = (0, total)
    legend = " ".join(f"<span>{H.swatch(palette()[c])}{H.esc(n)}</span>"
                      for c, n in enumerate(names))
    return ("<div class=charts>"
            + H.line_chart("training loss", [("loss", curves["iter"], curves["loss"],
                                              "#1f5fbf")], x_range=x)
            + H.line_chart("learning rate", [("lr", curves["iter"], curves["lr"], "#8a5a00")],
                           x_range=x)
            + H.line_chart("validation mIoU", [("mIoU", evals, curves["mIoU"], "#137333")],
                           y_range=(0.0, 1.0), markers=True, x_range=x)
            + H.line_chart("per-class IoU", [(n, evals, per_class[c], _rgb(c))
                                             for c, n in enumerate(names)],
                           y_range=(0.0, 1.0), markers=True, x_range=x)
            + f"</div><p class=legend>{legend}</p>")


def evaluations_table(curves: dict, names: list[str]) -> str:
    """One row per evaluation: iteration, mIoU, each class's IoU."""
    per_class = _class_history(curves, len(names))
    rows = [[str(it), f"{m:.4f}", *("" if per_class[c][k] is None else f"{per_class[c][k]:.4f}"
                                    for c in range(len(names)))]
            for k, (it, m) in enumerate(zip(curves["eval_iter"], curves["mIoU"]))]
    return H.table(["iteration", "mIoU", *names], rows, numeric=range(len(names) + 2))


def build_page(trainer: Trainer, status: str) -> str:
    run, state = trainer.run, trainer.state
    curves = state["curves"]
    best = max(zip(curves["mIoU"], curves["eval_iter"]), default=None,
               key=lambda pair: (pair[0], -pair[1]))  # the first of equal scores, as training
    names = list(run.class_names) or [str(c) for c in range(run.num_classes)]
    facts = [["model", run.model_name], ["status", status],
             ["iteration", f"{trainer.iter} of {run.total}"],
             ["best mIoU", f"{best[0]:.4f} at iteration {best[1]}" if best
              else "no evaluation yet"],
             ["evaluations", str(len(curves["eval_iter"]))],
             ["classes", f"{run.num_classes}: {', '.join(names)}"],
             ["samples", f"{run.train_samples} train / {run.val_samples} val"]]
    folder = RunFolder(run.out)
    files = [folder.relative(p) for p in (folder.train_log, folder.train_result,
                                          folder.training_curves,
                                          folder.best_inference / "inference.yml")
             if p.is_file() or (p == folder.training_curves and status == "done")]
    links = " · ".join(H.link(p, p) for p in files)
    sections = [H.section("Run", H.table(["run", ""], facts) + f"<p>{links}</p>"),
                H.section("Curves", charts(curves, names, run.total), anchor="curves"),
                H.section("Evaluations", evaluations_table(curves, names),
                          anchor="evaluations")]
    live = status == "running"
    subtitle = (f"{run.model_name} · {status} · iteration {trainer.iter}/{run.total}"
                + (f" · this page reloads every {REFRESH_S} s" if live else ""))
    text = H.page("segx training report", subtitle, sections,
                  H.CHART_CSS + ".charts{display:flex;flex-wrap:wrap}"
                                ".legend span{margin-right:12px;white-space:nowrap}")
    return H.refreshing(text, REFRESH_S) if live else text


class TrainReportHook(HookBase):
    """Keeps ``<output>/train_report.html`` current (rank 0): from the first step (like every
    record of the run, see :class:`~segx.training.hooks.RunRecords`), after each evaluation
    (recording its per-class IoU in the curves) and, without the reload, at the end. A finished
    run resumed keeps its page unless it has none. Must come right after the evaluation hook,
    before the checkpointers."""

    def before_train(self, trainer: Trainer) -> None:
        curves = trainer.state["curves"]
        per = curves.setdefault("class_IoU", [])
        n = len(curves["eval_iter"])
        del per[n:]
        per[:0] = [None] * (n - len(per))  # evaluations recorded before this existed
        self.wrote = False

    def after_step(self, trainer: Trainer) -> None:
        metrics = trainer.events.get("eval")
        if metrics is not None:
            trainer.state["curves"]["class_IoU"].append([r["IoU"] for r in metrics["per_class"]])
        if metrics is not None or not self.wrote:
            self._write(trainer, "running")

    def after_train(self, trainer: Trainer) -> None:
        if self.wrote or not (trainer.run.out / PAGE).is_file():
            self._write(trainer, trainer.status)

    def _write(self, trainer: Trainer, status: str) -> None:
        if trainer.run.main:
            H.write_page(trainer.run.out / PAGE, build_page(trainer, status))
            self.wrote = True
