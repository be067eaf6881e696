"""The mount's backend: the storage calls the tree needs, and their metadata caches.

``Backend`` is what ``vfs.VFS`` asks of the storage; ``ClientBackend`` answers it with
``client.StorageClient`` calls, uncached. ``CachedBackend`` wraps a ``Backend`` and is one
itself (gcsfuse's ``fast_stat_bucket`` is the model): folder listings and the space used are
kept for ``ttl`` seconds, member ranges per archive version (which fixes them), "not found"
for the shorter ``negative_ttl`` (shells and file managers probe many missing names), and
download URLs until shortly before the expiry they carry. Archive listings are not kept here:
``vfs.VFS`` keeps the tree it builds from each (one cache of archives, holding what lookups
use), through a ``MetadataCache`` of its own, and the folders of archives listed folder by
folder in the memory budget (``archivelisting``), for this ``ttl``.

Neither these caches nor cachetools' are thread-safe, so each has a lock; loads happen outside
it, and concurrent misses on one key wait for a single load instead of all asking the server
("single flight": ``ls -l`` of a fresh folder would otherwise list it once per thread). The
clock is injectable for tests.
"""

from __future__ import annotations

import datetime as _dt
import functools
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Hashable, Protocol
from urllib.parse import parse_qs, urlsplit

from cachetools import LRUCache

from .. import protocol
from ..client import StorageClient
from ..errors import NotFound

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class Backend(Protocol):
    """What the tree needs from the storage; ``ClientBackend`` and ``CachedBackend`` give it."""

    def list_folder(self, path: str, max_age: float | None = None) -> list[protocol.StorageFile]:
        """Entries of a folder; ``max_age``: the caller missed a name in an answer that old or
        older, so a caching backend should ask again (the server is always asked otherwise)."""

    def zip_listing(self, path: str, version: Hashable = None) -> protocol.ZipListing: ...

    def zip_folder(self, path: str, folder: str, version: Hashable = None,
                   recursive: bool = False) -> protocol.ZipListing:
        """The direct children of one folder of an archive ("" for its top level), or with
        ``recursive`` all below it; names are relative to it, sub-folders end in "/" (``vfs``
        lists big archives this way)."""

    def member_range(self, path: str, member: str,
                     version: Hashable = None) -> protocol.ZipRange: ...

    def space_used(self) -> int: ...

    def download_url(self, path: str) -> str: ...

    def forget_url(self, path: str) -> None: ...

    def read_range(self, url: str, start: int, end_inclusive: int) -> bytes: ...


class ClientBackend:
    """``Backend`` over ``client.StorageClient``: the API calls behind each need, uncached."""

    def __init__(self, client: StorageClient, region: str | None = None) -> None:
        self.client = client
        self.region = region

    def list_folder(self, path: str, max_age: float | None = None) -> list[protocol.StorageFile]:
        # Sorted by name so pages stay consistent while the folder is read page after page.
        return list(self.client.iter_contents(path + "/" if path else "/", sort_by="name",
                                              order="asc", region=self.region))

    def zip_listing(self, path: str, version: Hashable = None) -> protocol.ZipListing:
        return self.client.zip_contents(path, "", recursive=True, region=self.region)

    def zip_folder(self, path: str, folder: str, version: Hashable = None,
                   recursive: bool = False) -> protocol.ZipListing:
        return self.client.zip_contents(path, folder, recursive=recursive, region=self.region)

    def member_range(self, path: str, member: str, version: Hashable = None) -> protocol.ZipRange:
        folder, _, filename = member.rpartition("/")
        return self.client.zip_file_range(path, filename, folder, region=self.region)

    def space_used(self) -> int:
        return self.client.space_used()

    def download_url(self, path: str) -> str:
        urls = self.client.signed_urls([path], protocol.OPERATION_DOWNLOAD, region=self.region)
        if not urls:
            raise NotFound(f"no download URL for {path}")
        return urls[0]

    def forget_url(self, path: str) -> None:
        pass

    def read_range(self, url: str, start: int, end_inclusive: int) -> bytes:
        return self.client.read_range(url, start, end_inclusive)


class _Missing(Exception):
    """What the cache holds for a key whose load raised NotFound."""

    def __init__(self, error: NotFound) -> None:
        super().__init__(str(error))
        self.error = error


