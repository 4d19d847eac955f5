"""nginx as the peer, tuned as its users would: open_file_cache, keep-alive,
access log off, one worker for the one core it is given."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from benchlib import pin


class Nginx:
    def __init__(self, workdir: Path, port: int, cert: Path, key: Path, upstream_port: int, cache: bool):
        self.workdir, self.port = workdir, port
        self.proc: subprocess.Popen | None = None
        (workdir / "cache").mkdir(parents=True, exist_ok=True)
        user = "user root root;" if os.geteuid() == 0 else ""
        caching = f"""
            proxy_cache inf;
            proxy_cache_methods POST;
            proxy_cache_key "$request_uri|$request_body";
            # The key holds the whole request body (12 KiB here): nginx keeps
            # keys in the proxy buffer, so it must fit there.
            proxy_buffer_size 64k;
            proxy_buffers 8 64k;
            proxy_cache_valid 200 60m;
            proxy_ignore_headers Cache-Control Expires Set-Cookie;
            add_header X-Cache $upstream_cache_status;""" if cache else ""
        (workdir / "nginx.conf").write_text(f"""
{user}
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    open_file_cache max=1000 inactive=60s;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_buffer_size 64k;
    client_max_body_size 1m;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    proxy_cache_path {workdir}/cache levels=1:2 keys_zone=inf:10m max_size=100m inactive=60m use_temp_path=off;
    upstream gateway {{ server 127.0.0.1:{upstream_port}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_session_cache shared:SSL:1m;
        location / {{
            proxy_pass https://gateway;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_verify off;
            proxy_ssl_session_reuse on;{caching}
        }}
    }}
}}
""")

    def start(self) -> "Nginx":
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen(pin(0) + [nginx, "-p", str(self.workdir), "-c", str(self.workdir / "nginx.conf")],
                                     stdout=subprocess.DEVNULL, stderr=open(self.workdir / "stderr.log", "wb"))
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {(self.workdir / 'stderr.log').read_text()}"
                                   f"{(self.workdir / 'error.log').read_text() if (self.workdir / 'error.log').exists() else ''}")
            try:
                import socket
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not start listening")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
