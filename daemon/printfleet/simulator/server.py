"""A small threaded HTTP/1.1 server (standard library) in front of a gateway.

Keep-alive connections, exact ``Content-Length``, one thread per connection, and a clean stop
that also breaks open keep-alive connections and wakes handlers stalled by latency or hang faults.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from printfleet.simulator.wire import Request, Response

Handler = Callable[[Request], Response]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: Handler) -> None:
        super().__init__(address, _RequestHandler)
        self.handler = handler
        self.stopping = threading.Event()
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "printfleet-simulator"
    sys_version = ""
    timeout = 120  # idle keep-alive connections end eventually even if nobody closes them
    # Headers and body go out in two writes; with Nagle on, the client's delayed ACK stalls every
    # keep-alive response by ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):  # the connection was reset on purpose or by the client
            super().finish()

    def log_message(self, format: str, *args: object) -> None:
        """Silence the default stderr access log (``Simulator.requests`` records requests)."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        split = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            client=self.client_address[0],
            target=self.path,
        )
        response = self.server.handler(request)
        if response.delay_s > 0 and self.server.stopping.wait(response.delay_s):
            response.reset = True  # shutting down: don't answer a stalled request
        if response.reset:
            self._reset()
            return
        slow = response.stream is not None or response.trickle_s > 0
        body_length: int | None = len(response.body)
        if response.stream is not None:
            body_length = response.stream_length
        if slow:
            # A body the client may abandon (or that ends only with the connection) leaves
            # the connection unusable for another request.
            self.close_connection = True
        self.send_response_only(response.status)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        if body_length is not None:
            self.send_header("Content-Length", str(body_length))
        for name, value in response.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not slow:
            self.wfile.write(response.body)
            return
        self._write_slowly(response)

    def _write_slowly(self, response: Response) -> None:
        """A streamed or trickled body (fault knobs); ends early when the client hangs up."""
        chunks = response.stream if response.stream is not None else (response.body,)
        try:
            for chunk in chunks:
                if self.server.stopping.is_set():
                    return
                if response.trickle_s <= 0:
                    self.wfile.write(chunk)
                    continue
                for i in range(len(chunk)):
                    self.wfile.write(chunk[i : i + 1])
                    self.wfile.flush()
                    if self.server.stopping.wait(response.trickle_s):
                        return
        except OSError:
            return  # the client gave up on the body: what a limit is for

    def _reset(self) -> None:
        """Drop the connection with a TCP RST instead of answering."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()


class HttpServer:
    """Serves ``handler`` on ``host:port`` (port 0 picks a free one) from a daemon thread."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Begin serving in the background; returns at once."""
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"simulator-http-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close every open connection and release the port."""
        self._server.stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        with self._server.connections_lock:
            connections = list(self._server.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
