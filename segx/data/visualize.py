"""The check report's pictures: sample overlays with a colour legend, and the class histogram."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from segx.utils.constants import IGNORE_INDEX
from segx.data.checks import Encoding
from segx.data.layout import Layout, Sample
from segx.data.scan import MAX_ID
from segx.utils.errors import DatasetError
from segx.utils.fileio import save_figure, save_image
from segx.imaging.images import MAX_PIXELS, open_header
from segx.imaging.palette import draw_overlay
from segx.utils.workers import process_pool


MAX_BARS = 40  # histogram bars: the classes with most pixels, the rest summed in a note
MAX_NAME = 24  # characters of a class name shown in the histogram


def read_ids(label: Path, enc: Encoding, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A label file as an H x W array of class ids under ``enc``."""
    with open_header(label, max_pixels) as lb:
        lb = ImageOps.exif_transpose(lb)
        arr = np.asarray(lb)
    if arr.ndim == 3:
        if enc.colour_map:
            rgb = arr[..., :3]
            out = np.full(arr.shape[:2], IGNORE_INDEX, np.uint8)
            for colour, i in enc.colour_map.items():
                out[(rgb == np.array(colour[:3], arr.dtype)).all(-1)] = i
            return out
        arr = arr[..., 0]
    if arr.dtype.kind not in "biu" or (arr.size and (arr.min() < 0 or arr.max() > MAX_ID)):
        raise DatasetError(f"label '{label}' holds values that are not class ids 0..{MAX_ID}.",
                           solution="save labels as 8-bit PNG with ids 0..N-1.")
    # 16-bit at most, never int64: a label at the pixel cap stays a few bytes per pixel
    arr = (arr.view(np.uint8) if arr.dtype == np.bool_ else arr).astype(np.uint16, copy=False)
    if enc.threshold is not None:
        return (arr >= enc.threshold).astype(np.uint8)
    lut = np.minimum(np.arange(MAX_ID + 1), 255).astype(np.uint8)  # ids past 255 drawn as 255
    for k, v in enc.id_map.items():
        lut[k] = min(v, 255)
    return lut[arr]


def overlay(sample: Sample, enc: Encoding, names: list[str],
            max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image with its label blended in and a legend of the classes it contains."""
    with open_header(sample.image, max_pixels) as im:
        rgb = ImageOps.exif_transpose(im).convert("RGB")
    ids = read_ids(sample.label, enc, max_pixels)
    if ids.shape != (rgb.height, rgb.width):
        ids = np.asarray(Image.fromarray(ids).resize(rgb.size, Image.NEAREST))
    return draw_overlay(rgb, ids, names)


def _shown_ids(stats: dict, splits: list[str]) -> tuple[list[int], str]:
    """The ids to draw (at most MAX_BARS, those with most pixels, in id order) and a note on
    the rest."""
    pixels: dict[int, int] = {}
    for split in splits:
        for i, v in stats[split]["pixels"].items():
            if i != IGNORE_INDEX:
                pixels[i] = pixels.get(i, 0) + v
    if len(pixels) <= MAX_BARS:
        return sorted(pixels), ""
    top = sorted(sorted(pixels, key=lambda i: -pixels[i])[:MAX_BARS])
    rest = sum(pixels.values()) - sum(pixels[i] for i in top)
    share = 100 * rest / max(sum(pixels.values()), 1)
    return top, (f"; the {MAX_BARS} ids with most pixels of {len(pixels):,} "
                 f"({len(pixels) - MAX_BARS:,} more ids hold {share:.1f}% of pixels)")


def _label(i: int, names: list[str]) -> str:
    name = names[i] if i < len(names) else ""
    name = name if len(name) <= MAX_NAME else name[:MAX_NAME - 1] + "\u2026"
    return f"{i} {name}".strip()


def histogram(stats: dict, names: list[str], path: Path) -> None:
    """Per-class pixel share and image presence for each split, one bar per class id (at
    most MAX_BARS: the ids with most pixels, a note counts the rest)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, faster import
    splits = [s for s in ("train", "val", "test") if s in stats]
    ids, note = _shown_ids(stats, splits)
    n, k_splits = max(len(ids), 1), max(len(splits), 1)
    fig = Figure(figsize=(max(8.0, 0.14 * n * k_splits + 2), 7), dpi=110)
    axes = fig.subplots(2, 1)
    x = np.arange(len(ids))
    width = 0.8 / k_splits
    for k, split in enumerate(splits):
        st = stats[split]
        total = sum(v for i, v in st["pixels"].items() if i != IGNORE_INDEX) or 1
        share = [100 * st["pixels"].get(i, 0) / total for i in ids]
        presence = [100 * st["images"].get(i, 0) / max(st["samples"], 1) for i in ids]
        axes[0].bar(x + k * width, share, width, label=split)
        axes[1].bar(x + k * width, presence, width, label=split)
    labels = [_label(i, names) for i in ids]
    small = n > 30
    for ax, ylabel in zip(axes, ("% of labelled pixels", "% of images containing")):
        ax.set_xticks(x + width * (k_splits - 1) / 2)
        ax.set_xticklabels(labels, rotation=90 if small or n > 10 else 0,
                           fontsize=5 if small else 8)
        ax.set_ylabel(ylabel)
        ax.set_xlim(-0.6, max(len(ids), 1))
    if splits:  # one legend above the plots, where it can never cover a bar
        axes[0].legend(loc="lower right", bbox_to_anchor=(1.0, 1.02), ncol=len(splits),
                       frameon=False)
    axes[0].set_title("Class balance by split" + (note or ("" if ids else ": no labelled pixels")),
                      loc="left", fontsize=9 if note else None)
    fig.tight_layout()
    save_figure(path, fig, pil_kwargs={"compress_level": 1})


def _overlay_job(job: tuple) -> str | None:
    """One overlay image, drawn in a worker process; None when the pair cannot be drawn."""
    sample, enc, names, path, max_pixels = job
    try:
        save_image(path, overlay(sample, enc, names, max_pixels), quality=90)
    except (OSError, ValueError, SyntaxError, DatasetError):
        return None  # unreadable, oversized or id-less pairs are already reported as problems
    return str(path)


def render_report(layout: Layout, enc: Encoding, summary: dict, out: Path, n: int,
                  workers: int | None, max_pixels: int = MAX_PIXELS) -> dict[str, list[str]]:
    """Overlays of the first ``n`` drawable samples per split (in worker processes; samples
    in ``summary["undrawable"]`` are skipped) and the histogram (here, meanwhile), under
    ``out/check_dataset/``. Returns the overlay paths per split, relative to ``out``."""
    jobs, splits = [], []
    skip = summary.get("undrawable", set())
    for split, samples in layout.samples.items():
        drawable = [s for s in samples if str(s.image) not in skip]
        for k, s in enumerate(drawable[:n]):
            rel = f"check_dataset/demo_img/{split}_{k:02d}_{s.image.stem}.jpg"
            jobs.append((s, enc, summary["names"], out / rel, max_pixels))
            splits.append(split)
    with process_pool(workers) as pool:
        pending = pool.map(_overlay_job, jobs)
        histogram(summary["stats"], summary["names"], out / "check_dataset" / "histogram.png")
        done = list(pending)
    paths: dict[str, list[str]] = {split: [] for split in layout.samples}
    for split, path in zip(splits, done):
        if path is not None:
            paths[split].append(str(Path(path).relative_to(out)))
    return paths
