"""Pictures are written like every other output: encoded in memory, then renamed into place
(segx/utils/fileio.py), so a failing encoder or a killed process never leaves half a picture."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT

OLD = b"\x89PNG the picture of the previous run"


def _curves(path: Path) -> None:
    from segx.training.results import curves_png
    curves_png({"iter": [1, 2], "loss": [1.0, 0.5], "lr": [0.1, 0.1], "eval_iter": [2],
                "mIoU": [0.3]}, path)


def _confusion(path: Path) -> None:
    from segx.inference.evaluation import confusion_png
    confusion_png(np.array([[3, 1], [0, 4]]), ["a", "b"], path)


def _histogram(path: Path) -> None:
    from segx.data.visualize import histogram
    histogram({"train": {"pixels": {0: 5, 1: 3}, "images": {0: 2, 1: 1}, "samples": 2}},
              ["a", "b"], path)


@pytest.mark.parametrize("draw", [_curves, _confusion, _histogram],
                         ids=["training_curves", "confusion_matrix", "check_histogram"])
def test_a_failing_figure_encode_leaves_the_previous_picture(draw, tmp_path, monkeypatch):
    """training_curves.png, confusion_matrix.png and the check report's histogram: an encoder
    that fails half way (a full disk, a killed process) leaves the old picture whole."""
    from matplotlib.figure import Figure
    path = tmp_path / "out" / "picture.png"
    path.parent.mkdir()
    path.write_bytes(OLD)

    def broken(self, fname, *args, **kwargs):
        (open(fname, "wb") if isinstance(fname, (str, Path)) else fname).write(b"\x89PNG half")
        raise OSError("disk full")
    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        draw(path)
    assert path.read_bytes() == OLD and sorted(path.parent.iterdir()) == [path]
    monkeypatch.undo()
    draw(path)  # and a working one replaces it with a real PNG
    with Image.open(path) as im:
        assert im.format == "PNG"
    assert sorted(path.parent.iterdir()) == [path]


def test_a_failing_image_encode_leaves_no_file(tmp_path):
    from segx.utils.fileio import save_image
    path = tmp_path / "thumb.jpg"
    with pytest.raises((OSError, ValueError)):  # JPEG cannot hold an alpha channel
        save_image(path, Image.new("RGBA", (4, 4)))
    assert list(tmp_path.iterdir()) == []
    path.write_bytes(OLD)
    with pytest.raises((OSError, ValueError)):
        save_image(path, Image.new("RGBA", (4, 4)), quality=90)
    assert path.read_bytes() == OLD and list(tmp_path.iterdir()) == [path]
    save_image(path, Image.new("RGB", (4, 4)), quality=90)  # the suffix names the format
    with Image.open(path) as im:
        assert im.format == "JPEG"


# writer calls that must go through segx.utils.fileio (which encodes into memory, then renames)
DIRECT = {"imwrite", "savefig", "imsave"}
# ``x.save(first, ...)`` is allowed only where ``first`` is one of these names: an in-memory
# buffer, a prediction saver's result, or paddle's weights (written into a temporary folder)
SAVE_FIRST_ARGS = {"buf", "res", "obj", "net"}


def direct_writes(source: str) -> list[int]:
    """Lines of ``source`` that write a picture straight onto a path."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name, args = node.func.attr, node.args
        if name in DIRECT or (name == "save" and args and not (
                isinstance(args[0], ast.Name) and args[0].id in SAVE_FIRST_ARGS)):
            found.append(node.lineno)
    return found


def test_no_module_writes_a_picture_outside_fileio():
    bad = {str(p.relative_to(ROOT)): lines for p in sorted((ROOT / "segx").rglob("*.py"))
           if p.name != "fileio.py" and (lines := direct_writes(p.read_text()))}
    assert bad == {}, "write pictures with segx.utils.fileio.save_image / save_figure"


def test_the_picture_check_sees_each_kind_of_direct_write():
    planted = ["fig.savefig(out / 'a.png')", "cv2.imwrite(str(p), img)",
               "Image.fromarray(a).save(path, quality=90)", "img.save(dst, 'JPEG')"]
    assert all(direct_writes(line) == [1] for line in planted)
    assert direct_writes("id_image(pred).save(buf, format='PNG')") == []
