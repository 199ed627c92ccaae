"""train_report.html: one page of a run's curves, rewritten at each evaluation (reloading itself
while training runs), with one point per evaluation and the per-class IoU of train.log."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from segx.utils import safe_pickle
from segx.training.report_page import PAGE, TrainReportHook
from segx.training.trainer import RunInfo, Trainer, new_state

REFRESH = '<meta http-equiv="refresh"'


def _eval_lines(log: str) -> list[tuple[int, float, list[float]]]:
    """(iteration, mIoU, class IoUs) of every [EVAL] line."""
    found = []
    for m in re.finditer(r"\[EVAL\] iter (\d+) mIoU ([\d.]+) .*? class IoU \[([^\]]*)\]", log):
        ious = [float(v) for v in re.findall(r": ([\d.]+)", m.group(3))]
        found.append((int(m.group(1)), float(m.group(2)), ious))
    return found


def test_finished_run_has_one_point_per_evaluation(run_dir):
    page = run_dir / PAGE
    text = page.read_text()
    evals = _eval_lines((run_dir / "train.log").read_text())
    assert len(evals) == 2
    assert REFRESH not in text  # the final page no longer reloads
    charts = re.findall(r"<svg class=chart.*?</svg>", text, re.DOTALL)
    titles = [re.search(r"class=ct>([^<]*)<", c).group(1) for c in charts]
    assert titles == ["training loss", "learning rate", "validation mIoU", "per-class IoU"]
    assert charts[2].count("<circle class=pt") == len(evals)
    assert charts[3].count("<circle class=pt") == len(evals) * 3  # 3 classes
    rows = re.findall(r"<tr><td class=num>(\d+)</td><td class=num>([\d.]+)</td>(.*?)</tr>",
                      text)
    assert [int(r[0]) for r in rows] == [e[0] for e in evals]
    for (_, miou, ious), row in zip(evals, rows):
        assert float(row[1]) == pytest.approx(miou, abs=1e-4)
        shown = [float(v) for v in re.findall(r">([\d.]+)<", row[2])]
        assert shown == pytest.approx(ious, abs=1e-3)
    # the per-class history is checkpointed, so a resumed run keeps it
    state = safe_pickle.load(run_dir / "iter_8" / "model.pdstates")
    assert len(state["curves"]["class_IoU"]) == len(state["curves"]["eval_iter"]) == 2


def test_page_in_a_browser(run_dir, tmp_path):
    from browser import render
    seen = render(run_dir / PAGE, tmp_path / "screens")
    assert seen.console_errors == [] and seen.broken_images == []
    assert seen.remote_requests == [] and seen.scripts == []
    assert "per-class IoU" in seen.text and "PP-LiteSeg-T" in seen.text
    assert seen.screenshot.stat().st_size > 10_000


def _trainer(out: Path, names: list[str]) -> Trainer:
    run = RunInfo(out=out, model_name="M", device="cpu", num_classes=len(names),
                  class_names=names, total=10, batch_size=1, train_samples=4, val_samples=2)
    return Trainer(None, lambda: iter(()), new_state(0), run, [], lambda it: None)


def _metrics(miou: float, n: int) -> dict:
    return {"mIoU": miou, "per_class": [{"IoU": miou + c / 100} for c in range(n)]}


def test_page_is_rewritten_at_each_evaluation_and_escapes_names(tmp_path):
    names = ["<script>alert(1)</script>", "a & b"]
    trainer, hook = _trainer(tmp_path, names), TrainReportHook()
    hook.before_train(trainer)
    assert not (tmp_path / PAGE).exists()  # like every record of a run: from the first step
    trainer.iter, trainer.events = 1, {}
    hook.after_step(trainer)
    assert REFRESH in (tmp_path / PAGE).read_text()  # a page to watch before any evaluation
    curves = trainer.state["curves"]
    for it, miou in ((5, 0.25), (10, 0.5)):
        trainer.iter = it
        curves["iter"].append(it)
        curves["loss"].append(1.0 / it)
        curves["lr"].append(0.01)
        curves["eval_iter"].append(it)
        curves["mIoU"].append(miou)
        trainer.events = {"eval": _metrics(miou, 2)}
        hook.after_step(trainer)
        text = (tmp_path / PAGE).read_text()
        assert REFRESH in text and text.count("<circle class=pt") == 3 * len(curves["mIoU"])
        assert f"{miou:.4f} at iteration {it}" in text  # before the best checkpointer runs
    trainer.status = "done"
    hook.after_train(trainer)
    text = (tmp_path / PAGE).read_text()
    assert REFRESH not in text and "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "a &amp; b" in text
    assert curves["class_IoU"] == [[0.25, 0.26], [0.5, 0.51]]


def test_resumed_old_checkpoint_keeps_its_evaluations(tmp_path):
    """A checkpoint from before per-class IoU was recorded: its evaluations stay, without
    per-class values; a longer per-class list than evaluations (resumed earlier) is cut."""
    trainer = _trainer(tmp_path, ["x", "y"])
    curves = trainer.state["curves"]
    curves["eval_iter"] += [2, 4]
    curves["mIoU"] += [0.1, 0.2]
    hook = TrainReportHook()
    hook.before_train(trainer)
    assert curves["class_IoU"] == [None, None]
    trainer.events = {}
    hook.after_step(trainer)
    assert (tmp_path / PAGE).read_text().count("<circle class=pt") == 2
    curves["class_IoU"] = [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]
    TrainReportHook().before_train(trainer)
    assert curves["class_IoU"] == [[0.1, 0.1], [0.2, 0.2]]


def test_train_mode_names_the_page_last(tmp_path, monkeypatch, capsys):
    """The CLI's last line after training links the page; the result JSON names it."""
    from segx.config import Config
    from segx.modules import train as mode

    def fake_train(cfg):
        print("done: 8 iterations")
        (tmp_path / PAGE).write_text("<html></html>")
        return {"iter": 8}
    monkeypatch.setattr(mode, "train", fake_train)
    cfg = Config({"Global": {"output": str(tmp_path)}}, "test")
    assert mode.run(cfg) == {"iter": 8, "report": PAGE}
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"report: {tmp_path / PAGE} (open it in a browser)"
