"""The server's cache of parsed central directories, so an archive is indexed once per change.

Listings and ranges of one archive come in bursts (a mount lists a folder, then reads its
members), and a large central directory takes a noticeable time to parse; the cache keeps the
most recently used indexes, keyed by path and validated against the file's size and mtime.
"""

from __future__ import annotations

import os
import pathlib
import stat as _stat
import threading
from typing import BinaryIO, Callable

from cachetools import LRUCache

from ..errors import InvalidRequest, NotFound
from .zipindex import ZipIndex, read_index


class IndexCache:
    """Thread-safe LRU of parsed archives, keyed by path and validated by (size, mtime_ns).

    A replaced archive has a new size or mtime, so it is read again; the stale index is dropped.
    Parsing happens outside the lock: a slow archive does not block lookups of others (two
    threads may parse the same new archive once each; the second result simply wins).
    """

    def __init__(self, max_entries: int, max_zip_entries: int, max_cd_bytes: int) -> None:
        self._max_zip_entries = max_zip_entries
        self._max_cd_bytes = max_cd_bytes
        self._lock = threading.Lock()  # cachetools caches are not thread-safe
        self._items: LRUCache[str, tuple[int, int, ZipIndex]] = LRUCache(max(1, max_entries))

    def get(self, path: pathlib.Path) -> ZipIndex:
        key = str(path)
        try:
            with open(path, "rb") as f:
                stat = os.fstat(f.fileno())
                if not _stat.S_ISREG(stat.st_mode):
                    raise InvalidRequest(f"{path} is not a file")
                cached = self._lookup(key, stat.st_size, stat.st_mtime_ns)
                if cached is not None:
                    return cached
                index = read_index(f, stat.st_size, max_entries=self._max_zip_entries,
                                   max_cd_bytes=self._max_cd_bytes)
        except FileNotFoundError:
            raise NotFound(f"no archive at {path}") from None
        except IsADirectoryError:
            raise InvalidRequest(f"{path} is a directory, not an archive") from None
        with self._lock:
            self._items[key] = (stat.st_size, stat.st_mtime_ns, index)
        return index

    def get_from(self, key: str, version: tuple, size: int,
                 open_file: Callable[[], BinaryIO]) -> ZipIndex:
        """The index of an archive kept elsewhere (an object store): ``key`` names it,
        ``version`` tells its contents apart (an ETag), ``open_file`` opens its bytes."""
        cache_key = f"{key}\0{version!r}"
        with self._lock:
            item = self._items.get(cache_key)
        if item is not None:
            return item[2]
        with open_file() as f:
            index = read_index(f, size, max_entries=self._max_zip_entries,
                               max_cd_bytes=self._max_cd_bytes)
        with self._lock:
            self._items[cache_key] = (size, 0, index)
        return index

    def _lookup(self, key: str, size: int, mtime_ns: int) -> ZipIndex | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[:2] != (size, mtime_ns):
                del self._items[key]  # the archive was replaced
                return None
            return item[2]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
