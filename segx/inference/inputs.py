"""What ``predict`` accepts: files, folders (recursive), dataset list files (``.txt``), http(s)
URLs, numpy arrays, and lists of them, expanded in order and decoded to RGB."""
from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from segx.utils.constants import IMAGE_SUFFIXES
from segx.utils.errors import SegxError


class InputError(SegxError):
    """An input that cannot be read as an image."""


class Inputs(list):
    """Inputs :func:`expand` already expanded: (display path, source) pairs. Expanding them
    again returns them as they are, so a command that checks its inputs before predicting
    (predict mode, the pipeline CLI) walks each folder once and predicts what it checked."""


def expand(inputs: Any) -> Inputs:
    """Inputs as (display path, source) pairs in order; folders walked recursively."""
    if isinstance(inputs, Inputs):
        return inputs
    if not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    out = Inputs()
    for item in inputs:
        if isinstance(item, np.ndarray):
            out.append((None, item))
            continue
        if not isinstance(item, (str, Path)):
            raise InputError(f"cannot predict on a {type(item).__name__}.",
                             solution="pass a file path, folder, URL, numpy array or a list "
                                      "of them.")
        text = str(item)
        if text.startswith(("http://", "https://")):
            out.append((text, text))
            continue
        path = Path(text).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise InputError(f"folder '{path}' holds no images "
                                 f"({', '.join(IMAGE_SUFFIXES)}).",
                                 solution="check the folder.")
            out.extend((str(p), p) for p in files)
        elif path.is_file() and path.suffix.lower() == ".txt":
            out.extend(list_file_images(path))
        elif path.is_file():
            out.append((str(path), path))
        else:
            raise InputError(f"input '{text}' does not exist.",
                             solution="give an existing image file, folder or an http(s) URL.")
    return out


_FIELDS = re.compile(r"\t+| {2,}")


def _image_field(text: str) -> str:
    """The image path of a list line: ``<image>`` or ``<image> <label>`` (tab or 2+ spaces;
    else the one single space between two image-looking paths)."""
    parts = [p for p in _FIELDS.split(text) if p]
    if len(parts) != 1:
        return parts[0]
    splits = [i for i, c in enumerate(text) if c == " " and text[:i].lower().endswith(
        IMAGE_SUFFIXES) and text[i + 1:].lower().endswith(IMAGE_SUFFIXES)]
    return text[:splits[0]] if len(splits) == 1 else text


def list_file_images(path: Path) -> list[tuple[str, Path]]:
    """The images of a dataset list file (``test.txt``: ``<image> [<label>]`` per line), in
    order. As in a dataset's lists, a relative path is read from the list's folder and an
    absolute path as it is; a relative path that leaves the folder (``../``) is refused."""
    folder = path.parent
    raw = path.read_bytes().decode("utf-8-sig", errors="replace")
    out = []
    for lineno, line in enumerate(raw.splitlines(), 1):
        text = line.strip()
        if not text:
            continue
        name = _image_field(text)
        where = f"{path}:{lineno}"
        if not Path(name).is_absolute() and os.path.normpath(name).split(os.sep)[0] == "..":
            raise InputError(f"{where}: '{name}' leaves the list's folder {folder}.",
                             solution="write paths relative to the list's folder, or absolute "
                                      "paths.")
        image = Path(name) if Path(name).is_absolute() else folder / name
        if image.suffix.lower() not in IMAGE_SUFFIXES or not image.is_file():
            state = "is not an image file" if image.is_file() else "does not exist"
            raise InputError(f"{where}: image '{name}' {state}.",
                             solution="fix the line (one '<image> [<label>]' per line, "
                                      f"{', '.join(IMAGE_SUFFIXES)}).")
        out.append((str(image), image))
    if not out:
        raise InputError(f"list file '{path}' names no images.",
                         solution="one '<image> [<label>]' per line, as in a dataset's lists.")
    return out


def fetch(url: str) -> np.ndarray:
    """An image URL decoded to BGR (the Python API and predict mode; the server has its own,
    guarded fetcher)."""
    try:
        with urllib.request.urlopen(url, timeout=15) as resp:
            data = resp.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise InputError(f"cannot fetch {url} ({getattr(exc, 'reason', exc)}).",
                         solution="download the image and pass its file path.") from None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"{url} is not an image.", solution="check the URL.")
    return img


def read_input(source: Any) -> np.ndarray:
    """One input (a path, a URL or an array) as H x W x 3 RGB uint8."""
    if isinstance(source, np.ndarray):
        return array_to_rgb(source)
    if isinstance(source, str):
        bgr = fetch(source)
    else:
        bgr = cv2.imread(str(source), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"cannot read image '{source}' (not an image, or truncated).",
                             solution="check or remove the file.")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def array_to_rgb(arr: np.ndarray) -> np.ndarray:
    """A grey, BGR or BGRA array (OpenCV's order) as RGB uint8."""
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.number):
            raise InputError(f"array of dtype {arr.dtype} is not an image.",
                             solution="pass uint8 (or numeric) pixels.")
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return np.ascontiguousarray(arr[..., 2::-1])  # BGR(A) -> RGB
    raise InputError(f"array of shape {arr.shape} is not an image.",
                     solution="pass H x W, H x W x 3 (BGR) or H x W x 4 (BGRA).")
