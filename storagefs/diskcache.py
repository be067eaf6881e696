"""Fetched byte ranges kept on disk (``--cache-dir``), so a second mount does not fetch them again.

``DiskCache.wrap(fetch, identity)`` returns a ``fetch(start, end)`` with the same contract
that answers from disk what it can and asks ``fetch`` only for the rest. ``identity`` names one
version of one object: (storage path, size, modification time or ETag). A replaced archive
has another identity, so it never serves stale bytes; the old version's files age out.

Layout: ``<dir>/<hash of identity>/<granule>``. The object is cut in *granules* of 1 MiB at
fixed offsets; each file holds one contiguous part ``[lo, hi)`` of its granule (whatever
reads have covered: the edges of a member are partial granules, so nothing is fetched beyond
what readers asked for), behind a header with the part's bounds and its CRC-32::

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
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Hashable

log = logging.getLogger(__name__)

Fetch = Callable[[int, int], bytes]

GRANULE = 1 << 20
_HEADER = struct.Struct("<4sB3xIII")
_MAGIC = b"SFDC"
_VERSION = 1
_TOUCH_EVERY = 60.0


class DiskCache:
    """Granules of objects under ``root``, at most ``limit`` bytes (see the module notes)."""

    def __init__(self, root: Path | str, limit: int, granule: int = GRANULE,
                 clock: Callable[[], float] = time.time) -> None:
        self.root = Path(root)
        self.limit = max(0, int(limit))
        self.granule = granule
        self._clock = clock
        self._lock = threading.Lock()
        self._files: OrderedDict[str, list] = OrderedDict()  # path -> [size, last touch]
        self._total = 0
        self.hits = 0  # bytes served from disk
        self.misses = 0  # bytes fetched
        self.corrupt = 0  # files found damaged (deleted and fetched again)
        self.evicted = 0
        self.root.mkdir(parents=True, exist_ok=True)
        self._scan()

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
        out = []
        i = 0
        while i < len(spans):
            if pieces[i] is not None:
                out.append(pieces[i])
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

    # -- granule files --------------------------------------------------------------------

    def _path(self, folder: Path, index: int) -> Path:
        return folder / str(index)

    def _parse(self, raw: bytes) -> tuple[int, int, bytes] | None:
        if len(raw) < _HEADER.size:
            return None
        magic, version, lo, hi, crc = _HEADER.unpack_from(raw)
        data = raw[_HEADER.size:]
        if magic != _MAGIC or version != _VERSION or hi - lo != len(data) or \
                zlib.crc32(data) != crc:
            return None
        return lo, hi, data

    def _open(self, path: Path) -> tuple[int, int, bytes] | None:
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        part = self._parse(raw)
        if part is None:
            self.corrupt += 1
            log.warning("cache file %s is damaged; fetching its range again", path)
            self._remove(path)
        return part

    def _load(self, folder: Path, index: int, lo: int, hi: int) -> bytes | None:
        """Bytes ``[lo, hi)`` (object offsets, within granule ``index``) if cached."""
        path = self._path(folder, index)
        key = str(path)
        with self._lock:
            known = key in self._files
        if not known and not path.exists():
            return None
        part = self._open(path)
        if part is None:
            return None
        base = index * self.granule
        have_lo, have_hi, data = base + part[0], base + part[1], part[2]
        if not (have_lo <= lo and hi <= have_hi):
            return None
        self.hits += hi - lo
        self._used(key, len(data) + _HEADER.size, path)
        return data[lo - have_lo:hi - have_lo]

    def _store(self, folder: Path, index: int, lo: int, data: bytes) -> None:
        """Keep ``data`` at object offset ``lo`` in granule ``index``, joined with what the
        file holds when the two touch or overlap."""
        if self.limit <= 0:
            return
        base = index * self.granule
        a, b = lo - base, lo - base + len(data)
        path = self._path(folder, index)
        old = self._open(path) if path.exists() else None
        if old is not None:
            o_lo, o_hi, o_data = old
            if o_lo <= a and b <= o_hi:
                return  # nothing new
            if o_lo <= b and a <= o_hi:  # touching or overlapping: one part
                n_lo, n_hi = min(a, o_lo), max(b, o_hi)
                merged = bytearray(n_hi - n_lo)
                merged[o_lo - n_lo:o_hi - n_lo] = o_data
                merged[a - n_lo:b - n_lo] = data
                a, b, data = n_lo, n_hi, bytes(merged)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".tmp-{os.getpid()}-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(_HEADER.pack(_MAGIC, _VERSION, a, b, zlib.crc32(data)))
                f.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write to the cache folder %s: %s", self.root, exc)
            try:
                tmp.unlink()
            except (OSError, UnboundLocalError):
                pass
            return
        self._used(str(path), len(data) + _HEADER.size, None)
        self._evict()

    # -- bookkeeping ----------------------------------------------------------------------

    def _scan(self) -> None:
        found = []
        for folder in self.root.iterdir() if self.root.is_dir() else ():
            if not folder.is_dir():
                continue
            for entry in os.scandir(folder):
                if entry.name.startswith(".tmp-"):
                    try:
                        os.unlink(entry.path)  # left by a crash
                    except OSError:
                        pass
                    continue
                try:
                    st = entry.stat()
                except OSError:
                    continue
                found.append((st.st_mtime, entry.path, st.st_size))
        found.sort()
        with self._lock:
            for mtime, path, size in found:
                self._files[path] = [size, mtime]
                self._total += size
        self._evict()

    def _used(self, key: str, size: int, path: Path | None) -> None:
        now = self._clock()
        touch = False
        with self._lock:
            item = self._files.get(key)
            if item is None:
                self._files[key] = [size, now]
                self._total += size
            else:
                self._total += size - item[0]
                item[0] = size
                if path is not None and now - item[1] > _TOUCH_EVERY:
                    item[1] = now
                    touch = True
                self._files.move_to_end(key)
        if touch:
            try:
                os.utime(path)
            except OSError:
                pass

    def _remove(self, path: Path) -> None:
        with self._lock:
            item = self._files.pop(str(path), None)
            if item is not None:
                self._total -= item[0]
        try:
            path.unlink()
        except OSError:
            pass

    def _evict(self) -> None:
        victims = []
        with self._lock:
            while self._files and self._total > self.limit:
                key, (size, _) = self._files.popitem(last=False)
                self._total -= size
                victims.append(key)
                self.evicted += 1
        for key in victims:
            try:
                os.unlink(key)
            except OSError:
                pass

    @property
    def size(self) -> int:
        """Bytes of cache files this process knows of."""
        return self._total

    def stats(self) -> dict[str, int]:
        return {"size": self._total, "limit": self.limit, "files": len(self._files),
                "hits": self.hits, "misses": self.misses, "corrupt": self.corrupt,
                "evicted": self.evicted}
