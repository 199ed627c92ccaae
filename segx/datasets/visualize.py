"""The check report's pictures: sample overlays with a colour legend, and the class histogram."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from segx.constants import IGNORE_INDEX
from segx.datasets.checks import Encoding
from segx.datasets.layout import Layout, Sample
from segx.palette import draw_overlay
from segx.workers import process_pool



def read_ids(label: Path, enc: Encoding) -> np.ndarray:
    """A label file as an H x W array of class ids under ``enc``."""
    with Image.open(label) as lb:
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
    arr = arr.astype(np.int64)
    if enc.threshold is not None:
        return (arr >= enc.threshold).astype(np.uint8)
    if enc.id_map:
        lut = np.arange(max(int(arr.max()) + 1, max(enc.id_map) + 1, 256))
        for k, v in enc.id_map.items():
            lut[k] = v
        arr = lut[arr]
    return arr.clip(0, 255).astype(np.uint8)


def overlay(sample: Sample, enc: Encoding, names: list[str]) -> Image.Image:
    """The image with its label blended in and a legend of the classes it contains."""
    with Image.open(sample.image) as im:
        rgb = ImageOps.exif_transpose(im).convert("RGB")
    ids = read_ids(sample.label, enc)
    if ids.shape != (rgb.height, rgb.width):
        ids = np.asarray(Image.fromarray(ids).resize(rgb.size, Image.NEAREST))
    return draw_overlay(rgb, ids, names)


def histogram(stats: dict, names: list[str], path: Path) -> None:
    """Per-class pixel share and image presence for each split, one bar per real class id."""
    from matplotlib.figure import Figure  # no pyplot: no global state, faster import
    splits = [s for s in ("train", "val", "test") if s in stats]
    ids = sorted({i for s in splits for i in stats[s]["pixels"] if i != IGNORE_INDEX})
    n = max(len(ids), 1)
    fig = Figure(figsize=(max(8.0, 0.14 * n * len(splits) + 2), 7), dpi=110)
    axes = fig.subplots(2, 1)
    x = np.arange(len(ids))
    width = 0.8 / len(splits)
    for k, split in enumerate(splits):
        st = stats[split]
        total = sum(v for i, v in st["pixels"].items() if i != IGNORE_INDEX) or 1
        share = [100 * st["pixels"].get(i, 0) / total for i in ids]
        presence = [100 * st["images"].get(i, 0) / max(st["samples"], 1) for i in ids]
        axes[0].bar(x + k * width, share, width, label=split)
        axes[1].bar(x + k * width, presence, width, label=split)
    labels = [f"{i} {names[i]}" if i < len(names) else str(i) for i in ids]
    small = n > 30
    for ax, ylabel in zip(axes, ("% of labelled pixels", "% of images containing")):
        ax.set_xticks(x + width * (len(splits) - 1) / 2)
        ax.set_xticklabels(labels, rotation=90 if small or n > 10 else 0,
                           fontsize=5 if small else 8)
        ax.set_ylabel(ylabel)
        ax.set_xlim(-0.6, len(ids))
    # one legend above the plots, where it can never cover a bar
    axes[0].legend(loc="lower right", bbox_to_anchor=(1.0, 1.02), ncol=len(splits),
                   frameon=False)
    axes[0].set_title("Class balance by split", loc="left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, pil_kwargs={"compress_level": 1})


def _overlay_job(job: tuple) -> str | None:
    """One overlay image, drawn in a worker process; None when the pair is unreadable."""
    sample, enc, names, path = job
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        overlay(sample, enc, names).save(path, quality=90)
    except (OSError, ValueError):
        return None  # unreadable pairs are already reported as problems
    return str(path)


def render_report(layout: Layout, enc: Encoding, summary: dict, out: Path, n: int,
                  workers: int | None) -> dict[str, list[str]]:
    """Overlays of the first ``n`` samples per split (in worker processes) and the histogram
    (here, meanwhile), under ``out/check_dataset/``. Returns the overlay paths per split,
    relative to ``out``."""
    jobs, splits = [], []
    for split, samples in layout.samples.items():
        for k, s in enumerate(samples[:n]):
            rel = f"check_dataset/demo_img/{split}_{k:02d}_{s.image.stem}.jpg"
            jobs.append((s, enc, summary["names"], out / rel))
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
