"""The lean path for signed-URL reads: GET/HEAD of ``/-/...`` answered in front of FastAPI.

A mount turns every random read into a small ranged GET of one signed URL, so this path is the
server's hot loop. It does only what the answer needs: one HMAC check (``Signer.verify``, which
also binds the method and the expiry), the store's own path resolution (root confinement,
symlinks resolved and checked on every request), one ``stat`` of the resolved file, and a read
with ``os.pread`` on a descriptor kept for a moment. The descriptor is keyed by the file's
(path, inode, size, mtime) and the ``stat`` runs on every request, so a file replaced (renamed
over) or rewritten is never served from the old descriptor: its key no longer matches.

Small ranges are read on the event loop (a ``pread`` of a cached page is faster than a thread
hop); large bodies stream from a duplicate of the descriptor in a worker thread. Anything this
path does not need to understand (a refused signature, a missing file, a folder, a malformed or
multiple range, ``If-Range``, an unsatisfiable range) goes to the FastAPI route unchanged, which
answers exactly as before. Requests are counted in the same metrics as the middleware counts.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import stat as _stat
import time
from collections import OrderedDict
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import StorageError
from ..protocol import clean_path
from .metrics import Metrics
from .signing import OBJECT_PREFIX, Signer
from .store import RESERVED, LocalStore

INLINE_READ_MAX = 256 * 1024  # read on the event loop up to this many bytes
STREAM_CHUNK = 1024 * 1024
FD_IDLE_S = 2.0  # a descriptor unused this long is closed
FD_MAX = 128
_SINGLE_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)

StatKey = tuple[str, int, int, int, int]  # (real path, device, inode, size, mtime_ns)


class _Open:
    """A descriptor of one version of one file, with the headers that version answers with."""

    __slots__ = ("key", "fd", "headers", "used")

    def __init__(self, key: StatKey, fd: int, st: os.stat_result) -> None:
        self.key = key
        self.fd = fd
        self.used = time.monotonic()
        # The same validators as starlette's FileResponse, so a client resuming a read through
        # either path sees one version.
        etag_base = f"{st.st_mtime}-{st.st_size}"
        etag = hashlib.md5(etag_base.encode(), usedforsecurity=False).hexdigest()
        self.headers = [
            (b"content-type", b"application/octet-stream"),
            (b"accept-ranges", b"bytes"),
            (b"x-content-length", str(st.st_size).encode()),
            (b"last-modified", formatdate(st.st_mtime, usegmt=True).encode()),
            (b"etag", f'"{etag}"'.encode()),
        ]


class DescriptorCache:
    """Open descriptors by real path, valid only while the file's stat matches their key.

    Used from the event loop only (one thread), so lookups need no lock; descriptors handed to
    worker threads are duplicates the caller closes. Items are in least-recently-used order."""

    def __init__(self, idle_s: float = FD_IDLE_S, max_open: int = FD_MAX) -> None:
        self._items: OrderedDict[str, _Open] = OrderedDict()
        self._idle_s = idle_s
        self._max = max_open
        self._timer: asyncio.TimerHandle | None = None

    def get(self, real: str, st: os.stat_result) -> _Open:
        key = (real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        item = self._items.get(real)
        now = time.monotonic()
        if item is not None and item.key == key:
            item.used = now
            self._items.move_to_end(real)
            return item
        if item is not None:
            del self._items[real]
            os.close(item.fd)
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            opened = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        if (opened.st_dev, opened.st_ino, opened.st_size, opened.st_mtime_ns) != key[1:]:
            os.close(fd)  # replaced between the stat and the open: let the caller re-stat
            raise FileChangedError(real)
        if not _opened_under(fd, real):  # a folder on the way swapped for a symlink meanwhile
            os.close(fd)
            raise FileChangedError(real)
        item = self._items[real] = _Open(key, fd, st)
        self.sweep()
        return item

    def sweep(self) -> None:
        """Close what is idle or over the bound; while anything stays open, look again later,
        so an idle server does not keep a deleted file's space held by a descriptor."""
        now = time.monotonic()
        while self._items:
            oldest = next(iter(self._items.values()))
            if len(self._items) <= self._max and now - oldest.used < self._idle_s:
                break
            del self._items[oldest.key[0]]
            os.close(oldest.fd)
        if self._items and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._idle_s, self._swept)

    def _swept(self) -> None:
        self._timer = None
        self.sweep()


