"""The server's cache of parsed central directories, so an archive is indexed once per version.

Listings and ranges of one archive come in bursts (a mount lists a folder, then reads its
members; a fresh mount of a big archive lists several folders at once), and a large central
directory takes seconds to parse: the cache keeps the most recently used indexes, each under its
key (a path, an object name) and the archive's version (size and mtime, an ETag...), and a
version being parsed is parsed once, however many requests wait for it.

With a ``folder``, the index of a big archive (``SAVE_MIN_ENTRIES`` members or more) is also
saved there (``indexfile``) and mapped back by the next process that needs it: a restarted
server, or the other workers of ``storagefs serve --workers N``, which wait for the one parse
(a lock file per archive) instead of each parsing the archive again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import pathlib
import stat as _stat
import threading
from typing import BinaryIO, Callable, Iterator

from cachetools import LRUCache

from ..errors import InvalidRequest, NotFound
from . import indexfile
from .zipindex import ZipIndex, read_index

log = logging.getLogger(__name__)

Version = tuple  # anything that changes when the archive's bytes change
SAVE_MIN_ENTRIES = 50_000  # below, a parse takes well under a second: not worth a file


class _Parse:
    """One parse in progress: the requests for the same version wait for its outcome."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.index: ZipIndex | None = None
        self.error: BaseException | None = None


class IndexCache:
    """Thread-safe LRU of parsed archives, keyed by name and validated by version.

    A replaced archive has a new version, so it is read again; the stale index is dropped. The
    cache holds at most ``max_entries`` indexes and ``max_bytes`` of them (``ZipIndex.nbytes``;
    each index counts as at least ``max_bytes / max_entries``). Parsing happens outside the
    lock, so a slow archive does not hold up lookups of others; concurrent requests for one
    version share one parse (a million members take seconds and a hundred MB each time).
    """

    def __init__(self, max_entries: int, max_zip_entries: int, max_cd_bytes: int,
                 max_bytes: int = 2 << 30, folder: pathlib.Path | None = None) -> None:
        self._folder = folder
        self._max_files = max(1, max_entries)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        self._max_zip_entries = max_zip_entries
        self._max_cd_bytes = max_cd_bytes
        self._max_bytes = max(1, max_bytes)
        floor = self._max_bytes // max(1, max_entries)
        self._lock = threading.Lock()  # cachetools caches are not thread-safe
        self._items: LRUCache[str, tuple[Version, ZipIndex]] = LRUCache(
            self._max_bytes, getsizeof=lambda item: max(item[1].nbytes, floor))
        self._parsing: dict[tuple[str, Version], _Parse] = {}

    def get(self, path: pathlib.Path) -> ZipIndex:
        """The index of a local file, validated by its size and mtime."""
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            raise NotFound(f"no archive at {path}") from None
        if _stat.S_ISDIR(stat.st_mode):
            raise InvalidRequest(f"{path} is a directory, not an archive")
        if not _stat.S_ISREG(stat.st_mode):
            raise InvalidRequest(f"{path} is not a file")

        def open_file() -> BinaryIO:
            try:
                return open(path, "rb")
            except FileNotFoundError:
                raise NotFound(f"no archive at {path}") from None

        return self.get_from(str(path), (stat.st_size, stat.st_mtime_ns, stat.st_ino),
                             stat.st_size, open_file)

    def get_from(self, key: str, version: Version, size: int,
                 open_file: Callable[[], BinaryIO]) -> ZipIndex:
        """The index of the ``size``-byte archive ``key`` at ``version``; ``open_file`` opens
        its bytes (a seekable binary file, used as a context manager) when it must be parsed."""
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                if item[0] == version:
                    return item[1]
                del self._items[key]  # the archive was replaced
            parse = self._parsing.get((key, version))
            owner = parse is None
            if parse is None:
                parse = self._parsing[(key, version)] = _Parse()
        if not owner:
            parse.done.wait()
            if parse.error is not None:
                raise parse.error
            assert parse.index is not None
            return parse.index
        try:
            parse.index = self._build(key, version, size, open_file)
        except BaseException as exc:
            parse.error = exc
            raise
        finally:
            with self._lock:
                del self._parsing[(key, version)]
                if parse.index is not None:
                    self._keep(key, version, parse.index)
            parse.done.set()
        return parse.index

    def _build(self, key: str, version: Version, size: int,
               open_file: Callable[[], BinaryIO]) -> ZipIndex:
        """Map the saved index, or parse the archive (and save what is worth saving)."""
        if self._folder is None:
            return self._parse(size, open_file)
        name = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:40]
        saved = self._folder / f"{name}-{hashlib.sha256(repr(version).encode()).hexdigest()[:16]}"
        with self._locked(self._folder / f"{name}.lock"):
            index = indexfile.load(saved, size)
            if index is not None:
                with contextlib.suppress(OSError):
                    os.utime(saved)  # recently used: pruned last
                return index
            index = self._parse(size, open_file)
            if index.count >= SAVE_MIN_ENTRIES:
                try:
                    indexfile.save(index, saved)
                    self._prune(name, saved)
                except OSError as exc:
                    log.warning("could not save the index of %s: %s", key, exc)
        return index

    def _parse(self, size: int, open_file: Callable[[], BinaryIO]) -> ZipIndex:
        with open_file() as f:
            return read_index(f, size, max_entries=self._max_zip_entries,
                              max_cd_bytes=self._max_cd_bytes)

    @staticmethod
    @contextlib.contextmanager
    def _locked(path: pathlib.Path) -> Iterator[None]:
        """Held by one process at a time (the threads of one process never get here twice for
        one version: they wait for the first in ``get_from``)."""
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _prune(self, name: str, kept: pathlib.Path) -> None:
        """Other versions of this archive go; so do the oldest files beyond the cache's count."""
        assert self._folder is not None
        files = [p for p in self._folder.iterdir() if not p.name.endswith(".lock")
                 and not p.name.startswith(".")]
        for path in files:
            if path.name.startswith(name + "-") and path != kept:
                path.unlink(missing_ok=True)
        files = [p for p in files if p.exists()]
        if len(files) > self._max_files:
            files.sort(key=lambda p: p.stat().st_mtime)
            for path in files[:len(files) - self._max_files]:
                path.unlink(missing_ok=True)  # (lock files stay: another may hold one)

    def _keep(self, key: str, version: Version, index: ZipIndex) -> None:
        if index.nbytes > self._max_bytes:
            log.warning("the index of %s (%d members, %d MB) is larger than the whole index "
                        "cache (%d MB): it is parsed again for each request; raise "
                        "zip_index_cache_bytes", key, index.count, index.nbytes >> 20,
                        self._max_bytes >> 20)
            return
        self._items[key] = (version, index)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
