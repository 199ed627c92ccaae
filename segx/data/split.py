"""Re-split samples into train/val(/test) lists: seeded, nothing dropped, every changed list
backed up, all lists replaced as one unit, and test samples never moved into train/val unless
the user re-splits the test set too (``test_percent`` above 0)."""
from __future__ import annotations

import random
from pathlib import Path

from segx.utils.errors import DatasetError
from segx.utils.fileio import copy_file
from segx.utils.constants import IMAGE_SUFFIXES
from segx.data.journal import fix_for, recover, replace_lists
from segx.data.layout import SPLITS, Layout, read_list


def _percents(train: int | None, val: int | None, test: int | None) -> list[int]:
    values = {"train_percent": train, "val_percent": val, "test_percent": test or 0}
    for key, v in values.items():
        if v is None:
            raise DatasetError(f"CheckDataset.split.{key} is not set.",
                               solution="set train_percent and val_percent, e.g. 80 and 20.")
        if not 0 <= v <= 100:
            raise DatasetError(f"CheckDataset.split.{key}={v} is outside 0..100.",
                               solution="use whole percents that add up to 100.")
    if train <= 0 or val <= 0:
        raise DatasetError(f"train_percent={train} and val_percent={val} must both be above 0.",
                           solution="give each of train and val a share, e.g. 80 and 20.")
    if sum(values.values()) != 100:
        raise DatasetError(f"split percents add up to {sum(values.values())}, not 100 "
                           f"(train {train}, val {val}, test {test or 0}).",
                           solution="make train_percent + val_percent + test_percent = 100.")
    return list(values.values())


def _counts(n: int, percents: list[int]) -> list[int]:
    """Largest-remainder rounding: the counts always add up to n."""
    exact = [n * p / 100 for p in percents]
    counts = [int(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _discover(root: Path) -> list[tuple[str, str]]:
    """Pair ``images/<stem>.*`` with ``annotations/<stem>.*`` when no list exists."""
    images, labels = root / "images", root / "annotations"
    if not images.is_dir() or not labels.is_dir():
        raise DatasetError(f"no train.txt/val.txt in {root} and no images/ + annotations/ "
                           "folders to pair.",
                           solution="add list files, or put images in images/ and labels in "
                                    "annotations/ with matching file stems.")
    by_stem = {p.stem: p for p in sorted(labels.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    lines = []
    for img in sorted(images.iterdir()):
        if img.suffix.lower() in IMAGE_SUFFIXES and img.stem in by_stem:
            lines.append((img.relative_to(root).as_posix(),
                          by_stem[img.stem].relative_to(root).as_posix()))
    if not lines:
        raise DatasetError(f"no image in {images} has a label with the same stem in {labels}.",
                           solution="name each label like its image (a.jpg <-> a.png).")
    return lines


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _lines(pairs: list[tuple[str, str]]) -> list[str]:
    """``image<TAB>label`` lines. Names with a tab, a line break or two spaces in a row could
    not be read back, so they are refused by name."""
    bad = [p for pair in pairs for p in pair if any(c in p for c in "\t\r\n") or "  " in p]
    if bad:
        raise DatasetError(f"{len(bad)} file name(s) cannot be written to a list file (a tab, "
                           f"a line break or two spaces in a row): {', '.join(map(repr, bad[:5]))}.",
                           solution="rename those files.")
    return [f"{img}\t{lbl}" for img, lbl in pairs]


def _backup(path: Path) -> Path:
    """Copy ``path`` to ``.bak``, then ``.bak1``, ``.bak2``...; never overwrite a backup."""
    k, target = 0, path.with_name(path.name + ".bak")
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}.bak{k}")
    copy_file(path, target)
    return target


def commit_lists(root: Path, lists: dict[str, list[str]], drop: list[str],
                 what: str = "re-split") -> dict[str, str]:
    """Replace the list files ``lists`` (and remove ``drop``) as one unit, after backing up each
    existing one; returns the backups by split. Used by the re-split and the leakage fix.
    Refused before any backup beside a journal segx cannot trust."""
    refused = recover(root)
    if refused:
        raise DatasetError(f"cannot {what}: {refused[0]}", solution=fix_for(root))
    backups = {sp: str(_backup(root / f"{sp}.txt")) for sp in [*lists, *drop]
               if (root / f"{sp}.txt").is_file()}
    replace_lists(root, lists, drop)
    return backups


def split_dataset(root: Path, train: int | None, val: int | None, test: int | None,
                  seed: int) -> dict:
    """Re-split the listed (or discovered) samples; returns what was written.

    With ``test`` 0, an existing test.txt is kept as it is and its samples stay out of
    train/val; with ``test`` above 0, every list is pooled and test.txt rewritten. Every list
    that changes is backed up first.
    """
    percents = _percents(train, val, test)
    keep_test = not test and (root / "test.txt").is_file()
    pooled = [sp for sp in SPLITS if not (sp == "test" and keep_test)]
    scratch = Layout(root)
    pairs: list[tuple[str, str]] = []
    for split in pooled:
        path = root / f"{split}.txt"
        if path.is_file():
            pairs += [(_rel(s.image, root), _rel(s.label, root))
                      for s in read_list(root, split, path, scratch)]
    if scratch.problems:
        raise DatasetError(f"cannot re-split: {scratch.problems[0]}",
                           solution="fix the list files first.")
    lines = _lines(sorted(set(pairs)) or _discover(root))
    random.Random(seed).shuffle(lines)
    counts = _counts(len(lines), percents)
    new, start = {}, 0
    for split, n in zip(SPLITS, counts):
        if split != "test" or n:
            new[split] = lines[start:start + n]
        start += n
    drop = [sp for sp in pooled if sp not in new and (root / f"{sp}.txt").is_file()]
    backups = commit_lists(root, new, drop)
    return {"samples": len(lines), "seed": seed, "counts": {k: len(v) for k, v in new.items()},
            "backups": backups, "test_kept": keep_test}