class MetadataCache:
    """``get(key, load)``: a value younger than ``ttl``, or ``load()`` once for all callers.

    A ``NotFound`` from ``load`` is remembered for ``negative_ttl`` and raised again; other
    errors are not cached (the next call retries).

    Both tables hold at most ``maxsize`` keys, the least recently used going first, as in
    cachetools' ``TTLCache``; they are plain ordered dicts because a hit here is on the path of
    every ``stat`` (once per storage folder above the path, and once more inside an archive for
    its tree), where ``TTLCache.get`` costs several calls (timer context, expiry, LRU links).
    Measured in one process, a hit on a warm key, lock included: 1.4 us here against 4.8 us
    with two ``TTLCache`` tables, on a busy 2-core machine where a whole warm ``lookup`` of a
    file two folders deep took 10 us (it makes three hits).
    """

    def __init__(self, ttl: float, negative_ttl: float, maxsize: int = 4096,
                 clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._maxsize = maxsize
        self._values: OrderedDict[Hashable, tuple[Any, float]] = OrderedDict()  # (value, loaded)
        self._misses: OrderedDict[Hashable, tuple[_Missing, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[Hashable, threading.Lock] = {}
        self.loads = 0  # for tests and debugging: how many times the backend was asked
        self.changes = 0  # bumped whenever a value is stored, replaced or dropped

    def get(self, key: Hashable, load: Callable[[], Any], max_age: float | None = None) -> Any:
        """The cached value, or a fresh one if there is none or it is older than ``max_age``."""
        with self._lock:  # the hit, inline: see the class notes
            item = self._values.get(key)
            if item is not None:
                age = self._clock() - item[1]
                if age < self._ttl and (max_age is None or age <= max_age):
                    self._values.move_to_end(key)
                    return item[0]
        found, value = self._peek(key, max_age)
        if found:
            return value
        with self._lock:
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            found, value = self._peek(key, max_age)  # another thread may have loaded it
            if found:
                return value
            try:
                self.loads += 1
                value = load()
            except NotFound as exc:
                with self._lock:
                    self._store(self._misses, key, _Missing(exc))
                    self._loading.pop(key, None)
                raise
            except BaseException:
                with self._lock:
                    self._loading.pop(key, None)
                raise
            with self._lock:
                self._store(self._values, key, value)
                self._misses.pop(key, None)
                self._loading.pop(key, None)
            return value

    def _store(self, table: OrderedDict, key: Hashable, value: Any) -> None:
        self.changes += 1
        table[key] = (value, self._clock())
        table.move_to_end(key)
        while len(table) > self._maxsize:
            table.popitem(last=False)

    def _peek(self, key: Hashable, max_age: float | None = None) -> tuple[bool, Any]:
        with self._lock:
            item = self._values.get(key)
            if item is not None:
                age = self._clock() - item[1]
                if age < self._ttl:
                    self._values.move_to_end(key)
                    if max_age is None or age <= max_age:
                        return True, item[0]
                    return False, None
                del self._values[key]
            missing = self._misses.get(key)
            if missing is not None and self._clock() - missing[1] >= self._negative_ttl:
                del self._misses[key]
                missing = None
        if missing is not None:
            raise missing[0].error
        return False, None

    def invalidate(self, key: Hashable) -> None:
        with self._lock:
            self.changes += 1
            self._values.pop(key, None)
            self._misses.pop(key, None)

    def update(self, key: Hashable, change: Callable[[Any], Any]) -> None:
        """A change made through the mount: ``change(value)`` replaces a cached value (its age
        kept); a remembered "not found" is forgotten."""
        with self._lock:
            self.changes += 1
            self._misses.pop(key, None)
            item = self._values.get(key)
            if item is not None:
                self._values[key] = (change(item[0]), item[1])

    def forget(self, unwanted: Callable[[Hashable], bool]) -> None:
        """Drops every key ``unwanted(key)`` is true for (a folder removed: all below it)."""
        with self._lock:
            self.changes += 1
            for table in (self._values, self._misses):
                for key in [key for key in table if unwanted(key)]:
                    del table[key]

    def clear(self) -> None:
        with self._lock:
            self.changes += 1
            self._values.clear()
            self._misses.clear()


def url_expiry(url: str, issued_at: float) -> float | None:
    """When a signed URL stops working (``time.time()`` scale), if the URL says so.

    Understands this project's server (``expires=<epoch>``), GCS V4 (``X-Goog-Date`` +
    ``X-Goog-Expires``), S3 SigV4 (``X-Amz-Date`` + ``X-Amz-Expires``) and the older
    ``Expires=<epoch>`` of GCS V2 / S3 V2. ``issued_at`` is used when a date is unreadable.
    """
    query = {k.lower(): v[0] for k, v in parse_qs(urlsplit(url).query).items() if v}
    for key in ("expires",):
        if query.get(key, "").isdigit():
            return float(query[key])
    for prefix in ("x-goog-", "x-amz-"):
        lifetime = query.get(prefix + "expires", "")
        if lifetime.isdigit():
            start = issued_at
            stamp = query.get(prefix + "date")
            if stamp:
                try:
                    start = _dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(
                        tzinfo=_dt.timezone.utc).timestamp()
                except ValueError:
                    pass
            return start + int(lifetime)
    return None


class SignedUrlCache:
    """Download URLs per storage path, reused until shortly before they expire.

    A URL is dropped at ``expiry - margin`` where the margin is a tenth of its lifetime, at
    most ``max_margin`` seconds; a URL whose expiry cannot be read is kept ``default_ttl``.
    ``invalidate`` drops one early (after a 403, say).
    """

    def __init__(self, default_ttl: float = 600.0, max_margin: float = 300.0,
                 maxsize: int = 4096, clock: Clock = time.time) -> None:
        self.default_ttl = default_ttl
        self.max_margin = max_margin
        self._clock = clock
        self._urls: LRUCache = LRUCache(maxsize)
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self.loads = 0

    def get(self, path: str, load: Callable[[], str]) -> str:
        url = self._fresh(path)
        if url is not None:
            return url
        with self._lock:
            gate = self._loading.setdefault(path, threading.Lock())
        with gate:
            url = self._fresh(path)
            if url is not None:
                return url
            now = self._clock()
            try:
                self.loads += 1
                url = load()
            finally:
                with self._lock:
                    self._loading.pop(path, None)
            expiry = url_expiry(url, now)
            if expiry is None:
                valid_until = now + self.default_ttl
            else:
                margin = min(self.max_margin, max(0.0, expiry - now) / 10)
                valid_until = expiry - margin
            with self._lock:
                self._urls[path] = (url, valid_until)
            return url

    def _fresh(self, path: str) -> str | None:
        with self._lock:
            item = self._urls.get(path)
        if item is not None and self._clock() < item[1]:
            return item[0]
        return None

    def invalidate(self, path: str) -> None:
        with self._lock:
            self._urls.pop(path, None)


class CachedBackend:
    """A ``Backend`` that remembers what the backend below said (see the module notes).

    Archive listings pass through: ``vfs.VFS`` keeps the tree it builds from each, per archive
    version, which is all it reads of a listing.
    """

    def __init__(self, backend: Backend, ttl: float = 60.0, negative_ttl: float = 5.0,
                 clock: Clock = time.monotonic, wall_clock: Clock = time.time) -> None:
        self.backend = backend
        self.ttl = ttl  # also how long ``vfs`` keeps folders of archives listed by folder
        self.negative_ttl = negative_ttl
        self.metadata = MetadataCache(ttl, negative_ttl, clock=clock)
        self.ranges = MetadataCache(float("inf"), negative_ttl, maxsize=65536, clock=clock)
        self.urls = SignedUrlCache(clock=wall_clock)

    @property
    def changes(self) -> int:
        """A counter bumped by every change of the cached listings: what was built on them is
        current while it is unchanged (``archivelisting.RecentFolders``)."""
        return self.metadata.changes

    def list_folder(self, path: str, max_age: float | None = None) -> list[protocol.StorageFile]:
        """``max_age``: the caller missed a name in the last answer; refresh if older."""
        return self.metadata.get(("folder", path), lambda: self.backend.list_folder(path),
                                 max_age)

    def know_folder(self, path: str, entries: list[protocol.StorageFile]) -> None:
        """A whole listing of ``path`` made elsewhere (the mount's start-up check), kept as
        if ``list_folder`` had made it now."""
        self.metadata.get(("folder", path), lambda: entries)

    def zip_listing(self, path: str, version: Hashable = None) -> protocol.ZipListing:
        return self.backend.zip_listing(path, version)

    def zip_folder(self, path: str, folder: str, version: Hashable = None,
                   recursive: bool = False) -> protocol.ZipListing:
        return self.backend.zip_folder(path, folder, version, recursive)

    def member_range(self, path: str, member: str, version: Hashable = None) -> protocol.ZipRange:
        return self.ranges.get((path, member, version),
                               lambda: self.backend.member_range(path, member, version))

    def space_used(self) -> int:
        return self.metadata.get(("space",), self.backend.space_used)

    def download_url(self, path: str) -> str:
        return self.urls.get(path, lambda: self.backend.download_url(path))

    def forget_url(self, path: str) -> None:
        self.urls.invalidate(path)

    def read_range(self, url: str, start: int, end_inclusive: int) -> bytes:
        return self.backend.read_range(url, start, end_inclusive)

    # -- changes made through the mount (mount/write): cached listings follow at once ----------

    def changed(self, path: str, item: protocol.StorageFile | None) -> None:
        """``path`` (a storage path) now holds ``item``, or nothing when None; every cached
        listing above it shows the folders leading to it."""
        folder, _, name = path.rpartition("/")
        self.metadata.update(("folder", folder), functools.partial(_with, name=name, item=item))
        if item is None or item.is_directory:
            below = ("folder", path)
            self.metadata.forget(lambda key: key == below or (
                isinstance(key, tuple) and key[0] == "folder" and key[1].startswith(path + "/")))
        while folder and item is not None:
            folder, _, name = folder.rpartition("/")
            here = protocol.StorageFile(name + "/", None, item.creation_time, True,
                                        item.provider_id, item.region)
            self.metadata.update(("folder", folder),
                                 functools.partial(_with, name=name, item=here, keep=True))


def _with(listing: list[protocol.StorageFile], name: str, item: protocol.StorageFile | None,
          keep: bool = False) -> list[protocol.StorageFile]:
    """A new listing (a new list: ``vfs`` rebuilds its index when the list is new) with the
    entry ``name`` replaced by ``item``, or removed; ``keep``: an existing entry stays."""
    others = []
    for entry in listing:
        if entry.name.rstrip("/") == name:
            if keep:
                return listing
            continue
        others.append(entry)
    if item is not None:
        others.append(item)
    return others
