"""A real HTTP server on 127.0.0.1 for tests, with scripted misbehaviour per path.

    with LocalHTTPServer() as server:
        server.route("/a.bin", Route(body=b"..." , drop_after=100))
        url = server.url("/a.bin")

Each ``Route`` can: honour ``Range`` requests, drop the connection after N body bytes (on the first
K requests), answer 5xx K times before succeeding (or from the Kth request on), answer a fixed
status (404), redirect, wait before answering or stall in the middle of the body (for timeouts).
``server.log`` records every request as ``(path, range header or None)``.
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    """How the server answers one path."""

    body: bytes = b""
    status: int = 200
    ranges: bool = True
    drop_after: int | None = None
    drop_times: int = 1
    fail_first: int = 0
    fail_status: int = 500
    fail_from: int | None = None
    redirect_to: str | None = None
    delay: float = 0.0
    stall_after: int | None = None
    stall: float = 0.0
    served: int = 0


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep the test output quiet
        pass

    def do_GET(self) -> None:
        with self.server.lock:
            route = self.server.routes.get(self.path)
            self.server.log.append((self.path, self.headers.get("Range")))
            index = route.served if route else 0
            if route:
                route.served += 1
        if route is None:
            self._plain(404, b"no such path\n")
            return
        if route.delay and self.server.stopping.wait(route.delay):
            return
        if index < route.fail_first or (route.fail_from is not None and index >= route.fail_from):
            self._plain(route.fail_status, b"try again\n")
            return
        if route.redirect_to is not None:
            self.send_response(302)
            self.send_header("Location", route.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if route.status != 200:
            self._plain(route.status, b"error\n")
            return
        body, start, total = route.body, 0, len(route.body)
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if route.ranges and match:
            start = int(match.group(1))
            if start >= total:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        else:
            self.send_response(200)
        if route.ranges:
            self.send_header("Accept-Ranges", "bytes")
        payload = body[start:]
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        drop = route.drop_after if route.drop_after is not None and index < route.drop_times else None
        if drop is not None:
            self.wfile.write(payload[:drop])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if route.stall_after is not None:
            self.wfile.write(payload[: route.stall_after])
            self.wfile.flush()
            if self.server.stopping.wait(route.stall):
                return
            payload = payload[route.stall_after:]
        try:
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _plain(self, status: int, text: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Route] = {}
        self.log: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()


class LocalHTTPServer:
    """A ``ThreadingHTTPServer`` on an ephemeral 127.0.0.1 port, serving in a daemon thread."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self) -> LocalHTTPServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path: str, route: Route) -> Route:
        """Serve ``path`` as ``route`` says (replacing any earlier route)."""
        with self._server.lock:
            self._server.routes[path] = route
        return route

    @property
    def log(self) -> list[tuple[str, str | None]]:
        """Every request so far: ``(path, Range header or None)``."""
        with self._server.lock:
            return list(self._server.log)

    def requests_for(self, path: str) -> list[str | None]:
        """The Range headers of the requests for ``path``, in order (``None`` for a plain GET)."""
        return [rng for p, rng in self.log if p == path]
