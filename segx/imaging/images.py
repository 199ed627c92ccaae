"""Reading images and labels from files (no paddle): what training, evaluation and prediction
feed the network, decoded the same way everywhere."""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from segx.utils.errors import DatasetError

_ORIENTATION = 0x0112
MAX_PIXELS = 40_000_000  # default of CheckDataset.max_pixels: width x height read from headers
# Pillow's own refusal (178,956,970 pixels): the cap of the training/evaluation readers
HARD_MAX_PIXELS = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)


class TooLarge(DatasetError):
    """An image whose header declares more pixels than allowed (nothing was decoded)."""


def open_header(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open ``path`` with Pillow, which reads only the header; raises TooLarge when it declares
    more than ``max_pixels`` (width x height), before anything is decoded. The caller closes
    the returned image (or uses it in a ``with``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except Image.DecompressionBombError:  # Pillow's own cap, above any sane max_pixels
            raise TooLarge(f"'{path}' declares more than {HARD_MAX_PIXELS:,} pixels.",
                           solution=_SHRINK + ".") from None
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise TooLarge(f"'{path}' declares {w}x{h} = {w * h:,} pixels, more than the "
                       f"{max_pixels:,} allowed.", solution=_SHRINK + (
                           "" if max_pixels >= HARD_MAX_PIXELS else
                           ", or raise -o CheckDataset.max_pixels=N") + ".")
    return im


_SHRINK = "cut the image into tiles (or downscale it with its label)"


def _refuse_bombs(path: str | Path) -> None:
    """Raise TooLarge when the header (read by Pillow, nothing decoded) declares more pixels
    than Pillow's own limit; formats Pillow cannot identify are left to OpenCV."""
    try:
        open_header(path, HARD_MAX_PIXELS).close()
    except (OSError, ValueError, SyntaxError):
        pass


def read_image(path: str | Path) -> np.ndarray:
    """An image file as H x W x 3 RGB uint8 (grey, alpha and 16-bit folded by OpenCV); files
    whose header declares more than HARD_MAX_PIXELS are refused before decoding."""
    _refuse_bombs(path)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"cannot read image '{path}'.",
                           solution="run check_dataset to find every unreadable file.")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_label(path: str | Path) -> np.ndarray:
    """A label as an H x W id array (EXIF orientation applied, as check_dataset measures it);
    more than HARD_MAX_PIXELS in the header is refused before decoding."""
    try:
        with open_header(path, HARD_MAX_PIXELS) as lb:
            if lb.getexif().get(_ORIENTATION, 1) != 1:
                lb = ImageOps.exif_transpose(lb)
            return np.asarray(lb)
    except OSError as exc:
        raise DatasetError(f"cannot read label '{path}' ({exc}).",
                           solution="run check_dataset to find every unreadable file.") from None
