"""An open file of the mount: byte ranges of what the user sees -> bytes.

Readers see their object only through ``fetch(start, end) -> bytes``, absolute half-open
offsets in the stored object (a plain file, or the whole ZIP archive), so their tests need
nothing but bytes. All open files share one ``ReadContext``: the memory budget
(``blockcache.BlockCache``), the decode and fetch thread pools, and what is known about each
member (``_MemberState``: snapshots, CRC-32 progress, verdict).

How a read is answered
----------------------
What a reader returns is cut from *blocks* of decoded data at fixed offsets (1 MiB for
compressed members, 256 KiB for stored members and plain files), kept in the shared cache.
A FUSE read (128 KiB) is a lookup and a slice; only a miss decodes. Decoding happens in a
worker of the decode pool, one job per open file at a time, so that the FUSE thread returns
as soon as its block is ready while the worker goes on decoding the read-ahead window
(``prefetch.ReadAhead``: grows while reads are sequential, 0 after a seek) and the next
compressed ranges are already on their way (``prefetch.RangeFeed``): network, inflating and
FUSE copies overlap. Each open file's read-ahead is at most a fair share of what the budget
has left, and blocks a sequential reader has gone past are the first evicted, so blocks
decoded ahead are still there when their reader gets to them, however many files are read.

Where decoding starts (random access)
-------------------------------------
- Stored members and plain files map offsets directly: a stream starts at the block.
- Deflate: every ``interval`` (4 MiB) of output a decoder passes, it leaves a *snapshot*: a copy
  of the inflater state (``zlib.decompressobj().copy()``, ~40 KB) and the compressed offset to
  go on from. Snapshots live in the shared budget, least recently used out. A read far from
  the current stream starts from the nearest snapshot before it, so it inflates at most one
  interval (CPython has no ``inflatePrime``, so zran's bit-exact index is out of reach, but a
  copy taken at a byte boundary of the *input* needs none).
- A sequential pass from a deflate member's start inflates with zlib-ng's
  ``_ZlibDecompressor`` when it is there (``_FastInflater``: markedly faster, but it cannot be
  copied), so it leaves no snapshots; the first random read after it decodes from the start
  with ``decompressobj`` and lays them on its way. A member whose blocks were needed again
  after such a pass is decoded with snapshots from then on.
- Deflate64, bzip2, LZMA, xz and zstd cannot be copied: a read ahead of the open file's stream
  decodes through, a read behind it restarts from the member's start; decoded blocks stay in
  the cache, so going back over recent data costs nothing.

What is verified (CRC-32 and size)
----------------------------------
- Structure: any stream that reaches the member's end checks that the data ends there (no
  output beyond the recorded size, the compressed stream complete). The block holding the end
  is cached and returned only after that check.
- CRC-32 is computed incrementally over blocks in order from offset 0: by the decode job as
  it makes them, and by readers over blocks found in the cache (any handle of the member). When that running CRC reaches the member's
  end it is compared with the expected one, *before* the last block is returned. A mismatch
  (or any corrupt-data error) marks the member bad for every handle, so no further byte of it
  is returned, even from the cache.
- Members no larger than ``window`` (8 MiB in the mount) are decoded and checked whole before
  their first byte is returned, so a damaged small member never yields data.
- A large member returns its blocks as they are decoded; if it is damaged, the read that
  reaches its end fails (as may reads after the decoder got there ahead of the reader), so
  ``cp``/``cat``/``cmp`` end with an error.
- Not verified: a member never read in order through its end (random access only, e.g. a
  database read page by page) cannot be CRC-checked; its last block is returned after the
  structural check only. Plain files have no checksum.
- The expected CRC-32 comes from the listing (``crc32``, sent by this project's server) or,
  when the listing lacks it (the Inductiva API), from ``crc_lookup``: ``archive_crc`` reads it
  from the member's data descriptor or local header, fetching at most a few KiB, only when a
  member was read to its end.

Threads: FUSE's multithreaded loop may call ``read`` on one handle from several threads and
on many handles at once. Each reader has one condition variable guarding its stream and job;
the shared state has its own lock; the cache has one lock.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Hashable

from cachetools import LRUCache

from ... import protocol
from ...zipfmt import codecs
from ...zipfmt import local as ziplocal
from .blockcache import SNAPSHOT_COST, BlockCache, one_malloc_arena
from ...errors import CorruptArchive
from .readahead import DEPTH, ReadAhead, RangeFeed

log = logging.getLogger(__name__)

Fetch = Callable[[int, int], bytes]

KiB, MiB = 1 << 10, 1 << 20
BLOCK = 1 * MiB  # decoded block of a compressed member
STORED_BLOCK = 256 * KiB  # block of a stored member or a plain file: a random read fetches one
INTERVAL = 4 * MiB  # deflate output between two snapshots: at most this is re-inflated
# Compressed bytes given to the inflater at once: enough for several blocks, so a block comes
# out of one call (no join); what it does not consume is copied back each call, so not more.
_INPUT_PIECE = 1 * MiB
_MAX_IDLE_STEPS = 64
_JOB_BLOCKS = 8  # blocks one job decodes before it yields its worker (fairness across files)
# Memory a running decode job uses that no entry counts: its input piece and the inflater's
# unconsumed input, output pieces and their join, and what the allocator keeps around them.
# With eight 64 MiB members read at once and a 256 MiB budget the daemon peaked at 280 MB.
_JOB_MEMORY = 4 * MiB
_RECENT = 2  # blocks a reader keeps besides the cache: progress even when the cache is tiny


class ReadContext:
    """What all open files of a mount share: the memory budget, thread pools, member states.

    ``cache_size`` bounds decoded blocks, snapshots and read-ahead buffers together. Of it,
    an eighth (at most 32 MiB) is left out of the cache's budget for what it cannot
    count: the HTTP layer's copies of a body, zlib's output pieces before they are joined,
    blocks a FUSE thread still holds after their eviction, and the allocator's free lists.
    Measured: a 256 MiB cache and ``cat`` of a 512 MiB member held 67 MiB more than the
    cache counted before this margin.
    """

    def __init__(self, cache_size: int = 256 * MiB, *, read_ahead: int = 16 * MiB,
                 interval: int = INTERVAL, decode_workers: int = 16,
                 fetch_workers: int = 16) -> None:
        one_malloc_arena()  # RSS near the budget (see there); before the pools start threads
        self.cache = BlockCache(cache_size - min(cache_size // 8, 32 * MiB))
        # A sequential reader keeps at most this much decoded ahead of it; with many readers
        # at once each keeps a fair part of the budget.
        self.read_ahead = max(BLOCK, min(read_ahead, cache_size // 8))
        self.interval = max(BLOCK, interval // BLOCK * BLOCK)
        self.decode_pool, self.fetch_pool = _pools(decode_workers, fetch_workers)
        self._states: LRUCache = LRUCache(4096)
        self.queued = 0  # decode jobs submitted and not started: running ones yield to them
        self.open_readers = 0
        self._lock = threading.Lock()

    def state(self, key: Hashable | None, make: Callable[[], "_MemberState"]) -> "_MemberState":
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

    def ahead_limit(self) -> int:
        """Read-ahead one open file may use now: a fair share of what the budget has left,
        so that blocks decoded ahead are still there when their reader gets to them."""
        cache = self.cache
        share = (cache.capacity - cache.reserved) // (2 * max(1, self.open_readers))
        return max(BLOCK, min(self.read_ahead, share))

    def stats(self) -> dict:
        return self.cache.stats()

    def close(self) -> None:
        """Drop what is cached (the pools are the process's and stay)."""
        self.cache.clear()


_pool_lock = threading.Lock()
_pool_table: dict[tuple[int, int], tuple[ThreadPoolExecutor, ThreadPoolExecutor]] = {}


def _pools(decode_workers: int, fetch_workers: int) -> tuple[ThreadPoolExecutor,
                                                              ThreadPoolExecutor]:
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


_tokens = itertools.count(1)


class _MemberState:
    """What every handle of one member shares: snapshots, the running CRC-32, the verdict."""

    def __init__(self, size: int, crc32: int | None,
                 crc_lookup: Callable[[], int | None] | None, name: str) -> None:
        self.token = next(_tokens)  # cache keys: a forgotten state's blocks are unreachable
        self.size = size
        self.expected_crc = crc32
        self.crc_lookup = crc_lookup
        self.name = name
        self.lock = threading.Lock()
        self.whole_lock = threading.Lock()
        self.snapshots: list[int] = []  # output offsets with a snapshot (hints; may be evicted)
        self.crc_pos = 0
        self.crc = 0
        self.verified = False  # CRC-32 (or size, when no CRC is known) checked at the end
        self.no_fast = False  # a block was needed again after a pass without snapshots
        self.error: CorruptArchive | None = None

    def fail(self, error: CorruptArchive) -> None:
        if self.error is None:
            self.error = error

    def advance(self, start: int, block: bytes, cached: Callable[[int], bytes | None]) -> None:
        """Extend the running CRC-32 with the block at ``start`` if it is the next in order,
        then with the blocks after it that ``cached(offset)`` still has (FUSE threads may take
        neighbouring blocks out of order); at the end, compare (CorruptArchive, and the member
        is bad, on a mismatch)."""
        with self.lock:
            while self.crc_pos == start and block:
                self.crc = codecs.fast_zlib.crc32(block, self.crc)
                self.crc_pos += len(block)
                if self.crc_pos >= self.size:
                    break
                start = self.crc_pos
                block = cached(start)
            if self.crc_pos < self.size or self.verified:
                return
            if self.expected_crc is None and self.crc_lookup is not None:
                self.expected_crc = self.crc_lookup()
                self.crc_lookup = None
            if self.expected_crc is not None and self.crc != self.expected_crc:
                self.fail(CorruptArchive(f"{self.name}: CRC-32 mismatch: got {self.crc:08x}, "
                                         f"expected {self.expected_crc:08x}"))
                raise self.error
            self.verified = True

    def add_snapshot(self, offset: int) -> None:
        with self.lock:
            i = bisect.bisect_left(self.snapshots, offset)
            if i == len(self.snapshots) or self.snapshots[i] != offset:
                self.snapshots.insert(i, offset)

    def snapshots_before(self, offset: int) -> list[int]:
        """Snapshot offsets at or before ``offset``, nearest first."""
        with self.lock:
            i = bisect.bisect_right(self.snapshots, offset)
            return self.snapshots[:i][::-1]

    def forget_snapshot(self, offset: int) -> None:
        with self.lock:
            i = bisect.bisect_left(self.snapshots, offset)
            if i < len(self.snapshots) and self.snapshots[i] == offset:
                del self.snapshots[i]


class _FastInflater:
    """Raw deflate for sequential passes, through zlib-ng's ``_ZlibDecompressor``.

    It allocates its output at the size asked for and inflates a block in one call, where
    ``decompressobj`` grows its buffer from 16 KiB by doubling (a reallocation and a GIL
    round trip each time): inflating 512 MiB took 0.65-0.9 s instead of 1.2-1.3 s here. Its
    state cannot be copied, so a stream that starts with it leaves no snapshots: a reader that
    goes on sequentially never needs them, and the first random read after such a pass lays
    them as it decodes. The interface is the part of ``codecs.Decoder`` a stream uses.
    """

    available = hasattr(codecs.fast_zlib, "_ZlibDecompressor")
    name = "deflate"
    can_copy = False

    def __init__(self) -> None:
        self._obj = codecs.fast_zlib._ZlibDecompressor(-zlib.MAX_WBITS)

    @property
    def eof(self) -> bool:
        return self._obj.eof

    @property
    def needs_input(self) -> bool:
        return self._obj.eof or self._obj.needs_input

    def decompress(self, data, max_length: int = -1) -> bytes:
        if self._obj.eof:
            return b""  # bytes after the end of the stream are ignored, as zipfile does
        try:
            return self._obj.decompress(data, max_length)
        except codecs.fast_zlib.error as exc:
            raise CorruptArchive(f"deflate data is corrupt: {exc}") from None

    def flush(self) -> bytes:
        if not self._obj.eof:
            raise CorruptArchive("deflate data is truncated (no end of stream)")
        return b""


class _Stream:
    """One decoder run from ``out_pos`` on, fed by a ``RangeFeed``; owned by one thread at a
    time (the reader's job, or the reader while no job runs)."""

    def __init__(self, decoder: codecs.Decoder | None, out_pos: int, in_pos: int,
                 feed: RangeFeed) -> None:
        self.decoder = decoder  # None for stored data
        self.out_pos = out_pos
        self.in_given = in_pos  # compressed bytes given to the decoder (member offsets)
        self.feed = feed
        self.depth = 0  # read-ahead depth the reader wants; the job applies it
        # Whether the decoder leaves snapshots (stored data needs none: it maps directly).
        self.decoder_can_copy = decoder is None or decoder.can_copy
        self._piece = memoryview(b"")
        self.hint = 0  # compressed bytes expected for the first request

    def take(self, limit: int) -> memoryview | None:
        """Up to ``limit`` bytes of compressed input (None at the member's end)."""
        if not self._piece:
            self._piece.release()  # an empty slice still holds the whole previous chunk
            data = self.feed.next(self.hint)
            self.hint = 0
            if data is None:
                return None
            self._piece = memoryview(data)
        piece, self._piece = self._piece[:limit], self._piece[limit:]
        self.in_given += len(piece)
        return piece

    def skip(self, count: int) -> None:
        """Stored data only: move ``count`` bytes forward without reading them."""
        held = min(count, len(self._piece))
        self._piece = self._piece[held:]
        self.in_given += held
        self.out_pos += count
        if count > held:
            self.feed.skip_to(self.feed.position + count - held)
            self.in_given += count - held

    def close(self) -> None:
        self.feed.close()
        self._piece = memoryview(b"")


class _BlockReader:
    """The engine of both readers: blocks, a decode job, read-ahead (see the module notes)."""

    def __init__(self, fetch: Fetch, *, size: int, name: str, method: int, data_start: int,
                 compressed_size: int, crc32: int | None,
                 crc_lookup: Callable[[], int | None] | None, whole: bool, checked: bool,
                 context: ReadContext | None, key: Hashable | None) -> None:
        self.size = size
        self.name = name
        self.method = method
        self._fetch = fetch
        self._data_start = data_start
        self._compressed_size = compressed_size
        self._ctx = ctx = context or default_context()
        self._stored = method == protocol.STORED
        self._block = STORED_BLOCK if self._stored else BLOCK
        self._last = (size - 1) // self._block if size > 0 else -1
        self._whole = whole and size > 0
        self._checked = checked  # a CRC-32/size verdict exists for this data (not plain files)
        self._state = ctx.state(key, lambda: _MemberState(size, crc32, crc_lookup, name))
        self._token = self._state.token
        self._can_snapshot = not self._stored and codecs.make_decoder(method).can_copy
        self._ratio = min(1.0, compressed_size / size) if size else 1.0
        self._ra = ReadAhead(initial=self._block, maximum=ctx.read_ahead)
        self._cond = threading.Condition(threading.Lock())
        self._stream: _Stream | None = None
        self._target = 0  # the job decodes until the stream reaches this output offset
        self._running = False  # a job is queued or running
        self._error: BaseException | None = None  # the last job's failure
        self._errors = 0  # failures so far: waiters raise the one that happened while waiting
        self._recent: dict[int, bytes] = {}
        self._waiting = 0  # readers waiting for the job
        self._holding = 0  # budget reserved for the blocks held outside the cache
        self._cur: tuple[int, bytes] = (-1, b"")
        self._closed = False
        self.restarts = 0  # streams started, for tests and debugging
        with ctx._lock:
            ctx.open_readers += 1
        self.decoded = 0  # bytes decoded (or copied, stored data) by this reader's jobs

    # -- the surface ---------------------------------------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        error = self._state.error
        if error is not None:
            raise error
        end = min(offset + length, self.size)
        if offset >= end or offset < 0:
            return b""
        if self._whole and not self._state.verified:
            self._check_whole()
        ahead = self._ra.note(offset, end)
        if ahead:
            ahead = min(ahead, self._ctx.ahead_limit())
        size = self._block
        first, last = offset // size, (end - 1) // size
        if first == last:
            block = self._get(first, ahead)
            start = first * size
            if offset == start and end - start == len(block):
                return block
            return block[offset - start:end - start]
        parts = []
        for index in range(first, last + 1):
            block = self._get(index, ahead)
            start = index * size
            parts.append(block[max(offset, start) - start:min(end, start + len(block)) - start])
        return b"".join(parts)

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            with self._ctx._lock:
                self._ctx.open_readers -= 1
            if self._holding > 0:
                self._ctx.cache.release(self._holding)
            self._holding = -1
            self._closed = True
            self._target = 0
            if not self._running and self._stream is not None:
                self._stream.close()
                self._stream = None
            self._recent.clear()
            self._cur = (-1, b"")

    # -- blocks --------------------------------------------------------------------------------

    def _get(self, index: int, ahead: int) -> bytes:
        cur = self._cur
        if cur[0] == index:
            return cur[1]
        block = self._ctx.cache.get((self._token, index))
        if block is None:
            block = self._produce(index, ahead)
        if self._checked and self._state.crc_pos == index * self._block:
            self._state.advance(index * self._block, block, self._cached)
        self._cur = (index, block)
        if ahead:
            if index >= 2:  # two back: the kernel may still ask for the one just before
                self._ctx.cache.demote((self._token, index - 2))
            self._keep_ahead(index, ahead)
        return block

    def _cached(self, offset: int) -> bytes | None:
        """The block at ``offset`` if this reader or the cache has it."""
        index = offset // self._block
        block = self._recent.get(index)
        return block if block is not None else self._ctx.cache.get((self._token, index))

    def _check_whole(self) -> None:
        """Small members: decode and check everything before the first byte goes out."""
        with self._state.whole_lock:
            for index in range(self._last + 1):
                if self._state.verified:
                    return
                self._get(index, self.size)
            if self._checked and not self._state.verified and self._state.error is None:
                # The CRC was extended elsewhere out of order (cannot happen in practice).
                raise CorruptArchive(f"{self.name}: could not be checked")

    def _produce(self, index: int, ahead: int) -> bytes:
        """Block ``index`` that is in no cache: wait for the job, starting it if needed."""
        size = self._block
        start = index * size
        want = min(self.size, start + size + ahead)
        key = (self._token, index)
        with self._cond:
            seen = self._errors
            while True:
                block = self._recent.get(index)
                if block is None:
                    block = self._ctx.cache.get(key)
                if block is not None:
                    return block
                if self._state.error is not None:
                    raise self._state.error
                if self._errors != seen:
                    raise self._error
                if self._closed:
                    raise ValueError(f"{self.name}: read after close")
                s = self._stream
                if s is not None and s.out_pos > start and not s.decoder_can_copy:
                    # Decoded and gone already: from now on this member is decoded with
                    # snapshots, so that this costs an interval at most the next time.
                    self._state.no_fast = True
                if self._running:
                    if s is not None and s.out_pos <= start and self._reaches(s, start):
                        self._target = max(self._target, want)
                    else:
                        self._target = 0  # a seek: stop at the end of the current block
                    self._wait()
                    continue
                self._stream = s = self._start_for(start, s, sequential=bool(ahead))
                s.depth = DEPTH if ahead and want > start + size else 0
                if not ahead:  # random access: one request for what the decoder will need
                    s.hint = int((start + size - s.out_pos) * self._ratio * 1.1) + 16 * KiB
                self._target = want
                self._running = True
                self._ctx.submit(self._job)
                self._wait()

    def _wait(self) -> None:
        """Wait (lock held) for the job to make a block or stop."""
        self._waiting += 1
        try:
            self._cond.wait()
        finally:
            self._waiting -= 1

    def _keep_ahead(self, index: int, ahead: int) -> None:
        """A sequential reader moved to block ``index``: keep decoding up to ``ahead`` bytes
        past it. A job that got there rests until the reader has used half of that, so jobs
        run for half a window at a time rather than one block per read."""
        size = self._block
        here = (index + 1) * size
        want = min(self.size, here + ahead)
        if self._running and want <= self._target:
            return
        s = self._stream
        if s is None or s.out_pos >= want:
            return
        with self._cond:
            s = self._stream
            if s is None or self._closed or s.out_pos >= want:
                return
            if s.out_pos + size < index * size:
                return  # the reader is served from the cache ahead of this stream
            if self._running:
                self._target = max(self._target, want)
                return
            if s.out_pos - here > ahead // 2:
                return  # still well ahead
            self._target = want
            s.depth = DEPTH
            self._running = True
            self._ctx.submit(self._job)

    def _reaches(self, s: _Stream, start: int) -> bool:
        """Whether stream ``s`` (before ``start``) should go on to ``start`` rather than a new
        stream begin there."""
        distance = start - s.out_pos
        if self._stored:
            return distance <= 4 * self._block
        if not self._can_snapshot or distance <= self._block:
            return True
        cache = self._ctx.cache
        for offset in self._state.snapshots_before(start):  # nearest first
            if offset <= s.out_pos:
                return True
            if (self._token, "snap", offset) in cache:
                return False  # a snapshot closer than the stream
        return True

    def _start_for(self, start: int, current: _Stream | None,
                   sequential: bool = False) -> _Stream:
        """The stream to decode block-aligned ``start`` from: ``current`` if it is the best
        place, else one from a snapshot, the block itself (stored) or the member's start."""
        if current is not None and current.out_pos <= start and self._reaches(current, start):
            if self._stored and current.out_pos < start:
                current.skip(start - current.out_pos)
            return current
        if current is not None:
            current.close()
        self.restarts += 1
        if self._stored:
            return self._new_stream(None, start, start)
        if self._can_snapshot:
            cache = self._ctx.cache
            for offset in self._state.snapshots_before(start):
                snap = cache.get((self._token, "snap", offset))
                if snap is None:
                    self._state.forget_snapshot(offset)
                    continue
                decoder, in_pos = snap
                return self._new_stream(decoder.copy(), offset, in_pos)
        if sequential and self.method == protocol.DEFLATED and _FastInflater.available and \
                not self._state.no_fast:
            return self._new_stream(_FastInflater(), 0, 0)
        return self._new_stream(codecs.make_decoder(self.method), 0, 0)

    def _new_stream(self, decoder, out_pos: int, in_pos: int) -> _Stream:
        ctx = self._ctx
        if not self._holding:  # the blocks this reader keeps out of the cache (_recent, _cur)
            held = (_RECENT + 1) * self._block
            self._holding = held if ctx.cache.reserve(held) else -1
        feed = RangeFeed(self._fetch, self._data_start + in_pos,
                         self._data_start + self._compressed_size, pool=ctx.fetch_pool,
                         budget=ctx.cache)
        return _Stream(decoder, out_pos, in_pos, feed)

    # -- the job: decoding in a worker -------------------------------------------------------

    def _job(self) -> None:
        self._ctx.started()
        # The decoder's own buffers (its input piece, zlib's output pieces, the block being
        # joined) count too.
        working = _JOB_MEMORY if self._ctx.cache.reserve(_JOB_MEMORY) else 0
        try:
            self._run_job()
        finally:
            if working:
                self._ctx.cache.release(working)

    def _run_job(self) -> None:
        made = 0
        while True:
            with self._cond:
                s = self._stream
                if s is None or self._closed or s.out_pos >= min(self._target, self.size):
                    self._running = False
                    if self._closed and s is not None:
                        s.close()
                        self._stream = None
                    self._cond.notify_all()
                    return
                if made >= _JOB_BLOCKS and self._ctx.queued:  # other files' jobs wait
                    self._ctx.submit(self._job)
                    return
                depth = s.depth
            if s.feed.depth != depth:
                s.feed.set_depth(depth)
            index = s.out_pos // self._block
            try:
                block = self._decode_block(s)
                if self._checked and self._state.crc_pos == index * self._block:
                    # In order from the start: checked here, before anyone can have it.
                    self._state.advance(index * self._block, block, self._cached)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting readers
                if isinstance(exc, CorruptArchive):
                    self._state.fail(exc)
                with self._cond:
                    self._error = exc
                    self._errors += 1
                    self._stream = None
                    self._running = False
                    self._cond.notify_all()
                s.close()
                return
            self._ctx.cache.put((self._token, index), block)
            with self._cond:
                self._recent[index] = block
                if len(self._recent) > _RECENT:
                    del self._recent[next(iter(self._recent))]
                if self._waiting:
                    self._cond.notify_all()
            made += 1

    def _decode_block(self, s: _Stream) -> bytes:
        """The block at ``s.out_pos``: decode it, check the end if it holds it, snapshot."""
        stop = min(self.size, (s.out_pos // self._block + 1) * self._block)
        if self._stored:
            block = self._copy_block(s, stop)
        else:
            block = self._inflate_block(s, stop)
        self.decoded += len(block)
        if stop == self.size:
            self._check_end(s)
        elif s.decoder is not None and s.decoder.can_copy and \
                s.out_pos % self._ctx.interval == 0:
            key = (self._token, "snap", s.out_pos)
            if key not in self._ctx.cache:
                decoder, held = s.decoder.checkpoint()
                if self._ctx.cache.put(key, (decoder, s.in_given - held), SNAPSHOT_COST,
                                       keep=True):
                    self._state.add_snapshot(s.out_pos)
        return block

    def _copy_block(self, s: _Stream, stop: int) -> bytes:
        parts = []
        while s.out_pos < stop:
            piece = s.take(stop - s.out_pos)
            if piece is None:
                raise CorruptArchive(f"{self.name}: member has {s.out_pos} bytes, "
                                     f"expected {self.size}")
            parts.append(piece)
            s.out_pos += len(piece)
        return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)

    def _inflate_block(self, s: _Stream, stop: int) -> bytes:
        decoder = s.decoder
        parts = []
        idle = 0
        while s.out_pos < stop:
            want = stop - s.out_pos
            if decoder.needs_input:
                piece = s.take(_INPUT_PIECE)
                if piece is None:  # no compressed data left before the recorded size
                    tail = decoder.flush()  # CorruptArchive when the stream is cut short
                    if len(tail) >= want:
                        raise CorruptArchive(f"{self.name}: member is longer than its "
                                             "recorded size")
                    raise CorruptArchive(f"{self.name}: member has {s.out_pos + len(tail)} "
                                         f"bytes, expected {self.size}")
                out = decoder.decompress(piece, want)
            else:
                out = decoder.decompress(b"", want)
                idle = 0 if out else idle + 1
                if idle > _MAX_IDLE_STEPS:
                    raise CorruptArchive(f"{self.name}: the {decoder.name} decoder stopped "
                                         "producing data")
            if out:
                parts.append(out)
                s.out_pos += len(out)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _check_end(self, s: _Stream) -> None:
        """The decoder produced ``size`` bytes: the data must end here."""
        if self._stored:
            if self._compressed_size != self.size:
                raise CorruptArchive(f"{self.name}: member has {self._compressed_size} bytes, "
                                     f"expected {self.size}")
            return
        decoder = s.decoder
        idle = 0
        while not decoder.eof:
            if decoder.needs_input:
                piece = s.take(_INPUT_PIECE)
                if piece is None:
                    break
                out = decoder.decompress(piece, 1)
            else:
                out = decoder.decompress(b"", 1)
                idle += 1
                if idle > _MAX_IDLE_STEPS:
                    break
            if out:
                raise CorruptArchive(f"{self.name}: member is longer than its recorded size")
        if decoder.flush():  # CorruptArchive when the stream is cut short
            raise CorruptArchive(f"{self.name}: member is longer than its recorded size")


class MemberReader(_BlockReader):
    """A ZIP member: decoded bytes at any offset, verified at the end (see module notes).

    ``key`` names the member for the context (archive path, version, data offset): handles
    with the same key share blocks, snapshots and the CRC verdict. ``window``: members up to
    this size are checked whole before their first byte is returned.
    """

    def __init__(self, fetch: Fetch, *, data_start: int, compressed_size: int, size: int,
                 method: int, crc32: int | None = None,
                 crc_lookup: Callable[[], int | None] | None = None, name: str = "",
                 window: int = 8 * MiB, context: ReadContext | None = None,
                 key: Hashable | None = None) -> None:
        codecs.make_decoder(method)  # UnsupportedMethod at open, not at the first read
        super().__init__(fetch, size=size, name=name, method=method, data_start=data_start,
                         compressed_size=compressed_size, crc32=crc32, crc_lookup=crc_lookup,
                         whole=size <= window, checked=True, context=context, key=key)


class RangeReader(_BlockReader):
    """A plain file: 256 KiB blocks fetched with ranged reads, ahead of sequential readers."""

    def __init__(self, fetch: Fetch, size: int, *, window: int = 8 * MiB, name: str = "",
                 context: ReadContext | None = None, key: Hashable | None = None) -> None:
        super().__init__(fetch, size=size, name=name, method=protocol.STORED, data_start=0,
                         compressed_size=size, crc32=None, crc_lookup=None, whole=False,
                         checked=False, context=context, key=key)


# -- the CRC-32 of a member, from the archive itself ------------------------------------------

def archive_crc(fetch: Fetch, data_start: int, compressed_size: int) -> int | None:
    """The CRC-32 recorded for the member whose compressed data starts at ``data_start``.

    The local header is the one just before the data (found by its signature, and by its name
    and extra lengths ending exactly at ``data_start``). Without flag bit 3 its CRC field is
    the member's; with it (streamed archives) the CRC sits in the data descriptor right after
    the compressed data, behind an optional ``PK\\x07\\x08`` signature (4.3.9). None when
    the header cannot be found: the member is then served unchecked.
    """
    header = _find_local_header(fetch, data_start)
    if header is None:
        return None
    if not header.crc_in_descriptor:
        return header.crc32
    after = data_start + compressed_size
    return ziplocal.descriptor_crc(fetch(after, after + 8))


def _find_local_header(fetch: Fetch, data_start: int) -> ziplocal.LocalHeader | None:
    """Look 4 KiB back first (names and extras are short), then as far as a header can span."""
    for span in (4096, ziplocal.LOCAL_HEADER_MAX):
        begin = max(0, data_start - span)
        header = ziplocal.header_ending_at(fetch(begin, data_start))
        if header is not None or begin == 0:
            return header
    return None
