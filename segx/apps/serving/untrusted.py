"""Untrusted input for the HTTP service: image bytes and image URLs.

:class:`ImagePolicy` accepts only the configured formats (by magic bytes), reads the size from
the header before decoding, and decodes with Pillow (kept current for its image-parsing fixes;
OpenCV, whichever build the environment has, never sees untrusted bytes). :class:`UrlFetcher` fetches
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
        """Format and size from the header (nothing decoded); returns the pixel count (what
        the server's memory budget is charged by). 413 past ``max_pixels``, 400 when
        unreadable."""
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
        return w * h


def decode_image(data: bytes, policy: ImagePolicy) -> np.ndarray:
    """Decode checked bytes to H x W x 3 RGB uint8 (EXIF orientation applied, as OpenCV does
    for files). At most one Pillow copy of the pixels lives beside the array (no transposed or
    converted copy of an RGB image): about 7 bytes per pixel at the peak."""
    kind = policy.kind(data)
    try:
        with Image.open(io.BytesIO(data), formats=[PIL_FORMATS[kind]]) as im:
            im.load()
            ImageOps.exif_transpose(im, in_place=True)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = (np.asarray(im, np.uint32) >> 8).clip(0, 255).astype(np.uint8)
                return np.repeat(arr[..., None], 3, axis=2)
            if im.mode == "RGB":
                return np.asarray(im)
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise ClientError(400, f"the {kind.upper()} image is damaged or truncated.") from None


# --------------------------------------------------------------------------- URLs
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix: ::a.b.c.d inside
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215 local-use: never public


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: IPv4-mapped (::ffff:a.b.c.d),
    IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d), 6to4 (2002:AABB:CCDD::/48) and
    Teredo (2001::/32: its server and its client)."""
    found = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    found += list(ip.teredo or ())
    if ip.packed[:12] == bytes(12) and int(ip) > 1 or ip in NAT64:  # not :: or ::1 themselves
        found.append(ipaddress.IPv4Address(ip.packed[12:]))
    return found


def blocked_address(ip: ipaddress._BaseAddress) -> bool:
    """Private, loopback, link-local (cloud metadata), multicast, reserved or unspecified. An
    IPv6 address that embeds IPv4 addresses is judged by them (all must be public); local-use
    NAT64 (64:ff9b:1::/48) is always refused."""
    if ip.version == 6:
        if ip in NAT64_LOCAL:
            return True
        embedded = embedded_ipv4(ip)
        if embedded:
            return any(blocked_address(a) for a in embedded)
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

    async def fetch(self, url: str, take: Callable[[int], None] = lambda n: None) -> bytes:
        """The image at ``url``; ``take(n)`` is called before each ``n`` bytes received are
        kept (the server charges them to its memory budget; it raises to stop the fetch)."""
        if not self.allowed:
            raise ClientError(400, "image URLs are turned off on this server; send the image "
                                   "bytes as base64.")
        try:
            return await asyncio.wait_for(self._follow(url, take), self.timeout_s)
        except ClientError as exc:
            if exc.status in (413, 503):  # the size and the server's load are no secrets
                raise
            log.info("refused or failed URL %s: %s", url, exc.message)
        except Exception as exc:  # noqa: BLE001 - timeouts, DNS, connection, TLS: one answer
            log.info("failed URL %s: %s: %s", url, type(exc).__name__, exc)
        raise ClientError(400, self.FAILED)

    async def _follow(self, url: str, take: Callable[[int], None]) -> bytes:
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
                    return await self._read(resp, take)
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

    async def _read(self, resp, take: Callable[[int], None]) -> bytes:
        data = bytearray()
        async for chunk in resp.aiter_bytes():
            if len(data) + len(chunk) > self.max_bytes:
                raise ClientError(413, f"the image at the URL is larger than "
                                       f"{self.max_bytes / 2**20:g} MB.")
            take(len(chunk))
            data += chunk
        return bytes(data)
