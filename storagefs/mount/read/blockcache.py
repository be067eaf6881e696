"""One memory budget for the whole mount: decoded blocks, inflater snapshots, read-ahead.

Every open file of the mount draws on the same ``BlockCache`` (``--cache-size``, 256 MiB by
default), never on a budget of its own, so the daemon's memory stays bounded whatever users do
(mountpoint-s3 learned this the hard way, their issue #987). What it holds:

- decoded blocks of members and plain files, keyed by their owner's token and block number;
- snapshots of inflater state (about 40 KB each, counted at ``ReadTuning.snapshot_cost``);
- reservations for compressed bytes fetched ahead of a reader and not yet decoded, so that a
  busy read-ahead evicts cached blocks instead of growing the process.

Entries leave least recently used first. A value taken with ``get`` stays valid after it is
evicted (bytes are immutable; Python frees them once the last reader drops them), so eviction
never invalidates what a reader is copying out. Reservations alone never evict beyond the
budget: ``reserve`` refuses when the reserved bytes would pass three quarters of it, and the
caller then fetches less far ahead.

What the budget holds must also leave the process when it is evicted: every 64 MiB evicted,
the allocator's free pages go back to the system (``give_back_free_memory``), so RSS follows
the budget rather than the heap's high-water mark.

Thread-safe with one lock; every operation is O(1) but for the evictions it causes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections import OrderedDict
from typing import Any, Hashable

_M_ARENA_MAX = -8  # mallopt parameter (glibc malloc.h)
_arenas_limited = False
_libc: Any = None


def _glibc() -> Any:
    """glibc through ctypes (None elsewhere: musl, macOS)."""
    global _libc
    if _libc is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc = libc if hasattr(libc, "malloc_trim") else False
        except OSError:
            _libc = False
    return _libc or None


def one_malloc_arena() -> bool:
    """Make glibc's malloc serve every thread from one arena (idempotent; False elsewhere).

    Blocks are allocated by decode workers and freed by whichever thread evicts them; with
    glibc's default of up to 8 arenas per core, each worker's arena keeps its own high-water
    mark, and a 256 MiB cache cost the daemon 420-520 MB of RSS (and more page faults). With
    one arena, freed blocks are reused by the next ones: RSS stays near the budget. The big
    allocations are few (one or two per MiB decoded), so the arena's lock is not contended;
    Python's small objects do not go through malloc at all. Call before starting threads.
    """
    global _arenas_limited
    if _arenas_limited:
        return True
    libc = _glibc()
    if libc is None:
        return False
    _arenas_limited = bool(libc.mallopt(_M_ARENA_MAX, 1))
    return _arenas_limited


def give_back_free_memory() -> None:
    """Return the allocator's free pages to the system (``malloc_trim``; nothing elsewhere).

    Why: blocks (1 MiB), compressed ranges (128 KiB to 4 MiB) and the HTTP layer's chunks
    come from one heap and are freed in another order than they were made (least recently
    used, by whichever thread evicts them); glibc keeps the holes they leave, and gives back
    only the top of the heap on its own. Measured: a 256 MiB cache reading a 5 GiB member held
    47 MB of free heap besides the cache (RSS 311 MB); ``malloc_trim`` also gives back whole
    free pages inside the heap (RSS 266 MB), at about 5% more CPU when called every 64 MiB
    evicted. A fixed ``M_MMAP_THRESHOLD`` (every large buffer its own mapping) gave the same
    RSS but cost 30% more time in page faults and unmaps.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


