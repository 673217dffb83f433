"""The HTTP endpoint on ``[metrics] listen``: ``/metrics``, ``/healthz`` and ``/readyz``.

* ``/metrics``: Prometheus text format 0.0.4 of the application's registry (see
  :func:`printfleet.metrics.exposition.exposition`), gzip-compressed when the scraper accepts it.
* ``/healthz``: ``200 ok`` for as long as the process serves HTTP (liveness).
* ``/readyz``: ``200 ready`` when ``ready()`` says so, else ``503`` with its reason, e.g.
  ``source lab not polled successfully in 90s; mqtt disconnected``.

It runs a stdlib :class:`~http.server.ThreadingHTTPServer` in a daemon thread rather than on the
event loop: rendering the fleet gauges of 10,000 printers is tens of milliseconds of CPU, which
on the loop would stall MQTT keepalives and deliveries for every scrape. The thread only reads
values that the loop replaces as a whole (the ``FleetView``), and prometheus_client's metrics
are thread-safe, so no locking with the loop is needed. ``ready`` is called from that thread
too and must be equally cheap and read-only.

Pre-rendering. The fleet's text is kept in blocks that change only with the printers they
show (:mod:`printfleet.metrics.exposition`). After each poll the application calls
:meth:`HealthServer.view_changed`, which wakes a second thread that brings those blocks up to
date (and compresses the new ones once a scraper has asked for gzip), so a scrape between
polls writes cached bytes. A scrape that comes while that thread is still at work waits for
it rather than serving the previous poll's values; without ``view_changed`` calls the scrape
renders what changed itself, with the same result.
"""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from printfleet.config.schema import parse_listen
from printfleet.core.fleet import FleetView
from printfleet.metrics.exposition import block_collectors, exposition_blocks, gzip_body

__all__ = [
    "GZIP_MIN_BYTES",
    "HealthServer",
    "bind_problem",
    "parse_listen",
    "probe_listen",
    "source_problems",
]

#: Bodies smaller than this are sent uncompressed even when gzip is accepted.
GZIP_MIN_BYTES = 1024


def source_problems(
    view: FleetView, *, now: datetime, stale_after: float, sources: Iterable[str] = ()
) -> list[str]:
    """Why the fleet view is not ready: sources with no successful poll in ``stale_after`` s.

    ``sources`` are the configured names (a source that never reported is a problem too);
    by default those present in ``view.health``. Join the result with ``"; "`` for ``/readyz``.
    """
    problems = []
    for name in sources or view.health.keys():
        health = view.health.get(name)
        last = health.last_success_at if health is not None else None
        if last is None:
            problems.append(f"source {name} not polled successfully yet")
        elif (age := (now - last).total_seconds()) > stale_after:
            problems.append(f"source {name} not polled successfully in {age:.0f}s")
    return problems


def bind_problem(listen: str, err: OSError) -> tuple[str, str]:
    """``(what is wrong, how to fix it)`` when ``listen`` cannot be bound, for one clear line."""
    host, port = parse_listen(listen)
    if isinstance(err, socket.gaierror):
        return (
            f"cannot listen on {listen}: unknown host {host!r}",
            "use an IP address of this machine, e.g. 127.0.0.1:9877, or :9877 for all",
        )
    reasons = {
        errno.EADDRINUSE: "the address is already in use",
        errno.EACCES: "permission denied",
        errno.EADDRNOTAVAIL: "this machine has no such address",
    }
    reason = reasons.get(err.errno or 0, err.strerror or str(err))
    fixes = {
        errno.EADDRINUSE: f"stop the program listening there (`ss -ltnp 'sport = :{port}'` "
        "names it; it may be another printfleet) or set [metrics] listen to a free port",
        errno.EACCES: "ports below 1024 need privileges; use a higher port, e.g. :9877",
        errno.EADDRNOTAVAIL: "use an address of this machine, e.g. 127.0.0.1, or :PORT for all",
    }
    fix = fixes.get(err.errno or 0, "set [metrics] listen to an address this machine can bind")
    return f"cannot listen on {listen}: {reason}", fix


