"""evaluate's ``report.html``: the metrics, the per-class table, the confusion matrix as a heat
map, and a gallery of the images the model does worst on.

The gallery is fed image by image during the evaluation (:class:`WorstImages` is the
``on_image`` callback of :func:`segx.inference.evaluation.evaluate_samples`): it keeps a bounded heap of
the ``n`` lowest per-image mIoU with their label and prediction shrunk to thumbnails, so memory
is ``n`` x two maps of at most ``THUMB`` x ``THUMB`` pixels whatever the dataset's size. A
per-image mIoU averages the classes present in that image's label or prediction (see
:func:`segx.imaging.metrics.image_scores`).
"""
from __future__ import annotations

import heapq
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from segx.utils import html_page as H
from segx.utils.constants import IGNORE_INDEX
from segx.utils.fileio import replace_dir, save_image
from segx.imaging.images import read_image
from segx.imaging.metrics import image_scores
from segx.imaging.palette import palette, write_id_png
from segx.runs.folder import RunFolder

THUMB = 320  # thumbnails fit in THUMB x THUMB pixels (never enlarged)
WRONG, IGNORED = (230, 30, 30), (150, 150, 150)


def thumb_size(height: int, width: int) -> tuple[int, int]:
    """(width, height) of an image's thumbnail: inside THUMB x THUMB, aspect kept."""
    scale = min(1.0, THUMB / max(height, width))
    return max(1, round(width * scale)), max(1, round(height * scale))


