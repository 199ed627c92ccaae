"""A real HTTP server on 127.0.0.1 that serves generated files at the official paths (through
SEGX_WEIGHTS_MIRROR), with Range support (``206`` with ``Content-Range``), an optional trickle,
and a log of what it served. A ``Range`` starting at or past the end gets ``416``. Official
trained weights are served as :func:`official_checkpoint` makes them: from the network
PaddleSeg's published config builds, not from segx's own.

``modes[path]`` makes one path misbehave the way a hostile or broken server does:

* ``"wrong-range"``: a ``Range`` request gets a ``206`` for the whole file (``Content-Range:
  bytes 0-...``), not the range asked for;
* ``"redirect:URL"``: a ``302`` to ``URL``;
* ``"endless"``: ``200`` without ``Content-Length``, then 1 KiB every 20 ms until the client
  leaves;
* ``"flood"``: ``200`` without ``Content-Length``, then the file's bytes as fast as possible;
* ``"claim:N"``: ``200`` with ``Content-Length: N``, then the file's bytes.
"""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from official_networks import official_checkpoint  # noqa: F401  (what it serves as trained weights)


class WeightsServer:
    def __init__(self, files: dict[str, bytes] | None = None, delay_s: float = 0.0,
                 chunk: int = 1 << 16):
        self.files = dict(files or {})
        self.modes: dict[str, str] = {}
        self.delay_s, self.chunk = delay_s, chunk
        # [path, Range header, bytes sent (-1: the client left)], in the order requests came
        self.log: list[list] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                path = self.path.split("?")[0]
                data, mode = server.files.get(path), server.modes.get(path, "")
                rng = self.headers.get("Range")
                entry = [path, rng, 0]
                server.log.append(entry)
                if mode.startswith("redirect:"):
                    self.send_response(302)
                    self.send_header("Location", mode.split(":", 1)[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if data is None:
                    self.send_error(404)
                    return
                self.answer(data, mode, rng, entry)

            def answer(self, data: bytes, mode: str, rng: str | None, entry: list) -> None:
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if mode == "wrong-range":
                    start = 0
                if start >= len(data) > 0:
                    self.send_error(416)
                    return
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                if mode.startswith("claim:"):
                    self.send_header("Content-Length", mode.split(":", 1)[1])
                elif mode in ("endless", "flood"):
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                try:
                    if mode == "endless":
                        while True:
                            self.wfile.write(b"\0" * 1024)
                            self.wfile.flush()
                            time.sleep(0.02)
                    self.body(data, start, entry)
                except (BrokenPipeError, ConnectionResetError):
                    entry[2] = -1

            def body(self, data: bytes, start: int, entry: list) -> None:
                for k in range(start, len(data), server.chunk):
                    entry[2] += len(data[k:k + server.chunk])  # counted before the client has it
                    self.wfile.write(data[k:k + server.chunk])
                    if server.delay_s:
                        time.sleep(server.delay_s)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "WeightsServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def gets(self, path: str) -> list[tuple[str | None, int]]:
        return [(r, n) for p, r, n in self.log if p == path]
