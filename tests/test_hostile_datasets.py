"""Datasets are untrusted input: a dataset's files never delete, replace or overwrite anything
outside what segx itself wrote (re-split journals, LabelMe conversion)."""
from __future__ import annotations

import zlib  # noqa: F401

import hashlib
import os
import stat
from pathlib import Path

import pytest

from test_check_dataset import check, codes, digest, make_dataset


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """This user's $SEGX_HOME (where the journal key lives), outside every dataset."""
    monkeypatch.setenv("SEGX_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _tree(*roots: Path) -> dict:
    """Every file and link under ``roots``: bytes hashed, links by their target."""
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                if p.is_symlink():
                    out[str(p)] = "-> " + os.readlink(p)
                elif p.is_file():
                    out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def victims(tmp_path) -> Path:
    """Files of the user's that no dataset may touch."""
    folder = tmp_path / "victim"
    folder.mkdir()
    for name in ("victim.txt", "x.txt", "train.txt"):
        (folder / name).write_text(f"the user's own {name}\n")
    return folder


def _plant(root: Path, commit: str, staged: dict[str, str] | None = None) -> Path:
    journal = root / ".segx_split"
    for name, text in (staged or {}).items():
        (journal / name).parent.mkdir(parents=True, exist_ok=True)
        (journal / name).write_text(text)
    journal.mkdir(exist_ok=True)
    (journal / "COMMIT").write_text(commit)
    return journal


def _read_refusing(root: Path, capsys) -> None:
    """Reading the lists reports the journal (a warning naming it, with the fix) and leaves
    it where it is."""
    from segx.data.layout import read_layout
    layout = read_layout(root)
    found = [p for p in layout.problems if p.code == "foreign_journal"]
    assert len(found) == 1 and found[0].severity == "warning", layout.problems
    assert ".segx_split" in found[0].message and "delete the folder" in found[0].fix
    assert "segx: warning: ignored the re-split journal" in capsys.readouterr().err
    assert layout.samples["train"] and layout.samples["val"]  # the lists on disk are read


# ------------------------------------------------------------------- journals segx did not write
def _sign_foreign(text: str) -> str:
    from segx.data.journal import sign
    return sign(text, key=b"not this user's key".ljust(32, b"!"))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


PLANTS = {
    "delete_by_dotdot": lambda v: ("-../victim/victim.txt\n", {}),
    "delete_by_absolute": lambda v: (f"-{v / 'victim.txt'}\n", {}),
    "replace_through_a_linked_folder": lambda v: ("link/x.txt\n", {"link/x.txt": "evil\n"}),
    "a_non_list_file": lambda v: ("images/0.png\n", {"images/0.png": "evil\n"}),
    "correct_form_foreign_key": lambda v: (_sign_foreign(
        f"segx-split-journal 1\nput train.txt {_sha('evil.png evil.png')}\ndrop val.txt\n"),
        {"train.txt": "evil.png evil.png"}),
    "correct_form_no_mac": lambda v: (
        f"segx-split-journal 1\nput train.txt {_sha('evil.png evil.png')}\n",
        {"train.txt": "evil.png evil.png"}),
}


@pytest.mark.parametrize("case", sorted(PLANTS))
def test_a_planted_journal_touches_nothing_and_is_reported(case, tmp_path, victims, capsys):
    root = make_dataset(tmp_path / "d")
    (root / "link").symlink_to(victims)  # a folder link the dataset ships
    commit, staged = PLANTS[case](victims)
    _plant(root, commit, staged)
    before = _tree(root, victims)
    _read_refusing(root, capsys)
    assert _tree(root, victims) == before


def test_a_journal_that_is_a_link_is_not_followed(tmp_path, victims, capsys):
    root = make_dataset(tmp_path / "d")
    (victims / "COMMIT").write_text("train.txt\n-victim.txt\n")
    (root / ".segx_split").symlink_to(victims)
    before = _tree(root, victims)
    _read_refusing(root, capsys)
    assert _tree(root, victims) == before


@pytest.mark.parametrize("line", ["put ../victim/x.txt {sha}", "put link/x.txt {sha}",
                                  "put images/0.png {sha}", "drop ../victim/victim.txt",
                                  "drop /etc/hostname", "put train.txt {sha}\nput train.txt {sha}"])
def test_even_a_journal_signed_with_this_users_key_names_only_list_files(
        line, tmp_path, victims, capsys):
    """The name rule holds on its own (a bug elsewhere cannot turn the key into a weapon)."""
    from segx.data.journal import sign
    root = make_dataset(tmp_path / "d")
    (root / "link").symlink_to(victims)
    body = "segx-split-journal 1\n" + line.format(sha=_sha("evil\n")) + "\n"
    journal = _plant(root, sign(body), {"train.txt": "evil\n"})
    for name in ("x.txt", "0.png"):
        (journal / name).write_text("evil\n")
    before = _tree(root, victims)
    _read_refusing(root, capsys)
    assert _tree(root, victims) == before


def test_a_signed_journal_with_swapped_lists_is_refused(tmp_path, capsys):
    from segx.data.journal import sign
    root = make_dataset(tmp_path / "d")
    _plant(root, sign(f"segx-split-journal 1\nput train.txt {_sha('the staged list')}\n"),
           {"train.txt": "a different list"})
    before = _tree(root)
    _read_refusing(root, capsys)
    assert _tree(root) == before


def test_list_links_in_the_dataset_are_replaced_not_followed(tmp_path, victims):
    """A genuine re-split over list files that are links replaces the links themselves."""
    from segx.data.split import split_dataset
    root = make_dataset(tmp_path / "d")
    rows = (root / "train.txt").read_text().splitlines()
    for split, part in (("train", rows[:2]), ("val", rows[2:3]), ("test", rows[3:])):
        (victims / f"{split}.txt").write_text("\n".join(part) + "\n")
        (root / f"{split}.txt").unlink(missing_ok=True)
        (root / f"{split}.txt").symlink_to(victims / f"{split}.txt")
    before = _tree(victims)
    split_dataset(root, 50, 50, 0, seed=1)  # pools train/val, keeps test.txt
    split_dataset(root, 40, 40, 20, seed=2)  # rewrites test.txt too
    assert _tree(victims) == before
    assert not any((root / f"{s}.txt").is_symlink() for s in ("train", "val", "test"))


def test_a_resplit_refuses_beside_a_foreign_journal_and_writes_nothing(tmp_path):
    root = make_dataset(tmp_path / "d")
    _plant(root, "-../victim.txt\n")
    before = digest(root)
    rep = check(root, tmp_path / "out", "CheckDataset.split.enable=True",
                "CheckDataset.split.train_percent=50", "CheckDataset.split.val_percent=50")
    assert not rep["done_flag"] and rep["err_type"] == "DatasetError"
    assert "cannot re-split" in rep["err_msg"] and "delete the folder" in rep["err_msg"]
    assert digest(root) == before  # no backup, no list written


def test_check_dataset_reports_a_foreign_journal(tmp_path):
    root = make_dataset(tmp_path / "d")
    _plant(root, "-train.txt\n")
    rep = check(root, tmp_path / "out")
    assert rep["check_pass"] and "foreign_journal" in codes(rep, "warning")
    assert (root / "train.txt").is_file() and (root / ".segx_split" / "COMMIT").is_file()


# ------------------------------------------------------------------- genuine journals
def _lists(root: Path) -> dict[str, str]:
    return {s: (root / f"{s}.txt").read_text() for s in ("train", "val", "test")
            if (root / f"{s}.txt").exists()}


@pytest.mark.parametrize("moved", [0, 1, 2, 3])
def test_a_genuine_resplit_killed_after_its_commit_is_finished(moved, tmp_path, home):
    """Killed after COMMIT with ``moved`` of its steps done: the next reader finishes it."""
    from segx.data.journal import stage
    from segx.data.layout import read_layout
    root = make_dataset(tmp_path / "d")
    (root / "test.txt").write_text((root / "val.txt").read_text())
    rows = (root / "train.txt").read_text().splitlines()
    new = {"train": rows[:2], "val": rows[2:]}
    stage(root, new, drop=["test"])
    journal = root / ".segx_split"
    for step in (["train", "val", "test"])[:moved]:
        if step == "test":
            (root / "test.txt").unlink()
        else:
            os.replace(journal / f"{step}.txt", root / f"{step}.txt")
    layout = read_layout(root)
    assert not layout.problems and not journal.exists()
    assert _lists(root) == {s: "\n".join(r) + "\n" for s, r in new.items()}
    key = home / "journal.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.stat().st_size == 32


def test_a_genuine_resplit_killed_before_its_commit_is_discarded(tmp_path):
    from segx.data.journal import stage
    from segx.data.layout import read_layout
    root = make_dataset(tmp_path / "d")
    old = _lists(root)
    stage(root, {"train": ["x y"], "val": ["y z"]}, drop=[])
    (root / ".segx_split" / "COMMIT").unlink()
    (root / ".segx_split" / ".val.txt.ab12cd_3.tmp").write_text("half a li")
    assert not read_layout(root).problems
    assert _lists(root) == old and not (root / ".segx_split").exists()


# ------------------------------------------------------------------- LabelMe conversion
CONVERT = ("CheckDataset.convert.enable=True", "CheckDataset.convert.src_dataset_type=LabelMe")
ALLOW = "CheckDataset.convert.allow_outside_image_paths=True"


def _labelme(path: Path, image: str, shapes: list | None = None, hw=(40, 60)) -> None:
    import json
    shapes = shapes if shapes is not None else [
        {"label": "box", "points": [[5, 5], [30, 30]], "shape_type": "rectangle"}]
    path.write_text(json.dumps({"version": "5.0.0", "flags": {}, "shapes": shapes,
                                "imagePath": image, "imageData": None,
                                "imageHeight": hw[0], "imageWidth": hw[1]}))


def _jpg(path: Path, colour: int) -> None:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (60, 40), (colour, 0, 0)).save(path)


