"""Official weights: the cache under ``$SEGX_HOME/weights`` and a downloader you can trust.

* **Mirrors.** ``SEGX_WEIGHTS_MIRROR=https://mirror.example.com[/prefix]`` replaces the scheme
  and host of every address segx downloads from, keeping the path (corporate or regional
  mirrors, and the tests' local server).
* **Cache.** One folder per official address (keyed by the full URL, not the file name):
  ``weights/<sha256(url)[:16]>/<file name>`` plus ``source.json`` (address, size, sha256 recorded
  at first download, checked on every later use). Archives (``.tar``, ``.tar.gz``) are unpacked
  beside the file, refusing members that would land outside it, links, devices and sparse
  members; the weights file inside is found and its sha256 recorded too, and checked on every
  use (a changed file is extracted again from the checked archive).
* **Bounded.** A download may take ``SEGX_WEIGHTS_DEADLINE`` seconds in all (default 3600) and
  hold ``SEGX_WEIGHTS_MAX_MB`` (default 1400: four times the largest official weights file,
  PSPNet-R101's ~350 MB); an archive may hold ``SEGX_WEIGHTS_MAX_MEMBERS`` entries (default
  1000) and unpack to at most ``SEGX_WEIGHTS_MAX_MB`` and at most ``SEGX_WEIGHTS_MAX_RATIO``
  (default 10) times its own size (16 MiB always allowed), counted while writing. Redirects
  stay on the same host (never from https to http) unless ``SEGX_WEIGHTS_ALLOW_REDIRECT`` lists
  the other host (``*``: any); a resumed download whose ``206`` answer starts elsewhere than
  asked restarts from zero.
* **One download at a time.** A lock file per address (``flock``: the OS releases it when a
  downloader dies) makes concurrent processes and training ranks wait for one download, with a
  timeout; a partial file resumes where it stopped (HTTP ``Range``).
* **Clear failures.** Every failure (HTTP error, timeout, offline, checksum, corrupt archive) is
  one :class:`~segx.utils.errors.WeightsError` line naming the address, the cache path to put the file
  at by hand, and what else to do.
"""
from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from segx.utils.constants import segx_home
from segx.utils.errors import WeightsError
from segx.utils.fileio import write_json
from segx.utils.progress import Progress
from segx.runs.folder import RunFolder

MIRROR_ENV = "SEGX_WEIGHTS_MIRROR"
LOCK_TIMEOUT_S = float(os.environ.get("SEGX_WEIGHTS_LOCK_TIMEOUT", 1800))
READ_TIMEOUT_S = 60
MAX_MB_ENV, MAX_RATIO_ENV = "SEGX_WEIGHTS_MAX_MB", "SEGX_WEIGHTS_MAX_RATIO"
MAX_MEMBERS_ENV, DEADLINE_ENV = "SEGX_WEIGHTS_MAX_MEMBERS", "SEGX_WEIGHTS_DEADLINE"
REDIRECT_ENV = "SEGX_WEIGHTS_ALLOW_REDIRECT"
LARGEST_OFFICIAL_MB = 350  # PSPNet-R101's trained weights: 87 M float32 parameters (models.md)
DEFAULTS = {MAX_MB_ENV: 4 * LARGEST_OFFICIAL_MB, MAX_RATIO_ENV: 10, MAX_MEMBERS_ENV: 1000,
            DEADLINE_ENV: 3600}
RATIO_FREE_BYTES = 16 << 20  # an archive may always unpack to this much
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
WEIGHT_SUFFIXES = (".pdparams",)
_CHUNK = 1 << 20


def setting(name: str) -> float:
    """A positive number from the environment (``DEFAULTS`` when unset)."""
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else float(DEFAULTS[name])
    except ValueError:
        value = -1.0
    if not value > 0:
        raise WeightsError(f"{name}={raw!r} is not a positive number.",
                           solution=f"unset it (default {DEFAULTS[name]}) or give a number.")
    return value


