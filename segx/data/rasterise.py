"""LabelMe shapes to class-id masks, drawn the way labelme draws them (tests compare every shape
type with labelme's own output, pixel for pixel), without labelme and its GUI stack.

Shapes are painted in file order, a later shape over an earlier one. Polygons, rectangles,
circles and oriented rectangles are filled with their outline; lines and line strips are 10
pixels wide; a point is a disc of radius 5; a ``mask`` shape is a base64 PNG placed at its
top-left point, and may not be larger than the image (checked from its PNG header before it is
decoded).
"""
from __future__ import annotations

import base64
import binascii
import io
import math
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

LINE_WIDTH = 10
POINT_RADIUS = 5
NEEDED = {"circle": 2, "rectangle": 2, "line": 2, "point": 1, "oriented_rectangle": 4}


class ShapeError(ValueError):
    """A shape labelme itself would refuse (wrong point count, unknown type, bad mask)."""


class _TooLarge(Exception):
    """A mask larger than its image (raised inside the decoder's ``try``)."""


def _points(shape: dict) -> list[tuple[float, float]]:
    try:
        return [(float(x), float(y)) for x, y in shape.get("points") or []]
    except (TypeError, ValueError):
        raise ShapeError("its points are not [x, y] pairs of numbers") from None


def _draw(draw: ImageDraw.ImageDraw, kind: str, xy: list[tuple[float, float]]) -> None:
    if kind == "circle":
        (cx, cy), (px, py) = xy
        d = math.sqrt((cx - px) ** 2 + (cy - py) ** 2)
        draw.ellipse(((cx - d, cy - d), (cx + d, cy + d)), outline=1, fill=1)
    elif kind == "rectangle":
        (x0, y0), (x1, y1) = xy
        draw.rectangle(((min(x0, x1), min(y0, y1)), (max(x0, x1), max(y0, y1))), outline=1,
                       fill=1)
    elif kind in ("line", "linestrip"):
        draw.line(xy=xy, fill=1, width=LINE_WIDTH)
    elif kind == "point":
        (cx, cy), r = xy[0], POINT_RADIUS
        draw.ellipse(((cx - r, cy - r), (cx + r, cy + r)), outline=1, fill=1)
    else:  # polygon, oriented_rectangle
        draw.polygon(xy=xy, outline=1, fill=1)


def shape_mask(hw: tuple[int, int], shape: dict) -> np.ndarray:
    """The H x W boolean mask of one LabelMe shape."""
    kind = shape.get("shape_type") or "polygon"
    xy = _points(shape)
    if kind == "mask":
        return _mask_shape(hw, shape, xy)
    if kind not in (*NEEDED, "linestrip", "polygon"):
        raise ShapeError(f"shape_type '{kind}' is not a LabelMe shape type")
    if kind in NEEDED and len(xy) != NEEDED[kind]:
        raise ShapeError(f"a {kind} needs {NEEDED[kind]} point(s), it has {len(xy)}")
    if kind == "polygon" and len(xy) < 3:
        raise ShapeError(f"a polygon needs more than 2 points, it has {len(xy)}")
    if kind == "linestrip" and len(xy) < 2:
        raise ShapeError("a linestrip needs at least 2 points")
    canvas = Image.fromarray(np.zeros(hw, np.uint8))
    _draw(ImageDraw.Draw(canvas), kind, xy)
    return np.asarray(canvas, dtype=bool)


def _decode_mask(data: str, hw: tuple[int, int]) -> np.ndarray:
    """The PNG in ``data`` as booleans; its size is read from the header first and may not
    exceed the image's (a small string declaring a huge PNG is refused before decoding)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below
            im = Image.open(io.BytesIO(base64.b64decode(data, validate=True)), formats=["PNG"])
        with im:
            w, h = im.size
            if w > hw[1] or h > hw[0]:
                raise _TooLarge(f"its mask declares {w}x{h} pixels, more than its "
                                f"{hw[1]}x{hw[0]} image")
            return np.asarray(im).astype(bool)
    except (binascii.Error, ValueError, OSError, UnidentifiedImageError):
        raise ShapeError("its 'mask' is not a base64 PNG") from None
    except Image.DecompressionBombError:
        raise ShapeError("its mask declares more pixels than any image may have") from None
    except _TooLarge as exc:
        raise ShapeError(str(exc)) from None


def _mask_shape(hw: tuple[int, int], shape: dict, xy: list[tuple[float, float]]) -> np.ndarray:
    data = shape.get("mask")
    if not isinstance(data, str) or len(xy) != 2:
        raise ShapeError("a mask shape needs a base64 PNG 'mask' and two corner points")
    part = _decode_mask(data, hw)
    if part.ndim != 2:
        raise ShapeError("its 'mask' is not a single-channel image")
    (x1, y1), (x2, y2) = np.asarray(xy).astype(int)
    out = np.zeros(hw, bool)
    region = out[y1:y2 + 1, x1:x2 + 1]
    if region.shape != part.shape:
        raise ShapeError(f"its {part.shape[1]}x{part.shape[0]} mask does not fit the box "
                         f"{x1},{y1}-{x2},{y2}")
    out[y1:y2 + 1, x1:x2 + 1] = part
    return out


def shapes_to_ids(hw: tuple[int, int], shapes: list[dict[str, Any]],
                  class_ids: dict[str, int]) -> np.ndarray:
    """The H x W int32 class map of ``shapes`` (0 where nothing is drawn); a later shape
    paints over an earlier one."""
    ids = np.zeros(hw, np.int32)
    for k, shape in enumerate(shapes):
        try:
            ids[shape_mask(hw, shape)] = class_ids[shape["label"]]
        except ShapeError as exc:
            raise ShapeError(f"shape {k} ('{shape.get('label')}'): {exc}") from None
    return ids
