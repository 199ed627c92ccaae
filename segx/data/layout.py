"""The reference dataset layout: list files of ``<image> <label>`` lines, and problem records."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from segx.utils.constants import IMAGE_SUFFIXES
from segx.data.journal import JOURNAL, fix_for, recover

SPLITS = ("train", "val", "test")


@dataclass
class Problem:
    """One finding of the checker. ``severity`` is error (fails the check), warning or info."""

    severity: str
    code: str
    message: str
    fix: str = ""
    file: str | None = None
    line: int | None = None
    count: int = 1  # how many findings this record stands for ("... and 213 more": 213)

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def where(self) -> str:
        """``file:line``, ``file`` or empty."""
        return f"{self.file}:{self.line}" if self.line else (self.file or "")

    @staticmethod
    def total(problems: list["Problem"], severity: str = "error") -> int:
        """The real number of findings of ``severity`` (summarised records count in full)."""
        return sum(p.count for p in problems if p.severity == severity)

    def summary(self) -> str:
        """``code (file:line): message``, for one-line errors."""
        return f"{self.code}{f' ({self.where})' if self.where else ''}: {self.message}"

    def __str__(self) -> str:
        where = f"{self.where}: " if self.where else ""
        return f"[{self.severity}] {self.code}: {where}{self.message}" + \
            (f" Fix: {self.fix}" if self.fix else "")


@dataclass
class Sample:
    split: str
    image: Path
    label: Path
    list_file: str
    line: int


@dataclass
class Layout:
    root: Path
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def all_samples(self) -> list[Sample]:
        return [s for samples in self.samples.values() for s in samples]


_FIELDS = re.compile(r"\t+| {2,}")


def _split_line(text: str) -> list[str] | None:
    """Split a list line into (image, label): tabs or 2+ spaces first, else the space before a
    label-looking path, so paths containing single spaces still work."""
    parts = [p for p in _FIELDS.split(text) if p]
    if len(parts) == 2:
        return parts
    if len(parts) > 2:
        return None
    # one single-space separated line: find the split whose left part is an image file
    candidates = [i for i, c in enumerate(text) if c == " "]
    good = [i for i in candidates if text[:i].lower().endswith(IMAGE_SUFFIXES)
            and text[i + 1:].lower().endswith(IMAGE_SUFFIXES)]
    return [text[:good[0]], text[good[0] + 1:]] if len(good) == 1 else None


def read_list(root: Path, split: str, path: Path, layout: Layout) -> list[Sample]:
    """Parse one list file; malformed lines and duplicates become problems, with line numbers."""
    samples: list[Sample] = []
    seen: dict[tuple[str, str], int] = {}
    raw = path.read_bytes().decode("utf-8-sig", errors="replace")
    for lineno, line in enumerate(raw.splitlines(), 1):
        text = line.strip()
        if not text:
            continue
        parts = _split_line(text)
        if parts is None:
            layout.problems.append(Problem(
                "error", "malformed_line",
                f"expected '<image path> <label path>', got {text!r}.",
                "one sample per line: image path, a space or tab, label path.",
                path.name, lineno))
            continue
        key = (parts[0], parts[1])
        if key in seen:
            layout.problems.append(Problem(
                "warning", "duplicate_line", f"repeats line {seen[key]} ({parts[0]}).",
                "remove the duplicate; it weights that sample twice.", path.name, lineno))
            continue
        seen[key] = lineno
        img, lbl = (Path(p) if Path(p).is_absolute() else root / p for p in parts)
        samples.append(Sample(split, img, lbl, path.name, lineno))
    return samples


def dataset_root(cfg) -> Path:
    """``Global.dataset_dir`` as an existing folder, or a one-line error saying how to set it."""
    from segx.utils.errors import DatasetError
    value = cfg.get("Global.dataset_dir")
    if not value:
        raise DatasetError("Global.dataset_dir is not set.",
                           solution="pass -o Global.dataset_dir=path/to/dataset.")
    root = Path(value)
    if not root.is_dir():
        raise DatasetError(f"dataset folder '{root}' does not exist.",
                           solution="check -o Global.dataset_dir (relative paths start from "
                                    f"{Path.cwd()}).")
    return root


def read_layout(root: Path) -> Layout:
    """Read ``train.txt``, ``val.txt`` and optional ``test.txt`` under ``root`` (finishing or
    undoing a re-split that was killed first)."""
    layout = Layout(root)
    for message in recover(root):
        layout.problems.append(Problem("warning", "foreign_journal", message, fix_for(root),
                                       JOURNAL))
    for split in SPLITS:
        path = root / f"{split}.txt"
        if path.is_file():
            layout.samples[split] = read_list(root, split, path, layout)
        elif split != "test":
            layout.problems.append(Problem(
                "error", "missing_list", f"{path} does not exist.",
                f"create {split}.txt with '<image> <label>' lines, or re-split with "
                "-o CheckDataset.split.enable=True -o CheckDataset.split.train_percent=80 "
                "-o CheckDataset.split.val_percent=20 (a test.txt is kept as it is; every "
                "list is backed up).", f"{split}.txt"))
    for split in ("train", "val"):
        if split in layout.samples and not layout.samples[split]:
            layout.problems.append(Problem(
                "error", "empty_split", f"{split}.txt lists no samples.",
                f"add samples to {split}.txt or re-split the dataset.", f"{split}.txt"))
    return layout
