"""The checks: per-sample problems, dataset-level label encoding, class statistics."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from segx.utils.constants import IGNORE_INDEX
from segx.data.layout import Layout, Problem
from segx.data.scan import Scan

PER_CODE_LIMIT = 20  # per-file problems listed per code before summarising the rest
MAX_CLASS_IDS = 256  # more distinct label values than this are not class ids


@dataclass
class Encoding:
    """How labels encode classes, and the mapping that makes them plain ids (if any)."""

    name: str
    description: str
    id_map: dict[int, int] = field(default_factory=dict)  # single-channel value -> id
    colour_map: dict[tuple, int] = field(default_factory=dict)  # colour -> id
    threshold: int | None = None  # binary labels with anti-aliased edges: v >= t -> 1
    channel_reduce: bool = False  # multi-channel labels whose channels are equal

    @property
    def mandatory(self) -> bool:
        """Labels cannot be trained on as stored (not just wasteful): stats count them fixed."""
        return self.name in ("binary_0_255", "binary_0_255_antialiased", "colour")

    @property
    def needs_fix(self) -> bool:
        return bool(self.id_map or self.colour_map or self.threshold is not None
                    or self.channel_reduce)

    def apply_to_counts(self, counts: dict[int, int]) -> dict[int, int]:
        if not self.needs_fix:
            return counts
        out: Counter = Counter()
        for v, n in counts.items():
            out[self.map_value(v)] += n
        return dict(out)

    def map_value(self, v: int) -> int:
        if self.threshold is not None:
            return int(v >= self.threshold)
        return self.id_map.get(v, v)

    def as_dict(self) -> dict:
        d = {"name": self.name, "description": self.description, "needs_fix": self.needs_fix}
        if self.id_map:
            d["mapping"] = {str(k): v for k, v in self.id_map.items()}
        if self.colour_map:
            d["colour_table"] = {",".join(map(str, k)): v for k, v in self.colour_map.items()}
        if self.threshold is not None:
            d["mapping"] = f"value >= {self.threshold} -> 1, else 0"
        return d


class Findings:
    """Problems with a per-code cap so a bad 10,000-image dataset still gives a short report."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        self.per_code: Counter = Counter(p.code for p in self.problems)
        self.extra: Counter = Counter()

    def add(self, p: Problem) -> None:
        self.per_code[p.code] += 1
        if self.per_code[p.code] > PER_CODE_LIMIT:
            self.extra[(p.severity, p.code)] += 1
        else:
            self.problems.append(p)

    def finish(self) -> list[Problem]:
        for (severity, code), n in self.extra.items():
            self.problems.append(Problem(severity, code, f"... and {n} more like the above.",
                                         count=n))
        order = {"error": 0, "warning": 1, "info": 2}
        return sorted(self.problems, key=lambda p: order[p.severity])


def check_samples(layout: Layout, scans: dict[str, list[Scan]], findings: Findings) -> None:
    """Per-sample checks: missing/unreadable files, sizes, label formats, leakage."""
    for split, samples in layout.samples.items():
        for sample, s in zip(samples, scans[split]):
            where = dict(file=sample.list_file, line=sample.line)
            for kind, err, path in (("image", s.image_error, sample.image),
                                    ("label", s.label_error, sample.label)):
                if err:
                    findings.add(_read_problem(kind, err, path, sample, where))
            if s.label_values:
                findings.add(Problem(
                    "error", "label_values",
                    f"label {sample.label.name} ({s.label_mode}) {s.label_values}; labels hold "
                    "class ids 0..254 (255 = ignore).",
                    "save labels as 8-bit PNG with ids 0..N-1 (255 for pixels to ignore).",
                    **where))
            if s.image_error or not s.label_usable:
                continue
            if s.image_size != s.label_size:
                findings.add(Problem(
                    "error", "size_mismatch",
                    f"image {sample.image.name} is {s.image_size[0]}x{s.image_size[1]} but label "
                    f"{sample.label.name} is {s.label_size[0]}x{s.label_size[1]} (after EXIF "
                    "orientation).", "labels must have their image's width and height.", **where))
            if s.label_format == "JPEG":
                findings.add(Problem(
                    "error", "jpeg_label",
                    f"label {sample.label.name} is a JPEG: lossy compression invents ids at edges.",
                    "save labels as PNG (re-export them from the annotation tool).", **where))
            if s.label_mode in ("I;16", "I;16B", "I;16L", "I"):
                big = max(s.counts, default=0) > IGNORE_INDEX
                findings.add(Problem(
                    "error" if big else "warning", "label_16bit",
                    f"label {sample.label.name} is 16-bit ({s.label_mode})"
                    + (f" with ids up to {max(s.counts)}; segx supports ids 0..254 and 255 = "
                       "ignore." if big else "; readers that expect 8 bits may wrap values."),
                    "save labels as 8-bit PNG" + ("" if big else
                                                   " (-o CheckDataset.fix_labels=True does it)."),
                    **where))
    firsts: dict = {}
    for split in ("train", "val", "test"):
        for sample in layout.samples.get(split, []):
            key = sample.image.resolve()
            if key in firsts and firsts[key].split != split:
                other = firsts[key]
                findings.add(Problem(
                    "error", "leakage",
                    f"{sample.image.name} is in {split} and in {other.split} "
                    f"({other.list_file}:{other.line}).",
                    "keep each sample in one split so validation scores mean something.",
                    file=sample.list_file, line=sample.line))
            firsts.setdefault(key, sample)


