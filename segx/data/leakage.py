"""Leakage and duplicates: the same picture in two splits silently inflates validation mIoU.

Each image gets a fingerprint while the scan decodes it (no second decode of the dataset):

* ``pixels``: the first 128 bits of the SHA-256 of the decoded pixels (mode, size and bytes), so a PNG
  and a byte-different PNG of the same pixels are one image;
* ``file``: the same digest of the file's bytes (a byte-identical copy), and of the label's
  pixels (a conflicting label), taken for the members of duplicate groups only;
* two perceptual hashes of the image reduced to grey levels: the 2-D DCT-II of the 32x32 image
  gives 63 bits (its lowest 8x8 frequencies but the constant, above or below their median), the
  search key; the DCT of the 64x64 image gives 255 bits (lowest 16x16), the finer comparison.
  Re-encoding, resizing, small shifts and brightness changes move few bits; different scenes
  differ in about half of them.

Two images are near-duplicates when their 64-bit keys differ in at most ``CANDIDATE_BITS`` bits
and their 256-bit hashes in at most ``NEAR_DUP_THRESHOLD`` (``CheckDataset.near_dup_threshold``).
The coarse key alone cannot separate similar but different scenes (generated street scenes are
6-8 bits apart, as close as a JPEG re-encode); the fine hash can (64+ bits apart against 30 or
fewer for re-encoded, resized and shifted copies; docs/check_dataset.md has the figures).

Exact duplicates are grouped by digest; near-duplicates are searched among the distinct digests
by XOR and popcount of the 64-bit keys, in blocks of rows (memory bounded, vectorised, about
N^2/2 comparisons: 10,000 images take 1-4 s on one core), then confirmed on the fine hash.
At most ``MAX_PAIRS`` candidate pairs are collected; past that the images are too alike for a
perceptual hash to tell apart, which is reported instead of the pairs.
"""
from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from segx.data.layout import SPLITS, Layout, Problem, Sample
from segx.utils.errors import DatasetError

NEAR_DUP_THRESHOLD = 40  # bits of 256; see docs/check_dataset.md for the measured distances
CANDIDATE_BITS = 12      # bits of 64: the coarse search key's bound
MAX_PAIRS = 100_000      # near pairs collected at most (memory bound)
LISTED = 20              # pairs listed per problem code (the report and JSON hold more)
KEPT_PAIRS = 2_000       # pairs kept in check_dataset_result.json
_BLOCK = 1 << 21         # XOR/popcount elements per block (16 MiB per temporary)


# --------------------------------------------------------------------------- fingerprints
def pixel_digest(im: Image.Image) -> bytes:
    """A digest of the decoded pixels (mode and size included)."""
    h = hashlib.sha256(f"{im.mode}:{im.width}x{im.height}:".encode())
    h.update(im.tobytes())
    return h.digest()[:16]


def file_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.digest()[:16]


@lru_cache(maxsize=2)
def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)
    c = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * np.sqrt(2 / n)
    c[0] /= np.sqrt(2)
    return c


def _bits(grey: np.ndarray, keep: int) -> np.ndarray:
    """One bit per DCT coefficient of the lowest ``keep`` x ``keep`` frequencies (the constant
    term excluded): above or below their median."""
    c = _dct_matrix(grey.shape[0])
    low = (c @ grey @ c.T)[:keep, :keep].ravel()[1:]
    return low > np.median(low)


