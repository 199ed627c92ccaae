"""Class colours shared by every visual segx draws, and the one writer of class-id PNGs."""
from __future__ import annotations

import colorsys
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from segx.utils.constants import IGNORE_INDEX
from segx.utils.fileio import save_image


MAX_LEGEND = 20  # overlay legend rows: the classes with most pixels, then "+ N more ids"
MAX_NAME = 40  # characters of a class name in the legend


@lru_cache(maxsize=1)
def palette() -> np.ndarray:
    """The (256, 3) uint8 RGB class colours: colours chosen one after another as far as possible
    from all chosen before (farthest-point order over bright and dark, pale and saturated hues),
    starting from orange. So class 0 is never black, neighbouring ids never look alike (the
    first 20 classes are at least 95 apart in RGB; the VOC map has car and building 64 apart),
    and 255, the ignore label, is white."""
    candidates = np.array([colorsys.hsv_to_rgb(h / 60, s, v) for h in range(60)
                           for s in (0.45, 0.7, 0.95) for v in (0.5, 0.72, 0.95)]) * 255
    first = np.array(colorsys.hsv_to_rgb(0.08, 0.7, 0.95)) * 255
    chosen = [int(np.argmin(((candidates - first) ** 2).sum(1)))]
    distance = np.sqrt(((candidates - candidates[chosen[0]]) ** 2).sum(1))
    while len(chosen) < IGNORE_INDEX:
        k = int(np.argmax(distance))
        chosen.append(k)
        distance = np.minimum(distance, np.sqrt(((candidates - candidates[k]) ** 2).sum(1)))
    table = np.vstack([np.rint(candidates[chosen]), [[255, 255, 255]]])
    return table.astype(np.uint8)


def palette_bytes() -> list[int]:
    """The palette flattened for ``PIL.Image.putpalette``."""
    return palette().ravel().tolist()


def id_image(ids: np.ndarray) -> Image.Image:
    """A class-id map as a palette image: pixel values are the ids, colours the palette."""
    arr = np.ascontiguousarray(ids.astype(np.uint8))
    img = Image.frombuffer("P", (arr.shape[1], arr.shape[0]), arr.tobytes(), "raw", "P", 0, 1)
    img.putpalette(palette_bytes())
    return img


def write_id_png(path: str | Path, ids: np.ndarray, compress_level: int = 6,
                 plain: bool = False) -> Path:
    """Atomically write a class-id map as a PNG whose pixel values are the ids (0..255): the one
    writer for predictions, fixed labels and converted LabelMe labels. A palette PNG by default
    (viewable; ``PIL.Image.open`` reads the ids, OpenCV reads the colours); ``plain`` writes a
    single-channel PNG instead (``cv2.imread(path, cv2.IMREAD_UNCHANGED)`` reads the ids)."""
    img = Image.fromarray(np.ascontiguousarray(ids.astype(np.uint8))) if plain else id_image(ids)
    return save_image(path, img, "PNG", compress_level=compress_level)


def draw_overlay(rgb: Image.Image, ids: np.ndarray, names: list[str]) -> Image.Image:
    """``rgb`` with the class map blended in (255 = ignore left clear) and a colour legend."""
    coloured = id_image(ids)
    mask = Image.fromarray(np.where(ids != IGNORE_INDEX, 255, 0).astype(np.uint8))
    blended = Image.composite(Image.blend(rgb, coloured.convert("RGB"), 0.5), rgb, mask)
    counts = coloured.histogram()
    present = [i for i, n in enumerate(counts) if n and i != IGNORE_INDEX]
    more = max(len(present) - MAX_LEGEND, 0)  # the legend lists the largest classes only
    present = sorted(sorted(present, key=lambda i: -counts[i])[:MAX_LEGEND])
    row = 14
    rows = len(present) + (1 if more else 0)
    canvas = Image.new("RGB", (blended.width, blended.height + row * rows + 4), "white")
    canvas.paste(blended, (0, 0))
    draw = ImageDraw.Draw(canvas)
    table = palette()
    for k, cid in enumerate(present):
        y = blended.height + 2 + k * row
        name = str(names[cid]) if cid < len(names) else str(cid)
        name = name if len(name) <= MAX_NAME else name[:MAX_NAME - 3] + "..."
        draw.rectangle([2, y, 12, y + 10], fill=tuple(int(c) for c in table[cid]))
        draw.text((16, y - 1), f"{cid}: {name}", fill="black")
    if more:
        draw.text((16, blended.height + 1 + len(present) * row), f"+ {more} more ids",
                  fill="black")
    return canvas