def _read_problem(kind: str, err: str, path, sample, where: dict) -> Problem:
    """A file that is missing, too large to decode, or unreadable."""
    if err.startswith("too large"):
        return Problem("error", f"{kind}_too_large", f"{kind} {path} is {err} (not decoded).",
                       "cut it into tiles (or downscale it with its label), or raise "
                       "-o CheckDataset.max_pixels=N.", **where)
    code = f"missing_{kind}" if err == "missing" else f"unreadable_{kind}"
    return Problem("error", code, f"{kind} {path} is {err}.",
                   f"fix or remove line {sample.line} of {sample.list_file}.", **where)


def _listing(ids: list[int], limit: int = 20) -> str:
    """``[0, 1, 2, ...]`` with at most ``limit`` ids and the count of the rest."""
    head = ", ".join(map(str, ids[:limit]))
    return f"[{head}" + (f", ... {len(ids) - limit} more]" if len(ids) > limit else "]")


def _single_channel_encoding(values: Counter, modes: set[str]) -> Encoding:
    ids = set(values) - {IGNORE_INDEX}
    total = sum(values.values())
    if set(values) == {0, IGNORE_INDEX}:
        return Encoding("binary_0_255", "binary masks stored as 0/255: 255 is read as 'ignore', "
                        "so the foreground would never be learnt", id_map={0: 0, IGNORE_INDEX: 1})
    extremes = values.get(0, 0) + values.get(IGNORE_INDEX, 0)
    if values.get(0) and values.get(IGNORE_INDEX) and len(ids) > 1 and extremes >= 0.98 * total:
        return Encoding("binary_0_255_antialiased",
                        "0/255 binary masks with anti-aliased edges (resized or blurred masks)",
                        threshold=128)
    base = "palette PNG (pixel indices are the class ids)" if "P" in modes else "single-channel ids"
    if not ids:
        return Encoding("empty", "labels hold only the ignore value 255")
    if len(ids) > MAX_CLASS_IDS:
        return Encoding("too_many_ids", f"{base}; {len(ids):,} distinct values "
                        f"{_listing(sorted(ids))}: instance ids or an image, not class ids")
    expected = set(range(max(ids) + 1))
    if ids != expected:
        compact = {v: i for i, v in enumerate(sorted(ids))}
        if min(ids) == 1 and ids == set(range(1, max(ids) + 1)):
            return Encoding("ids_start_at_1", f"{base}; ids start at 1, so class 0 is empty",
                            id_map=compact)
        return Encoding("sparse_ids", f"{base}; ids {_listing(sorted(ids))} are not "
                        "contiguous, so "
                        f"{len(expected - ids)} classes would be empty", id_map=compact)
    return Encoding("palette" if "P" in modes else "grayscale_ids", base)


