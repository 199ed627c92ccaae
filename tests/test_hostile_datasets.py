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
    from segx.datasets.layout import read_layout
    layout = read_layout(root)
    found = [p for p in layout.problems if p.code == "foreign_journal"]
    assert len(found) == 1 and found[0].severity == "warning", layout.problems
    assert ".segx_split" in found[0].message and "delete the folder" in found[0].fix
    assert "segx: warning: ignored the re-split journal" in capsys.readouterr().err
    assert layout.samples["train"] and layout.samples["val"]  # the lists on disk are read


# ------------------------------------------------------------------- journals segx did not write
def _sign_foreign(text: str) -> str:
    from segx.datasets.journal import sign
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
    from segx.datasets.journal import sign
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
    from segx.datasets.journal import sign
    root = make_dataset(tmp_path / "d")
    _plant(root, sign(f"segx-split-journal 1\nput train.txt {_sha('the staged list')}\n"),
           {"train.txt": "a different list"})
    before = _tree(root)
    _read_refusing(root, capsys)
    assert _tree(root) == before


def test_list_links_in_the_dataset_are_replaced_not_followed(tmp_path, victims):
    """A genuine re-split over list files that are links replaces the links themselves."""
    from segx.datasets.split import split_dataset
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
    from segx.datasets.journal import stage
    from segx.datasets.layout import read_layout
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
    from segx.datasets.journal import stage
    from segx.datasets.layout import read_layout
    root = make_dataset(tmp_path / "d")
    old = _lists(root)
    stage(root, {"train": ["x y"], "val": ["y z"]}, drop=[])
    (root / ".segx_split" / "COMMIT").unlink()
    (root / ".segx_split" / ".val.txt.ab12cd_3.tmp").write_text("half a li")
    assert not read_layout(root).problems
    assert _lists(root) == old and not (root / ".segx_split").exists()
