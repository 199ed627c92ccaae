"""Write re-encoded labels and lists to a new folder; the originals are never touched."""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from segx.errors import DatasetError
from segx.fileio import write_text
from segx.datasets.checks import Encoding
from segx.datasets.layout import Layout
from segx.datasets.visualize import read_ids
from segx.palette import write_id_png


def _write_one(job: tuple[Path, Path, Encoding]) -> None:
    src, dst, enc = job
    write_id_png(dst, read_ids(src, enc))


def write_fixed(layout: Layout, enc: Encoding, out_dir: Path, names: list[str],
                workers: int | None = None) -> Path:
    """Write ``out_dir/annotations/*.png`` (palette PNGs of ids) and list files pointing at them,
    with image paths absolute so the source images are used where they are."""
    out_dir = out_dir.resolve()
    if out_dir == layout.root.resolve():
        raise DatasetError(f"the fixed dataset would overwrite {out_dir}.",
                           solution="set CheckDataset.fix_output_dir to a new folder.")
    jobs, lines = [], {}
    for split, samples in layout.samples.items():
        lines[split] = []
        for s in samples:
            try:  # keep the source's sub-folders (annotations/a.png stays annotations/a.png)
                rel = s.label.resolve().relative_to(layout.root.resolve())
            except ValueError:
                rel = Path("annotations") / s.label.name
            dst = out_dir / rel.with_suffix(".png")
            jobs.append((s.label, dst, enc))
            lines[split].append(f"{s.image.resolve()}\t{dst.relative_to(out_dir)}")
    with ProcessPoolExecutor(workers or os.cpu_count() or 1) as pool:
        list(pool.map(_write_one, jobs, chunksize=16))
    for split, rows in lines.items():
        write_text(out_dir / f"{split}.txt", "\n".join(rows) + "\n")
    if names:
        write_text(out_dir / "class_names.txt", "\n".join(names) + "\n")
    return out_dir
