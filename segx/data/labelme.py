"""LabelMe -> segx dataset, into a new folder (the source is never written).

Accepted layouts: a flat folder of ``.json`` + images; ``images/`` + ``annotations/`` with
relative ``imagePath``; sub-folders (one per camera, say); with or without
``train_anno_list.txt``/``val_anno_list.txt`` (without them, every LabelMe JSON under the folder
is found, other JSON files are skipped, and the samples are split 80/20 with ``Global.seed``).
Class ids come from ``labels.txt`` when present (``__ignore__`` -> 255, ``_background_`` -> 0,
then one id per line), else ``_background_`` is 0 and other names are numbered in order of first
appearance. Shapes are drawn by :mod:`segx.data.rasterise` (labelme's rules, pixel for pixel).

Every sample gets its own output name: the JSON's stem, or, where stems repeat across
sub-folders, its path (``cam_a/000.json`` -> ``cam_a_000``); an image is always copied under its
own sample's name, so no image is ever paired with another image's labels.

Sources are never written: the output folder may neither contain nor lie inside the dataset
folder, a folder of annotations or of images used (resolved paths, checked before anything is
written). Annotation files and ``imagePath``s that lead outside the dataset folder (absolute,
``../`` or through links) are refused unless ``allow_outside`` is set. Text files are read up to
:data:`MAX_TEXT_BYTES`, images up to :data:`MAX_PIXELS`.
"""
from __future__ import annotations

import json
import os
import random
import stat
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segx.utils.constants import IMAGE_SUFFIXES
from segx.data.rasterise import ShapeError, shapes_to_ids
from segx.utils.errors import DatasetError
from segx.utils.fileio import copy_file, write_text
from segx.imaging.palette import write_id_png

LIST_FILES = {"train": "train_anno_list.txt", "val": "val_anno_list.txt"}
MAX_TEXT_BYTES = 64 << 20
"""Largest LabelMe JSON, annotation list or labels.txt read (64 MiB; an embedded imageData of a
~45 MB image still fits)."""
MAX_PIXELS = 100_000_000
"""Largest image (width x height, read from its header) a LabelMe sample may have."""
MAX_CLASSES = 255
"""Class ids are written as 8-bit PNG values (255 is ignore)."""
SETTING = "CheckDataset.convert.allow_outside_image_paths"


def _read_text(path: Path, what: str) -> str:
    """A regular file of at most MAX_TEXT_BYTES, as UTF-8 text (a device, a FIFO or a huge
    file is a one-line error, read no further than the limit)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise DatasetError(f"{what} {path} is not a regular file.",
                                   solution="point it at a file.")
            data = f.read(MAX_TEXT_BYTES + 1)
        text = data.decode("utf-8-sig")
    except OSError as exc:
        raise DatasetError(f"cannot read {what} {path} ({exc.strerror}).",
                           solution="fix or remove it.") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{what} {path} is not UTF-8 text.", solution="fix or remove it.") from None
    if len(data) > MAX_TEXT_BYTES:
        raise DatasetError(f"{what} {path} is larger than {MAX_TEXT_BYTES >> 20} MiB.",
                           solution="fix or remove it (segx reads no larger file).")
    return text


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path``, links resolved, lies in the (resolved) folder ``root``."""
    return path.resolve().is_relative_to(root)


def _refuse_outside(path: Path, root: Path, allow: bool, what: str) -> None:
    if not allow and not _inside(path, root):
        raise DatasetError(f"{what} leads outside the dataset folder {root} (to "
                           f"{path.resolve()}).",
                           solution=f"move it into the dataset folder, or allow it with "
                                    f"-o {SETTING}=True.")


def _class_ids(root: Path, annotations: list[dict]) -> dict[str, int]:
    labels = root / "labels.txt"
    if labels.is_file():
        names = [n.strip() for n in _read_text(labels, "labels.txt").splitlines() if n.strip()]
        ids, next_id = {}, 0
        for name in names:
            if name == "__ignore__":
                ids[name] = -1
            else:
                ids[name] = next_id
                next_id += 1
    else:
        ids = {"_background_": 0, "__ignore__": -1}
        for ann in annotations:
            for shape in ann["shapes"]:
                ids.setdefault(shape["label"], len([v for v in ids.values() if v >= 0]))
    if max(ids.values(), default=0) >= MAX_CLASSES:
        raise DatasetError(f"the LabelMe labels give {max(ids.values()) + 1} classes; segx "
                           f"writes at most {MAX_CLASSES} (ids 0..{MAX_CLASSES - 1}).",
                           solution="merge classes in labels.txt.")
    return ids


