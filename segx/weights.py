"""Official weights: the cache under ``$SEGX_HOME/weights`` and a downloader you can trust.

* **Mirrors.** ``SEGX_WEIGHTS_MIRROR=https://mirror.example.com[/prefix]`` replaces the scheme
  and host of every address segx downloads from, keeping the path (corporate or regional
  mirrors, and the tests' local server).
* **Cache.** One folder per official address (keyed by the full URL, not the file name):
  ``weights/<sha256(url)[:16]>/<file name>`` plus ``source.json`` (address, size, sha256 recorded
  at first download, checked on every later use). Archives (``.tar``, ``.tar.gz``) are unpacked
  beside the file, refusing members that would land outside it, and the weights file inside is
  found.
* **One download at a time.** A lock file per address (``flock``: the OS releases it when a
  downloader dies) makes concurrent processes and training ranks wait for one download, with a
  timeout; a partial file resumes where it stopped (HTTP ``Range``).
* **Clear failures.** Every failure (HTTP error, timeout, offline, checksum, corrupt archive) is
  one :class:`~segx.errors.WeightsError` line naming the address, the cache path to put the file
  at by hand, and what else to do.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from segx.constants import segx_home
from segx.errors import WeightsError
from segx.fileio import write_json
from segx.progress import Progress

MIRROR_ENV = "SEGX_WEIGHTS_MIRROR"
LOCK_TIMEOUT_S = float(os.environ.get("SEGX_WEIGHTS_LOCK_TIMEOUT", 1800))
READ_TIMEOUT_S = 60
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
WEIGHT_SUFFIXES = (".pdparams",)
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """``$SEGX_HOME/weights``."""
    return segx_home() / "weights"


def mirrored(url: str) -> str:
    """``url`` with scheme and host replaced by ``$SEGX_WEIGHTS_MIRROR`` (path kept)."""
    mirror = os.environ.get(MIRROR_ENV, "").strip().rstrip("/")
    if not mirror:
        return url
    parts = urllib.parse.urlsplit(url)
    return mirror + parts.path + (f"?{parts.query}" if parts.query else "")


def entry_dir(url: str) -> Path:
    """The cache folder of one official address."""
    return cache_dir() / hashlib.sha256(url.encode()).hexdigest()[:16]


def file_name(url: str) -> str:
    name = Path(urllib.parse.urlsplit(url).path).name
    return name if name and name not in (".", "..") else "weights.pdparams"


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- cache entries
def _source(folder: Path) -> dict:
    try:
        return json.loads((folder / "source.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _weights_in(folder: Path, url: str) -> Path:
    """The weights file an unpacked archive holds: ``model.pdparams``, or its only .pdparams."""
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    preferred = [p for p in found if p.name == "model.pdparams"]
    if len(preferred) == 1 or len(found) == 1:
        return (preferred or found)[0]
    raise WeightsError(f"the archive {url} holds {len(found)} .pdparams files "
                       f"({', '.join(p.name for p in found[:5]) or 'none'}); segx cannot tell "
                       "which are the weights.",
                       solution="extract it yourself and pass the .pdparams path.")


def _cached(url: str, sha256: str | None) -> Path | None:
    """The usable weights file of a complete cache entry, or None; a damaged one is an error."""
    folder = entry_dir(url)
    src = _source(folder)
    path = folder / file_name(url)
    if not src or not path.is_file():
        return None
    want = sha256 or src.get("sha256")
    if want and sha256_of(path) != want:
        raise WeightsError(f"the cached copy of {url} at {path} does not match its sha256 "
                           f"({want[:12]}...): it was changed or damaged.",
                           solution=f"delete {folder} and fetch it again.")
    if is_archive(path.name):
        return _weights_in(folder / "extracted", url)
    return path


def cached_entries() -> list[dict]:
    """Every complete cache entry: its ``source.json`` plus ``path`` (the folder)."""
    root = cache_dir()
    if not root.is_dir():
        return []
    return [{**_source(d), "path": str(d)} for d in sorted(root.iterdir())
            if d.is_dir() and _source(d)]


# --------------------------------------------------------------------------- locking
@contextmanager
def _locked(folder: Path, url: str) -> Iterator[None]:
    """Hold the entry's lock; waits for another downloader up to ``LOCK_TIMEOUT_S``."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as fh:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise WeightsError(
                        f"another process has been downloading {url} for over "
                        f"{LOCK_TIMEOUT_S:.0f} s (lock {folder / '.lock'}).",
                        solution="wait for it, or stop it; a crashed downloader releases the "
                                 "lock by itself.") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- downloading
