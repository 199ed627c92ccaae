"""Re-splits as one unit, and a journal no dataset can forge.

A re-split writes the new lists into ``<dataset>/.segx_split/``, then a ``COMMIT`` record, then
renames the lists into place; every reader of the lists finishes (or, without ``COMMIT``,
discards) a journal left by a killed re-split first. A downloaded dataset may ship a
``.segx_split`` folder of its own, so the journal is acted on only when every rule holds:

- ``.segx_split`` is a real folder (not a link) holding only the names a re-split writes there
  (the three list files, ``COMMIT`` and their temporary files), each a regular file;
- ``COMMIT`` names only ``train.txt``, ``val.txt`` and ``test.txt``, each a single name in the
  dataset folder, opened and replaced without following links;
- ``COMMIT`` carries an HMAC-SHA256 of its text made with this user's key
  (``$SEGX_HOME/journal.key``, 32 random bytes, mode 0600), and each staged list's SHA-256 is
  the one ``COMMIT`` records. The key never lives in a dataset, so a dataset cannot forge this.

Anything else is reported (:func:`recover` returns the messages) and left as it is.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
import sys
from pathlib import Path

from segx.utils.constants import segx_home
from segx.utils.errors import DatasetError
from segx.utils.fileio import atomic_write, write_text

JOURNAL = ".segx_split"
LIST_NAMES = ("train.txt", "val.txt", "test.txt")
HEADER = "segx-split-journal 1"
MAX_COMMIT_BYTES = 4096
_ENTRY = re.compile(r"(?:train\.txt|val\.txt|test\.txt|COMMIT)"
                    r"|\.(?:train\.txt|val\.txt|test\.txt|COMMIT)\.[A-Za-z0-9_]{1,16}\.tmp")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
FIX = "segx left it and the lists as they are (it cannot prove it wrote it, or could not " \
      "finish it): delete the folder '{journal}' and check that train.txt/val.txt/test.txt " \
      "hold the split you want."


class _Refused(Exception):
    """The journal breaks a rule; the message says which."""


# --------------------------------------------------------------------------- the key
def key_path() -> Path:
    return segx_home() / "journal.key"


def _read_key(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != 32 or st.st_mode & 0o077:
            raise _Refused(f"the key {path} is not a 32-byte file readable by its owner only")
        return os.read(fd, 32)
    finally:
        os.close(fd)


def _create_key(path: Path) -> None:
    """32 random bytes, mode 0600, created once even by processes that race."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".journal.key.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, secrets.token_bytes(32))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def _key(create: bool) -> bytes:
    path = key_path()
    if create and not os.path.lexists(path):
        try:
            _create_key(path)
        except OSError as exc:
            raise DatasetError(f"cannot create the re-split key {path} ({exc.strerror}).",
                               solution="make $SEGX_HOME writable or point it elsewhere.") from None
    try:
        try:
            return _read_key(path)
        except FileNotFoundError:
            raise _Refused(f"no key {path} exists, so segx wrote no journal here") from None
        except OSError as exc:
            raise _Refused(f"the key {path} cannot be read ({exc.strerror})") from None
    except _Refused as exc:
        if not create:
            raise
        raise DatasetError(f"cannot re-split: {exc}.",
                           solution=f"run 'chmod 600 {path}', or delete it (segx makes a new "
                                    "one).") from None


def sign(text: str, key: bytes | None = None) -> str:
    """``text`` followed by its ``mac`` line (this user's key unless ``key`` is given)."""
    mac = hmac.new(key or _key(create=True), text.encode(), hashlib.sha256).hexdigest()
    return f"{text}mac {mac}\n"


# --------------------------------------------------------------------------- reading safely
def _sha256(dir_fd: int, name: str) -> str:
    """The SHA-256 of a regular file ``name`` in ``dir_fd``, opened without following links."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Refused(f"{name} is not a regular file")
        digest = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
        return digest.hexdigest()
    finally:
        os.close(fd)


def _read_commit(j_fd: int) -> bytes:
    fd = os.open("COMMIT", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=j_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_COMMIT_BYTES:
            raise _Refused(f"COMMIT is not a regular file of at most {MAX_COMMIT_BYTES} bytes")
        return os.read(fd, MAX_COMMIT_BYTES + 1)
    finally:
        os.close(fd)


def _parse(raw: bytes) -> list[tuple[str, str, str]]:
    """``[(op, name, sha256)]`` of a COMMIT that has the form segx writes and a valid mac."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise _Refused("COMMIT is not the text segx writes") from None
    body, sep, mac = text.rpartition("mac ")
    if not sep or not body.endswith("\n") or not re.fullmatch(r"[0-9a-f]{64}\n", mac):
        raise _Refused("COMMIT has no mac line, so it cannot be proved to be segx's")
    lines = body.splitlines()
    if not lines or lines[0] != HEADER:
        raise _Refused(f"COMMIT does not start with '{HEADER}'")
    ops, seen = [], set()
    for line in lines[1:]:
        m = re.fullmatch(r"(put) ([a-z.]+) ([0-9a-f]{64})|(drop) ([a-z.]+)", line)
        name = m and (m.group(2) or m.group(5))
        if not m or name not in LIST_NAMES or name in seen:
            raise _Refused(f"COMMIT line {line[:80]!r} does not name one of "
                           f"{', '.join(LIST_NAMES)} once")
        seen.add(name)
        ops.append((m.group(1) or m.group(4), name, m.group(3) or ""))
    want = hmac.new(_key(create=False), body.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, mac.strip()):
        raise _Refused("COMMIT's mac does not match this user's key")
    return ops