def phash(im: Image.Image) -> tuple[int, bytes]:
    """The perceptual hashes of a decoded image: 64 bits (63 used) from the 32x32 grey image,
    the search key, and 256 bits (255 used) from the 64x64 grey image, the finer comparison."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(im, np.float64)
        span = float(arr.max() - arr.min()) or 1.0
        im = Image.fromarray(((arr - arr.min()) * (255 / span)).astype(np.uint8))
    elif im.mode not in ("L", "RGB"):
        im = im.convert("RGB")
    step = min(im.width, im.height) // 128
    if step > 1:  # a box filter either way; reduce() is the faster first step
        im = im.reduce(step)
    small = im.resize((64, 64), Image.BOX).convert("L")
    grey64 = np.asarray(small, np.float64)
    grey32 = np.asarray(small.resize((32, 32), Image.BOX), np.float64)
    coarse = np.packbits(np.append(_bits(grey32, 8), False)).view(">u8")[0]
    fine = np.packbits(np.append(_bits(grey64, 16), False)).tobytes()
    return int(coarse), fine


def fingerprint(im: Image.Image) -> tuple[bytes, int, bytes] | None:
    """(pixel digest, 64-bit and 256-bit perceptual hashes) of a loaded image; None when it
    cannot be computed (the image is then simply not compared). File and label digests are
    taken later, for the members of duplicate groups only."""
    try:
        return (pixel_digest(im), *phash(im))
    except (OSError, ValueError, MemoryError):
        return None


def distance(a: bytes, b: bytes) -> int:
    """Hamming distance of two fine (256-bit) hashes."""
    return int.from_bytes(a, "big").__xor__(int.from_bytes(b, "big")).bit_count()


# --------------------------------------------------------------------------- search
@lru_cache(maxsize=1)
def _bit_counts() -> np.ndarray:
    return np.array([bin(i).count("1") for i in range(1 << 16)], np.uint8)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 in a 2-D array: four 16-bit table look-ups (faster in numpy
    than the shift-and-mask sum)."""
    lut, words = _bit_counts(), np.ascontiguousarray(x).view(np.uint16)
    return lut[words[:, 0::4]] + lut[words[:, 1::4]] + lut[words[:, 2::4]] + lut[words[:, 3::4]]