def _download(url: str, part: Path, label: str) -> None:
    """Fetch ``url`` into ``part``, continuing a partial file when the server allows it."""
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=READ_TIMEOUT_S) as resp:
        resumed = have and resp.status == 206
        if not resumed:
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else 0
        progress = Progress(label, total, have) if total else None
        try:
            with open(part, "ab" if resumed else "wb") as out:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    have += len(chunk)
                    if progress:
                        progress.update(have)
        finally:
            if progress:
                progress.close()
    if total and have != total:
        raise OSError(f"connection closed after {have} of {total} bytes")


def _unpack(archive: Path, target: Path, url: str) -> None:
    """Extract ``archive`` into ``target`` (replaced as a whole); members that are links,
    devices, absolute or escape ``target`` are refused."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                dest = (tmp / member.name).resolve()
                if not (member.isfile() or member.isdir()) or not dest.is_relative_to(
                        tmp.resolve()):
                    raise WeightsError(f"the archive {url} holds '{member.name}', which would "
                                       "land outside its folder or is not a plain file.",
                                       solution="use the official archive; this one is unsafe.")
                if member.isfile():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, _CHUNK)
    except (tarfile.TarError, EOFError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = str(exc).splitlines()[0].rstrip(":") or type(exc).__name__
        raise WeightsError(f"the archive {url} is corrupt ({reason}).",
                           solution="fetch it again; if it keeps failing, the file or mirror "
                                    "is wrong.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def _failure(url: str, source: str, exc: BaseException, hint: str) -> WeightsError:
    if isinstance(exc, urllib.error.HTTPError):
        reason = f"HTTP {exc.code}"
    elif isinstance(exc, TimeoutError) or "timed out" in str(exc):
        reason = "timed out"
    else:
        reason = str(getattr(exc, "reason", exc))
    path = entry_dir(url) / file_name(url)
    where = f" (from {source})" if source != url else ""
    return WeightsError(
        f"cannot download {url}{where}: {reason}.",
        solution=f"download it on a machine that can and put it at {path} (or run `segx weights "
                 f"import FILE --url {url}`), set {MIRROR_ENV} to a mirror" + hint + ".")


def fetch(url: str, sha256: str | None = None, hint: str = "") -> Path:
    """The local weights file for an official address: from the cache, or downloaded.

    Args:
        url: the official address (``.pdparams`` or a ``.tar``/``.tar.gz`` holding one).
        sha256: the file's known checksum, if any (else the one recorded at first download).
        hint: more of the fix for the offline error (``", or set -o Train.pretrained=none"``).

    Raises:
        WeightsError: every failure, in one line.
    """
    found = _cached(url, sha256)
    if found:
        return found
    folder, name = entry_dir(url), file_name(url)
    source = mirrored(url)
    with _locked(folder, url):
        found = _cached(url, sha256)  # another process may have fetched it meanwhile
        if found:
            return found
        if (folder / name).is_file():  # put there by hand, as the offline error suggests
            return _store(url, sha256, folder / name, folder / name)
        part = folder / (name + ".part")
        try:
            _download(source, part, f"downloading {name}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise _failure(url, source, exc, hint) from None
        return _store(url, sha256, part, folder / name)


def _store(url: str, sha256: str | None, part: Path, path: Path) -> Path:
    """Check and move a complete download (or an imported file) into its cache entry."""
    digest = sha256_of(part)
    if sha256 and digest != sha256:
        part.unlink(missing_ok=True)
        raise WeightsError(f"{url} does not match its published sha256 (got {digest[:12]}..., "
                           f"expected {sha256[:12]}...).",
                           solution="fetch it again; if it keeps failing, the file or mirror "
                                    "is wrong.")
    os.replace(part, path)
    if is_archive(path.name):
        try:
            _unpack(path, path.parent / "extracted", url)
        except BaseException:
            path.unlink(missing_ok=True)  # a bad archive is not kept as if it were good
            raise
    write_json(path.parent / "source.json", {
        "url": url, "file": path.name, "size": path.stat().st_size, "sha256": digest,
        "fetched": time.strftime("%Y-%m-%d %H:%M:%S")})
    return _cached(url, digest)


def import_file(path: str | Path, url: str, sha256: str | None = None) -> Path:
    """Put a file downloaded elsewhere into the cache entry of ``url`` (checked like a
    download); returns the usable weights file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"'{path}' does not exist.", solution="give the downloaded file.")
    if is_archive(file_name(url)) != is_archive(path.name):
        raise WeightsError(f"'{path.name}' and {url} are not the same kind of file "
                           "(archive or .pdparams).",
                           solution="import the file that address serves.")
    folder = entry_dir(url)
    with _locked(folder, url):
        part = folder / (file_name(url) + ".part")
        shutil.copyfile(path, part)
        return _store(url, sha256, part, folder / file_name(url))
