"""LabelMe -> segx dataset, into a new folder (the source is never written).

Accepted layouts: a flat folder of ``.json`` + images; ``images/`` + ``annotations/`` with
relative ``imagePath``; sub-folders (one per camera, say); with or without
``train_anno_list.txt``/``val_anno_list.txt`` (without them, every LabelMe JSON under the folder
is found, other JSON files are skipped, and the samples are split 80/20 with ``Global.seed``).
Class ids come from ``labels.txt`` when present (``__ignore__`` -> 255, ``_background_`` -> 0,
then one id per line), else ``_background_`` is 0 and other names are numbered in order of first
appearance. Shapes are drawn by :mod:`segx.datasets.rasterise` (labelme's rules, pixel for pixel).

Every sample gets its own output name: the JSON's stem, or, where stems repeat across
sub-folders, its path (``cam_a/000.json`` -> ``cam_a_000``); an image is always copied under its
own sample's name, so no image is ever paired with another image's labels.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from segx.constants import IMAGE_SUFFIXES
from segx.datasets.rasterise import ShapeError, shapes_to_ids
from segx.errors import DatasetError
from segx.fileio import copy_file, write_text
from segx.palette import write_id_png

LIST_FILES = {"train": "train_anno_list.txt", "val": "val_anno_list.txt"}


def _class_ids(root: Path, annotations: list[dict]) -> dict[str, int]:
    labels = root / "labels.txt"
    if labels.is_file():
        names = [n.strip() for n in labels.read_text(encoding="utf-8").splitlines() if n.strip()]
        ids, next_id = {}, 0
        for name in names:
            if name == "__ignore__":
                ids[name] = -1
            else:
                ids[name] = next_id
                next_id += 1
        return ids
    ids = {"_background_": 0, "__ignore__": -1}
    for ann in annotations:
        for shape in ann["shapes"]:
            ids.setdefault(shape["label"], len([v for v in ids.values() if v >= 0]))
    return ids


def _read(path: Path) -> dict | None:
    """A LabelMe annotation, or None for JSON that is not one (a report, a config ...)."""
    try:
        ann = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read {path} ({exc}).",
                           solution="fix or remove it from the annotation list.") from None
    if isinstance(ann, dict) and isinstance(ann.get("shapes"), list) and "imagePath" in ann:
        return ann
    return None


def _json_lists(root: Path, target: Path, seed: int) -> dict[str, list[tuple[Path, dict]]]:
    """The annotations per split: from the list files, or every LabelMe JSON under ``root``
    (outside ``target``), split 80/20."""
    if all((root / f).is_file() for f in LIST_FILES.values()):
        lists = {}
        for split, name in LIST_FILES.items():
            text = (root / name).read_text(encoding="utf-8-sig")
            paths = [root / line.strip() for line in text.splitlines() if line.strip()]
            lists[split] = [(p, ann) for p in paths if (ann := _read(p)) is not None]
        return lists
    target = target.resolve()
    found = sorted(p for p in root.rglob("*.json") if not p.name.startswith(".")
                   and not p.resolve().is_relative_to(target))
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


def _image_for(json_path: Path, ann: dict) -> Path | None:
    candidates = []
    if ann.get("imagePath"):
        candidates.append(json_path.parent / ann["imagePath"])
        candidates.append(json_path.parent.parent / "images" / Path(ann["imagePath"]).name)
    candidates += [json_path.with_suffix(e) for e in IMAGE_SUFFIXES]
    candidates += [json_path.parent.parent / "images" / (json_path.stem + e) for e in IMAGE_SUFFIXES]
    return next((c for c in candidates if c.is_file()), None)


def _convert_one(json_path: Path, ann: dict, name: str, class_ids: dict, target: Path) -> str:
    """Write one sample's image and label; returns its list line."""
    image = _image_for(json_path, ann)
    if image is None:
        raise DatasetError(f"{json_path}: image '{ann.get('imagePath')}' not found.",
                           solution="put the image next to the JSON or in images/.")
    unknown = {s.get("label") for s in ann["shapes"]} - set(class_ids)
    if unknown:
        raise DatasetError(f"{json_path}: labels {sorted(map(str, unknown))} are not in "
                           "labels.txt.", solution="add them to labels.txt.")
    with Image.open(image) as im:
        hw = (im.height, im.width)
    try:
        cls = shapes_to_ids(hw, ann["shapes"], class_ids)
    except ShapeError as exc:
        raise DatasetError(f"{json_path}: {exc}.",
                           solution="fix or delete that shape in labelme.") from None
    dst_img = target / "images" / f"{name}{image.suffix.lower()}"
    copy_file(image, dst_img)  # through a temporary file: a killed copy leaves nothing
    write_id_png(target / "annotations" / f"{name}.png",
                 np.where(cls < 0, 255, cls).astype(np.uint8))
    return f"images/{dst_img.name}\tannotations/{name}.png"


def convert(root: Path, target: Path, seed: int) -> dict:
    """Convert LabelMe annotations under ``root`` into the segx layout at ``target``."""
    if target.resolve() == root.resolve():
        raise DatasetError(f"converted dataset would overwrite {root}.",
                           solution="set CheckDataset.convert.output_dir to a new folder.")
    loaded = _json_lists(root, target, seed)
    class_ids = _class_ids(root, [a for v in loaded.values() for _, a in v])
    names = sample_names(root, [p for v in loaded.values() for p, _ in v])
    counts = {}
    for split, items in loaded.items():
        rows = [_convert_one(p, ann, names[p], class_ids, target) for p, ann in items]
        write_text(target / f"{split}.txt", "\n".join(rows) + "\n")
        counts[split] = len(rows)
    ordered = [n for n, i in sorted(class_ids.items(), key=lambda kv: kv[1]) if i >= 0]
    write_text(target / "class_names.txt", "\n".join(ordered) + "\n")
    return {"source": str(root), "converted_dataset": str(target), "samples": counts,
            "class_ids": {n: (255 if i < 0 else i) for n, i in class_ids.items()}}
