"""Listings and archive contents answered from their encoded JSON while nothing they show changed.

A mount lists the same folders and archives again and again; building the answer (an entry per
child, sorting, JSON) costs far more than checking that it would come out the same. The routes
store each answer they build under the exact request (route and query string) with a validator:
for a folder, its own stat and the stat of every child (names, kinds, sizes, times: all a
listing shows, so a file rewritten in place counts too); for an archive, its inode, size and
mtime. ``CachedListings``, in front of the framework, answers a request it has seen from the
stored bytes when the API key is right and the validator, taken again now, is unchanged; any
miss or doubt goes to the route, which answers (and stores) as usual. The query string being
byte-for-byte one the route accepted, its parameters are known to be valid.
"""

from __future__ import annotations

import hmac
import os
import stat as _stat
import threading

from cachetools import LRUCache
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import StorageError
from ..protocol import API_KEY_HEADER, CONTENTS, ZIP_CONTENTS
from .metrics import Metrics
from .store import RESERVED, LocalStore

MAX_BODY = 1024 * 1024  # larger answers are built each time rather than kept in memory
MAX_CHILDREN = 2000  # a larger folder is not checked on the event loop: it is listed each time
Validator = tuple
_Key = tuple[str, bytes]  # (route, raw query string)


class ListingCache:
    """Encoded answers per (route, query string), each with what it was built from."""

    def __init__(self, store: LocalStore, max_entries: int = 256) -> None:
        self.store = store
        self._lock = threading.Lock()  # routes run on worker threads
        self._items: LRUCache[_Key, tuple[str, Validator, bytes]] = LRUCache(max_entries)

    def validator(self, route: str, path: str) -> Validator | None:
        """What the answer for ``path`` depends on, as of now; None when it cannot be told
        (missing, refused, not the expected kind): such answers are never cached."""
        try:
            local = str(self.store.resolve(path))
            st = os.stat(local)
        except (StorageError, OSError):
            return None
        version = (local, st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)
        if route == ZIP_CONTENTS or not _stat.S_ISDIR(st.st_mode):
            return version if _stat.S_ISREG(st.st_mode) else None
        try:
            names = sorted(os.listdir(local))
        except OSError:
            return None
        if len(names) > MAX_CHILDREN:
            return None
        at_root = local == str(self.store.root)
        children: list[tuple] = []
        for name in names:
            if at_root and name == RESERVED:
                continue
            try:
                child = os.stat(os.path.join(local, name))
                children.append((name, child.st_ino, child.st_size, child.st_mtime_ns,
                                 child.st_mode))
            except OSError:
                children.append((name,))
        return version, tuple(children)

    def put(self, route: str, query: bytes, path: str, validator: Validator | None,
            body: bytes) -> None:
        if validator is None or len(body) > MAX_BODY:
            return
        with self._lock:
            self._items[(route, query)] = (path, validator, body)

    def get(self, route: str, query: bytes) -> bytes | None:
        """The stored answer if what it shows is unchanged now."""
        with self._lock:
            item = self._items.get((route, query))
        if item is None:
            return None
        path, validator, body = item
        return body if self.validator(route, path) == validator else None


class CachedListings:
    """ASGI app: answers GETs of listings and archive contents it has stored; the rest goes to
    ``app``."""

    ROUTES = (CONTENTS, ZIP_CONTENTS)
    _HEADER = API_KEY_HEADER.lower().encode()

    def __init__(self, app: ASGIApp, cache: ListingCache, keys: tuple[bytes, ...],
                 metrics: Metrics) -> None:
        self.app = app
        self.cache = cache
        self.keys = keys
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" \
                and scope["path"] in self.ROUTES and self._authenticated(scope):
            body = self.cache.get(scope["path"], scope.get("query_string", b""))
            if body is not None:
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
                self.metrics.requests.labels(scope["path"], "GET", "200").inc()
                self.metrics.bytes.labels(scope["path"], "GET").inc(len(body))
                return
        await self.app(scope, receive, send)

    def _authenticated(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == self._HEADER:
                return any(hmac.compare_digest(value, k) for k in self.keys)
        return False
