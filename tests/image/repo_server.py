"""A static file server with HTTP Range, for serving a TUF repository to the
appliance in QEMU (the guest reaches the host's loopback as 10.0.2.2 through
QEMU's user network). Python's http.server answers Range requests with the
whole file; the updater would cope, but a real update server honours them,
so this one does (single ranges, as the updater asks)."""
from __future__ import annotations

import http.server
import os
import re
import threading
from pathlib import Path


class Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, fmt: str, *args) -> None:  # quiet; requests are recorded
        Handler.requests.append(f"{self.command} {self.path} {self.headers.get('Range', '')}")

    def send_head(self):
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        path = Path(self.translate_path(self.path))
        if m is None or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
        if start > end:
            self.send_error(416)
            return None
        f = path.open("rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self._left = end - start + 1
        return f

    def copyfile(self, source, outputfile) -> None:
        left = getattr(self, "_left", None)
        if left is None:
            return super().copyfile(source, outputfile)
        while left > 0:
            chunk = source.read(min(left, 1 << 20))
            if not chunk:
                break
            outputfile.write(chunk)
            left -= len(chunk)
        self._left = None


class RepoServer:
    """Serves `root` on 127.0.0.1:port until stopped; over TLS with
    `tls=(certfile, keyfile)`."""

    def __init__(self, root: Path, port: int = 0, tls: tuple[Path, Path] | None = None):
        handler = lambda *a, **kw: Handler(*a, directory=str(root), **kw)  # noqa: E731
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        if tls is not None:
            import ssl
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "RepoServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def requests(self) -> list[str]:
        return Handler.requests


if __name__ == "__main__":
    import sys
    with RepoServer(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 8088) as s:
        print(f"serving {sys.argv[1]} on 127.0.0.1:{s.port}", flush=True)
        threading.Event().wait()