def _crossed_project(tmp_path: Path) -> Path:
    """proj/images/{a,b}.jpg, and the dataset proj/anno with lists and crossed imagePaths
    (a.json uses b.jpg and b.json a.jpg), the layout that once lost a source image."""
    proj = tmp_path / "proj"
    _jpg(proj / "images" / "a.jpg", 10)
    _jpg(proj / "images" / "b.jpg", 200)
    anno = proj / "anno"
    anno.mkdir()
    _labelme(anno / "a.json", "../images/b.jpg")
    _labelme(anno / "b.json", "../images/a.jpg")
    (anno / "train_anno_list.txt").write_text("a.json\n")
    (anno / "val_anno_list.txt").write_text("b.json\n")
    return proj


def _refused(rep: dict, *words: str) -> None:
    assert rep["done_flag"] is False and rep["err_type"] == "DatasetError", rep
    assert "\n" not in rep["err_msg"] and all(w in rep["err_msg"] for w in words), rep["err_msg"]


@pytest.mark.parametrize("allow", [False, True])
@pytest.mark.parametrize("output", [".", "anno", "anno/converted", "images", "images/sub"])
def test_conversion_never_writes_into_its_sources(output, allow, tmp_path):
    proj = _crossed_project(tmp_path)
    before = _tree(proj)
    rep = check(proj / "anno", tmp_path / "report", *CONVERT, *([ALLOW] if allow else []),
                f"CheckDataset.convert.output_dir={(proj / output).resolve()}")
    _refused(rep, "CheckDataset.convert.output_dir" if allow else "outside the dataset folder")
    assert _tree(proj) == before  # every source byte-identical, nothing added


