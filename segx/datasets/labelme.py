"""LabelMe -> segx dataset, rasterised by labelme's own functions, into a new folder.

Accepted layouts: a flat folder of ``.json`` + images; ``images/`` + ``annotations/`` with
relative ``imagePath``; with or without ``train_anno_list.txt``/``val_anno_list.txt`` (without
them, every JSON under the folder is found and split 80/20 with ``Global.seed``). Class ids come
from ``labels.txt`` when present (``__ignore__`` -> 255, ``_background_`` -> 0, then one id per
line), else ``_background_`` is 0 and other names are numbered in order of first appearance.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from segx.errors import DatasetError
from segx.fileio import write_text
from segx.constants import IMAGE_SUFFIXES
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


def _json_lists(root: Path, seed: int) -> dict[str, list[Path]]:
    if all((root / f).is_file() for f in LIST_FILES.values()):
        lists = {}
        for split, name in LIST_FILES.items():
            text = (root / name).read_text(encoding="utf-8-sig")
            lists[split] = [root / line.strip() for line in text.splitlines() if line.strip()]
        return lists
    found = sorted(p for p in root.rglob("*.json") if not p.name.startswith("."))
    if not found:
        raise DatasetError(f"no LabelMe .json files under {root}.",
                           solution="point Global.dataset_dir at the folder of LabelMe JSONs.")
    random.Random(seed).shuffle(found)
    n_val = max(1, round(0.2 * len(found))) if len(found) > 1 else 0
    return {"train": sorted(found[n_val:]), "val": sorted(found[:n_val])}


def _image_for(json_path: Path, ann: dict) -> Path | None:
    candidates = []
    if ann.get("imagePath"):
        candidates.append(json_path.parent / ann["imagePath"])
        candidates.append(json_path.parent.parent / "images" / Path(ann["imagePath"]).name)
    candidates += [json_path.with_suffix(e) for e in IMAGE_SUFFIXES]
    candidates += [json_path.parent.parent / "images" / (json_path.stem + e) for e in IMAGE_SUFFIXES]
    return next((c for c in candidates if c.is_file()), None)


def convert(root: Path, target: Path, seed: int) -> dict:
    """Convert LabelMe annotations under ``root`` into the segx layout at ``target``."""
    from labelme.utils import shapes_to_label
    if target.resolve() == root.resolve():
        raise DatasetError(f"converted dataset would overwrite {root}.",
                           solution="set CheckDataset.convert.output_dir to a new folder.")
    lists = _json_lists(root, seed)
    loaded: dict[str, list[tuple[Path, dict]]] = {}
    for split, paths in lists.items():
        loaded[split] = []
        for p in paths:
            try:
                loaded[split].append((p, json.loads(p.read_text(encoding="utf-8"))))
            except (OSError, json.JSONDecodeError) as exc:
                raise DatasetError(f"cannot read LabelMe file {p} ({exc}).",
                                   solution="fix or remove it from the annotation list.") from None
    class_ids = _class_ids(root, [a for v in loaded.values() for _, a in v])
    (target / "images").mkdir(parents=True, exist_ok=True)
    (target / "annotations").mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, items in loaded.items():
        rows = []
        for json_path, ann in items:
            image = _image_for(json_path, ann)
            if image is None:
                raise DatasetError(f"{json_path}: image '{ann.get('imagePath')}' not found.",
                                   solution="put the image next to the JSON or in images/.")
            unknown = {s["label"] for s in ann["shapes"]} - set(class_ids)
            if unknown:
                raise DatasetError(f"{json_path}: labels {sorted(unknown)} are not in labels.txt.",
                                   solution="add them to labels.txt.")
            with Image.open(image) as im:
                shape = (im.height, im.width, 3)
            cls, _ = shapes_to_label(shape, ann["shapes"], class_ids)
            ids = np.where(cls < 0, 255, cls).astype(np.uint8)
            dst_img = target / "images" / image.name
            if not dst_img.exists():
                shutil.copy2(image, dst_img)
            dst_lbl = target / "annotations" / f"{json_path.stem}.png"
            write_id_png(dst_lbl, ids)
            rows.append(f"images/{image.name}\tannotations/{dst_lbl.name}")
        write_text(target / f"{split}.txt", "\n".join(rows) + "\n")
        counts[split] = len(rows)
    names = [n for n, i in sorted(class_ids.items(), key=lambda kv: kv[1]) if i >= 0]
    write_text(target / "class_names.txt", "\n".join(names) + "\n")
    return {"source": str(root), "converted_dataset": str(target), "samples": counts,
            "class_ids": {n: (255 if i < 0 else i) for n, i in class_ids.items()}}
