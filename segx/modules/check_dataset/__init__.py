"""check_dataset mode: convert -> split -> check -> analyse, reported in
``<Global.output>/check_dataset_result.json`` (the reference keys plus what users need).

The check fails (``check_pass: false``, non-zero exit after the report is written) on any
error-level problem. Source files are never modified: fixes and conversions go to new folders;
a re-split rewrites only the list files, keeping the old ones as backups.
"""
from __future__ import annotations

from pathlib import Path

from segx.config import Config
from segx.errors import DatasetError
from segx.modules.check_dataset.checks import (
    IGNORE, Encoding, Findings, all_samples, check_ids, check_samples, class_statistics,
    detect_encoding, group_by_split)
from segx.modules.check_dataset.dataset import Layout, Problem, dataset_root, read_layout
from segx.modules.check_dataset.scan import scan_all

NAME_FILES = ("class_names.txt", "labels.txt")


class CheckFailed(DatasetError):
    """The dataset has error-level problems; the report has been written."""


def read_class_names(root: Path) -> list[str]:
    """Class names from ``class_names.txt`` or labelme's ``labels.txt`` (``__ignore__`` skipped)."""
    for name in NAME_FILES:
        path = root / name
        if path.is_file():
            names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                     if line.strip()]
            return [n for n in names if n != "__ignore__"]
    return []


def analyse(layout: Layout, cfg: Config) -> tuple[dict, Encoding, list[Problem]]:
    """Scan, check and summarise one dataset folder."""
    samples = all_samples(layout)
    scans = group_by_split(layout, scan_all(samples, cfg.get("CheckDataset.num_workers")))
    findings = Findings(layout.problems)
    check_samples(layout, scans, findings)
    enc, enc_problems = detect_encoding([s for v in scans.values() for s in v])
    for p in enc_problems:
        findings.add(p)
    stats = class_statistics(layout, scans, enc)
    check_ids(stats, cfg.get("Train.num_classes"), findings)
    ids = sorted({i for st in stats.values() for i in st["pixels"] if i != IGNORE})
    num_classes = max(ids) + 1 if ids else 0
    names = read_class_names(layout.root)
    if names and len(names) < num_classes:
        findings.add(Problem("error", "unnamed_ids",
                             f"labels use ids up to {num_classes - 1} but the class list names "
                             f"only {len(names)} classes.", "add a name per id, in id order.",
                             file=next(n for n in NAME_FILES if (layout.root / n).is_file())))
    elif names:
        num_classes = len(names)  # a declared class list sets the id space; absent ids are fine
        findings.problems = [
            Problem("info", p.code, p.message + " (the class list declares them).")
            if p.code in ("sparse_ids", "ids_start_at_1") else p for p in findings.problems]
    explicit = cfg.get("Train.num_classes")
    if explicit is not None and explicit > num_classes:
        findings.add(Problem("warning", "empty_classes",
                             f"Train.num_classes={explicit} but labels use only ids 0.."
                             f"{num_classes - 1}.", "check Train.num_classes."))
    summary = {"num_classes": num_classes, "class_ids": ids, "names": names, "stats": stats}
    return summary, enc, findings.finish()


def _overlay(job: tuple) -> str | None:
    """One overlay image, drawn in a worker process; None when the pair is unreadable."""
    from segx.modules.check_dataset.visualize import overlay
    sample, enc, names, path = job
    try:
        overlay(sample, enc, names).save(path, quality=90)
    except (OSError, ValueError):
        return None  # unreadable pairs are already reported as problems
    return str(path)


def _render_all(layout: Layout, enc: Encoding, summary: dict, out: Path, n: int,
                workers: int | None) -> dict:
    """Overlays of the first ``n`` samples per split (in worker processes) and the histogram
    (here, meanwhile). Returns the overlay paths per split, relative to ``out``."""
    from concurrent.futures import ProcessPoolExecutor

    from segx.modules.check_dataset.visualize import histogram
    jobs, splits = [], []
    for split, samples in layout.samples.items():
        for k, s in enumerate(samples[:n]):
            rel = f"check_dataset/demo_img/{split}_{k:02d}_{s.image.stem}.jpg"
            jobs.append((s, enc, summary["names"], out / rel))
            splits.append(split)
    with ProcessPoolExecutor(workers or None) as pool:
        pending = pool.map(_overlay, jobs)
        histogram(summary["stats"], summary["names"], out / "check_dataset" / "histogram.png")
        done = list(pending)
    paths: dict[str, list[str]] = {split: [] for split in layout.samples}
    for split, path in zip(splits, done):
        if path is not None:
            paths[split].append(str(Path(path).relative_to(out)))
    return paths


