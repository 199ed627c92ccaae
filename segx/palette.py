"""Class colours: the PASCAL-VOC bit-interleaved colour map, shared by every visual segx draws."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from segx.constants import IGNORE_INDEX
from segx.fileio import atomic_write


def voc_palette(n: int = 256) -> np.ndarray:
    """An (n, 3) uint8 RGB table; class 0 is black, 1 dark red, 2 dark green, 3 olive, ..."""
    table = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        table[i] = (r, g, b)
    return table


def palette_bytes() -> list[int]:
    """The palette flattened for ``PIL.Image.putpalette``."""
    return voc_palette().ravel().tolist()


def id_image(ids: np.ndarray) -> Image.Image:
    """A class-id map as a palette PNG-ready image: pixel values are the ids, colours the VOC map."""
    img = Image.fromarray(ids.astype(np.uint8), "P")
    img.putpalette(palette_bytes())
    return img


def write_id_png(path: str | Path, ids: np.ndarray, compress_level: int = 6) -> Path:
    """Atomically write a class-id map as a palette PNG (pixel values = ids, 0..255): the one
    writer for predictions, fixed labels and converted LabelMe labels."""
    img = id_image(ids)
    return atomic_write(path, lambda f: img.save(f, format="PNG", compress_level=compress_level),
                        mode="wb")


def draw_overlay(rgb: Image.Image, ids: np.ndarray, names: list[str]) -> Image.Image:
    """``rgb`` with the class map blended in (255 = ignore left clear) and a colour legend."""
    coloured = id_image(ids)
    mask = Image.fromarray(np.where(ids != IGNORE_INDEX, 255, 0).astype(np.uint8))
    blended = Image.composite(Image.blend(rgb, coloured.convert("RGB"), 0.5), rgb, mask)
    present = [i for i, n in enumerate(coloured.histogram()) if n and i != IGNORE_INDEX]
    row = 14
    canvas = Image.new("RGB", (blended.width, blended.height + row * len(present) + 4), "white")
    canvas.paste(blended, (0, 0))
    draw = ImageDraw.Draw(canvas)
    table = voc_palette()
    for k, cid in enumerate(present):
        y = blended.height + 2 + k * row
        draw.rectangle([2, y, 12, y + 10], fill=tuple(int(c) for c in table[cid]))
        draw.text((16, y - 1), f"{cid}: {names[cid] if cid < len(names) else cid}", fill="black")
    return canvas
