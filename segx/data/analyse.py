"""One dataset summary shared by check_dataset and train: classes, encoding, problems."""
from __future__ import annotations

from pathlib import Path

from segx.utils.constants import IGNORE_INDEX
from segx.utils.errors import DatasetError
from segx.data.checks import (
    Encoding, Findings, check_ids, check_samples, class_statistics,
    detect_encoding, group_by_split)
from segx.data.layout import Layout, Problem
from segx.data.scan import scan_all
from segx.imaging.images import MAX_PIXELS

NAME_FILES = ("class_names.txt", "labels.txt")


def read_class_names(root: Path) -> list[str]:
    """Class names from ``class_names.txt`` or labelme's ``labels.txt`` (``__ignore__`` skipped)."""
    for name in NAME_FILES:
        path = root / name
        if path.is_file():
            names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                     if line.strip()]
            return [n for n in names if n != "__ignore__"]
    return []


def class_names_setting(value: list | str | None) -> list[str] | None:
    """``CheckDataset.class_names``: a list, a file of names (one per line), or None."""
    if value is None or isinstance(value, list):
        return [str(v) for v in value] if value is not None else None
    path = Path(value).expanduser()
    if not path.is_file():
        raise DatasetError(f"CheckDataset.class_names='{value}' is neither a list nor a file.",
                           solution="write -o 'CheckDataset.class_names=[road, sky, car]' or "
                                    "give a text file with one name per line.")
    return [n.strip() for n in path.read_text(encoding="utf-8").splitlines() if n.strip()]


def analyse(layout: Layout, num_classes: int | None = None, workers: int | None = None,
            names: list[str] | None = None, max_pixels: int = MAX_PIXELS,
            scans_out: dict | None = None
            ) -> tuple[dict, Encoding, list[Problem]]:
    """Scan, check and summarise one dataset folder.

    Args:
        layout: the dataset's lists.
        num_classes: an explicit class count (``Train.num_classes``) to check ids against.
        workers: decoding processes (None: all cores).
        names: class names given in the config (else the dataset's class_names.txt or
            labels.txt).
        max_pixels: files whose header declares more pixels are reported, never decoded.
        scans_out: a dict that receives the scans by split (for the leakage search).

    Returns:
        (summary with ``num_classes``, ``class_ids``, ``names``, per-split ``stats`` and
        ``undrawable`` (the samples an overlay cannot be drawn for, by image path);
        the detected label encoding; the problems, errors first).
    """
    samples = layout.all_samples()
    scans = group_by_split(layout, scan_all(samples, workers, max_pixels))
    if scans_out is not None:
        scans_out.clear()
        scans_out.update(scans)
    findings = Findings(layout.problems)
    check_samples(layout, scans, findings)
    enc, enc_problems = detect_encoding([s for v in scans.values() for s in v])
    for p in enc_problems:
        findings.add(p)
    stats = class_statistics(layout, scans, enc)
    check_ids(stats, num_classes, findings)
    ids = sorted({i for st in stats.values() for i in st["pixels"] if i != IGNORE_INDEX})
    found = max(ids) + 1 if ids else 0
    source = "CheckDataset.class_names" if names is not None else None
    names = names if names is not None else read_class_names(layout.root)
    found = _check_names(layout.root, names, found, findings, source)
    if num_classes is not None and num_classes > found:
        findings.add(Problem("warning", "empty_classes",
                             f"Train.num_classes={num_classes} but labels use only ids 0.."
                             f"{found - 1}.", "check Train.num_classes."))
    undrawable = {str(sample.image) for split, v in scans.items()
                  for sample, s in zip(layout.samples[split], v) if not s.drawable}
    summary = {"num_classes": found, "class_ids": ids, "names": names, "stats": stats,
               "undrawable": undrawable}
    return summary, enc, findings.finish()


def _check_names(root: Path, names: list[str], found: int, findings: Findings,
                 source: str | None) -> int:
    """Check a class list against the ids in the labels; returns the class count."""
    if names and len(names) < found:
        findings.add(Problem("error", "unnamed_ids",
                             f"labels use ids up to {found - 1} but the class list names "
                             f"only {len(names)} classes.", "add a name per id, in id order.",
                             file=source or next(n for n in NAME_FILES if (root / n).is_file())))
    elif names:
        findings.problems = [
            Problem("info", p.code, p.message + " (the class list declares them).")
            if p.code in ("sparse_ids", "ids_start_at_1") else p for p in findings.problems]
        return len(names)  # a declared class list sets the id space; absent ids are fine
    return found