def test_an_output_folder_beside_the_sources_is_fine(tmp_path):
    proj = _crossed_project(tmp_path)
    before = _tree(proj)
    rep = check(proj / "anno", tmp_path / "report", *CONVERT, ALLOW,
                f"CheckDataset.convert.output_dir={tmp_path / 'converted'}")
    assert rep["check_pass"], rep
    assert _tree(proj) == before


def _outside_cases(tmp_path: Path) -> dict[str, str]:
    secret = tmp_path / "elsewhere" / "secret.jpg"
    _jpg(secret, 99)
    ds = tmp_path / "ds"
    _jpg(ds / "ok.jpg", 50)
    _labelme(ds / "ok.json", "ok.jpg")
    (ds / "linked.jpg").symlink_to(secret)
    return {"dotdot": "../elsewhere/secret.jpg", "absolute": str(secret),
            "link": "linked.jpg"}


@pytest.mark.parametrize("case", ["dotdot", "absolute", "link"])
def test_image_paths_outside_the_dataset_need_the_setting(case, tmp_path):
    image = _outside_cases(tmp_path)[case]
    ds = tmp_path / "ds"
    _labelme(ds / "x.json", image)
    before = _tree(ds, tmp_path / "elsewhere")
    out = tmp_path / "conv"
    rep = check(ds, tmp_path / "r1", *CONVERT, f"CheckDataset.convert.output_dir={out}")
    _refused(rep, "x.json", "outside the dataset folder", ALLOW)
    assert not out.exists() and _tree(ds, tmp_path / "elsewhere") == before
    rep = check(ds, tmp_path / "r2", *CONVERT, ALLOW, f"CheckDataset.convert.output_dir={out}")
    assert rep["check_pass"], rep
    copied = next((out / "images").glob("x.*"))
    assert copied.read_bytes() == (tmp_path / "elsewhere" / "secret.jpg").read_bytes()


