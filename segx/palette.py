"""Class colours: the PASCAL-VOC bit-interleaved colour map, shared by every visual segx draws."""
from __future__ import annotations

import numpy as np


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
