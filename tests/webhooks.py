"""Real webhook receivers on 127.0.0.1 for the alert tests (servers in threads)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Webhook:
    """A webhook receiver: records every request; answers with `status` after `delay` seconds.

    A 3xx status sends `Location: /elsewhere` on the same server, so a client that
    follows redirects shows up in `received` as a second request.
    """

    server: ThreadingHTTPServer
    received: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hooks/T0/SECRET-TOKEN"


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook: Webhook

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: Any) -> None:
            hook.received.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "content_type": self.headers.get("Content-Type"),
                    "authorization": self.headers.get("Authorization"),
                    "body": body,
                }
            )
            time.sleep(hook.delay)
            self.send_response(hook.status)
            if 300 <= hook.status < 400:
                self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._answer(json.loads(raw) if raw else None)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._answer(None)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook = Webhook(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield hook
    server.shutdown()
    server.server_close()


@dataclass
class Trickle:
    """A server that reads the request, then sends a valid 200 answer one byte every `interval` s.

    The whole answer takes about `len(ANSWER) * interval` (over 20 s): a client with
    only a per-read timeout would wait for all of it and report the alert delivered.
    """

    url: str
    connections: list[float] = field(default_factory=list)
    interval: float = 0.05
    ANSWER = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Pad-%03d: trickle\r\n" % i for i in range(25)) + b"Content-Length: 2\r\n\r\nok"


@pytest.fixture
def trickle() -> Iterator[Trickle]:
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    hook = Trickle(f"http://127.0.0.1:{port}/hooks/T0/SECRET-TOKEN")

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(65536)
                for byte in Trickle.ANSWER:
                    if stop.wait(hook.interval):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return  # the client gave up and closed

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            hook.connections.append(time.monotonic())
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield hook
    stop.set()
    thread.join(5)
    listener.close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"