def near_pairs(hashes: np.ndarray, threshold: int, limit: int = MAX_PAIRS
               ) -> tuple[list[tuple[int, int, int]], bool]:
    """Index pairs ``(i, j, distance)`` with ``i < j`` and Hamming distance <= ``threshold``;
    the flag says the ``limit`` was reached (the list is then incomplete)."""
    h = np.asarray(hashes, np.uint64)
    n, out = len(h), []
    rows = max(1, _BLOCK // max(n, 1))
    for start in range(0, n, rows):
        block = h[start:start + rows]
        dist = _popcount(block[:, None] ^ h[None, start:])
        r, c = np.nonzero(dist <= threshold)
        keep = c > r  # columns start at ``start``: column r is the row itself
        for i, j in zip(r[keep].tolist(), c[keep].tolist()):
            out.append((start + i, start + j, int(dist[i, j])))
        if len(out) >= limit:
            return out[:limit], True
    return out, False


class _Groups:
    """Union-find over sample indices."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


_CODES = {"exact": "duplicate_across_splits", "near": "near_duplicate_across_splits",
          "conflict": "conflicting_labels", "duplicate": "duplicate_image"}


@dataclass
class Pair:
    kind: str          # exact | near | conflict
    a: Sample
    b: Sample
    distance: int = 0  # Hamming distance of the perceptual hashes (0 for exact)
    same_file: bool = False

    @property
    def code(self) -> str:
        return _CODES[self.kind]

    def as_dict(self) -> dict:
        return {"kind": self.kind, "distance": self.distance, "same_file_bytes": self.same_file,
                "a": _where(self.a), "b": _where(self.b)}


def _where(s: Sample) -> dict:
    return {"split": s.split, "image": str(s.image), "list": s.list_file, "line": s.line}


@dataclass
class Leakage:
    """What the search found: listed pairs, problems and the groups that span splits."""

    threshold: int
    compared: int = 0
    pairs: list[Pair] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    mixed_groups: list[list[Sample]] = field(default_factory=list)
    truncated: bool = False

    def as_dict(self) -> dict:
        kinds: dict[str, int] = defaultdict(int)
        for p in self.pairs:
            kinds[p.kind] += 1
        return {"threshold": self.threshold, "images_compared": self.compared,
                "pairs_by_kind": dict(kinds), "groups_across_splits": len(self.mixed_groups),
                "truncated": self.truncated,
                "pairs": [p.as_dict() for p in self.pairs[:KEPT_PAIRS]]}


# --------------------------------------------------------------------------- findings
_TEXT = {
    "duplicate_across_splits": (
        "error", "{b} ({bs}) has the same pixels as {a} ({as_}, {where}){same}.",
        "keep the copies of a picture in one split: remove one, or run with "
        "-o CheckDataset.fix_leakage=True to move each group into one split (lists backed up)."),
    "near_duplicate_across_splits": (
        "warning", "{b} ({bs}) is a near-duplicate of {a} ({as_}, {where}): perceptual hashes "
        "{d} of 256 bits apart (threshold {t}).",
        "keep near-duplicates (frames of one video, re-encoded or resized copies) in one split: "
        "-o CheckDataset.fix_leakage=True moves each group; if they are different pictures, "
        "lower -o CheckDataset.near_dup_threshold."),
    "conflicting_labels": (
        "warning", "{b} has the same pixels as {a} ({where}) but a different label, both in "
        "{bs}.", "keep one label per picture: fix or remove the wrong one."),
    "duplicate_image": (
        "info", "{b} has the same pixels and label as {a} ({where}) in {bs}: it counts twice.",
        "remove one copy unless the double weight is intended."),
}


def _problem(pair: Pair, threshold: int) -> Problem:
    severity, message, fix = _TEXT[pair.code]
    a, b = pair.a, pair.b
    text = message.format(a=a.image.name, b=b.image.name, as_=a.split, bs=b.split, d=pair.distance,
                          t=threshold, where=f"{a.list_file}:{a.line}",
                          same=" (the same file bytes)" if pair.same_file else "")
    return Problem(severity, pair.code, text, fix, file=b.list_file, line=b.line)


def _collect(layout: Layout, scans: dict) -> tuple[list[Sample], list]:
    samples, prints = [], []
    for split, group in layout.samples.items():
        for s, sc in zip(group, scans.get(split, [])):
            fp = getattr(sc, "fingerprint", None)
            if fp is not None and not sc.image_error:
                samples.append(s)
                prints.append(fp)
    return samples, prints


def _digests(sample: Sample) -> tuple[bytes | None, bytes | None]:
    """(file digest of the image, pixel digest of the label) of a duplicate's sample."""
    try:
        image = file_digest(sample.image)
    except OSError:
        image = None
    try:
        with Image.open(sample.label) as lb:
            lb.load()
            label = pixel_digest(lb)
    except Exception:  # noqa: BLE001 - an unreadable label is reported by the checks
        label = None
    return image, label


def _exact(members: list[int], samples: list[Sample], leak: Leakage) -> None:
    """Pairs inside one group of identical pixels: across splits, and inside each split."""
    first = members[0]
    digests = {m: _digests(samples[m]) for m in members}
    anchors: dict[str, int] = {}
    for m in members:
        anchor = anchors.setdefault(samples[m].split, m)
        a, b = samples[anchor], samples[m]
        if anchor != m:
            labels = digests[anchor][1], digests[m][1]
            kind = "conflict" if None not in labels and labels[0] != labels[1] else "duplicate"
            leak.pairs.append(Pair(kind, a, b, 0, digests[anchor][0] == digests[m][0]))
        if samples[m].split != samples[first].split and anchor == m \
                and samples[first].image.resolve() != b.image.resolve():
            leak.pairs.append(Pair("exact", samples[first], b, 0,
                                   digests[first][0] == digests[m][0]))


def _near(reps: list[list[int]], samples: list[Sample], prints: list, threshold: int,
          groups: _Groups, leak: Leakage) -> None:
    """Near pairs among the groups of identical pixels (one hash per group)."""
    hashes = np.array([prints[g[0]][1] for g in reps], np.uint64)
    candidates, leak.truncated = near_pairs(hashes, CANDIDATE_BITS)
    for ga, gb, _ in candidates:
        d = distance(prints[reps[ga][0]][2], prints[reps[gb][0]][2])
        if d > threshold:
            continue
        groups.union(reps[ga][0], reps[gb][0])
        cross = next(((i, j) for i in reps[ga] for j in reps[gb]
                      if samples[i].split != samples[j].split), None)
        if cross:
            leak.pairs.append(Pair("near", samples[cross[0]], samples[cross[1]], d))


def find_leakage(layout: Layout, scans: dict, threshold: int = NEAR_DUP_THRESHOLD) -> Leakage:
    """Exact and near duplicates of the scanned images (``scans``: split -> Scan list, in
    layout order, each with the scan's ``fingerprint``)."""
    if not 0 <= threshold <= 96:
        raise DatasetError(f"CheckDataset.near_dup_threshold={threshold} is outside 0..96.",
                           solution="use 0 (exact copies only) to 64; the default is "
                                    f"{NEAR_DUP_THRESHOLD} of 256 bits.")
    samples, prints = _collect(layout, scans)
    leak = Leakage(threshold, compared=len(samples))
    groups = _Groups(len(samples))
    by_digest: dict[bytes, list[int]] = defaultdict(list)
    for i, fp in enumerate(prints):
        by_digest[fp[0]].append(i)
    for members in by_digest.values():
        for m in members[1:]:
            groups.union(members[0], m)
        if len(members) > 1:
            _exact(members, samples, leak)
    _near(list(by_digest.values()), samples, prints, threshold, groups, leak)
    components: dict[int, list[Sample]] = defaultdict(list)
    for i, s in enumerate(samples):
        components[groups.find(i)].append(s)
    leak.mixed_groups = [g for g in components.values() if len({s.split for s in g}) > 1]
    leak.problems = _problems(leak)
    return leak


def _problems(leak: Leakage) -> list[Problem]:
    out: list[Problem] = []
    listed: dict[str, int] = defaultdict(int)
    for pair in leak.pairs:
        listed[pair.code] += 1
        if listed[pair.code] <= LISTED:
            out.append(_problem(pair, leak.threshold))
    for code, n in listed.items():
        if n > LISTED:
            out.append(Problem(_TEXT[code][0], code, f"... and {n - LISTED} more like the above "
                               "(every pair is in check_dataset_result.json and report.html).",
                               count=n - LISTED))
    if leak.truncated:
        out.append(Problem("warning", "too_many_near_duplicates",
                           f"more than {MAX_PAIRS} candidate near-duplicate pairs: the images are too alike for a perceptual hash "
                           "(one scene, blank frames); the near pairs listed are incomplete.",
                           "check the images; exact duplicates are still all listed."))
    return out


# --------------------------------------------------------------------------- the fix
def fix_leakage(layout: Layout, leak: Leakage, seed: int) -> dict:
    """Move every group of duplicates that spans splits into one split, rewriting the list files
    as one unit (journal, backups) like the re-split. A group touching test goes to test (the
    test set never loses an image); any other group goes to one of its members' splits, drawn
    with ``seed`` in proportion to its members (so split sizes are kept on average)."""
    from segx.data.split import commit_lists
    if leak.truncated:
        raise DatasetError("cannot move near-duplicate groups: too many candidate pairs to "
                           "list them all.", solution="check the images (one scene, blank "
                                                      "frames?) and split by sequence by hand.")
    bad = [p for p in layout.problems if p.severity == "error"]
    if bad:
        raise DatasetError(f"cannot move near-duplicate groups: {bad[0]}",
                           solution="fix the list files first.")
    rng = random.Random(seed)
    moves: dict[tuple[str, int], tuple[Sample, str]] = {}
    order = {sp: k for k, sp in enumerate(SPLITS)}
    ordered = sorted(leak.mixed_groups,
                     key=lambda g: min((order[s.split], s.list_file, s.line) for s in g))
    for group in ordered:
        members = sorted(group, key=lambda s: (order[s.split], s.list_file, s.line))
        splits = [s.split for s in members]
        target = "test" if "test" in splits else rng.choice(splits)
        for s in members:
            if s.split != target:
                moves[(s.list_file, s.line)] = (s, target)
    lists = _moved_lists(layout, moves)
    empty = [sp for sp in ("train", "val") if sp in lists and not lists[sp][1]]
    if empty:
        raise DatasetError(f"moving the {len(ordered)} duplicate groups would leave "
                           f"{' and '.join(empty)} with no samples.",
                           solution="lower -o CheckDataset.near_dup_threshold, or split by "
                                    "sequence by hand.")
    changed = {sp: rows for sp, (rows, _) in lists.items() if sp in _touched(moves)}
    backups = commit_lists(layout.root, changed, [], "move near-duplicate groups")
    return {"groups": len(ordered), "moved": len(moves), "seed": seed, "backups": backups,
            "samples": {sp: n for sp, (_, n) in lists.items()},
            "moves": [{"image": str(s.image), "from": s.split, "to": t}
                      for s, t in list(moves.values())[:KEPT_PAIRS]]}


def _touched(moves: dict) -> set[str]:
    return {sp for s, t in moves.values() for sp in (s.split, t)}


def _moved_lists(layout: Layout, moves: dict) -> dict[str, tuple[list[str], int]]:
    """Each split's list lines after the moves (other lines kept as they are), and its number
    of samples."""
    raw: dict[str, list[str]] = {}
    for split in layout.samples:
        path = layout.root / f"{split}.txt"
        raw[split] = path.read_bytes().decode("utf-8-sig", errors="replace").splitlines()
    out = {sp: [line for k, line in enumerate(rows, 1) if (f"{sp}.txt", k) not in moves]
           for sp, rows in raw.items()}
    for s, target in moves.values():
        out.setdefault(target, []).append(raw[s.split][s.line - 1].strip())
    counts = {sp: len(layout.samples.get(sp, [])) for sp in out}
    for s, target in moves.values():
        counts[s.split] -= 1
        counts[target] += 1
    return {sp: (rows, counts[sp]) for sp, rows in out.items()}
