"""Write re-encoded labels and lists to a new folder; the originals are never touched."""
from __future__ import annotations

from pathlib import Path

from segx.utils.errors import DatasetError
from segx.utils.fileio import write_text
from segx.data.checks import Encoding
from segx.data.layout import Layout
from segx.data.visualize import read_ids
from segx.imaging.palette import write_id_png
from segx.utils.workers import process_pool


def _write_one(job: tuple[Path, Path, Encoding]) -> None:
    src, dst, enc = job
    write_id_png(dst, read_ids(src, enc))


def write_fixed(layout: Layout, enc: Encoding, out_dir: Path, names: list[str],
                workers: int | None = None) -> Path:
    """Write ``out_dir/annotations/*.png`` (palette PNGs of ids) and list files pointing at them,
    with image paths absolute so the source images are used where they are.

    Nothing is written when any output would land on a source file (compared by resolved real
    path: a list, an image, a label) or two labels would share an output file.
    """
    out_dir = out_dir.resolve()
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
    _refuse_overwrites(layout, [dst for _, dst, _ in jobs],
                       [out_dir / f"{sp}.txt" for sp in lines] + [out_dir / "class_names.txt"])
    with process_pool(workers) as pool:
        list(pool.map(_write_one, jobs, chunksize=16))
    for split, rows in lines.items():
        write_text(out_dir / f"{split}.txt", "\n".join(rows) + "\n")
    if names:
        write_text(out_dir / "class_names.txt", "\n".join(names) + "\n")
    return out_dir


def _refuse_overwrites(layout: Layout, labels: list[Path], others: list[Path]) -> None:
    sources = {p.resolve() for s in layout.all_samples() for p in (s.image, s.label)}
    sources |= {p.resolve() for p in layout.root.iterdir() if p.is_file()}
    hit = [p for p in [*labels, *others] if p.resolve() in sources]
    if hit:
        raise DatasetError(f"fixing the labels would overwrite {len(hit)} source file(s), "
                           f"first {hit[0]}.",
                           solution="set CheckDataset.fix_output_dir to a new, empty folder.")
    seen: dict[Path, int] = {}
    for p in labels:
        seen[p] = seen.get(p, 0) + 1
    twice = [p for p, n in seen.items() if n > 1]
    if twice:
        raise DatasetError(f"{len(twice)} labels would share a fixed file, first {twice[0]}.",
                           solution="give label files distinct names, or keep them under the "
                                    "dataset folder.")
