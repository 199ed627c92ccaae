"""``check_dataset/report.html``: what is in the dataset and what is wrong with it, on one page.

The page (built with :mod:`segx.utils.html_page`: inline CSS, no script, nothing remote, every file
and class name escaped) holds the summary, every problem (file, line, message, fix), the class
table with the histogram, the fixes written (what changed, where the backups are), the
duplicate pairs side by side, and a gallery of overlays that can be filtered by class and by
problem with radio buttons and CSS alone.

It stays small for big datasets: the gallery shows a seeded sample of ``report_images``
overlays (``CheckDataset.report_images``, 48 by default), up to as many images that have a
listed problem, and up to two images of each class the sample misses; ``PAIRS_SHOWN`` duplicate
pairs are drawn. Thumbnails are JPEGs at most ``THUMB`` pixels on a side, drawn in worker
processes from a reduced JPEG decode.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from segx.utils.constants import IGNORE_INDEX
from segx.data.checks import Encoding
from segx.data.layout import Layout, Problem, Sample
from segx.data.leakage import Leakage
from segx.data.visualize import read_ids
from segx.utils.fileio import save_image
from segx.utils.html_page import Raw, esc, img, page, rel, section, table, write_page
from segx.imaging.palette import draw_overlay, palette
from segx.utils.workers import process_pool

THUMB = 320        # gallery thumbnails: longest side in pixels
PAIR_THUMB = 240   # duplicate pairs: longest side in pixels
PAIRS_SHOWN = 24   # duplicate pairs drawn side by side (all are listed in the JSON)
PER_CLASS = 2      # images added for each class the sample does not show
REPORT = "check_dataset/report.html"


@dataclass
class Tile:
    sample: Sample
    path: Path
    problems: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    error: str | None = None


def _thumb(job: tuple) -> tuple[list[int], str | None]:
    """Draw one overlay thumbnail; returns (class ids present, error)."""
    sample, enc, names, dst, side = job
    try:
        with Image.open(sample.image) as im:
            im.draft("RGB", (side, side))  # JPEG: decode at a reduced scale
            rgb = ImageOps.exif_transpose(im).convert("RGB")
        ids = read_ids(sample.label, enc)
        present = [int(i) for i in np.unique(ids) if i != IGNORE_INDEX]
        rgb.thumbnail((side, side))
        small = np.asarray(Image.fromarray(ids).resize(rgb.size, Image.NEAREST))
        save_image(dst, draw_overlay(rgb, small, names), "JPEG", quality=82)
        return present, None
    except Exception as exc:  # noqa: BLE001 - a pair that cannot be drawn is shown as text
        return [], f"cannot be drawn ({type(exc).__name__}: {exc})"[:300]


def _present(scan, enc: Encoding) -> set[int]:
    """Class ids a scan saw (for picking images of rare classes; colour tables mapped)."""
    if scan is None or scan.label_error:
        return set()
    if scan.colours is not None and not scan.grey_colours:
        return {enc.colour_map.get(c[:3] if len(c) == 4 else c, IGNORE_INDEX) for c in scan.colours}
    values = scan.counts if scan.colours is None else {c[0]: n for c, n in scan.colours.items()}
    return {enc.map_value(v) if enc.needs_fix else v for v in values} - {IGNORE_INDEX}


def pick(layout: Layout, problems: list[Problem], scans: dict, enc: Encoding, n: int,
         seed: int) -> list[tuple[Sample, list[str]]]:
    """The gallery's samples with their problem codes: images with listed problems (up to n),
    a seeded sample of n, and up to PER_CLASS images of each class not shown yet."""
    where = {(s.list_file, s.line): s for s in layout.all_samples()}
    codes: dict[int, list[str]] = {}
    chosen: dict[int, Sample] = {}
    for p in problems:
        s = where.get((p.file, p.line))
        if s is not None and (id(s) in chosen or len(chosen) < n):
            chosen[id(s)] = s
            codes.setdefault(id(s), []).append(p.code)
    everything = layout.all_samples()
    rest = [s for s in everything if id(s) not in chosen]
    for s in random.Random(seed).sample(rest, min(n, len(rest))):
        chosen[id(s)] = s
    scan_of = {id(s): sc for sp, group in layout.samples.items()
               for s, sc in zip(group, scans.get(sp, []))}
    shown: set[int] = set().union(*(_present(scan_of.get(k), enc) for k in chosen))
    extra: dict[int, int] = {}
    for s in everything:
        missing = _present(scan_of.get(id(s)), enc) - shown
        if id(s) not in chosen and any(extra.get(c, 0) < PER_CLASS for c in missing):
            chosen[id(s)] = s
            for c in missing:
                extra[c] = extra.get(c, 0) + 1
    return [(s, sorted(set(codes.get(k, [])))) for k, s in chosen.items()]


def draw_tiles(picked: list[tuple[Sample, list[str]]], pairs: list, enc: Encoding,
               names: list[str], folder: Path, workers: int | None) -> tuple[list, list]:
    """Gallery tiles and pair tiles, drawn in worker processes."""
    tiles = [Tile(s, folder / f"g{k:04d}.jpg", codes) for k, (s, codes) in enumerate(picked)]
    pair_tiles = [(Tile(p.a, folder / f"p{k:03d}a.jpg"), Tile(p.b, folder / f"p{k:03d}b.jpg"))
                  for k, p in enumerate(pairs)]
    jobs = [(t, THUMB) for t in tiles] + [(t, PAIR_THUMB) for pt in pair_tiles for t in pt]
    with process_pool(workers) as pool:
        done = list(pool.map(_thumb, [(t.sample, enc, names, t.path, side) for t, side in jobs],
                             chunksize=4))
    for (t, _), (ids, error) in zip(jobs, done):
        t.ids, t.error = ids, error
    return tiles, pair_tiles


def _name(i: int, names: list[str]) -> str:
    return names[i] if i < len(names) else f"class {i}"


def _figure(t: Tile, page_path: Path, names: list[str], codes: list[str]) -> str:
    """One gallery figure; its CSS classes (c<id>, p<k>) drive the filters."""
    marks = " ".join([f"c{i}" for i in t.ids] + [f"p{codes.index(c)}" for c in t.problems])
    s = t.sample
    picture = (f"<p class=bad>{esc(s.image.name)} {esc(t.error)}</p>" if t.error else
               img(rel(t.path, page_path), f"{s.split}: {s.image.name}"))
    classes = ", ".join(esc(_name(i, names)) for i in t.ids)
    problems = (" <span class=bad>" + esc(", ".join(t.problems)) + "</span>") if t.problems else ""
    return (f'<figure class="g {marks}">{picture}<figcaption><b>{esc(s.split)}</b> '
            f'{esc(s.image.name)} <span class=dim>({esc(s.list_file)}:{s.line})</span><br>'
            f"{classes}{problems}</figcaption></figure>")


def gallery(tiles: list[Tile], page_path: Path, names: list[str]) -> tuple[str, str]:
    """(the gallery's HTML, its filter CSS): one radio button per class and per problem code,
    and CSS that hides the figures without the checked one's mark."""
    ids = sorted({i for t in tiles for i in t.ids})
    codes = sorted({c for t in tiles for c in t.problems})
    filters = [("all", f"all ({len(tiles)})", "")] + [
        (f"c{i}", f"{_name(i, names)} ({sum(i in t.ids for t in tiles)})", "")
        for i in ids] + [
        (f"p{k}", f"{c} ({sum(c in t.problems for t in tiles)})", "bad")
        for k, c in enumerate(codes)]
    radios = "".join(f'<input type=radio name=gf id="gf-{key}" class=flt'
                     f'{" checked" if key == "all" else ""}>' for key, _, _ in filters)
    labels = "".join(f'<label for="gf-{key}" class="{cls}">{esc(text)}</label>'
                     for key, text, cls in filters)
    css = "".join(f"#gf-{key}:checked~.gallery figure:not(.{key}){{display:none}}"
                  f"#gf-{key}:checked~.filters label[for=gf-{key}]{{background:#1d2330;"
                  "color:#fff}" for key, _, _ in filters[1:])
    css += "#gf-all:checked~.filters label[for=gf-all]{background:#1d2330;color:#fff}"
    figures = "".join(_figure(t, page_path, names, codes) for t in tiles)
    body = (f"{radios}<div class=filters>Show: {labels}</div>"
            f"<div class=gallery>{figures}</div>")
    return body, css


_CSS = """
.flt{position:absolute;opacity:0;pointer-events:none}
.filters{margin:0 0 10px}.filters label{display:inline-block;border:1px solid #c5cbd6;
border-radius:12px;padding:1px 9px;margin:2px;cursor:pointer;font-size:12px}
.filters label.bad{border-color:#e3a6a1}.dim{color:#7a8294}
figure.g{width:330px}.pair{display:flex;gap:8px;align-items:flex-start;margin:0 0 12px}
.pair figure{width:250px}nav a{margin-right:12px}
"""


def _severity(sev: str) -> Raw:
    cls = {"error": "bad", "warning": "warn"}.get(sev, "dim")
    return Raw(f"<span class={cls}>{esc(sev)}</span>")


def summary_section(result: dict, problems: list[Problem], leak: Leakage | None) -> str:
    a = result["attributes"]
    verdict = (Raw("<b class=ok>passed</b>") if result["check_pass"] else
               Raw("<b class=bad>FAILED</b> (errors below)"))
    rows = [("dataset", result["dataset_path"]), ("check", verdict),
            ("samples", f"train {a['train_samples']}, val {a['val_samples']}, "
                        f"test {a['test_samples']}"),
            ("classes", f"{a['num_classes']}: " + ", ".join(
                f"{i} {_name(i, a['class_names'])}" for i in a["class_ids"])),
            ("labels", f"{a['label_encoding']['name']}: {a['label_encoding']['description']}"),
            ("problems", ", ".join(f"{Problem.total(problems, s)} {s}"
                                   for s in ("error", "warning", "info")))]
    if leak is not None:
        kinds = leak.as_dict()["pairs_by_kind"]
        rows.append(("duplicates", f"{leak.compared} images compared (near-duplicate threshold "
                     f"{leak.threshold} of 256 bits): " + (", ".join(
                         f"{n} {k}" for k, n in sorted(kinds.items())) or "none found")))
    return section("Summary", table(("", ""), rows), "summary")


def problems_section(problems: list[Problem]) -> str:
    if not problems:
        return section("Problems", "<p class=ok>No problems found.</p>", "problems")
    rows = [(_severity(p.severity), p.code, p.where, p.message, p.fix) for p in problems]
    return section(f"Problems ({len(problems)} listed)",
                   table(("severity", "code", "where", "message", "fix"), rows), "problems")


MAX_CLASS_ROWS = 256  # a label with 60,000 ids (a problem in itself) gets the largest 256


def classes_section(summary: dict, histogram: Path, page_path: Path) -> str:
    stats, names = summary["stats"], summary["names"]
    splits = [s for s in ("train", "val", "test") if s in stats]
    totals = {s: sum(v for k, v in stats[s]["pixels"].items() if k != IGNORE_INDEX) or 1
              for s in splits}
    ids = sorted({i for s in splits for i in stats[s]["pixels"]})
    shown = ids if len(ids) <= MAX_CLASS_ROWS else sorted(sorted(
        ids, key=lambda i: -sum(stats[s]["pixels"].get(i, 0) for s in splits))[:MAX_CLASS_ROWS])
    header = ["id", "class"] + [f"{s} {c}" for s in splits
                                for c in ("pixels", "images", "% pixels")]
    table_colours = palette()
    rows = []
    for i in shown:
        colour = "#%02x%02x%02x" % tuple(int(c) for c in table_colours[i]) if 0 <= i < 256 \
            else "#999999"  # ids past 255 are reported as problems
        name = "ignore (255)" if i == IGNORE_INDEX else _name(i, names)
        row: list = [i, Raw(f'<span class=swatch style="background:{colour}"></span>'
                            f"{esc(name)}")]
        for s in splits:
            st = stats[s]
            px = st["pixels"].get(i, 0)
            share = "" if i == IGNORE_INDEX else f"{100 * px / totals[s]:.2f}"
            row += [f"{px:,}", f"{st['images'].get(i, 0):,}", share]
        rows.append(row)
    numeric = [0] + list(range(2, len(header)))
    more = "" if len(shown) == len(ids) else \
        f"<p>{len(ids) - len(shown):,} more ids with fewer pixels: check_dataset_result.json</p>"
    picture = img(rel(histogram, page_path), "class histogram") if histogram.is_file() else ""
    return section("Classes", table(header, rows, numeric) + more + picture, "classes")


def _value(v: object) -> str:
    text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
    return text if len(text) <= 600 else text[:600] + " ..."


def fixes_section(result: dict) -> str:
    """The conversion, re-split, label fix and leakage fix this run wrote (from the JSON)."""
    titles = {"conversion": "LabelMe conversion", "split": "re-split (old lists backed up)",
              "fix": "fixed labels (written to a new folder; the source is untouched)",
              "leakage_fix": "duplicate groups moved into one split (old lists backed up)"}
    parts = []
    for key, title in titles.items():
        note = result.get(key)
        if isinstance(note, dict):
            rows = [(k, _value(v)) for k, v in note.items()]
            parts.append(f"<h3>{esc(title)}</h3>" + table(("", ""), rows))
    body = "".join(parts) or ("<p>Nothing was changed: the check only reads the dataset. "
                              "Fixes are opt-in (CheckDataset.fix_labels, fix_leakage, "
                              "split.enable).</p>")
    return section("Fixes written", body, "fixes")


def pairs_section(leak: Leakage | None, pair_tiles: list, page_path: Path,
                  names: list[str]) -> str:
    if leak is None:
        return section("Duplicates", "<p>Not searched (CheckDataset.leakage=False).</p>",
                       "duplicates")
    if not leak.pairs:
        return section("Duplicates", f"<p class=ok>No duplicate or near-duplicate among "
                       f"{leak.compared} images.</p>", "duplicates")
    blocks = []
    for pair, (ta, tb) in zip(leak.pairs, pair_tiles):
        what = (f"{pair.code}" + (f", {pair.distance} of 256 bits apart" if pair.kind == "near"
                                  else ""))
        blocks.append(f"<div class=pair>{_figure(ta, page_path, names, [])}"
                      f"{_figure(tb, page_path, names, [])}<p class=bad>{esc(what)}</p></div>")
    more = len(leak.pairs) - len(pair_tiles)
    note = f"<p>{more} more pairs are listed in check_dataset_result.json.</p>" if more > 0 else ""
    return section(f"Duplicates ({len(leak.pairs)} pairs)", "".join(blocks) + note,
                   "duplicates")


def write_check_report(out: Path, result: dict, problems: list[Problem], summary: dict,
                       layout: Layout, enc: Encoding, scans: dict, leak: Leakage | None,
                       n_images: int, seed: int, workers: int | None = None) -> Path:
    """Write ``<out>/check_dataset/report.html`` and its thumbnails; returns the page path."""
    page_path = out / REPORT
    folder = out / "check_dataset" / "report_img"
    for old in folder.glob("[gp][0-9]*.jpg"):  # this page's thumbnails from an earlier run
        old.unlink()
    names = summary["names"]
    picked = pick(layout, problems, scans, enc, max(0, n_images), seed)
    pairs = leak.pairs[:PAIRS_SHOWN] if leak is not None else []
    tiles, pair_tiles = draw_tiles(picked, pairs, enc, names, folder, workers)
    body, css = gallery(tiles, page_path, names)
    nav = "".join(f'<a href="#{k}">{t}</a>' for k, t in (
        ("summary", "Summary"), ("problems", "Problems"), ("classes", "Classes"),
        ("fixes", "Fixes"), ("duplicates", "Duplicates"), ("gallery", "Gallery")))
    sections = [f"<nav>{nav}</nav>", summary_section(result, problems, leak),
                problems_section(problems),
                classes_section(summary, out / "check_dataset" / "histogram.png", page_path),
                fixes_section(result), pairs_section(leak, pair_tiles, page_path, names),
                section(f"Gallery ({len(tiles)} of {len(layout.all_samples())} images: a "
                        "sample, the images with problems and each class)", body, "gallery")]
    verdict = "passed" if result["check_pass"] else "FAILED"
    html_text = page("Dataset check", f"{result['dataset_path']} - check {verdict}", sections,
                     _CSS + css)
    return write_page(page_path, html_text)
