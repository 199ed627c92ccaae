"""Reading images and labels from files (no paddle): what training, evaluation and prediction
feed the network, decoded the same way everywhere."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from segx.errors import DatasetError

_ORIENTATION = 0x0112


def read_image(path: str | Path) -> np.ndarray:
    """An image file as H x W x 3 RGB uint8 (grey, alpha and 16-bit folded by OpenCV)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"cannot read image '{path}'.",
                           solution="run check_dataset to find every unreadable file.")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_label(path: str | Path) -> np.ndarray:
    """A label as an H x W id array (EXIF orientation applied, as check_dataset measures it)."""
    try:
        with Image.open(path) as lb:
            if lb.getexif().get(_ORIENTATION, 1) != 1:
                lb = ImageOps.exif_transpose(lb)
            return np.asarray(lb)
    except OSError as exc:
        raise DatasetError(f"cannot read label '{path}' ({exc}).",
                           solution="run check_dataset to find every unreadable file.") from None