def shrink_ids(ids: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A class-id map at ``size`` (width, height), nearest neighbour (ids stay ids)."""
    arr = np.ascontiguousarray(np.clip(ids, 0, 255).astype(np.uint8))
    if (arr.shape[1], arr.shape[0]) == size:
        return arr
    return np.asarray(Image.fromarray(arr).resize(size, Image.NEAREST))


@dataclass(order=True)
class Worst:
    """One kept image: ordered so the heap's top is the best of the kept (evicted first)."""

    key: tuple[float, int]
    index: int = field(compare=False)
    miou: float = field(compare=False)
    ious: dict = field(compare=False)
    pred: np.ndarray = field(compare=False, repr=False)
    label: np.ndarray = field(compare=False, repr=False)


class WorstImages:
    """The ``n`` images with the lowest per-image mIoU (ties: the earlier image)."""

    def __init__(self, n: int):
        self.n = n
        self.heap: list[Worst] = []
        self.seen = 0

    def __call__(self, index: int, pred: np.ndarray, label: np.ndarray,
                 matrix: np.ndarray) -> None:
        self.seen += 1
        if self.n <= 0:
            return
        miou, ious = image_scores(matrix)
        if miou is None:
            return
        key = (-miou, -index)
        if len(self.heap) >= self.n and key < self.heap[0].key:
            return  # better than every image kept
        size = thumb_size(*label.shape)
        item = Worst(key, index, miou, ious, shrink_ids(pred, size), shrink_ids(label, size))
        if len(self.heap) >= self.n:
            heapq.heapreplace(self.heap, item)
        else:
            heapq.heappush(self.heap, item)

    def ranked(self) -> list[Worst]:
        """Worst first."""
        return sorted(self.heap, key=lambda w: (w.miou, w.index))


def error_map(rgb: np.ndarray, pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Correct pixels dimmed, wrong ones red, ignored ones grey (H x W x 3 uint8)."""
    out = (rgb.astype(np.float32) * 0.35 + 20).astype(np.uint8)
    out[(pred != label) & (label != IGNORE_INDEX)] = WRONG
    out[label == IGNORE_INDEX] = IGNORED
    return out


def write_thumbnails(item: Worst, image: Path, folder: Path, rank: int) -> dict[str, Path]:
    """The four pictures of one gallery entry, named by rank (no user text in file names)."""
    h, w = item.label.shape
    rgb = np.asarray(Image.fromarray(read_image(image)).resize((w, h), Image.BILINEAR))
    paths = {kind: folder / f"{rank:03d}_{kind}.{ext}" for kind, ext in
             (("image", "jpg"), ("label", "png"), ("pred", "png"), ("errors", "png"))}
    save_image(paths["image"], Image.fromarray(rgb), format="JPEG", quality=85)
    write_id_png(paths["label"], item.label)
    write_id_png(paths["pred"], item.pred)
    save_image(paths["errors"], Image.fromarray(error_map(rgb, item.pred, item.label)), "PNG")
    return paths


def _colour(value: float) -> tuple[str, str]:
    """Background (white to dark blue) and text colour for a share in 0..1."""
    lo, hi = np.array([255, 255, 255]), np.array([8, 48, 107])
    r, g, b = (lo + (hi - lo) * value).astype(int)
    return f"rgb({r},{g},{b})", "#fff" if value > 0.5 else "#1d2330"


def _name(cid: int, names: list[str]) -> str:
    return names[cid] if cid < len(names) else str(cid)


def _class_label(cid: int, name: str) -> str:
    return f"{H.swatch(palette()[cid])}{cid} {H.esc(name)}"


def _heat_cell(matrix: np.ndarray, r: int, c: int, total: int, names: list[str]) -> str:
    """One cell: bare when it has no pixels (so a 150-class matrix stays small)."""
    count = int(matrix[r, c])
    if not total:
        return "<td class=n></td>"
    if not count:
        return "<td class=d></td>" if r == c else "<td></td>"
    share = count / total
    bg, fg = _colour(share)
    tip = H.esc(f"label {_name(r, names)} -> predicted {_name(c, names)}: {share:.1%} "
                f"({count} px)")
    return (f'<td class="{"d" if r == c else "v"}" style="background:{bg};color:{fg}" '
            f'title="{tip}">{share * 100:.0f}</td>')


def heat_map(matrix: np.ndarray, names: list[str]) -> str:
    """The row-normalised confusion matrix as a coloured HTML table (percent of each label's
    pixels; hover a cell for the pixel count). Readable for many classes: the column names are
    written vertically and the table scrolls sideways."""
    n, rows = len(matrix), matrix.sum(1)
    head = "".join(f"<th class=vc><span>{_class_label(c, _name(c, names))}</span></th>"
                   for c in range(n))
    body = "".join(f"<tr><th class=rh>{_class_label(r, _name(r, names))}</th>"
                   + "".join(_heat_cell(matrix, r, c, int(rows[r]), names) for c in range(n))
                   + "</tr>" for r in range(n))
    return ("<p>Rows: label; columns: prediction; each cell is the percentage of the row's "
            "labelled pixels (the diagonal is the recall). A grey row has no labelled pixels."
            "</p><div class=scroll><table class=heat><thead><tr><th>label \\ predicted</th>"
            f"{head}</tr></thead><tbody>{body}</tbody></table></div>")


REPORT_CSS = """
.scroll{overflow-x:auto}
table.heat td{min-width:26px;text-align:center;font-size:11px;padding:3px 2px;
border:1px solid #fff}
table.heat td.n{background:#f0f2f6}table.heat td.d{outline:2px solid #1d2330;outline-offset:-2px}
table.heat th.vc{vertical-align:bottom;padding:4px 2px}
table.heat th.vc span{writing-mode:vertical-rl;transform:rotate(180deg);white-space:nowrap}
table.heat th.rh{white-space:nowrap}
.quad{display:flex;gap:4px;flex-wrap:wrap;align-items:flex-start}.quad figure{padding:2px}
.quad img{image-rendering:pixelated}.worst{margin-bottom:14px}.worst h3{font-size:14px;margin:4px 0;word-break:break-all}
"""


def per_class_table(per_class: list[dict]) -> str:
    rows = [[_class_label(r["id"], r["name"]), f"{r['IoU']:.4f}",
             f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['Dice']:.4f}",
             str(r["label_pixels"]), str(r["pred_pixels"])] for r in per_class]
    return H.raw_table(["class", "IoU", "precision", "recall", "Dice", "label pixels",
                        "predicted pixels"], rows, numeric=range(1, 7), attrs=" class=perclass")


def gallery(ranked: list[Worst], pairs: list[tuple[Path, Path]], root: Path, folder: Path,
            page: Path, names: list[str]) -> str:
    """Write the thumbnails of ``ranked`` into ``folder`` (replaced as one unit) and return the
    gallery's HTML."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    written = [write_thumbnails(item, pairs[item.index][0], tmp, rank)
               for rank, item in enumerate(ranked, 1)]
    replace_dir(tmp, folder)
    blocks = []
    for rank, (item, paths) in enumerate(zip(ranked, written), 1):
        name = _shown(pairs[item.index][0], root)
        shown = max(item.label.shape[1], 160)  # small images are shown enlarged
        pics = "".join(
            f"<figure>{H.img(H.rel(folder / p.name, page), f'{caption} of {name}', shown)}"
            f"<figcaption>{H.esc(caption)}</figcaption></figure>"
            for caption, p in zip(("image", "ground truth", "prediction", "errors"),
                                  paths.values()))
        ious = H.raw_table(["class", "IoU"], [
            [_class_label(c, _name(c, names)), f"{v:.4f}"]
            for c, v in sorted(item.ious.items(), key=lambda kv: kv[1])], numeric=[1])
        blocks.append(f'<div class=worst data-index="{item.index}"><h3>#{rank} '
                      f'{H.esc(name)} <span class=miou>mIoU {item.miou:.4f}</span></h3>'
                      f"<div class=quad>{pics}{ious}</div></div>")
    legend = (f"<p>Errors: {H.swatch(WRONG)}wrong {H.swatch(IGNORED)}ignored (label "
              f"{IGNORE_INDEX}); correct pixels are dimmed. Per-image mIoU averages the "
              "classes present in the image's label or prediction.</p>")
    return legend + "".join(blocks)


def _shown(path: Path, root: Path) -> str:
    """A dataset file as shown to the user: relative to the dataset when inside it."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(path)


def write_report(page: Path, info: dict, metrics: dict, matrix: np.ndarray, names: list[str],
                 worst: WorstImages, pairs: list[tuple[Path, Path]], root: Path) -> Path:
    """Write ``page`` (and its thumbnails in ``<page folder>/worst``). ``info`` holds what was
    evaluated: model, weights, engine, precision, split, images, seconds."""
    facts = [["model", info["model"]], ["weights", info["weights"]],
             ["engine", info["engine"]], ["precision", info["precision"]],
             ["dataset", str(root)], ["split", info["split"]],
             ["images", str(len(pairs))], ["time", f"{info['seconds']:.1f} s"],
             ["test-time augmentation", info["options"]]]
    summary = H.table(["evaluated", ""], facts) + H.table(
        ["mIoU", "Acc", "Kappa", "Dice"],
        [[f"{metrics[k]:.4f}" for k in ("mIoU", "Acc", "Kappa", "Dice")]], numeric=range(4))
    links = " · ".join(H.link(p, p.rsplit("/", 1)[-1]) for p in (
        "../" + RunFolder.result_name("evaluate"), RunFolder.CONFUSION))  # both written by this run
    ranked = worst.ranked()
    title = f"{len(ranked)} images with the lowest mIoU" if ranked else \
        "Worst images (none: Evaluate.report_worst is 0)"
    sections = [H.section("Summary", summary + (f"<p>{links}</p>" if links else "")),
                H.section("Per-class metrics", per_class_table(metrics["per_class"])),
                H.section("Confusion matrix", heat_map(matrix, names), anchor="confusion"),
                H.section(title, gallery(ranked, pairs, root, page.parent / "worst", page,
                                         names), anchor="worst")]
    subtitle = (f"{info['model']} · {info['engine']} · {info['precision']} · "
                f"{info['split']} split, {len(pairs)} images · mIoU {metrics['mIoU']:.4f}")
    return H.write_page(page, H.page("segx evaluation report", subtitle, sections, REPORT_CSS))
