"""Look at a generated HTML page as a person would: render it in headless Chromium.

``render(page, out_dir)`` returns what a reader sees (the visible text, a screenshot kept under
``out_dir`` for review) and what went wrong (console errors, images that did not load, any
remote reference, any ``<script>`` in the page: segx's reports must need none).

How: the page is copied to a hidden sibling file (so its relative image paths still resolve)
with a test-only script injected first in ``<head>``; the script records ``window.onerror`` and
``console.error`` and, on load, every ``<img>`` whose ``naturalWidth`` is 0, and writes it as
JSON into a hidden ``<pre id="__segx_test__">`` that ``chromium --dump-dom`` prints. Lazy images
are made eager in the copy so that every image is fetched, not only those on screen.

Chromium is Debian's ``chromium`` package. Where it is missing and the tests run as root with
apt-get, it is installed once (under a file lock, so parallel test processes do not race);
otherwise :func:`require_chromium` skips the calling test with the reason.
"""
from __future__ import annotations

import fcntl
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
LOCK = Path(tempfile.gettempdir()) / "segx-tests-chromium-install.lock"
MARKER = "__segx_test__"
_state: dict[str, str | None] = {}

_PROBE = """<script>(function(){var errs=[];
window.addEventListener('error',function(e){if(e.target&&e.target!==window&&e.target.tagName)
{return;}errs.push('error: '+String(e.message||e));},true);
window.addEventListener('unhandledrejection',function(e){errs.push('rejection: '+String(e.reason));});
var ce=console.error;console.error=function(){errs.push('console.error: '+
Array.prototype.map.call(arguments,String).join(' '));return ce.apply(console,arguments);};
window.addEventListener('load',function(){var all=[],bad=[];
for(var i=0;i<document.images.length;i++){var im=document.images[i];var s=im.getAttribute('src');
all.push(s);if(!im.complete||im.naturalWidth===0){bad.push(s);}}
var text=document.body?document.body.innerText:'';
var pre=document.createElement('pre');pre.id='__segx_test__';pre.style.display='none';
pre.textContent=JSON.stringify({errors:errs,broken:bad,images:all,text:text});
document.documentElement.appendChild(pre);});})();</script>"""

_REMOTE = re.compile(
    r"""(?:\b(?:src|href|action|poster|data|srcset|background)\s*=\s*["']?\s*"""
    r"""|url\(\s*["']?\s*|@import\s+["']?)((?:https?:)?//[^"'\s)>]*)""", re.IGNORECASE)
_SCRIPT = re.compile(r"<script\b|\bon[a-z]+\s*=\s*[\"']|javascript:", re.IGNORECASE)


@dataclass
class Rendered:
    """What Chromium showed for one page."""
    page: Path
    screenshot: Path
    text: str                      # visible text (document.body.innerText)
    dom: str                       # the DOM after load (the probe removed)
    console_errors: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)          # every <img src>
    broken_images: list[str] = field(default_factory=list)   # src that did not load
    remote_requests: list[str] = field(default_factory=list)  # http(s):// or // references
    scripts: list[str] = field(default_factory=list)         # <script, on...= or javascript:


def find_chromium() -> tuple[str | None, str]:
    """The Chromium executable, installing Debian's package once when possible; else
    ``(None, reason)``."""
    if "path" in _state:
        return _state["path"], _state.get("reason") or ""
    path = _which()
    reason = ""
    if path is None:
        path, reason = _install()
    _state["path"], _state["reason"] = path, reason
    return path, reason


def _which() -> str | None:
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _install() -> tuple[str | None, str]:
    if os.environ.get("SEGX_TEST_NO_INSTALL"):
        return None, "chromium is not installed and SEGX_TEST_NO_INSTALL is set"
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, ("chromium is not installed and cannot be installed here (needs root and "
                      "apt-get): install Debian's 'chromium' package to run the browser tests")
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # another test process may be installing it now
        try:
            if _which() is None:
                cmd = ("apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
                       "apt-get install -y -qq chromium")
                done = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True,
                                      timeout=1800)
                if done.returncode != 0:
                    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
                    return None, f"installing chromium with apt-get failed: {tail[0]}"
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    found = _which()
    return found, "" if found else "apt-get installed chromium but no executable was found"


def require_chromium() -> str:
    """The Chromium executable, or skip the calling test with the reason."""
    path, reason = find_chromium()
    if path is None:
        pytest.skip(reason)
    return path


def static_problems(source: str) -> tuple[list[str], list[str]]:
    """(remote references, script uses) found in a page's source."""
    return _REMOTE.findall(source), _SCRIPT.findall(source)


def _run(chromium: str, args: list[str], url: str, timeout: int) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="segx-chromium-") as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars",
               "--mute-audio", "--disable-background-networking", "--disable-sync",
               f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args, url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _probe_copy(page: Path) -> Path:
    source = page.read_text(encoding="utf-8")
    source = re.sub(r'loading=("?)lazy\1', 'loading="eager"', source)
    head = re.search(r"<head[^>]*>", source, re.IGNORECASE)
    at = head.end() if head else 0
    copy = page.with_name(f".{page.stem}.segx-test.html")
    copy.write_text(source[:at] + _PROBE + source[at:], encoding="utf-8")
    return copy


def render(page: str | Path, out_dir: str | Path, width: int = 1400, height: int = 2000,
           timeout: int = 120) -> Rendered:
    """Render ``page`` in headless Chromium; the screenshot goes to ``out_dir``."""
    chromium = require_chromium()
    page, out_dir = Path(page).resolve(), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = page.read_text(encoding="utf-8")
    remote, scripts = static_problems(source)
    copy = _probe_copy(page)
    try:
        dumped = _run(chromium, ["--dump-dom"], copy.as_uri(), timeout)
        shot = out_dir / f"{page.stem}.png"
        _run(chromium, [f"--window-size={width},{height}", f"--screenshot={shot}"],
             copy.as_uri(), timeout)
    finally:
        copy.unlink(missing_ok=True)
    found = re.search(rf'<pre id="{MARKER}"[^>]*>(.*?)</pre>', dumped.stdout, re.DOTALL)
    if not found:
        raise AssertionError(f"chromium rendered nothing for {page} (rc {dumped.returncode}): "
                             f"{dumped.stderr.strip()[-500:]}")
    probe = json.loads(html.unescape(found.group(1)))
    dom = (dumped.stdout[:found.start()] + dumped.stdout[found.end():]).replace(_PROBE, "", 1)
    return Rendered(page=page, screenshot=shot, text=probe["text"], dom=dom,
                    console_errors=probe["errors"], images=probe["images"],
                    broken_images=probe["broken"], remote_requests=remote, scripts=scripts)