def run(cfg: Config) -> dict:
    """Run check_dataset for ``cfg``; raises CheckFailed after writing a failing report."""
    root = dataset_root(cfg)
    out = Path(cfg.get("Global.output"))
    (out / "check_dataset" / "demo_img").mkdir(parents=True, exist_ok=True)
    notes: dict = {}
    if cfg.get("CheckDataset.convert.enable"):
        if cfg.get("CheckDataset.convert.src_dataset_type") != "LabelMe":
            raise DatasetError("CheckDataset.convert.enable=True but "
                               "CheckDataset.convert.src_dataset_type is not set.",
                               solution="add -o CheckDataset.convert.src_dataset_type=LabelMe.")
        from segx.modules.check_dataset.labelme import convert
        target = Path(cfg.get("CheckDataset.convert.output_dir") or out / "converted_dataset")
        notes["conversion"] = convert(root, target, cfg.get("Global.seed"))
        root = target
    if cfg.get("CheckDataset.split.enable"):
        from segx.modules.check_dataset.split import split_dataset
        notes["split"] = split_dataset(root, cfg.get("CheckDataset.split.train_percent"),
                                       cfg.get("CheckDataset.split.val_percent"),
                                       cfg.get("CheckDataset.split.test_percent"),
                                       cfg.get("Global.seed"))
    layout = read_layout(root)
    summary, enc, problems = analyse(layout, cfg)
    if cfg.get("CheckDataset.fix_labels") and enc.needs_fix:
        from segx.modules.check_dataset.fix import write_fixed
        target = Path(cfg.get("CheckDataset.fix_output_dir") or out / "fixed_dataset")
        write_fixed(layout, enc, target, summary["names"], cfg.get("CheckDataset.num_workers"))
        notes["fix"] = {"source": str(root), "fixed_dataset": str(target),
                        "encoding": enc.as_dict(),
                        "next": f"train with -o Global.dataset_dir={target}"}
        root = target
        layout = read_layout(root)
        summary, enc, problems = analyse(layout, cfg)
    errors = [p for p in problems if p.severity == "error"]
    names = summary["names"]
    sample_paths = _render_all(layout, enc, summary, out, cfg.get("CheckDataset.sample_num"),
                               cfg.get("CheckDataset.num_workers"))
    stats = summary["stats"]
    result = {
        "check_pass": not errors,
        "attributes": {
            "train_sample_paths": sample_paths.get("train", []),
            "train_samples": stats.get("train", {}).get("samples", 0),
            "val_sample_paths": sample_paths.get("val", []),
            "val_samples": stats.get("val", {}).get("samples", 0),
            "num_classes": summary["num_classes"],
            "class_ids": summary["class_ids"],
            "class_names": names,
            "label_encoding": enc.as_dict(),
            "test_samples": stats.get("test", {}).get("samples", 0),
        },
        "analysis": {"histogram": "check_dataset/histogram.png",
                     "classes": {split: st for split, st in stats.items()}},
        "problems": [p.as_dict() for p in problems],
        "dataset_path": str(root),
        "show_type": "image",
        "dataset_type": "SegDataset",
        **notes,
    }
    _print_summary(result, problems)
    if errors:
        first = errors[0]
        raise CheckFailed(f"dataset check failed with {len(errors)} error(s); first: "
                          f"{first.summary()}",
                          solution=f"{first.fix} Every problem is listed in "
                                   f"{out / 'check_dataset_result.json'}.", report=result)
    return result


def _print_summary(result: dict, problems: list[Problem]) -> None:
    a = result["attributes"]
    print(f"dataset: {result['dataset_path']}")
    print(f"  train {a['train_samples']}, val {a['val_samples']}, test {a['test_samples']} "
          f"samples; {a['num_classes']} classes {a['class_ids']}; labels: "
          f"{a['label_encoding']['name']}")
    for p in problems:
        print(f"  {p}")
    print("check passed." if result["check_pass"] else "check FAILED.")