# --------------------------------------------------------------------------- recovery
def _entries(j_fd: int) -> list[str]:
    names = os.listdir(j_fd)
    for name in names:
        if not _ENTRY.fullmatch(name):
            raise _Refused(f"it holds {name[:80]!r}, which a re-split never writes there")
        if not stat.S_ISREG(os.stat(name, dir_fd=j_fd, follow_symlinks=False).st_mode):
            raise _Refused(f"{name} in it is not a regular file (a link or a folder)")
    return names


def _apply(root_fd: int, j_fd: int, ops: list[tuple[str, str, str]], names: list[str]) -> None:
    """Check every staged list against COMMIT, then rename them in and delete dropped lists
    (links in the dataset folder are replaced or removed themselves, never followed)."""
    for op, name, sha in ops:
        if op == "put" and name in names and _sha256(j_fd, name) != sha:
            raise _Refused(f"its {name} is not the list COMMIT recorded")
    for op, name, _ in ops:
        if op == "put" and name in names:
            os.replace(name, name, src_dir_fd=j_fd, dst_dir_fd=root_fd)
        elif op == "drop":
            try:
                st = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # dropped before a kill
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=root_fd)


def _clear(root_fd: int, j_fd: int) -> None:
    """Remove the journal's own files (COMMIT last), then the folder."""
    for name in sorted(os.listdir(j_fd), key=lambda n: n == "COMMIT"):
        if _ENTRY.fullmatch(name):
            os.unlink(name, dir_fd=j_fd)
    os.rmdir(JOURNAL, dir_fd=root_fd)


def _settle(root_fd: int, j_fd: int) -> None:
    names = _entries(j_fd)
    if "COMMIT" in names:
        ops = _parse(_read_commit(j_fd))
        _apply(root_fd, j_fd, ops, names)
    _clear(root_fd, j_fd)  # without COMMIT: killed before the commit, the old split stands


def fix_for(root: Path) -> str:
    return FIX.format(journal=root / JOURNAL)


def recover(root: Path) -> list[str]:
    """Finish a committed re-split or discard an uncommitted one (so a kill at any instant
    leaves the old split or the new one); returns one message per journal it refused to act on
    (also printed as a warning), which stays where it is."""
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return []  # no dataset folder: its readers say so
    try:
        try:
            st = os.stat(JOURNAL, dir_fd=root_fd, follow_symlinks=False)
        except FileNotFoundError:
            return []
        if not stat.S_ISDIR(st.st_mode):
            raise _Refused("it is not a folder (a link or a file)")
        j_fd = os.open(JOURNAL, _DIR_FLAGS, dir_fd=root_fd)
        try:
            _settle(root_fd, j_fd)
        finally:
            os.close(j_fd)
        return []
    except (_Refused, OSError) as exc:
        reason = f"{exc.strerror} ({exc.filename})" if isinstance(exc, OSError) else str(exc)
        message = f"ignored the re-split journal {root / JOURNAL}: {reason}."
        print(f"segx: warning: {message} Fix: {fix_for(root)}", file=sys.stderr)
        return [message]
    finally:
        os.close(root_fd)


def _atomic_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data), mode="wb")


def stage(root: Path, lists: dict[str, list[str]], drop: list[str]) -> None:
    """Write the journal: the new lists, then the signed COMMIT (the instant the new split
    exists)."""
    refused = recover(root)
    if refused:
        raise DatasetError(f"cannot re-split: {refused[0]}", solution=fix_for(root))
    key = _key(create=True)
    journal = root / JOURNAL
    journal.mkdir()
    lines = [HEADER]
    for split, rows in lists.items():
        data = ("\n".join(rows) + "\n").encode("utf-8")
        _atomic_bytes(journal / f"{split}.txt", data)
        lines.append(f"put {split}.txt {hashlib.sha256(data).hexdigest()}")
    lines += [f"drop {split}.txt" for split in drop]
    write_text(journal / "COMMIT", sign("\n".join(lines) + "\n", key))


def replace_lists(root: Path, lists: dict[str, list[str]], drop: list[str]) -> None:
    """Write ``{split: lines}`` and delete the ``drop`` splits as one unit."""
    stage(root, lists, drop)
    refused = recover(root)
    if refused:
        raise DatasetError(f"the re-split did not finish: {refused[0]}", solution=fix_for(root))