def max_bytes() -> int:
    """The largest download, imported file or unpacked archive (``SEGX_WEIGHTS_MAX_MB``)."""
    return int(setting(MAX_MB_ENV) * 2**20)


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
    preferred = [p for p in found if p.name == RunFolder.WEIGHTS]
    if len(preferred) == 1 or len(found) == 1:
        return (preferred or found)[0]
    raise WeightsError(f"the archive {url} holds {len(found)} .pdparams files "
                       f"({', '.join(p.name for p in found[:5]) or 'none'}); segx cannot tell "
                       "which are the weights.",
                       solution="extract it yourself and pass the .pdparams path.")


def _cached(url: str, sha256: str | None) -> Path | None:
    """The usable weights file of a complete cache entry, or None (also for an archive whose
    extracted file is missing or changed: the caller extracts it again); a damaged entry is an
    error."""
    folder = entry_dir(url)
    src = _source(folder)
    path = folder / file_name(url)
    if not src or not path.is_file():
        return None
    if is_archive(path.name):
        inner = _extracted(folder, src)
        if inner and (not sha256 or sha256 == src.get("sha256")):
            return inner
    want = sha256 or src.get("sha256")
    if want and sha256_of(path) != want:
        raise WeightsError(f"the cached copy of {url} at {path} does not match its sha256 "
                           f"({want[:12]}...): it was changed or damaged.",
                           solution=f"delete {folder} and fetch it again.")
    return None if is_archive(path.name) else path


def _extracted(folder: Path, src: dict) -> Path | None:
    """The weights file unpacked from an archive, if it still matches its recorded sha256."""
    record = src.get("extracted") or {}
    name, digest = record.get("file"), record.get("sha256")
    if not isinstance(name, str) or not isinstance(digest, str):
        return None
    inner = folder / "extracted" / name
    if not inner.resolve().is_relative_to((folder / "extracted").resolve()):
        return None
    return inner if inner.is_file() and sha256_of(inner) == digest else None


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
class _Refused(OSError):
    """A download segx stops on purpose (too large, too slow, redirected elsewhere)."""

    def __init__(self, reason: str, solution: str):
        super().__init__(reason)
        self.solution = solution


