"""``SegResult``: one image's prediction, with views and savers.

``res.pred`` is the H x W class map (int32); ``res.json`` is compact (the map run-length
encoded); ``res.img`` is a palette image whose pixel values are the class ids (viewable and
exact); ``save_to_img`` writes that PNG plus an overlay with a legend; ``save_to_json`` writes
the compact JSON, or with ``full=True`` the reference format (the map as a nested list).
Results also read like PaddleX's dict results: ``res["pred"]``, ``res["input_path"]``,
``"pred" in res``, ``dict(res)``.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from segx.utils.constants import IMAGE_SUFFIXES
from segx.utils.errors import SegxError
from segx.utils.fileio import save_image, write_json
from segx.imaging.palette import draw_overlay, id_image, write_id_png


def encode_rle(pred: np.ndarray) -> dict:
    """Row-major run-length encoding: ``{"size": [h, w], "values": [...], "runs": [...]}``."""
    flat = pred.ravel()
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    runs = np.diff(np.r_[starts, flat.size])
    return {"encoding": "rle", "size": list(pred.shape), "values": flat[starts].tolist(),
            "runs": runs.tolist()}


def decode_pred(pred: Any) -> np.ndarray:
    """A class map from ``SegResult.json["pred"]`` (run-length encoded or the nested list)."""
    if isinstance(pred, dict):
        values = np.repeat(np.asarray(pred["values"], np.int32), pred["runs"])
        return values.reshape(pred["size"])
    arr = np.asarray(pred, np.int32)
    return arr[0] if arr.ndim == 3 else arr


class SegResult(Mapping):
    """The prediction for one input.

    Attributes:
        input_path: the file or URL the image came from (None for an array input).
        pred: H x W int32 class ids.
        class_names: names by id, when the model knows them.
        speed: milliseconds spent on this image: ``preprocess_ms`` (decoding and
            transforms), ``inference_ms`` (its share of its batch's engine call) and
            ``postprocess_ms`` (restoring the original size, argmax).

    The same four are the keys of the result read as a mapping (``res["pred"]``).
    """

    KEYS = ("input_path", "pred", "class_names", "speed")

    def __init__(self, input_path: str | None, pred: np.ndarray, class_names: list[str],
                 image: np.ndarray | None = None, index: int = 0,
                 speed: dict[str, float] | None = None):
        self.input_path = input_path
        self.pred = pred
        self.class_names = list(class_names)
        self.speed = dict(speed or {})
        self._image = image  # RGB, for the overlay
        self._index = index

    # ------------------------------------------------------------------ mapping (PaddleX style)
    def __getitem__(self, key: str) -> Any:
        if key not in self.KEYS:
            raise KeyError(f"{key!r} (a SegResult has {', '.join(self.KEYS)})")
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.KEYS)

    def __len__(self) -> int:
        return len(self.KEYS)

    __hash__ = object.__hash__
    __eq__ = object.__eq__  # identity, as before (the pred arrays do not compare to a bool)

    # ------------------------------------------------------------------ views
    @property
    def name(self) -> str:
        """The stem used for saved files (``array_<k>`` for array inputs)."""
        return self.stem_for(self.input_path, self._index)

    @staticmethod
    def stem_for(input_path: str | None, index: int) -> str:
        """The file stem results of ``input_path`` (the ``index``-th input) are saved under."""
        if input_path:
            return Path(input_path.split("?")[0]).stem or f"image_{index}"
        return f"array_{index}"

    @property
    def class_pixels(self) -> dict[int, int]:
        ids, counts = np.unique(self.pred, return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, counts)}

    def _label(self, cid: int) -> str:
        return self.class_names[cid] if cid < len(self.class_names) else str(cid)

    @property
    def json(self) -> dict:
        return self.to_dict()

    def to_dict(self, full: bool = False) -> dict:
        """``full=False``: compact (RLE); ``full=True``: the reference 1 x H x W nested list."""
        if full:
            return {"input_path": self.input_path, "pred": self.pred[None].tolist()}
        return {"input_path": self.input_path, "pred": encode_rle(self.pred),
                "class_names": self.class_names,
                "class_pixels": {str(k): v for k, v in self.class_pixels.items()},
                "speed": {k: round(v, 3) for k, v in self.speed.items()}}

    @property
    def img(self) -> Image.Image:
        return id_image(self.pred)

    def overlay(self) -> Image.Image:
        if self._image is None:
            raise ValueError("this result holds no input image to draw on")
        return draw_overlay(Image.fromarray(self._image), self.pred, self.class_names)

    def summary(self) -> str:
        h, w = self.pred.shape
        total = self.pred.size
        parts = [f"{self._label(c)} {100 * n / total:.1f}%" for c, n in
                 sorted(self.class_pixels.items(), key=lambda kv: -kv[1])]
        return f"{self.input_path or self.name}: {w}x{h}, " + ", ".join(parts)

    def __str__(self) -> str:
        return self.summary()

    __repr__ = __str__

    def print(self, json_format: bool = False, indent: int = 2) -> None:
        """A readable summary (never the whole map); ``json_format`` prints the compact JSON
        with the map elided."""
        if json_format:
            data = self.to_dict()
            data["pred"] = {"encoding": "rle", "size": data["pred"]["size"], "runs": "..."}
            print(json.dumps(data, indent=indent, ensure_ascii=False))
        else:
            print(self.summary())

    # ------------------------------------------------------------------ savers
    def _target(self, path: str | Path, suffix: str) -> Path:
        path = Path(path)
        if path.suffix.lower() in (*IMAGE_SUFFIXES, ".json"):
            return path.with_suffix(suffix)
        return path / f"{self.name}{suffix}"

    def save_to_img(self, path: str | Path, plain: bool = False) -> list[Path]:
        """Write ``<name>.png`` (class ids, always PNG) and ``<name>_overlay.jpg``.

        ``path`` is a folder or a file name (its suffix is replaced by ``.png``). The PNG's
        pixel values are the ids: a palette PNG (``plain=False``: viewable in colour, read the
        ids with ``np.asarray(PIL.Image.open(p))``; OpenCV would return the colours) or a plain
        single-channel PNG (``plain=True``: ``cv2.imread(p, cv2.IMREAD_UNCHANGED)`` gives ids).
        """
        target = write_id_png(self._target(path, ".png"), self.pred, plain=plain)
        written = [target]
        if self._image is not None:
            over = target.with_name(target.stem + "_overlay.jpg")
            save_image(over, self.overlay(), "JPEG", quality=90)
            written.append(over)
        return written

    def save_to_json(self, path: str | Path, full: bool = False, indent: int | None = None
                     ) -> Path:
        """Write the compact JSON (``full=True``: the reference nested-list format)."""
        target = self._target(path, ".json")
        write_json(target, self.to_dict(full), indent=indent)
        return target

    def save_all(self, path: str | Path) -> list[Path]:
        return [self.save_to_json(path), *self.save_to_img(path)]


class ResultSaver:
    """Saves results into one folder (``<stem>.json``, ``<stem>.png``, ``<stem>_overlay.jpg``),
    giving repeated names a ``_<k>`` suffix, and never over a file named in ``protected``
    (the inputs: compared by resolved real path)."""

    def __init__(self, folder: str | Path, protected: Iterable[str | Path | None] = (),
                 plain: bool = False):
        self.folder, self.plain = Path(folder), plain
        self.seen: dict[str, int] = {}
        self.count = 0
        self.protected = {Path(p).resolve() for p in protected if p}

    def _stem(self, name: str) -> str:
        n = self.seen.get(name, 0)
        self.seen[name] = n + 1
        return name if n == 0 else f"{name}_{n}"

    def _targets(self, stem: str) -> list[Path]:
        return [self.folder / f"{stem}{s}" for s in (".json", ".png", "_overlay.jpg")]

    def check(self, names: Sequence[str]) -> None:
        """Refuse, before anything is written, a folder where saving results named ``names``
        (in order) would replace an input file."""
        planner = ResultSaver(self.folder, plain=self.plain)
        for name in names:
            for target in planner._targets(planner._stem(name)):
                if target.resolve() in self.protected:
                    raise SegxError(f"saving the results in {self.folder} would overwrite the "
                                    f"input {target}.",
                                    solution="choose an output folder that holds no inputs.")

    def save(self, res: SegResult) -> list[Path]:
        stem = self._stem(res.name)
        json_path, png_path, _ = self._targets(stem)
        if any(t.resolve() in self.protected for t in self._targets(stem)):
            raise SegxError(f"saving {res.name} would overwrite an input in {self.folder}.",
                            solution="choose an output folder that holds no inputs.")
        self.count += 1
        return [res.save_to_json(json_path), *res.save_to_img(png_path, self.plain)]