def _is_labelme(ann, path: Path) -> bool:
    """Whether ``ann`` is a LabelMe annotation; one with fields of the wrong type is an
    error naming the file."""
    if not (isinstance(ann, dict) and isinstance(ann.get("shapes"), list) and "imagePath" in ann):
        return False
    if not isinstance(ann["imagePath"], (str, type(None))) or not all(
            isinstance(s, dict) and isinstance(s.get("label"), str) for s in ann["shapes"]):
        raise DatasetError(f"{path}: imagePath must be text and every shape an object with a "
                           "text 'label'.", solution="fix the file in labelme.")
    return True


def _read(path: Path) -> dict | None:
    """A LabelMe annotation, or None for JSON that is not one (a report, a config ...)."""
    text = _read_text(path, "annotation")
    try:
        ann = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise DatasetError(f"cannot read {path} ({why}).",
                           solution="fix or remove it from the annotation list.") from None
    return ann if _is_labelme(ann, path) else None


def _from_lists(root: Path, allow: bool) -> dict[str, list[tuple[Path, dict]]]:
    lists, base = {}, root.resolve()
    for split, name in LIST_FILES.items():
        items = []
        for k, line in enumerate(_read_text(root / name, name).splitlines(), 1):
            if line.strip():
                path = root / line.strip()
                _refuse_outside(path, base, allow, f"{name}:{k} ({line.strip()!r})")
                if (ann := _read(path)) is not None:
                    items.append((path, ann))
        lists[split] = items
    return lists


def _json_lists(root: Path, target: Path, seed: int,
                allow: bool) -> dict[str, list[tuple[Path, dict]]]:
    """The annotations per split: from the list files, or every LabelMe JSON under ``root``
    (outside ``target``), split 80/20."""
    if all((root / f).is_file() for f in LIST_FILES.values()):
        return _from_lists(root, allow)
    target, base = target.resolve(), root.resolve()
    found = sorted(p for p in root.rglob("*.json") if not p.name.startswith(".")
                   and not p.resolve().is_relative_to(target))
    for p in found:
        _refuse_outside(p, base, allow, f"annotation {p} (a link)")
    loaded = [(p, ann) for p in found if (ann := _read(p)) is not None]
    if not loaded:
        raise DatasetError(f"no LabelMe .json files under {root}.",
                           solution="point Global.dataset_dir at the folder of LabelMe JSONs.")
    random.Random(seed).shuffle(loaded)
    n_val = max(1, round(0.2 * len(loaded))) if len(loaded) > 1 else 0
    return {"train": sorted(loaded[n_val:]), "val": sorted(loaded[:n_val])}


def sample_names(root: Path, paths: list[Path]) -> dict[Path, str]:
    """A unique output name per annotation file: its stem, or its path where stems repeat."""
    stems = Counter(p.stem for p in paths)
    names = {}
    for p in paths:
        if stems[p.stem] == 1:
            names[p] = p.stem
        else:
            rel = p.relative_to(root) if p.is_relative_to(root) else Path(*p.parts[-2:])
            names[p] = "_".join(rel.with_suffix("").parts)
    clashes = [n for n, k in Counter(names.values()).items() if k > 1]
    if clashes:
        raise DatasetError(f"LabelMe samples would share output names: {', '.join(clashes[:10])}.",
                           solution="rename the annotation files so each sample has its own "
                                    "name.")
    return names


def _image_for(json_path: Path, ann: dict, root: Path, allow: bool) -> Path:
    """The image of one annotation: its ``imagePath`` (refused when it leads outside ``root``
    unless ``allow``), else an image of the same name in ``images/`` or beside the JSON."""
    given = ann.get("imagePath")
    if given:
        direct = json_path.parent / given
        if direct.is_file():
            _refuse_outside(direct, root, allow, f"{json_path}: imagePath '{given}'")
            return direct
    fallbacks = [json_path.parent.parent / "images" / Path(given).name] if given else []
    fallbacks += [json_path.with_suffix(e) for e in IMAGE_SUFFIXES]
    fallbacks += [json_path.parent.parent / "images" / (json_path.stem + e)
                  for e in IMAGE_SUFFIXES]
    for c in fallbacks:
        if c.is_file() and (allow or _inside(c, root)):
            return c
    raise DatasetError(f"{json_path}: image '{given}' not found.",
                       solution="put the image next to the JSON or in images/.")