def test_annotation_list_entries_outside_the_dataset_need_the_setting(tmp_path):
    _outside_cases(tmp_path)
    ds = tmp_path / "ds"
    _labelme(tmp_path / "elsewhere" / "far.json", "secret.jpg")
    (ds / "train_anno_list.txt").write_text("ok.json\n")
    (ds / "val_anno_list.txt").write_text("../elsewhere/far.json\n")
    rep = check(ds, tmp_path / "r1", *CONVERT, f"CheckDataset.convert.output_dir={tmp_path / 'c'}")
    _refused(rep, "val_anno_list.txt:1", "outside the dataset folder")
    rep = check(ds, tmp_path / "r2", *CONVERT, ALLOW,
                f"CheckDataset.convert.output_dir={tmp_path / 'c'}")
    assert rep["check_pass"], rep


def _png_bomb(width: int, height: int, rows: int | None = None) -> bytes:
    """A valid 8-bit grey PNG of ``width`` x ``height`` zeros (``rows`` of them written;
    fewer makes a truncated one), built row by row so the test itself stays small."""
    import struct
    import zlib as z

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", z.crc32(kind + data) & 0xFFFFFFFF)
    comp, row, parts = z.compressobj(9), b"\0" * (width + 1), []
    for _ in range(height if rows is None else rows):
        parts.append(comp.compress(row))
    parts.append(comp.flush())
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0,
                                                              0, 0))
            + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


def _mask_dataset(ds: Path, png: bytes) -> None:
    import base64
    _jpg(ds / "ok.jpg", 50)
    _labelme(ds / "ok.json", "ok.jpg")
    _jpg(ds / "m.jpg", 60)
    _labelme(ds / "m.json", "m.jpg", [{"label": "blob", "points": [[0, 0], [59, 39]],
                                       "shape_type": "mask",
                                       "mask": base64.b64encode(png).decode()}])


def _convert_in_a_child(ds: Path, out: Path) -> tuple[str, int]:
    """(what ``convert`` raised, peak RSS in MiB) in a fresh, measured process."""
    import sys
    from helpers import measured_run
    code = ("import sys\nfrom pathlib import Path\n"
            "from segx.data.labelme import convert\n"
            "try:\n    convert(Path(sys.argv[1]), Path(sys.argv[2]), 0)\n    print('converted')\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    r, peak_kib = measured_run([sys.executable, "-c", code, str(ds), str(out)],
                               out.parent / "proc")
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 0 and len(lines) == 1, r.stdout + r.stderr
    return lines[0], peak_kib // 1024


