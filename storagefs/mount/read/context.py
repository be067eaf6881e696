"""What all open files of a mount share: the memory budget, the thread pools, member states.

One ``ReadContext`` per mount (``default_context()`` for readers made without one: tests,
scripts). Its ``BlockCache`` is the one budget for decoded blocks, snapshots and read-ahead;
the decode and fetch pools are the process's, shared by every context with the same sizes.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Hashable

from cachetools import LRUCache

from .blockcache import BlockCache, one_malloc_arena
from .member import MemberState
from .readahead import LinkMeter
from .tuning import TUNING, MiB, ReadTuning

if TYPE_CHECKING:
    from .checkpoints import CheckpointIndex


class ReadContext:
    """What all open files of a mount share: the memory budget, thread pools, member states.

    ``cache_size`` bounds decoded blocks, snapshots and read-ahead buffers together. Of it,
    an eighth (at most 32 MiB) is left out of the cache's budget for what it cannot
    count: the HTTP layer's copies of a body, zlib's output pieces before they are joined,
    blocks a FUSE thread still holds after their eviction, and the allocator's free lists.
    Measured: a 256 MiB cache and ``cat`` of a 512 MiB member held 67 MiB more than the
    cache counted before this margin. ``interval``: deflate output between two snapshots
    (``tuning.interval`` by default). ``fetch_workers``: ranged GETs in flight at once for
    the whole mount; fewer than the HTTP client keeps connections (``ClientConfig.pool_size``,
    16), so that listings and signed URLs asked beside a full fetch pool reuse a kept
    connection too (past the pool, urllib3 opens one per request and closes it: on a long link
    with TLS, two or three round trips before the first byte). ``checkpoints``: deflate
    checkpoints on disk (``--cache-dir``).
    """

    def __init__(self, cache_size: int = 256 * MiB, *, read_ahead: int = 16 * MiB,
                 interval: int | None = None, decode_workers: int = 16,
                 fetch_workers: int = 12, tuning: ReadTuning = TUNING,
                 checkpoints: CheckpointIndex | None = None) -> None:
        one_malloc_arena()  # RSS near the budget (see there); before the pools start threads
        self.tuning = tuning
        self.checkpoints = checkpoints
        block = tuning.block
        self.cache = BlockCache(cache_size - min(cache_size // 8, 32 * MiB))
        # A sequential reader keeps at most this much decoded ahead of it; with many readers
        # at once each keeps a fair part of the budget.
        self.read_ahead = max(block, min(read_ahead, cache_size // 8))
        interval = tuning.interval if interval is None else interval
        self.interval = max(block, interval // block * block)
        self.decode_pool, self.fetch_pool = _pools(decode_workers, fetch_workers)
        self._states: LRUCache[Hashable, MemberState] = LRUCache(tuning.member_states)
        self.link = LinkMeter(self.fetch_limit)
        self.queued = 0  # decode jobs submitted and not started: running ones yield to them
        self.open_readers = 0
        self._lock = threading.Lock()

    def state(self, key: Hashable | None, make: Callable[[], MemberState]) -> MemberState:
        """The shared state of the member ``key`` (a fresh, unshared one for None)."""
        if key is None:
            return make()
        with self._lock:
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = make()
            return state

    def submit(self, job: Callable[[], None]) -> None:
        """Run a reader's decode job on the pool (the job calls ``started`` first)."""
        with self._lock:
            self.queued += 1
        self.decode_pool.submit(job)

    def started(self) -> None:
        with self._lock:
            self.queued -= 1

    def opened(self, count: int = 1) -> None:
        """A reader opened (``count`` -1: closed); read-ahead shares depend on how many."""
        with self._lock:
            self.open_readers += count

    def ahead_limit(self) -> int:
        """Read-ahead one open file may use now: a fair share of what the budget has left,
        so that blocks decoded ahead are still there when their reader gets to them."""
        cache = self.cache
        share = (cache.capacity - cache.reserved) // (2 * max(1, self.open_readers))
        return max(self.tuning.block, min(self.read_ahead, share))

    def fetch_limit(self) -> int:
        """Compressed bytes one sequential stream may keep in flight now: a fair share of
        what reservations may take (three quarters of the budget, counted twice while in
        flight: ``readahead.RangeFeed``), at most ``max_in_flight``."""
        share = self.cache.capacity * 3 // 8 // max(1, self.open_readers)
        return max(self.tuning.max_request, min(self.tuning.max_in_flight, share))

    def stats(self) -> dict:
        return self.cache.stats()

    def close(self) -> None:
        """Drop what is cached (the pools are the process's and stay)."""
        self.cache.clear()


_pool_lock = threading.Lock()
_pool_table: dict[tuple[int, int], tuple[ThreadPoolExecutor, ThreadPoolExecutor]] = {}


def _pools(decode_workers: int,
           fetch_workers: int) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
    """Thread pools shared by the contexts of a process (threads start when first needed)."""
    with _pool_lock:
        key = (decode_workers, fetch_workers)
        if key not in _pool_table:
            _pool_table[key] = (ThreadPoolExecutor(decode_workers, "storagefs-decode"),
                                ThreadPoolExecutor(fetch_workers, "storagefs-fetch"))
        return _pool_table[key]


_default: ReadContext | None = None
_default_lock = threading.Lock()


def default_context() -> ReadContext:
    """A process-wide context for readers made without one (tests, scripts)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ReadContext()
        return _default
