"""Decode every image and label once, on all cores, and keep only what the checks need."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segx.data.layout import Sample
from segx.data.leakage import fingerprint
from segx.imaging.images import MAX_PIXELS, TooLarge, open_header
from segx.utils.progress import Progress
from segx.utils.workers import process_pool

_ORIENTATION = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}
MAX_COLOURS = 1024  # a colour label with more distinct colours is not a colour table
MAX_ID = 65535  # largest value a label may hold (16-bit); segx trains on ids 0..254


@dataclass
class Scan:
    """What one sample's decode tells the checker (picklable, small)."""

    image_error: str | None = None
    label_error: str | None = None
    image_size: tuple[int, int] | None = None  # (w, h) after EXIF orientation
    image_mode: str | None = None
    label_size: tuple[int, int] | None = None
    label_mode: str | None = None
    label_format: str | None = None
    counts: dict[int, int] = field(default_factory=dict)  # id -> pixels (single-channel labels)
    colours: dict[tuple, int] | None = None  # colour -> pixels (multi-channel labels)
    grey_colours: bool = False  # a multi-channel label whose channels are all equal
    label_values: str | None = None  # why a decoded label holds no class ids (float, range)

    @property
    def label_usable(self) -> bool:
        """The label was read and holds ids (or colours) the statistics can count."""
        return not self.label_error and not self.label_values

    @property
    def drawable(self) -> bool:
        """Both files were read within the limits and the label holds ids: an overlay can be
        drawn."""
        return not self.image_error and self.label_usable
    fingerprint: tuple | None = None  # the image's pixel digest and perceptual hashes (leakage)


def _oriented_size(im: Image.Image, orientation: int) -> tuple[int, int]:
    return (im.height, im.width) if orientation in _SWAPS_AXES else (im.width, im.height)


def _describe(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        return "missing"
    if isinstance(exc, TooLarge):
        return "too large: " + exc.message.split("' declares ", 1)[-1].rstrip(".")
    if isinstance(exc, UnidentifiedImageError):
        return "not an image PIL can read"
    return f"unreadable ({exc})"


def _bad_values(arr: np.ndarray) -> str | None:
    """Why a decoded label cannot hold class ids (float, non-finite, outside 0..65535), or
    None. Bounded: one min/max pass, no set of the value range."""
    if arr.size == 0:
        return None
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            return f"holds {arr.size - int(finite.sum()):,} NaN or infinite values"
        return f"is a floating-point image (values {float(arr.min()):g}..{float(arr.max()):g})"
    if arr.dtype.kind not in "iu":
        return f"holds {arr.dtype} values"
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > MAX_ID:
        return f"has values outside 0..{MAX_ID} (min {lo:,}, max {hi:,})"
    return None


def _count_ids(s: Scan, arr: np.ndarray) -> None:
    """Per-id pixel counts of a single-channel label whose values were checked first."""
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    s.label_values = _bad_values(arr)
    if s.label_values is None:
        ids, cnt = np.unique(arr.astype(np.uint16, copy=False).ravel(), return_counts=True)
        s.counts = {int(i): int(c) for i, c in zip(ids, cnt)}


def _scan_image(s: Scan, image: Path, max_pixels: int) -> None:
    try:
        with open_header(image, max_pixels) as im:
            s.image_size = _oriented_size(im, im.getexif().get(_ORIENTATION, 1))
            s.image_mode = im.mode
            im.load()
            s.fingerprint = fingerprint(im)
    except Exception as exc:  # noqa: BLE001 - every decode failure is a reported problem
        s.image_error = _describe(exc)


def scan_sample(image: Path, label: Path, max_pixels: int = MAX_PIXELS) -> Scan:
    """Decode one pair fully (so truncation is caught) and summarise it; files whose header
    declares more than ``max_pixels`` are reported, never decoded."""
    s = Scan()
    _scan_image(s, image, max_pixels)
    try:
        with open_header(label, max_pixels) as lb:
            orientation = lb.getexif().get(_ORIENTATION, 1)
            s.label_size, s.label_mode = _oriented_size(lb, orientation), lb.mode
            s.label_format = lb.format
            lb.load()
            # Counting needs no orientation; PIL's C histogram/getcolors avoid numpy copies.
            if lb.mode in ("L", "P"):
                s.counts = {i: c for i, c in enumerate(lb.histogram()) if c}
                return s
            if lb.mode in ("RGB", "RGBA", "LA"):
                colours = lb.getcolors(MAX_COLOURS)
                if colours is not None:
                    s.colours = {tuple(c): n for n, c in colours}
                    s.grey_colours = all(len(set(c)) == 1 for c in s.colours)
                    return s
            arr = np.asarray(lb)
    except Exception as exc:  # noqa: BLE001
        s.label_error = _describe(exc)
        return s
    if arr.ndim == 2:
        _count_ids(s, arr)
    else:  # a colour label with more than MAX_COLOURS colours: not a colour table
        channels = arr.reshape(-1, arr.shape[-1])
        s.grey_colours = bool((channels == channels[:, :1]).all())
        s.colours = {}
    return s


def _scan_pair(job: tuple[Path, Path, int]) -> Scan:
    return scan_sample(*job)


def scan_all(samples: list[Sample], workers: int | None = None,
             max_pixels: int = MAX_PIXELS) -> list[Scan]:
    """Scan samples in parallel with a progress display; order is preserved."""
    workers = workers or os.cpu_count() or 1
    pairs = [(s.image, s.label, max_pixels) for s in samples]
    if not pairs:
        return []
    chunk = max(1, min(16, len(pairs) // (workers * 8)))  # small: no idle tail
    progress = Progress("checked samples", len(pairs), quarters=True)
    if workers == 1 or len(pairs) < 8:
        results = []
        for p in pairs:
            results.append(_scan_pair(p))
            progress.update()
    else:
        with process_pool(workers) as pool:
            results = []
            for r in pool.map(_scan_pair, pairs, chunksize=chunk):
                results.append(r)
                progress.update()
    progress.close()
    return results