def detect_encoding(scans: list[Scan]) -> tuple[Encoding, list[Problem]]:
    """Look at the union of all labels and name their encoding."""
    colours: Counter = Counter()
    values: Counter = Counter()
    modes = set()
    multi = grey = 0
    too_many = False
    for s in scans:
        if not s.label_usable:
            continue
        modes.add(s.label_mode)
        if s.colours is not None:
            multi += 1
            grey += s.grey_colours
            too_many |= not s.colours
            for c, n in s.colours.items():
                if s.grey_colours:
                    values[c[0]] += n
                else:
                    colours[c[:3] if len(c) == 4 and c[3] == 255 else c] += n
        else:
            values.update(s.counts)
    problems: list[Problem] = []
    if too_many:
        problems.append(Problem("error", "label_not_mask",
                                "some labels have more than 1,024 colours: they are photos or "
                                "lossy images, not label masks.",
                                "check the list files point labels at the mask files."))
    if multi and grey < multi and colours:
        table = sorted(colours, key=lambda c: (sum(c[:3]) != 0, c))  # black -> 0
        enc = Encoding("colour", f"colour-coded labels ({len(table)} colours); a model needs "
                       "single-channel class ids", colour_map={c: i for i, c in enumerate(table)})
        listing = ", ".join(f"{c}->{i}" for c, i in list(enc.colour_map.items())[:12])
        problems.append(Problem(
            "error", "colour_label",
            f"{multi} labels are {'/'.join(sorted(m for m in modes if m not in ('L', 'P')))} "
            f"colour images, not single-channel ids. Detected colour table: {listing}"
            + (" ..." if len(table) > 12 else "") + ".",
            "run with -o CheckDataset.fix_labels=True to write id labels with this table, or "
            "re-export the labels as single-channel PNGs."))
        return enc, problems
    enc = _single_channel_encoding(values, modes)
    if multi:
        enc.channel_reduce = True
        problems.append(Problem("error", "multichannel_label",
                                f"{multi} labels have several equal channels (mode "
                                f"{'/'.join(sorted(modes - {'L', 'P'}))}) instead of one.",
                                "run with -o CheckDataset.fix_labels=True to keep one channel."))
    problems += _encoding_problems(enc)
    return enc, problems


def _encoding_problems(enc: Encoding) -> list[Problem]:
    """What a single-channel encoding means for training, and the fix."""
    fixable = "run with -o CheckDataset.fix_labels=True to write fixed labels to a new folder"
    if enc.name == "binary_0_255":
        return [Problem("error", "binary_0_255", enc.description + ".",
                        f"{fixable} (255 -> 1), or re-save masks as 0/1.")]
    if enc.name == "binary_0_255_antialiased":
        return [Problem("error", enc.name, enc.description + ".",
                        f"{fixable} (values >= 128 -> 1, others -> 0).")]
    if enc.name in ("ids_start_at_1", "sparse_ids"):
        pairs = [f"{k}: {v}" for k, v in enc.id_map.items()]
        mapping = "{" + ", ".join(pairs[:20]) + (", ..." if len(pairs) > 20 else "") + "}"
        return [Problem("warning", enc.name, enc.description + ".",
                        f"{fixable} (mapping {mapping}), or keep them on purpose.")]
    if enc.name == "empty":
        return [Problem("error", "no_classes", enc.description + ".",
                        "check that the label files hold class ids.")]
    if enc.name == "too_many_ids":
        return [Problem("error", "too_many_ids", enc.description + f"; segx trains on at most "
                        f"{MAX_CLASS_IDS} classes.", "save labels as 8-bit PNG with class ids "
                        "0..N-1 (255 for pixels to ignore).")]
    return []


def class_statistics(layout: Layout, scans: dict[str, list[Scan]], enc: Encoding) -> dict:
    """Per split: pixels and images per class id, under the detected encoding."""
    stats: dict = {}
    for split, samples in layout.samples.items():
        pixels: Counter = Counter()
        images: Counter = Counter()
        for s in scans[split]:
            if not s.label_usable:
                continue
            counts = s.counts if s.colours is None else (
                {c[0]: n for c, n in s.colours.items()} if s.grey_colours else
                {enc.colour_map.get(c[:3] if len(c) == 4 and c[3] == 255 else c, IGNORE_INDEX): n
                 for c, n in s.colours.items()})
            if enc.mandatory and (s.colours is None or s.grey_colours):
                counts = enc.apply_to_counts(counts)
            pixels.update(counts)
            images.update(counts.keys())
        stats[split] = {"pixels": dict(sorted(pixels.items())),
                        "images": dict(sorted(images.items())), "samples": len(samples)}
    return stats


def check_ids(stats: dict, num_classes: int | None, findings: Findings) -> None:
    """Ids against an explicit ``Train.num_classes``."""
    if num_classes is None:
        return
    for split, st in stats.items():
        bad = sorted(i for i in st["pixels"] if i >= num_classes and i != IGNORE_INDEX)
        if bad:
            findings.add(Problem(
                "error", "id_out_of_range",
                f"{split} labels contain ids {bad[:10]} but Train.num_classes={num_classes} "
                f"(valid ids 0..{num_classes - 1}, 255 = ignore).",
                f"set -o Train.num_classes={max(bad) + 1}, or fix the labels."))


def group_by_split(layout: Layout, scans: list[Scan]) -> dict[str, list[Scan]]:
    out: dict[str, list[Scan]] = defaultdict(list)
    i = 0
    for split, samples in layout.samples.items():
        out[split] = scans[i:i + len(samples)]
        i += len(samples)
    return dict(out)