def _image_size(json_path: Path, image: Path) -> tuple[int, int]:
    """(height, width) from the image's header, refusing more than MAX_PIXELS."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below
            with Image.open(image) as im:
                w, h = im.size
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{json_path}: its image {image} cannot be read ({exc}).",
                           solution="replace the image.") from None
    if w * h > MAX_PIXELS:
        raise DatasetError(f"{json_path}: its image {image} is {w}x{h}, more than "
                           f"{MAX_PIXELS:,} pixels.", solution="use smaller images.")
    return h, w


def _plan(loaded: dict, root: Path, class_ids: dict, allow: bool) -> dict:
    """``{split: [(json, annotation, image)]}``; every check that needs no drawing."""
    base, plan = root.resolve(), {}
    for split, items in loaded.items():
        plan[split] = []
        for json_path, ann in items:
            unknown = {s["label"] for s in ann["shapes"]} - set(class_ids)
            if unknown:
                raise DatasetError(f"{json_path}: labels {sorted(unknown)} are not in "
                                   "labels.txt.", solution="add them to labels.txt.")
            plan[split].append((json_path, ann, _image_for(json_path, ann, base, allow)))
    return plan


def _check_target(target: Path, root: Path, plan: dict) -> None:
    """Refuse an output folder that contains, or lies inside, a source (the dataset folder, a
    folder of annotations or of images used), compared by resolved path."""
    out = target.resolve()
    sources = {root.resolve()}
    for items in plan.values():
        for json_path, _, image in items:
            sources |= {json_path.resolve().parent, image.resolve().parent}
    for src in sorted(sources):
        if out.is_relative_to(src) or src.is_relative_to(out):
            where = "is" if out == src else "is inside" if out.is_relative_to(src) else "contains"
            raise DatasetError(f"CheckDataset.convert.output_dir {target} {where} the LabelMe "
                               f"source {src}; the conversion would write into its sources.",
                               solution="set CheckDataset.convert.output_dir to a new folder "
                                        f"outside them, e.g. {root.resolve()}_converted.")


def _convert_one(json_path: Path, ann: dict, image: Path, name: str, class_ids: dict,
                 target: Path) -> str:
    """Write one sample's image and label; returns its list line."""
    hw = _image_size(json_path, image)
    try:
        cls = shapes_to_ids(hw, ann["shapes"], class_ids)
    except ShapeError as exc:
        raise DatasetError(f"{json_path}: {exc}.",
                           solution="fix or delete that shape in labelme.") from None
    cls[cls < 0] = 255
    dst_img = target / "images" / f"{name}{image.suffix.lower()}"
    copy_file(image, dst_img)  # through a temporary file: a killed copy leaves nothing
    write_id_png(target / "annotations" / f"{name}.png", cls.astype(np.uint8))
    return f"images/{dst_img.name}\tannotations/{name}.png"


def convert(root: Path, target: Path, seed: int, allow_outside: bool = False) -> dict:
    """Convert LabelMe annotations under ``root`` into the segx layout at ``target``; files
    outside ``root`` are used only with ``allow_outside``."""
    loaded = _json_lists(root, target, seed, allow_outside)
    class_ids = _class_ids(root, [a for v in loaded.values() for _, a in v])
    names = sample_names(root, [p for v in loaded.values() for p, _ in v])
    plan = _plan(loaded, root, class_ids, allow_outside)
    _check_target(target, root, plan)  # before anything is written
    counts = {}
    for split, items in plan.items():
        rows = [_convert_one(p, ann, img, names[p], class_ids, target) for p, ann, img in items]
        write_text(target / f"{split}.txt", "\n".join(rows) + "\n")
        counts[split] = len(rows)
    ordered = [n for n, i in sorted(class_ids.items(), key=lambda kv: kv[1]) if i >= 0]
    write_text(target / "class_names.txt", "\n".join(ordered) + "\n")
    return {"source": str(root), "converted_dataset": str(target), "samples": counts,
            "class_ids": {n: (255 if i < 0 else i) for n, i in class_ids.items()}}