class BlockCache:
    """An LRU of byte-counted entries under ``capacity`` bytes, plus reservations."""

    def __init__(self, capacity: int, keep_share: float = 0.125,
                 trim_every: int = 64 << 20) -> None:
        self.capacity = max(0, int(capacity))
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        # Entries put with ``keep=True`` (snapshots: small, and each saves re-inflating up to
        # an interval) have their own LRU, evicted before blocks only beyond this share.
        self._kept: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._kept_used = 0
        self.keep_limit = int(self.capacity * keep_share)
        self._lock = threading.Lock()
        self._used = 0  # bytes of entries
        self._reserved = 0  # bytes promised to read-ahead in flight
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.peak = 0  # highest used + reserved seen
        # Evicted bytes since the allocator last gave its free pages back (see
        # ``give_back_free_memory``): every ``trim_every`` bytes it does.
        self.trim_every = trim_every
        self._freed = 0
        self.trims = 0

    # -- entries ---------------------------------------------------------------------------

    def get(self, key: Hashable) -> Any:
        """The value for ``key`` (now most recently used), or None."""
        with self._lock:
            for entries in (self._entries, self._kept):
                item = entries.get(key)
                if item is not None:
                    entries.move_to_end(key)
                    self.hits += 1
                    return item[0]
            self.misses += 1
            return None

    def put(self, key: Hashable, value: Any, size: int | None = None,
            keep: bool = False) -> bool:
        """Keep ``value`` (``size`` bytes, ``len(value)`` by default); False if it cannot fit.
        ``keep``: a small, valuable entry, evicted after blocks (see ``keep_share``)."""
        size = len(value) if size is None else int(size)
        with self._lock:
            self._pop(key)
            if size > self.capacity - self._reserved:
                return False
            if keep:
                self._kept[key] = (value, size)
                self._kept_used += size
            else:
                self._entries[key] = (value, size)
            self._used += size
            self._evict()
        self._trim_now_and_then()
        return True

    def demote(self, key: Hashable) -> None:
        """Make ``key`` the first to go (a block a sequential reader has gone past: the blocks
        decoded ahead of readers are worth more than those behind them)."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key, last=False)

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._pop(key)

    def _pop(self, key: Hashable) -> None:
        old = self._entries.pop(key, None)
        if old is None:
            old = self._kept.pop(key, None)
            if old is not None:
                self._kept_used -= old[1]
        if old is not None:
            self._used -= old[1]

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries or key in self._kept

    def __len__(self) -> int:
        return len(self._entries) + len(self._kept)

    # -- reservations ----------------------------------------------------------------------

    def reserve(self, size: int) -> bool:
        """Count ``size`` bytes of buffers in flight; False (nothing counted) if reservations
        would pass three quarters of the budget."""
        with self._lock:
            if self._reserved + size > self.capacity * 3 // 4:
                return False
            self._reserved += size
            self._evict()
        self._trim_now_and_then()
        return True

    def release(self, size: int) -> None:
        with self._lock:
            self._reserved = max(0, self._reserved - size)

    # -- figures -----------------------------------------------------------------------------

    @property
    def used(self) -> int:
        """Bytes held by entries."""
        return self._used

    @property
    def reserved(self) -> int:
        return self._reserved

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"capacity": self.capacity, "used": self._used, "reserved": self._reserved,
                    "entries": len(self._entries), "kept": len(self._kept),
                    "kept_bytes": self._kept_used, "hits": self.hits, "misses": self.misses,
                    "evictions": self.evictions, "peak": self.peak,
                    "trims": self.trims}

    def clear(self, kept: bool = True) -> None:
        """Drop every entry (``kept=False``: only the ordinary ones, not the kept ones)."""
        with self._lock:
            self._entries.clear()
            self._used = self._kept_used
            if kept:
                self._kept.clear()
                self._used = self._kept_used = 0

    def _trim_now_and_then(self) -> None:
        """Give the allocator's free pages back once ``trim_every`` bytes were evicted since
        the last time (outside the lock: it takes a few milliseconds)."""
        if self._freed < self.trim_every:
            return
        with self._lock:
            if self._freed < self.trim_every:
                return
            self._freed = 0
            self.trims += 1
        give_back_free_memory()

    def _evict(self) -> None:
        """Drop least recently used entries until entries + reservations fit (lock held):
        kept entries beyond their share first, then blocks, then kept ones."""
        while self._kept and self._kept_used > self.keep_limit:
            _, (_, size) = self._kept.popitem(last=False)
            self._kept_used -= size
            self._used -= size
            self._freed += size
            self.evictions += 1
        while self._used + self._reserved > self.capacity and (self._entries or self._kept):
            if self._entries:
                _, (_, size) = self._entries.popitem(last=False)
            else:
                _, (_, size) = self._kept.popitem(last=False)
                self._kept_used -= size
            self._used -= size
            self._freed += size
            self.evictions += 1
        total = self._used + self._reserved
        if total > self.peak:
            self.peak = total