@pytest.mark.parametrize("dims", [(13000, 13000), (100_000, 100_000), (61, 40)])
def test_a_mask_larger_than_its_image_is_refused_before_decoding(dims, tmp_path):
    """13000 x 13000 is under Pillow's own bomb limit (169 MB of grey decoded, twice that as
    booleans); 100000 x 100000 is above it; 61 x 40, one column wider than the image, is the
    edge of the rule."""
    _mask_dataset(tmp_path / "good", _png_bomb(60, 40))
    said, baseline = _convert_in_a_child(tmp_path / "good", tmp_path / "c0")
    assert said == "converted"
    _mask_dataset(tmp_path / "ds", _png_bomb(*dims, rows=None if dims[0] < 20000 else 1))
    said, peak = _convert_in_a_child(tmp_path / "ds", tmp_path / "c1")
    assert peak - baseline < 64, (peak, baseline, said)  # MiB: nothing was decoded
    assert said.startswith("DatasetError") and "m.json" in said and "mask declares" in said, said


def test_huge_or_deep_annotation_files_are_one_line_errors(tmp_path):
    ds = tmp_path / "ds"
    _jpg(ds / "ok.jpg", 50)
    _labelme(ds / "ok.json", "ok.jpg")
    with open(ds / "big.json", "wb") as f:
        f.truncate((64 << 20) + 1)  # sparse: no disk used
    rep = check(ds, tmp_path / "r1", *CONVERT, f"CheckDataset.convert.output_dir={tmp_path / 'c'}")
    _refused(rep, "big.json", "larger than 64 MiB")
    (ds / "big.json").unlink()
    (ds / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    rep = check(ds, tmp_path / "r2", *CONVERT, f"CheckDataset.convert.output_dir={tmp_path / 'c'}")
    _refused(rep, "deep.json", "nested too deeply")


def test_a_huge_image_is_refused_from_its_header(tmp_path):
    ds = tmp_path / "ds"
    _jpg(ds / "ok.jpg", 50)
    _labelme(ds / "ok.json", "ok.jpg")
    (ds / "big.png").write_bytes(_png_bomb(12000, 9000, rows=1))
    _labelme(ds / "big.json", "big.png")
    rep = check(ds, tmp_path / "r", *CONVERT, f"CheckDataset.convert.output_dir={tmp_path / 'c'}")
    _refused(rep, "big.json", "12000x9000", "100,000,000 pixels")


def test_malformed_fields_and_too_many_classes_are_one_line_errors(tmp_path):
    ds = tmp_path / "ds"
    _jpg(ds / "ok.jpg", 50)
    _labelme(ds / "ok.json", "ok.jpg")
    _jpg(ds / "bad.jpg", 50)
    _labelme(ds / "bad.json", "bad.jpg", [{"points": [[1, 1], [5, 5]], "shape_type": "line"}])
    rep = check(ds, tmp_path / "r1", *CONVERT, f"CheckDataset.convert.output_dir={tmp_path / 'c'}")
    _refused(rep, "bad.json", "text 'label'")
    (ds / "bad.json").unlink()
    (ds / "labels.txt").write_text("__ignore__\n_background_\n" +
                                   "".join(f"c{k}\n" for k in range(300)))  # ids up to 300
    rep = check(ds, tmp_path / "r2", *CONVERT, f"CheckDataset.convert.output_dir={tmp_path / 'c'}")
    _refused(rep, "301 classes", "at most 255")


def test_a_key_others_can_read_is_not_used(tmp_path, home, capsys):
    from segx.data.journal import stage
    from segx.utils.errors import DatasetError
    root = make_dataset(tmp_path / "d")
    stage(root, {"train": ["x y"], "val": ["y z"]}, drop=[])  # committed, not yet applied
    before = _tree(root)
    os.chmod(home / "journal.key", 0o644)
    _read_refusing(root, capsys)  # a key others could read proves nothing
    assert _tree(root) == before
    (root / ".segx_split" / "COMMIT").unlink()
    with pytest.raises(DatasetError, match="readable by its owner only"):
        stage(root, {"train": ["x y"], "val": ["y z"]}, drop=[])
