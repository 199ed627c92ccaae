"""Atomic file writes: a reader (or a crash) never sees a half-written file, and files get the
permissions the umask gives any new file (not the 0600 of a private temporary file)."""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np


def _to_builtin(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return obj.as_posix()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "w") -> Path:
    """Write through ``write(fileobj)`` into a temporary file beside ``path``, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    """Atomically write JSON (UTF-8, numpy values converted)."""
    return atomic_write(path, lambda f: json.dump(data, f, indent=indent, ensure_ascii=False,
                                                  default=_to_builtin))


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write a text file."""
    return atomic_write(path, lambda f: f.write(text))


def write_encoded(path: str | Path, encode: Callable[[io.BytesIO], None]) -> Path:
    """Encode into memory with ``encode(buffer)``, then write the bytes atomically: an encoder
    that fails (a full disk aside) writes nothing, and an existing file stays as it was. The one
    way segx writes pictures (:func:`save_image`, :func:`save_figure`)."""
    buf = io.BytesIO()
    encode(buf)
    return atomic_write(path, lambda f: f.write(buf.getbuffer()), mode="wb")


def _image_format(path: Path, given: str | None) -> str:
    """PIL's format name: the one given, else the one the file's suffix names (``.jpg``: JPEG)."""
    if given:
        return given
    from PIL import Image
    found = Image.registered_extensions().get(path.suffix.lower())
    if not found:
        raise ValueError(f"no image format for the file name {path.name}")
    return found


def save_image(path: str | Path, image: Any, format: str | None = None, **options: Any) -> Path:
    """Save a PIL image atomically (``format``: from the suffix when not given; ``options``:
    PIL's, e.g. ``quality=90``)."""
    fmt = _image_format(Path(path), format)
    return write_encoded(path, lambda buf: image.save(buf, format=fmt, **options))


def save_figure(path: str | Path, fig: Any, **options: Any) -> Path:
    """Save a matplotlib figure atomically, in the format its suffix names (``.png``)."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    return write_encoded(path, lambda buf: fig.savefig(buf, format=fmt, **options))


def copy_file(src: str | Path, dst: str | Path) -> Path:
    """Copy ``src`` to ``dst`` through a temporary file (a killed copy leaves no partial
    ``dst``); an existing ``dst`` is replaced."""
    def write(out):
        with open(src, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
    return atomic_write(dst, write, mode="wb")


def replace_dir(tmp: str | Path, final: str | Path) -> None:
    """Move the fully written folder ``tmp`` to ``final``; an older ``final`` is removed only
    after the new one is in place (a crash leaves either the old or the new folder)."""
    tmp, final = Path(tmp), Path(final)
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
