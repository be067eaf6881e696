"""Fetched byte ranges kept on disk (``--cache-dir``), so a second mount does not fetch them again.

``DiskCache.wrap(fetch, identity)`` returns a ``fetch(start, end)`` with the same contract
that answers from disk what it can and asks ``fetch`` only for the rest. ``identity`` names one
version of one object: (storage path, size, modification time or ETag). A replaced archive
has another identity, so it never serves stale bytes; the old version's files age out.

Layout: ``<dir>/<hash of identity>/<granule>-<lo>``. The object is cut in *granules* of 1 MiB
at fixed offsets; each file holds one contiguous part ``[lo, hi)`` of its granule (whatever
reads have covered: the edges of a member are partial granules, so nothing is fetched beyond
what readers asked for; parts that touch are joined into one file), behind a header with the
part's bounds and its CRC-32::

    b"SFDC" | version u8 | pad 3 | lo u32 | hi u32 | crc32 u32 | data[hi - lo]

- Crash-safe: each file is written under a temporary name in the same folder and renamed
  over the old one, so a file is either the old or the new version, never half of one.
- Corruption (a torn or flipped file, a foreign file) fails the header or CRC check when read:
  the file is deleted and the range fetched again.
- Bounded: the files' total size stays under ``limit``; least recently used go first. Use
  order survives restarts through the files' modification times (touched on use, at most once
  a minute per file).
- Several mounts may share a folder: files appear and vanish atomically; each process counts
  only what it saw, so the limit holds per process.
- Deflate checkpoints (``checkpoints.CheckpointIndex``) live in its ``checkpoints`` folder,
  within a sixteenth of ``limit`` of their own.
- Private: the folder must belong to the mount's user and is made 0700, so other users can
  neither read what was fetched nor plant data in it.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import struct
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable

from cachetools import LRUCache

from ...zipfmt import Fetch
from .checkpoints import CheckpointIndex

log = logging.getLogger(__name__)

GRANULE = 1 << 20
_HEADER = struct.Struct("<4sB3xIII")
_MAGIC = b"SFDC"
_VERSION = 1
_TOUCH_EVERY = 60.0
CHECKPOINTS = "checkpoints"  # the folder of deflate checkpoint files


def _make_private(root: Path) -> None:
    """What a mount cached is its user's alone: a folder that belongs to another user is
    refused (its owner could read it or plant data), one of ours open to others is closed."""
    st = root.stat()
    if st.st_uid != os.geteuid():
        raise PermissionError(errno.EACCES, f"cache folder {root} belongs to another user "
                              "(use a folder of your own)")
    if st.st_mode & 0o077:
        root.chmod(0o700)


@dataclass
class _File:
    """A cache file as the index knows it."""

    size: int  # on disk, header included
    touched: float  # when its modification time was last set (use order across restarts)
    key: tuple[str, int]  # (folder, granule) it holds a part of


class _FileLRU(LRUCache[str, _File]):
    """Cache files by use, at most ``limit`` bytes on disk. What it lets go waits in
    ``dropped`` until the cache, still under its lock, forgets it and deletes the file."""

    def __init__(self, limit: int) -> None:
        super().__init__(maxsize=limit, getsizeof=lambda file: file.size)
        self.dropped: list[tuple[str, _File]] = []

    def popitem(self) -> tuple[str, _File]:
        path, file = super().popitem()
        self.dropped.append((path, file))
        return path, file


class DiskCache:
    """Granules of objects under ``root``, at most ``limit`` bytes (see the module notes)."""

    def __init__(self, root: Path | str, limit: int, granule: int = GRANULE,
                 clock: Callable[[], float] = time.time) -> None:
        self.root = Path(root)
        self.limit = max(0, int(limit))
        self.granule = granule
        self._clock = clock
        self._lock = threading.Lock()
        self._files = _FileLRU(self.limit)  # path -> _File, least recently used first
        # (folder, granule) -> [(lo, hi, path)]
        self._parts: dict[tuple[str, int], list[tuple[int, int, str]]] = {}
        self._doomed: list[str] = []  # files evicted and not deleted yet
        self.hits = 0  # bytes served from disk
        self.misses = 0  # bytes fetched
        self.corrupt = 0  # files found damaged (deleted and fetched again)
        self.evicted = 0
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        _make_private(self.root)
        self._scan()
        self.checkpoints = CheckpointIndex(self.root / CHECKPOINTS, self.limit // 16)

    # -- the decorator --------------------------------------------------------------------

    def wrap(self, fetch: Fetch, identity: Hashable) -> Fetch:
        """``fetch`` with this cache in front, for the object version ``identity``."""
        folder = self.root / hashlib.sha256(repr(identity).encode()).hexdigest()[:32]

        def cached_fetch(start: int, end: int) -> bytes:
            return self._read(fetch, folder, start, end)

        return cached_fetch

    def _read(self, fetch: Fetch, folder: Path, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        g = self.granule
        pieces: list[bytes | None] = []  # per granule: cached bytes or None (to fetch)
        spans = []
        for index in range(start // g, (end - 1) // g + 1):
            lo, hi = max(start, index * g), min(end, (index + 1) * g)
            spans.append((index, lo, hi))
            pieces.append(self._load(folder, index, lo, hi))
        out: list[bytes] = []
        i = 0
        while i < len(spans):
            piece = pieces[i]
            if piece is not None:
                out.append(piece)
                i += 1
                continue
            j = i
            while j < len(spans) and pieces[j] is None:
                j += 1
            lo, hi = spans[i][1], spans[j - 1][2]  # one request for a run of misses
            data = fetch(lo, hi)
            self.misses += len(data)
            out.append(data)
            for index, a, b in spans[i:j]:
                part = data[a - lo:b - lo]
                if part:
                    self._store(folder, index, a, part)
                if len(part) < b - a:  # the object ended early: no more granules
                    j = len(spans)
                    break
            i = j
        return out[0] if len(out) == 1 else b"".join(out)

    # -- granule parts ----------------------------------------------------------------------

    def _parse(self, raw: bytes) -> tuple[int, int, bytes] | None:
        if len(raw) < _HEADER.size:
            return None
        magic, version, lo, hi, crc = _HEADER.unpack_from(raw)
        data = raw[_HEADER.size:]
        if magic != _MAGIC or version != _VERSION or hi - lo != len(data) or \
                zlib.crc32(data) != crc:
            return None
        return lo, hi, data

    def _open(self, path: str, lo: int, hi: int) -> bytes | None:
        """The part's bytes, or None (a damaged file is deleted and forgotten)."""
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError:
            self._forget(path)
            return None
        part = self._parse(raw)
        if part is None or part[:2] != (lo, hi):
            self.corrupt += 1
            log.warning("cache file %s is damaged; fetching its range again", path)
            self._remove(Path(path))
            return None
        return part[2]

    def _load(self, folder: Path, index: int, lo: int, hi: int) -> bytes | None:
        """Bytes ``[lo, hi)`` (object offsets, within granule ``index``) if cached, from one
        part or from parts that follow one another (written apart by concurrent fetches)."""
        base = index * self.granule
        a, b = lo - base, hi - base
        with self._lock:
            parts = sorted(self._parts.get((str(folder), index), ()))
        chain = []
        at = a
        for p_lo, p_hi, path in parts:
            if p_lo <= at < p_hi:
                chain.append((p_lo, p_hi, path))
                at = p_hi
                if at >= b:
                    break
        if at < b:
            return None
        pieces = []
        at = a
        for p_lo, p_hi, path in chain:
            data = self._open(path, p_lo, p_hi)
            if data is None:
                return None
            pieces.append(data[at - p_lo:min(b, p_hi) - p_lo])
            at = min(b, p_hi)
            self._used(path, Path(path))
        self.hits += b - a
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _store(self, folder: Path, index: int, lo: int, data: bytes) -> None:
        """Keep ``data`` at object offset ``lo`` in granule ``index``, as one part with the
        parts it touches or overlaps (theirs are then deleted)."""
        if self.limit <= 0:
            return
        base = index * self.granule
        a, b = lo - base, lo - base + len(data)
        key = (str(folder), index)
        with self._lock:
            parts = list(self._parts.get(key, ()))
        joined = []
        for p_lo, p_hi, p_path in parts:
            if p_lo <= a and b <= p_hi:
                return  # nothing new
            if p_lo <= b and a <= p_hi:
                old = self._open(p_path, p_lo, p_hi)
                if old is not None:
                    joined.append((p_lo, p_hi, p_path, old))
        if joined:
            n_lo = min([a] + [j[0] for j in joined])
            n_hi = max([b] + [j[1] for j in joined])
            merged = bytearray(n_hi - n_lo)
            for p_lo, p_hi, _, old in joined:
                merged[p_lo - n_lo:p_hi - n_lo] = old
            merged[a - n_lo:b - n_lo] = data
            a, b, data = n_lo, n_hi, bytes(merged)
        path = folder / f"{index}-{a}"
        tmp = folder / f".tmp-{os.getpid()}-{uuid.uuid4().hex}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(_HEADER.pack(_MAGIC, _VERSION, a, b, zlib.crc32(data)))
                f.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write to the cache folder %s: %s", self.root, exc)
            try:
                tmp.unlink()
            except OSError:
                pass
            return
        for _, _, old_path, _ in joined:
            if old_path != str(path):
                self._remove(Path(old_path))
        self._add(str(path), key, a, b, len(data) + _HEADER.size, self._clock())
        self._evict()

    # -- bookkeeping ----------------------------------------------------------------------

    def _scan(self) -> None:
        found = []
        for folder in self.root.iterdir() if self.root.is_dir() else ():
            if not folder.is_dir() or folder.name == CHECKPOINTS:
                continue
            for entry in os.scandir(folder):
                if entry.name.startswith(".tmp-"):
                    try:
                        os.unlink(entry.path)  # left by a crash
                    except OSError:
                        pass
                    continue
                index_s, _, lo_s = entry.name.partition("-")
                try:
                    st = entry.stat()
                    index_n, lo_n = int(index_s), int(lo_s)
                except (OSError, ValueError):
                    continue
                hi_n = lo_n + st.st_size - _HEADER.size  # checked against the header on use
                found.append((st.st_mtime, entry.path, (str(folder), index_n), lo_n, hi_n,
                              st.st_size))
        found.sort()
        for mtime, path, key, lo, hi, size in found:
            self._add(path, key, lo, hi, size, mtime)
        self._evict()

    def _add(self, path: str, key: tuple[str, int], lo: int, hi: int, size: int,
             when: float) -> None:
        """Index a file; the least recently used ones beyond the limit go (``_evict`` deletes
        them)."""
        with self._lock:
            self._forget_locked(path)
            file = _File(size, when, key)
            try:
                self._files[path] = file
            except ValueError:  # larger than the whole limit: it goes, and everything else
                while self._files:
                    self._files.popitem()
                self._files.dropped.append((path, file))
            else:
                self._parts.setdefault(key, []).append((lo, hi, path))
            for victim, dropped in self._files.dropped:
                self._drop_part(victim, dropped.key)
                self._doomed.append(victim)
                self.evicted += 1
            self._files.dropped.clear()

    def _used(self, key: str, path: Path) -> None:
        now = self._clock()
        touch = False
        with self._lock:
            file = self._files.get(key)  # now the most recently used
            if file is None:
                return
            if now - file.touched > _TOUCH_EVERY:
                file.touched = now
                touch = True
        if touch:
            try:
                os.utime(path)
            except OSError:
                pass

    def _forget(self, path: str) -> None:
        with self._lock:
            self._forget_locked(path)

    def _forget_locked(self, path: str) -> None:
        file = self._files.pop(path, None)
        if file is not None:
            self._drop_part(path, file.key)

    def _drop_part(self, path: str, key: tuple[str, int]) -> None:
        parts = [p for p in self._parts.get(key, ()) if p[2] != path]
        if parts:
            self._parts[key] = parts
        else:
            self._parts.pop(key, None)

    def _remove(self, path: Path) -> None:
        self._forget(str(path))
        try:
            path.unlink()
        except OSError:
            pass

    def _evict(self) -> None:
        """Delete the files the index let go (outside the lock: unlinking takes time)."""
        with self._lock:
            victims, self._doomed = self._doomed, []
        for path in victims:
            try:
                os.unlink(path)
            except OSError:
                pass

    @property
    def size(self) -> int:
        """Bytes of cache files this process knows of."""
        return int(self._files.currsize)

    def stats(self) -> dict[str, int]:
        return {"size": int(self._files.currsize), "limit": self.limit, "files": len(self._files),
                "hits": self.hits, "misses": self.misses, "corrupt": self.corrupt,
                "evicted": self.evicted}