def probe_listen(listen: str) -> tuple[str, str] | None:
    """Bind ``listen`` for a moment the way :class:`HealthServer` would, then release it.

    Returns:
        ``None`` when it can be bound, else :func:`bind_problem`'s ``(message, fix)``.
    """
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
            sock.bind((host, port))
    except OSError as err:
        return bind_problem(listen, err)
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class HealthServer:
    """Serves ``/metrics``, ``/healthz`` and ``/readyz`` from a background thread.

    Args:
        listen: ``host:port`` to bind (port ``0`` picks a free one; see :attr:`bound_port`).
        registry: the application's registry (never the global default one).
        ready: returns ``(ready, reason)``; called on every ``/readyz`` from the server thread.
    """

    def __init__(
        self,
        listen: str,
        registry: CollectorRegistry,
        *,
        ready: Callable[[], tuple[bool, str]],
        log: Any = None,
    ) -> None:
        self._host, self._port = parse_listen(listen)
        self._registry = registry
        self._ready = ready
        self._log = log or structlog.get_logger("printfleet.health")
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._render_wanted = threading.Event()
        self._render_thread: threading.Thread | None = None
        self._stopping = False
        # Compress while pre-rendering only once a scraper asked for gzip (Prometheus does).
        self._gzip_seen = False

    @property
    def bound_port(self) -> int:
        """The port actually listened on (useful with port 0)."""
        if self._server is None:
            raise RuntimeError("the health server is not started")
        port: int = self._server.server_address[1]
        return port

    def start(self) -> None:
        """Bind and serve in a daemon thread.

        Raises:
            OSError: the address cannot be bound (in use, not permitted); :func:`bind_problem`
                says it in one line.
        """
        if self._server is not None:
            raise RuntimeError("the health server is already started")
        server_class = _Server6 if ":" in self._host else _Server  # ":" only in IPv6 literals
        server = server_class((self._host, self._port), _handler(self))
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="printfleet-health",
            daemon=True,
        )
        self._thread.start()
        self._stopping = False
        self._render_thread = threading.Thread(
            target=self._render_loop, name="printfleet-metrics-render", daemon=True
        )
        self._render_thread.start()
        self._log.info("health.listening", host=self._host or "*", port=self.bound_port)

    def stop(self) -> None:
        """Stop serving and close the socket (blocks for at most ~0.1 s). Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping = True
        self._render_wanted.set()
        if self._render_thread is not None:
            self._render_thread.join(5.0)
            self._render_thread = None
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def __enter__(self) -> HealthServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- pre-rendering (render thread) ----------------------------------------------------

    def view_changed(self) -> None:
        """The fleet view was replaced (a poll ended): re-render what changed, soon.

        Cheap and non-blocking, so it can be called from the event loop: the work is done in
        the render thread, and several calls before it gets to them are one render.
        """
        self._render_wanted.set()

    def prerender(self) -> None:
        """Bring every cached block up to date now, in the calling thread (what the render
        thread does after :meth:`view_changed`)."""
        gzip = self._gzip_seen
        for collector in block_collectors(self._registry):
            collector.prepare(gzip=gzip)

    def _render_loop(self) -> None:
        while True:
            self._render_wanted.wait()
            if self._stopping:
                return
            self._render_wanted.clear()
            try:
                self.prerender()
            except Exception:  # a scrape renders (and reports) it again
                self._log.exception("health.prerender_failed")

    # -- request handling (server thread) ------------------------------------------------

    def respond(self, path: str, accept_encoding: str) -> tuple[int, str, bytes, dict[str, str]]:
        """``(status, content type, body, extra headers)`` for a GET of ``path``."""
        status, ctype, parts, headers = self.answer(path, accept_encoding)
        return status, ctype, b"".join(parts), headers

    def answer(
        self, path: str, accept_encoding: str
    ) -> tuple[int, str, Sequence[bytes], dict[str, str]]:
        """As :meth:`respond`, with the body in parts to write one after another (the cached
        blocks of ``/metrics`` are sent as they are, not copied into one buffer first)."""
        try:
            return self._route(path, accept_encoding)
        except Exception:
            self._log.exception("health.request_failed", path=path)
            return 500, "text/plain; charset=utf-8", [b"internal error\n"], {}

    def _route(
        self, path: str, accept_encoding: str
    ) -> tuple[int, str, Sequence[bytes], dict[str, str]]:
        route = path.split("?", 1)[0]
        text = "text/plain; charset=utf-8"
        if route == "/metrics":
            blocks = exposition_blocks(self._registry)
            size = sum(len(block.data) for block in blocks)
            if "gzip" in accept_encoding and size >= GZIP_MIN_BYTES:
                self._gzip_seen = True
                gzipped = gzip_body(blocks)
                return 200, CONTENT_TYPE_PLAIN_0_0_4, gzipped, {"Content-Encoding": "gzip"}
            return 200, CONTENT_TYPE_PLAIN_0_0_4, [block.data for block in blocks], {}
        if route == "/healthz":
            return 200, text, [b"ok\n"], {}
        if route == "/readyz":
            ok, reason = self._ready()
            if ok:
                return 200, text, [b"ready\n"], {}
            return 503, text, [f"not ready: {reason}\n".encode()], {}
        return 404, text, [b"not found: try /metrics, /healthz, /readyz\n"], {}


def _handler(owner: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "printfleet"
        sys_version = ""

        def do_GET(self) -> None:
            self._serve(send_body=True)

        def do_HEAD(self) -> None:
            self._serve(send_body=False)

        def _serve(self, *, send_body: bool) -> None:
            status, ctype, parts, headers = owner.answer(
                self.path, self.headers.get("Accept-Encoding", "")
            )
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(sum(map(len, parts))))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if send_body:
                for chunk in _batched(parts):
                    self.wfile.write(chunk)

        def log_message(self, format: str, *args: Any) -> None:
            # One line per scrape is noise; failures are logged in _serve.
            pass

    return Handler


#: Parts smaller than this are joined before writing: one write (a system call) per
#: cached block would be thousands for a fleet of many small sources.
_WRITE_BATCH = 256 * 1024


def _batched(parts: Iterable[bytes]) -> Iterable[bytes]:
    batch: list[bytes] = []
    size = 0
    for part in parts:
        if len(part) >= _WRITE_BATCH:
            if batch:
                yield b"".join(batch)
                batch, size = [], 0
            yield part
            continue
        batch.append(part)
        size += len(part)
        if size >= _WRITE_BATCH:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)