def _opened_under(fd: int, real: str) -> bool:
    """Whether what ``fd`` opened is the file at ``real`` itself: the kernel's name for it,
    not the one the path walk checked, which a swapped folder could lead out of the root."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == real
    except OSError:
        return True  # no /proc: the lstat walk is what is left


class FileChangedError(Exception):
    """The file changed while being opened; the request goes the slow way."""


def single_range(header: str, size: int) -> tuple[int, int] | None:
    """``(start, end_exclusive)`` of a satisfiable single range, as starlette's FileResponse
    reads it (an end past the file is clamped); None for anything else."""
    found = _SINGLE_RANGE.match(header)
    if not found:
        return None
    first, last = found.groups()
    if len(first) > 19 or len(last) > 19:  # past any file (and past int()'s digit limit)
        return None
    if first:
        start = int(first)
        end = int(last) + 1 if last and int(last) < size else size
    elif last:
        start, end = max(size - int(last), 0), size
    else:
        return None
    if not 0 <= start < end <= size:
        return None
    return start, end


def _query(raw: bytes) -> dict[str, str]:
    """The query parameters, the last of a name winning (as the framework reads them)."""
    text = raw.decode("latin-1")
    if "%" in text or "+" in text:
        return dict(parse_qsl(text, keep_blank_values=True))
    return dict(pair.partition("=")[::2] for pair in text.split("&") if pair)


class ObjectReads:
    """ASGI app: answers signed-URL GET/HEAD reads itself, everything else goes to ``app``."""

    def __init__(self, app: ASGIApp, signer: Signer, store: LocalStore, metrics: Metrics) -> None:
        self.app = app
        self.signer = signer
        self.store = store
        self.metrics = metrics
        self.fds = DescriptorCache()
        self._root = str(store.root)
        self._root_prefix = self._root + os.sep
        self._counters: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._range_reads = metrics.object_reads.labels("range")
        self._whole_reads = metrics.object_reads.labels("whole")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(OBJECT_PREFIX) \
                and scope["method"] in ("GET", "HEAD"):
            if await self._answer(scope, send):
                return
        await self.app(scope, receive, send)

    def _locate(self, scope: Scope) -> tuple[str, os.stat_result] | None:
        """The checked real path of the object and its stat, or None to go the slow way."""
        path = scope["path"][len(OBJECT_PREFIX):]
        if "//" in path:
            return None
        query = _query(scope.get("query_string", b""))
        try:
            self.signer.verify(scope["method"], path, query.get("op", ""),
                               query.get("expires", ""), query.get("sig", ""))
            clean = clean_path(path)
        except StorageError:
            return None
        if not clean or clean.split("/", 1)[0] == RESERVED:
            return None
        located = self._walk(clean)
        if located is None:
            return None
        real, st = located
        if not real.startswith(self._root_prefix) or not _stat.S_ISREG(st.st_mode):
            return None
        return real, st

    def _walk(self, clean: str) -> tuple[str, os.stat_result] | None:
        """The path under the root and its stat, with one ``lstat`` per component: a path
        of plain folders and a plain file cannot leave the root (``clean_path`` refuses
        ``..``); a symlink on the way is resolved and checked by the store, as the route does."""
        local = self._root
        try:
            for part in clean.split("/"):
                local = f"{local}/{part}"
                st = os.lstat(local)
                if _stat.S_ISLNK(st.st_mode):
                    real = str(self.store.resolve(clean))
                    return real, os.stat(real)
        except (OSError, StorageError):
            return None
        return local, st

    async def _answer(self, scope: Scope, send: Send) -> bool:
        located = self._locate(scope)
        if located is None:
            return False
        real, st = located
        size = st.st_size
        range_header = None
        for name, value in scope["headers"]:
            if name == b"range":
                range_header = value.decode("latin-1")
            elif name == b"if-range":
                return False
        if range_header is not None:
            wanted = single_range(range_header, size)
            if wanted is None:
                return False
            start, end, status = wanted[0], wanted[1], 206
        else:
            start, end, status = 0, size, 200
        try:
            opened = self.fds.get(real, st)
        except (OSError, FileChangedError):
            return False
        headers = list(opened.headers)
        headers.append((b"content-length", str(end - start).encode()))
        if status == 206:
            headers.append((b"content-range", f"bytes {start}-{end - 1}/{size}".encode()))
        method = scope["method"]
        body = b""
        if method == "GET" and end - start <= INLINE_READ_MAX:
            body = os.pread(opened.fd, end - start, start)
            if len(body) != end - start:
                return False  # shorter than its stat said: it is changing under us
        sent = 0
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            if method == "HEAD" or end - start <= INLINE_READ_MAX:
                await send({"type": "http.response.body", "body": body})
                sent = len(body)
            else:
                sent = await self._stream(os.dup(opened.fd), start, end, send)
        finally:
            self._counted(method, str(status), sent, range_header is not None)
        return True

    async def _stream(self, fd: int, start: int, end: int, send: Send) -> int:
        sent = 0
        try:
            while start < end:
                chunk = await anyio.to_thread.run_sync(
                    os.pread, fd, min(STREAM_CHUNK, end - start), start)
                if not chunk:
                    raise RuntimeError("file shorter than expected while streaming it")
                start += len(chunk)
                await send({"type": "http.response.body", "body": chunk,
                            "more_body": start < end})
                sent += len(chunk)
        finally:
            os.close(fd)
        return sent

    def _counted(self, method: str, status: str, sent: int, is_range: bool) -> None:
        counters = self._counters.get((method, status))
        if counters is None:  # labels() takes a lock and builds a key: look each pair up once
            m = self.metrics
            counters = self._counters[(method, status)] = (
                m.requests.labels("object", method, status), m.bytes.labels("object", method))
        counters[0].inc()
        counters[1].inc(sent)
        if method == "GET":
            (self._range_reads if is_range else self._whole_reads).inc()
            self.metrics.object_read_bytes.inc(sent)