class _SameHost(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to the same host (or one ``SEGX_WEIGHTS_ALLOW_REDIRECT`` lists),
    never from https to http or to another scheme."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        old, new = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        allowed = {h.strip().lower() for h in os.environ.get(REDIRECT_ENV, "").split(",")}
        if new.scheme not in ("http", "https") or (old.scheme, new.scheme) == ("https", "http") \
                or (new.hostname != old.hostname and "*" not in allowed
                    and (new.hostname or "").lower() not in allowed):
            fp.close()
            raise _Refused(f"redirected to {new.scheme}://{new.hostname}, another host or a "
                           "weaker scheme", f"if that host is your mirror, add it to "
                                            f"{REDIRECT_ENV} (comma-separated host names)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_SameHost)


def _range_start(resp) -> int | None:
    """Where a ``206`` answer's body starts (``Content-Range: bytes START-END/TOTAL``)."""
    value = resp.headers.get("Content-Range", "")
    unit, _, rest = value.partition(" ")
    start = rest.split("-", 1)[0].strip()
    return int(start) if unit.strip().lower() == "bytes" and start.isdigit() else None


def _download(url: str, part: Path, label: str) -> None:
    """Fetch ``url`` into ``part`` within the deadline and the size cap, continuing a partial
    file when the server answers with exactly the range asked for (else from zero)."""
    deadline = time.monotonic() + setting(DEADLINE_ENV)
    for _ in range(2):
        have = part.stat().st_size if part.is_file() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        timeout = max(0.1, min(READ_TIMEOUT_S, deadline - time.monotonic()))
        try:
            resp = _opener().open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code != 416 or not have:
                raise
            exc.close()
            part.unlink(missing_ok=True)  # the partial file is longer than the file: restart
            continue
        with resp:
            if resp.status == 206 and _range_start(resp) != have:
                part.unlink(missing_ok=True)  # another range than asked: never splice
                continue
            _receive(resp, part, have if resp.status == 206 else 0, label, deadline)
            return
    raise OSError("the server answered twice with another byte range than asked")


def _receive(resp, part: Path, have: int, label: str, deadline: float) -> None:
    """Write the body into ``part`` from offset ``have``, counting bytes against the cap."""
    cap = max_bytes()
    length = resp.headers.get("Content-Length")
    total = have + int(length) if length and length.isdigit() else 0
    too_big = _Refused(f"larger than {cap / 2**20:.0f} MB", f"if the file really is this "
                                                             f"large, raise {MAX_MB_ENV}")
    if total > cap:
        raise too_big
    progress = Progress(label, total, have) if total else None
    try:
        with open(part, "ab" if have else "wb") as out:
            while chunk := resp.read1(_CHUNK):
                have += len(chunk)
                if have > cap:
                    raise too_big
                out.write(chunk)
                if progress:
                    progress.update(have)
                if time.monotonic() > deadline:
                    raise _Refused(f"not finished within {setting(DEADLINE_ENV):.0f} s",
                                   f"on a slow link raise {DEADLINE_ENV} (seconds)")
    finally:
        if progress:
            progress.close()
    if total and have != total:
        raise OSError(f"connection closed after {have} of {total} bytes")


class _Capped(io.RawIOBase):
    """A readable, forward-seekable view of ``raw`` that refuses to go past ``cap`` bytes, so
    not even tarfile's own header parsing (long names, pax records) can read more."""

    def __init__(self, raw, cap: int, refuse):
        super().__init__()
        self.raw, self.cap, self.refuse = raw, cap, refuse

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.raw.tell()

    def seek(self, pos: int, whence: int = 0) -> int:
        target = pos if whence == 0 else self.raw.tell() + pos if whence == 1 else None
        if target is None or target > self.cap:
            self.refuse()
        return self.raw.seek(target)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or self.raw.tell() + n > self.cap:
            n = self.cap - self.raw.tell() + 1
        data = self.raw.read(n)
        if self.raw.tell() > self.cap:
            self.refuse()
        return data

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[:len(data)] = data
        return len(data)


class _ArchiveLimits:
    """What one archive may unpack to; ``refuse`` raises the one-line error."""

    def __init__(self, archive: Path, url: str):
        size = archive.stat().st_size
        ratio_cap = max(int(setting(MAX_RATIO_ENV) * size), RATIO_FREE_BYTES)
        self.bytes = min(max_bytes(), ratio_cap)
        self.members = int(setting(MAX_MEMBERS_ENV))
        self.url, self.written = url, 0

    def refuse(self, what: str) -> None:
        raise WeightsError(
            f"the archive {self.url} {what} (allowed here: {self.members} entries, "
            f"{self.bytes / 2**20:.0f} MB unpacked), so segx refused it.",
            solution=f"use the official archive; if it really is this large, raise "
                     f"{MAX_MEMBERS_ENV}, {MAX_MB_ENV} or {MAX_RATIO_ENV} (unpacked bytes per "
                     "archive byte).")

    def write(self, src, dest: Path) -> None:
        """Copy one member, counting bytes as they are written (not trusting its header)."""
        with open(dest, "wb") as out:
            while chunk := src.read(_CHUNK):
                self.written += len(chunk)
                if self.written > self.bytes:
                    self.refuse("unpacks to more bytes than allowed")
                out.write(chunk)


def _open_archive(archive: Path, limits: _ArchiveLimits) -> tarfile.TarFile:
    """The archive as a tar (plain or gzip), read through a byte cap."""
    with open(archive, "rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    raw = gzip.open(archive, "rb") if gz else open(archive, "rb")
    capped = _Capped(raw, limits.bytes + 512 * (limits.members + 8) + RATIO_FREE_BYTES,
                     lambda: limits.refuse("holds more data than allowed"))
    try:
        return tarfile.open(fileobj=capped, mode="r:")
    except BaseException:
        raw.close()
        raise


def _unpack_members(tar: tarfile.TarFile, tmp: Path, limits: _ArchiveLimits) -> None:
    for count, member in enumerate(tar, 1):
        if count > limits.members:
            limits.refuse("holds too many entries")
        dest = (tmp / member.name).resolve()
        if member.issparse() or not (member.isfile() or member.isdir()) or \
                not dest.is_relative_to(tmp.resolve()):
            raise WeightsError(f"the archive {limits.url} holds '{member.name[:200]}', which "
                               "would land outside its folder or is not a plain file.",
                               solution="use the official archive; this one is unsafe.")
        if member.size > limits.bytes - limits.written:
            limits.refuse("unpacks to more bytes than allowed")
        if member.isfile():
            dest.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src:
                limits.write(src, dest)


def _unpack(archive: Path, target: Path, url: str) -> None:
    """Extract ``archive`` into ``target`` (replaced as a whole) within the archive limits;
    members that are links, devices, sparse, absolute or escape ``target`` are refused."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    limits = _ArchiveLimits(archive, url)
    try:
        with _open_archive(archive, limits) as tar:
            try:
                _unpack_members(tar, tmp, limits)
            finally:
                tar.fileobj.raw.close()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = str(exc).splitlines()[0].rstrip(":") if str(exc) else type(exc).__name__
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
    if isinstance(exc, _Refused):
        return WeightsError(f"cannot download {url}{where}: {reason}; stopped and removed the "
                            "partial file.", solution=exc.solution + ".")
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
        if (folder / name).is_file():  # put there by hand, or an archive to extract again
            return _store(url, sha256 or _source(folder).get("sha256"), folder / name,
                          folder / name)
        part = folder / (name + ".part")
        try:
            _download(source, part, f"downloading {name}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            if isinstance(exc, _Refused):
                part.unlink(missing_ok=True)
            raise _failure(url, source, exc, hint) from None
        return _store(url, sha256, part, folder / name)


def _store(url: str, sha256: str | None, part: Path, path: Path) -> Path:
    """Check and move a complete download (or an imported file) into its cache entry."""
    if part.stat().st_size > max_bytes():
        part.unlink(missing_ok=True)
        raise WeightsError(f"the file for {url} is larger than {max_bytes() / 2**20:.0f} MB.",
                           solution=f"if it really is this large, raise {MAX_MB_ENV}.")
    digest = sha256_of(part)
    if sha256 and digest != sha256:
        part.unlink(missing_ok=True)
        raise WeightsError(f"{url} does not match its published sha256 (got {digest[:12]}..., "
                           f"expected {sha256[:12]}...).",
                           solution="fetch it again; if it keeps failing, the file or mirror "
                                    "is wrong.")
    os.replace(part, path)
    record = {"url": url, "file": path.name, "size": path.stat().st_size, "sha256": digest,
              "fetched": time.strftime("%Y-%m-%d %H:%M:%S")}
    if is_archive(path.name):
        try:
            _unpack(path, path.parent / "extracted", url)
            inner = _weights_in(path.parent / "extracted", url)
        except BaseException:
            path.unlink(missing_ok=True)  # a bad archive is not kept as if it were good
            shutil.rmtree(path.parent / "extracted", ignore_errors=True)
            raise
        record["extracted"] = {"file": inner.relative_to(path.parent / "extracted").as_posix(),
                               "sha256": sha256_of(inner)}
    write_json(path.parent / "source.json", record)
    found = _cached(url, digest)
    if found is None:
        raise WeightsError(f"the cache entry of {url} in {path.parent} changed while segx "
                           "wrote it.", solution="fetch it again.")
    return found


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
    if path.stat().st_size > max_bytes():
        raise WeightsError(f"'{path}' is larger than {max_bytes() / 2**20:.0f} MB, more than "
                           "any official weights file.",
                           solution=f"if it really is this large, raise {MAX_MB_ENV}.")
    folder = entry_dir(url)
    with _locked(folder, url):
        part = folder / (file_name(url) + ".part")
        shutil.copyfile(path, part)
        return _store(url, sha256, part, folder / file_name(url))
