"""Untrusted input for the HTTP service: image bytes and image URLs.

:class:`ImagePolicy` accepts only the configured formats (by magic bytes), reads the size from
the header before decoding, and decodes with Pillow (kept current for its image-parsing fixes;
OpenCV is pinned old by PaddleSeg and never sees untrusted bytes). :class:`UrlFetcher` fetches
only from allowed hosts, never from private, loopback, link-local or metadata addresses (checked
after DNS resolution and on every redirect, and the connection goes to the checked address), with
one total deadline and a byte limit; all its failures read the same to the client, so it cannot
be used to map a network.
"""
from __future__ import annotations

import asyncio
import io
import ipaddress
import logging
import socket
import urllib.parse
from typing import Awaitable, Callable

import numpy as np
from PIL import Image, ImageOps

log = logging.getLogger("segx.serving")

MAGIC = {"png": (b"\x89PNG\r\n\x1a\n",), "jpeg": (b"\xff\xd8\xff",), "bmp": (b"BM",),
         "tiff": (b"II*\x00", b"MM\x00*"), "webp": (b"RIFF",)}
PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "bmp": "BMP", "tiff": "TIFF", "webp": "WEBP"}
BYTES_PER_PIXEL = 16  # decoded RGB + the float32 network input + working copies


class ClientError(Exception):
    """A request the client must fix: an HTTP status and a message for ``errorMsg``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class ImagePolicy:
    """Which images the server decodes: formats and a pixel limit (the model itself refuses
    images below its minimum size, see ``SegModel.min_input``)."""

    def __init__(self, max_pixels: int, formats: tuple[str, ...] = ("png", "jpeg", "bmp")):
        unknown = set(formats) - set(MAGIC)
        if unknown:
            raise ValueError(f"unknown image formats {sorted(unknown)}; known: {sorted(MAGIC)}")
        self.max_pixels, self.formats = max_pixels, formats

    def kind(self, data: bytes) -> str:
        """The format by magic bytes; 415 for anything not accepted."""
        for name in self.formats:
            if any(data.startswith(m) for m in MAGIC[name]) and \
                    (name != "webp" or data[8:12] == b"WEBP"):
                return name
        raise ClientError(415, f"the image must be {', '.join(f.upper() for f in self.formats)} "
                               "(judged by its first bytes).")

    def check(self, data: bytes) -> int:
        """Format and size from the header (nothing decoded); returns the memory the decode
        will take. 413 past ``max_pixels``, 400 when unreadable."""
        kind = self.kind(data)
        try:
            with Image.open(io.BytesIO(data), formats=[PIL_FORMATS[kind]]) as im:
                w, h = im.size
        except Image.DecompressionBombError:
            raise ClientError(413, f"the image has more pixels than this server accepts "
                                   f"({self.max_pixels:,}).") from None
        except (OSError, ValueError, SyntaxError):
            raise ClientError(400, f"the data is not a readable {kind.upper()} image.") from None
        if w * h > self.max_pixels:
            raise ClientError(413, f"the image is {w}x{h} = {w * h:,} pixels; this server "
                                   f"accepts up to {self.max_pixels:,}.")
        return w * h * BYTES_PER_PIXEL


def decode_image(data: bytes, policy: ImagePolicy) -> np.ndarray:
    """Decode checked bytes to H x W x 3 RGB uint8 (EXIF orientation applied, as OpenCV does
    for files)."""
    kind = policy.kind(data)
    try:
        with Image.open(io.BytesIO(data), formats=[PIL_FORMATS[kind]]) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = (np.asarray(im, np.uint32) >> 8).clip(0, 255).astype(np.uint8)
                return np.repeat(arr[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise ClientError(400, f"the {kind.upper()} image is damaged or truncated.") from None


# --------------------------------------------------------------------------- URLs
def blocked_address(ip: ipaddress._BaseAddress) -> bool:
    """Private, loopback, link-local (cloud metadata), multicast, reserved or unspecified."""
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    return not ip.is_global or ip.is_multicast


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (numeric forms like 0x7f000001 included)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


def host_allowed(host: str, allowed: list[str]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in allowed:
        pattern = pattern.lower().strip()
        if pattern == "*" or host == pattern or (pattern.startswith("*.") and
                                                 host.endswith(pattern[1:])):
            return True
    return False


class UrlFetcher:
    """Fetch image URLs safely for the server (see the module docstring).

    Args:
        allowed_hosts: host names (``images.example.com``, ``*.example.com``) or ``*`` for any
            public host; empty turns URL inputs off.
        timeout_s: the total time for one fetch, redirects included.
        max_bytes: the most bytes an image may have.
        resolver, blocked: DNS and the address check (replaceable in tests).
    """

    MAX_REDIRECTS = 3
    FAILED = "cannot fetch the image URL (not allowed, unreachable, or not an image there)."

    def __init__(self, allowed_hosts: list[str], timeout_s: float, max_bytes: int,
                 resolver: Resolver = resolve,
                 blocked: Callable[[ipaddress._BaseAddress], bool] = blocked_address):
        self.allowed, self.timeout_s, self.max_bytes = list(allowed_hosts or []), timeout_s, \
            max_bytes
        self.resolver, self.blocked = resolver, blocked

    async def fetch(self, url: str) -> bytes:
        if not self.allowed:
            raise ClientError(400, "image URLs are turned off on this server; send the image "
                                   "bytes as base64.")
        try:
            return await asyncio.wait_for(self._follow(url), self.timeout_s)
        except ClientError as exc:
            if exc.status == 413:
                raise
            log.info("refused or failed URL %s: %s", url, exc.message)
        except Exception as exc:  # noqa: BLE001 - timeouts, DNS, connection, TLS: one answer
            log.info("failed URL %s: %s: %s", url, type(exc).__name__, exc)
        raise ClientError(400, self.FAILED)

    async def _follow(self, url: str) -> bytes:
        import httpx
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                     timeout=self.timeout_s) as client:
            for _ in range(self.MAX_REDIRECTS + 1):
                target, host, headers, ext = await self._checked_target(url)
                async with client.stream("GET", target, headers=headers, extensions=ext) as resp:
                    if resp.status_code in (301, 302, 303, 307, 308) and \
                            resp.headers.get("location"):
                        url = urllib.parse.urljoin(url, resp.headers["location"])
                        continue
                    if resp.status_code != 200:
                        raise ClientError(400, f"HTTP {resp.status_code} from {host}")
                    return await self._read(resp)
        raise ClientError(400, "too many redirects")

    async def _checked_target(self, url: str) -> tuple[str, str, dict, dict]:
        """The URL rewritten to a checked address, with the Host header and TLS name."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClientError(400, f"not an http(s) URL: {url}")
        host = parts.hostname
        if not host_allowed(host, self.allowed):
            raise ClientError(400, f"host {host} is not allowed")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = await self.resolver(host, port)
        ips = [ipaddress.ip_address(a.split("%")[0]) for a in addresses]
        if not ips or any(self.blocked(ip) for ip in ips):
            raise ClientError(400, f"host {host} resolves to a non-public address")
        ip = ips[0]
        netloc = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
        target = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path or "/",
                                          parts.query, ""))
        headers = {"Host": parts.netloc.rsplit("@", 1)[-1]}
        ext = {"sni_hostname": host} if parts.scheme == "https" else {}
        return target, host, headers, ext

    async def _read(self, resp) -> bytes:
        data = bytearray()
        async for chunk in resp.aiter_bytes():
            data += chunk
            if len(data) > self.max_bytes:
                raise ClientError(413, f"the image at the URL is larger than "
                                       f"{self.max_bytes / 2**20:g} MB.")
        return bytes(data)
