"""check_dataset mode: convert -> split -> check -> analyse, reported in
``<Global.output>/check_dataset_result.json`` (the reference keys plus what users need).

The check fails (``check_pass: false``, non-zero exit after the report is written) on any
error-level problem. Source files are never modified: fixes and conversions go to new folders;
a re-split rewrites only the list files, keeping the old ones as backups.
"""
from __future__ import annotations

from pathlib import Path

from segx.config import Config
from segx.data.analyse import analyse, class_names_setting
from segx.data.layout import Problem, dataset_root, read_layout
from segx.data.report_page import write_check_report
from segx.data.visualize import render_report
from segx.utils.errors import DatasetError
from segx.runs.folder import RunFolder


class CheckFailed(DatasetError):
    """The dataset has error-level problems; the report has been written."""


def run(cfg: Config) -> dict:
    """Run check_dataset for ``cfg``; raises CheckFailed after writing a failing report."""
    out = Path(cfg.get("Global.output"))
    (out / "check_dataset" / "demo_img").mkdir(parents=True, exist_ok=True)
    notes: dict = {}
    root = _convert_and_split(cfg, dataset_root(cfg), out, notes)
    layout = read_layout(root)
    num, workers = cfg.get("Train.num_classes"), cfg.get("CheckDataset.num_workers")
    names = class_names_setting(cfg.get("CheckDataset.class_names"))
    cap = cfg.get("CheckDataset.max_pixels")
    scans: dict = {}
    summary, enc, problems = analyse(layout, num, workers, names, cap, scans_out=scans)
    fix = cfg.get("CheckDataset.fix_labels") and enc.needs_fix
    if fix and summary["undrawable"]:  # unreadable, too large or id-less pairs: never fixed
        notes["fix"] = {"written": False, "reason": f"{len(summary['undrawable'])} sample(s) "
                        "cannot be read as image and id label (see problems); fix them first"}
    elif fix:
        from segx.data.fix import write_fixed
        target = Path(cfg.get("CheckDataset.fix_output_dir") or out / "fixed_dataset")
        write_fixed(layout, enc, target, summary["names"], workers)
        notes["fix"] = {"source": str(root), "fixed_dataset": str(target),
                        "encoding": enc.as_dict(),
                        "next": f"train with -o Global.dataset_dir={target}"}
        layout = read_layout(target)
        summary, enc, problems = analyse(layout, num, workers, names, cap, scans_out=scans)
    leak = None
    if cfg.get("CheckDataset.leakage"):
        layout, summary, enc, problems, leak = _leakage(cfg, layout, scans, notes,
                                                        (summary, enc, problems))
    sample_paths = render_report(layout, enc, summary, out, cfg.get("CheckDataset.sample_num"),
                                 workers, cap)
    result = _report(layout.root, summary, enc.as_dict(), problems, sample_paths, notes)
    if leak is not None:
        result["leakage"] = leak.as_dict()
    page = write_check_report(out, result, problems, summary, layout, enc, scans, leak,
                              cfg.get("CheckDataset.report_images"), cfg.get("Global.seed"),
                              workers)
    result["report"] = str(page)
    _print_summary(result, problems)
    print(f"report: {page}")
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise CheckFailed(f"dataset check failed with {Problem.total(problems)} error(s); first: "
                          f"{errors[0].summary()}",
                          solution=f"{errors[0].fix} Every problem is listed in "
                                   f"{RunFolder(out).result('check_dataset')} and shown in {page}.",
                          report=result)
    return result


def _leakage(cfg: Config, layout, scans: dict, notes: dict, analysed: tuple) -> tuple:
    """Duplicates across and inside splits; with CheckDataset.fix_leakage, groups that span
    splits are moved into one split and the dataset is checked again."""
    from segx.data.leakage import find_leakage, fix_leakage
    threshold = cfg.get("CheckDataset.near_dup_threshold")
    leak = find_leakage(layout, scans, threshold)
    if cfg.get("CheckDataset.fix_leakage") and leak.mixed_groups:
        notes["leakage_fix"] = fix_leakage(layout, leak, cfg.get("Global.seed"))
        layout = read_layout(layout.root)
        analysed = analyse(layout, cfg.get("Train.num_classes"),
                           cfg.get("CheckDataset.num_workers"),
                           class_names_setting(cfg.get("CheckDataset.class_names")),
                           cfg.get("CheckDataset.max_pixels"), scans_out=scans)
        leak = find_leakage(layout, scans, threshold)
    summary, enc, problems = analysed
    order = {"error": 0, "warning": 1, "info": 2}
    problems = sorted(problems + leak.problems, key=lambda p: order[p.severity])
    return layout, summary, enc, problems, leak


def _convert_and_split(cfg: Config, root: Path, out: Path, notes: dict) -> Path:
    """The optional LabelMe conversion and re-split; returns the dataset folder to check."""
    if cfg.get("CheckDataset.convert.enable"):
        if cfg.get("CheckDataset.convert.src_dataset_type") != "LabelMe":
            raise DatasetError("CheckDataset.convert.enable=True but "
                               "CheckDataset.convert.src_dataset_type is not set.",
                               solution="add -o CheckDataset.convert.src_dataset_type=LabelMe.")
        from segx.data.labelme import convert
        target = Path(cfg.get("CheckDataset.convert.output_dir") or out / "converted_dataset")
        notes["conversion"] = convert(root, target, cfg.get("Global.seed"),
                                      cfg.get("CheckDataset.convert.allow_outside_image_paths"))
        root = target
    if cfg.get("CheckDataset.split.enable"):
        from segx.data.split import split_dataset
        notes["split"] = split_dataset(root, cfg.get("CheckDataset.split.train_percent"),
                                       cfg.get("CheckDataset.split.val_percent"),
                                       cfg.get("CheckDataset.split.test_percent"),
                                       cfg.get("Global.seed"))
    return root


def _report(root: Path, summary: dict, encoding: dict, problems: list[Problem],
            sample_paths: dict, notes: dict) -> dict:
    """check_dataset_result.json: the reference keys plus classes, encoding and problems."""
    stats = summary["stats"]
    return {
        "check_pass": not any(p.severity == "error" for p in problems),
        "attributes": {
            "train_sample_paths": sample_paths.get("train", []),
            "train_samples": stats.get("train", {}).get("samples", 0),
            "val_sample_paths": sample_paths.get("val", []),
            "val_samples": stats.get("val", {}).get("samples", 0),
            "num_classes": summary["num_classes"],
            "class_ids": summary["class_ids"],
            "class_names": summary["names"],
            "label_encoding": encoding,
            "test_samples": stats.get("test", {}).get("samples", 0),
        },
        "analysis": {"histogram": "check_dataset/histogram.png", "classes": dict(stats)},
        "problems": [p.as_dict() for p in problems],
        "dataset_path": str(root),
        "show_type": "image",
        "dataset_type": "SegDataset",
        **notes,
    }


def _print_summary(result: dict, problems: list[Problem]) -> None:
    a = result["attributes"]
    print(f"dataset: {result['dataset_path']}")
    names = a["class_names"]
    ids = ", ".join(f"{i} {names[i]}" if i < len(names) else str(i) for i in a["class_ids"][:30])
    ids += f", ... {len(a['class_ids']) - 30:,} more" if len(a["class_ids"]) > 30 else ""
    print(f"  train {a['train_samples']}, val {a['val_samples']}, test {a['test_samples']} "
          f"samples; {a['num_classes']} classes ({ids}); labels: "
          f"{a['label_encoding']['name']}")
    for p in problems:
        print(f"  {p}")
    print("check passed." if result["check_pass"] else "check FAILED.")
