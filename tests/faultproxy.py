"""A fault-injecting HTTP proxy for tests: the real server behind it, faults switched per request.

``FaultProxy(upstream_url)`` listens on 127.0.0.1 (port 0 unless given) and forwards each
request to the upstream server with ``Connection: close`` and the ``Host`` header unchanged, so
the signed URLs the server hands out point at the proxy too and object reads pass through it.
Every connection carries one request.

Rules say what to do to the next ``count`` requests (``None``: until cleared) whose method and
path (without the query) match; the first live rule that matches a request applies::

    proxy.status(503, count=3, path="^/-/")        # answer 503 without asking the server
    proxy.stall(5, count=1)                         # hold the answer back for 5 s
    proxy.stall(5, after_bytes=1000, count=1)       # send 1000 body bytes, then hold and cut
    proxy.reset(after_bytes=4096, count=2)          # send 4096 body bytes, then TCP RST
    proxy.drop(count=1)                             # RST before any answer
    proxy.flip(at=1234, count=None)                 # XOR one byte of the object at offset 1234
    proxy.down(); proxy.up()                        # refuse connections / accept again

``flip`` counts offsets in the object (a ranged answer's ``Content-Range`` says where its body
starts) and only counts as used when the byte passed through. When the upstream cannot be
reached, the client's connection is reset. ``injected`` counts faults by kind, ``forwarded``
the requests that reached the server.
"""

from __future__ import annotations

import collections
import http.client
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
               "trailer", "upgrade", "proxy-authenticate", "proxy-authorization"}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/")
_CHUNK = 64 * 1024


@dataclass
class Rule:
    kind: str  # status, stall, reset, drop, flip
    path: re.Pattern
    method: str | None = None
    count: int | None = None  # requests still to affect; None: until cleared
    status: int = 503
    retry_after: str | None = None
    seconds: float = 0.0
    after_bytes: int | None = None
    at: int = 0
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        if self.method is not None and self.method != method:
            return False
        if method == "HEAD" and (self.kind in ("reset", "flip") or self.after_bytes is not None):
            return False  # a fault in the body needs a body
        return bool(self.path.search(path))


@dataclass
class _Action:
    rule: Rule | None = None
    reset: bool = False  # close with RST instead of FIN


@dataclass
class Stats:
    injected: collections.Counter = field(default_factory=collections.Counter)
    forwarded: int = 0
    body_bytes: int = 0


