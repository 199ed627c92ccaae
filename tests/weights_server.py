"""A real HTTP server on 127.0.0.1 that serves generated files at the official paths (through
SEGX_WEIGHTS_MIRROR), with Range support, an optional trickle, and a log of what it served.

Official trained weights are served as :func:`official_checkpoint` makes them: from the network
PaddleSeg's published config builds, not from segx's own."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from official_networks import official_checkpoint  # noqa: F401  (what it serves as trained weights)


class WeightsServer:
    def __init__(self, files: dict[str, bytes] | None = None, delay_s: float = 0.0,
                 chunk: int = 1 << 16):
        self.files = dict(files or {})
        self.delay_s, self.chunk = delay_s, chunk
        self.log: list[tuple[str, str | None, int]] = []  # (path, Range header, bytes sent)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    server.log.append((self.path, None, 0))
                    return
                rng = self.headers.get("Range")
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                sent = 0
                try:
                    for k in range(start, len(data), server.chunk):
                        self.wfile.write(data[k:k + server.chunk])
                        sent += len(data[k:k + server.chunk])
                        if server.delay_s:
                            time.sleep(server.delay_s)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                server.log.append((self.path, rng, sent))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
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