class FaultProxy:
    def __init__(self, upstream: str, port: int = 0) -> None:
        self.set_upstream(upstream)
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self.stats = Stats()
        self._closing = threading.Event()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self.port = port
        self.up()

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def injected(self) -> collections.Counter:
        return self.stats.injected

    def set_upstream(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)

    def up(self) -> None:
        """Listen (again, on the same port once it had one)."""
        if self._listener is not None:
            return
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        sock.settimeout(0.1)
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._thread = threading.Thread(target=self._accept, args=(sock,), daemon=True,
                                        name=f"faultproxy-{self.port}")
        self._thread.start()

    def down(self, cut: bool = True) -> None:
        """Stop listening (connections are refused); ``cut`` also resets open connections."""
        if self._stop_listening(cut):
            self._count("down")

    def _stop_listening(self, cut: bool) -> bool:
        sock, self._listener = self._listener, None
        if sock is None:
            return False
        sock.close()
        if self._thread is not None:
            self._thread.join(5)
        if cut:
            with self._lock:
                conns = list(self._conns)
            for conn in conns:
                _reset(conn)
        return True

    def close(self) -> None:
        self._closing.set()
        self._stop_listening(cut=True)

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- rules -----------------------------------------------------------------------------------

    def add(self, kind: str, *, path: str = "", method: str | None = None,
            count: int | None = 1, **params) -> Rule:
        rule = Rule(kind, re.compile(path), method, count, **params)
        with self._lock:
            self._rules.append(rule)
        return rule

    def status(self, code: int, count: int | None = 1, *, path: str = "",
               method: str | None = None, retry_after: str | None = None) -> Rule:
        return self.add("status", path=path, method=method, count=count, status=code,
                        retry_after=retry_after)

    def stall(self, seconds: float, count: int | None = 1, *, path: str = "",
              method: str | None = None, after_bytes: int | None = None) -> Rule:
        return self.add("stall", path=path, method=method, count=count, seconds=seconds,
                        after_bytes=after_bytes)

    def reset(self, after_bytes: int = 0, count: int | None = 1, *, path: str = "",
              method: str | None = None) -> Rule:
        return self.add("reset", path=path, method=method, count=count, after_bytes=after_bytes)

    def drop(self, count: int | None = 1, *, path: str = "", method: str | None = None) -> Rule:
        return self.add("drop", path=path, method=method, count=count)

    def flip(self, at: int, count: int | None = 1, *, path: str = "^/-/") -> Rule:
        return self.add("flip", path=path, method="GET", count=count, at=at)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def _match(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    if rule.kind != "flip" and rule.count is not None:
                        rule.count -= 1
                    if rule.kind != "flip":
                        rule.hits += 1
                    return rule
        return None

    def _count(self, kind: str) -> None:
        with self._lock:
            self.stats.injected[kind] += 1

    # -- serving ---------------------------------------------------------------------------------

    def _accept(self, sock: socket.socket) -> None:
        while self._listener is sock:
            try:
                conn, _ = sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        action = _Action()
        try:
            _Handler(conn, ("127.0.0.1", 0), self, action)
        except (OSError, ValueError):
            action.reset = True
        finally:
            with self._lock:
                self._conns.discard(conn)
            if action.reset:
                _reset(conn)
            else:
                try:
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                conn.close()

    def _sleep(self, seconds: float) -> None:
        self._closing.wait(seconds)

    def handle(self, h: "_Handler") -> None:
        body = read_body(h)
        rule = self._match(h.command, urlsplit(h.path).path)
        h.action.rule = rule
        if rule is not None and rule.kind == "status":
            self._count(str(rule.status))
            payload = b'{"detail": "injected fault"}'
            h.send_response(rule.status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            if rule.retry_after is not None:
                h.send_header("Retry-After", rule.retry_after)
            h.send_header("Connection", "close")
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(payload)
            return
        if rule is not None and rule.kind == "drop":
            self._count("drop")
            h.action.reset = True
            return
        if rule is not None and rule.kind == "stall" and rule.after_bytes is None:
            self._count("stall")
            self._sleep(rule.seconds)
        try:
            upstream = http.client.HTTPConnection(*self._upstream, timeout=120)
            upstream.putrequest(h.command, h.path, skip_host=True, skip_accept_encoding=True)
            for name, value in h.headers.items():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    upstream.putheader(name, value)
            if body or h.command in ("POST", "PUT"):
                upstream.putheader("Content-Length", str(len(body)))
            upstream.putheader("Connection", "close")
            upstream.endheaders(body or None)
            response = upstream.getresponse()
        except OSError:
            self._count("upstream unreachable")
            h.action.reset = True
            return
        with self._lock:
            self.stats.forwarded += 1
        try:
            self._relay(h, response, rule)
        finally:
            upstream.close()

    def _relay(self, h: "_Handler", response: http.client.HTTPResponse, rule: Rule | None) -> None:
        length = response.getheader("Content-Length")
        body_start = 0
        found = _CONTENT_RANGE.match(response.getheader("Content-Range") or "")
        if found:
            body_start = int(found.group(1))
        buffered = None
        if length is None and h.command != "HEAD":
            buffered = response.read()
            length = str(len(buffered))
        h.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                h.send_header(name, value)
        if length is not None:
            h.send_header("Content-Length", length)
        h.send_header("Connection", "close")
        h.end_headers()
        if h.command == "HEAD":
            return
        cut = rule.after_bytes if rule is not None and rule.kind in ("reset", "stall") else None
        sent = 0
        while True:
            if buffered is not None:
                chunk, buffered = buffered[:_CHUNK], buffered[_CHUNK:] or None
            else:
                try:
                    chunk = response.read(_CHUNK)
                except OSError:  # the server died mid-body: so does this connection
                    self._count("upstream cut")
                    h.action.reset = True
                    return
            if not chunk:
                return
            if rule is not None and rule.kind == "flip":
                chunk = self._maybe_flip(rule, chunk, body_start + sent)
            if cut is not None and sent + len(chunk) >= cut:
                h.wfile.write(chunk[:cut - sent])
                h.wfile.flush()
                with self._lock:
                    self.stats.body_bytes += cut - sent
                if rule.kind == "stall":
                    self._count("stall mid-body")
                    self._sleep(rule.seconds)
                else:
                    self._count("reset")
                h.action.reset = True
                return
            h.wfile.write(chunk)
            sent += len(chunk)
            with self._lock:
                self.stats.body_bytes += len(chunk)

    def _maybe_flip(self, rule: Rule, chunk: bytes, offset: int) -> bytes:
        if not offset <= rule.at < offset + len(chunk):
            return chunk
        with self._lock:
            if rule.count is not None:
                if rule.count <= 0:
                    return chunk
                rule.count -= 1
            rule.hits += 1
            self.stats.injected["flip"] += 1
        out = bytearray(chunk)
        out[rule.at - offset] ^= 0xFF
        return bytes(out)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60

    def __init__(self, conn, address, proxy: FaultProxy, action: _Action) -> None:
        self.proxy = proxy
        self.action = action
        super().__init__(conn, address, None)

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()

    def _any(self) -> None:
        self.proxy.handle(self)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _any

    def log_message(self, *args) -> None:
        pass


def read_body(h: BaseHTTPRequestHandler) -> bytes:
    """A request's body, chunked or by Content-Length."""
    if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
        out = bytearray()
        while True:
            size = int(h.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while h.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            out += h.rfile.read(size)
            h.rfile.readline(65537)
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length else b""


def _reset(conn: socket.socket) -> None:
    """Close with a TCP RST: the peer sees 'connection reset', not a clean end."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    conn.close()


def wait_until(predicate, timeout: float = 10.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
