"""Read-ahead: how far ahead of a reader to decode, and compressed ranges fetched in advance.

Two small pieces (mountpoint-s3's ``prefetch.rs`` is the model; their numbers, with the
reasons for them, are in ``tuning.ReadTuning``):

``ReadAhead`` watches one open file's reads. A read that starts where the previous ones ended
(give or take ``tolerance``: FUSE's threads hand over neighbouring kernel read-ahead requests
out of order) is sequential, and each sequential read doubles the decoded read-ahead window,
from ``initial`` to ``maximum``. Any other read is a seek: the window drops to 0, so random
access (a database, a viewer jumping around) decodes only what it asks for. The first read at
offset 0 counts as sequential: that is how ``cat``, ``cp`` and ``grep`` start. The window is
in decoded bytes; the reader turns it into a target for its decoder, which runs in a worker
thread while FUSE hands out what is already decoded.

``RangeFeed`` hands a decoder the compressed bytes ``[start, end)`` of one member in order.
Without read-ahead (``depth`` 0) each piece is fetched when asked for, sized by a hint (a
random read knows roughly how much compressed data one interval needs) or growing from 128 KiB
(one kernel read-ahead unit) by doubling to ``maximum``. With ``depth`` n, at least n ranges
are in flight on the fetch pool (so on several pooled connections) while the decoder works
through the previous one: network and CPU overlap. On a long link two ranges cannot keep a
decoder fed (the bandwidth-delay product: 200 MB/s over a 50 ms round trip is 10 MB in
flight), so the feed measures the consumer's rate and a request's time and keeps their product,
with headroom, asked for ahead (``window``); a wait for a range asked ahead widens it at
once. Wide windows take larger ranges (fewer connections). ``LinkMeter``, one per mount, keeps
the last window, so the next stream starts there, and says how much one stream may keep in
flight (its share of the budget; mountpoint-s3's prefetcher grows its window the same way
under a memory limiter, gcsfuse splits a read into parallel ranged downloads).

A feed never asks for a byte at or beyond ``end`` (the next member), and bytes already
fetched are kept when the decoder skips forward. Buffers in flight, and the piece the
decoder is working through, are counted in the mount's one memory budget
(``BlockCache.reserve``); when the budget refuses, the feed fetches in the decoder's thread
instead of ahead of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Executor, Future
from typing import Callable

from ...errors import TransferError
from ...zipfmt import Fetch
from .blockcache import BlockCache
from .tuning import TUNING, MiB

log = logging.getLogger(__name__)


def checked_fetch(fetch: Fetch, start: int, end: int) -> bytes:
    """``fetch`` that must return exactly ``end - start`` bytes."""
    data = fetch(start, end)
    if len(data) != end - start:
        raise TransferError(f"asked for bytes {start}-{end - 1}, got {len(data)} bytes")
    return data


class ReadAhead:
    """Sequential or not, and the decoded read-ahead window that follows (module notes)."""

    def __init__(self, initial: int = 1 * MiB, maximum: int = 16 * MiB,
                 tolerance: int = 1 * MiB) -> None:
        self.initial = initial
        self.maximum = max(initial, maximum)
        self.tolerance = tolerance
        self.window = 0
        self._next = -1  # where the next sequential read starts (-1: nothing read yet)

    def note(self, offset: int, end: int) -> int:
        """Record a read of ``[offset, end)``; the read-ahead window that follows, in bytes."""
        if self._next < 0:
            sequential = offset == 0
        else:
            sequential = abs(offset - self._next) <= self.tolerance
        if sequential:
            self.window = min(self.maximum, self.window * 2) if self.window else self.initial
            if end > self._next:
                self._next = end
        else:
            self.window = 0
            self._next = end
        return self.window


class LinkMeter:
    """What a mount's feeds learn about the link, shared so that a new stream starts from it.

    ``window``: the compressed bytes in flight that last kept a sequential decoder fed (the
    bandwidth-delay product as measured, with headroom); ``limit()``: the most one feed may keep
    in flight now (the context's fair share of the memory budget).
    """

    def __init__(self, limit: Callable[[], int] | None = None) -> None:
        self.window = 0
        self._limit = limit

    def limit(self) -> int:
        return self._limit() if self._limit is not None else TUNING.max_in_flight


class RangeFeed:
    """Compressed bytes ``[start, end)`` in order, fetched on demand or ahead (module notes).

    One consumer at a time (the decoder that owns it); the fetch pool fills it.
    """

    def __init__(self, fetch: Fetch, start: int, end: int, *, pool: Executor | None = None,
                 budget: BlockCache | None = None, first: int = TUNING.first_request,
                 maximum: int = TUNING.max_request, link: LinkMeter | None = None) -> None:
        self._fetch = fetch
        self.position = start  # next byte handed to the consumer
        self.end = end
        self._pool = pool
        self._budget = budget
        self._first = first  # also the floor a refused budget brings requests back to
        self._request = max(1, first) // 2  # doubled before the first request
        self._maximum = max(first, maximum)
        self._next = start  # next byte not yet asked for
        # start, end, data (fetched or in flight), whether it is counted in the budget
        self._ahead: deque[tuple[int, int, Future[bytes] | bytes, bool]] = deque()
        self._lock = threading.Lock()
        self.depth = 0
        self._held = 0  # reserved bytes of the piece the consumer has now
        self.requests = 0  # for tests: ranged fetches made
        self.fetched = 0
        # Adapting what is in flight to the link (module notes): bytes to keep asked for
        # beyond ``position``, the consumer's rate and a request's time, both smoothed.
        self._link = link if link is not None else LinkMeter()
        self.window = 0
        self.stalls = 0  # pieces the consumer had to wait for while reading ahead
        self.waited = 0.0  # seconds it waited for them
        self._rate = 0.0  # bytes/s the consumer takes while it is not waiting
        self._seconds = 0.0  # one request's time, from its start to its last byte
        self._returned = 0.0  # when the consumer last got a piece
        self._last = 0  # that piece's size

    # -- the consumer's side -----------------------------------------------------------------

    def next(self, hint: int = 0) -> bytes | None:
        """The next piece (at ``position``), or None at ``end``. ``hint``: compressed bytes the
        caller expects to need, used to size a request made now."""
        self._drop_held()
        if self.position >= self.end:
            return None
        now = time.monotonic()
        if self._returned and self._last:
            busy = max(now - self._returned, 1e-4)
            self._rate = _smooth(self._rate, self._last / busy)
        stalled = not self._ahead and self.depth > 0  # nothing was asked ahead: a wait
        if not self._ahead:
            self._ask(hint, wait=True)
        begin, stop, data, reserved = self._ahead.popleft()
        if reserved:  # counted until the consumer asks for the next piece
            self._held = stop - begin
        if isinstance(data, Future):
            stalled = not data.done()
            data = data.result()
        self.position = stop
        self._returned, self._last = time.monotonic(), stop - begin
        if self.depth:
            self._adapt(self._returned - now if stalled else 0.0)
        self._top_up()
        return data

    def _adapt(self, waited: float) -> None:
        """Keep in flight what the consumer takes during one request (rate x request time:
        the bandwidth-delay product) with half again as headroom, plus one request. After a
        wait of ``waited`` seconds, also what the consumer would have taken meanwhile on top
        of what was in flight, and at least twice that (a request's time is known only once
        one ended). Never beyond the link's limit."""
        need = int(self._rate * self._seconds * 1.5) + self._request
        if waited:
            self.stalls += 1
            self.waited += waited
            need = max(need, 2 * self.window, self.window + int(self._rate * waited))
        if need > self.window:
            self.window = max(self.window, min(need, self._link.limit()))
            self._link.window = self.window

    def _drop_held(self) -> None:
        if self._held:
            self._release(self._held)
            self._held = 0

    def set_depth(self, depth: int) -> None:
        """Ranges to keep in flight from now on, at least (0: fetch only when asked); with
        any, the window grows with the link (``_adapt``), from where the mount's last
        sequential stream left it."""
        self.depth = depth if self._pool is not None else 0
        if self.depth and not self.window:
            self.window = min(self._link.window, self._link.limit())
        self._top_up()

    def skip_to(self, position: int) -> None:
        """Move forward to ``position`` (within ``[position, end]``), keeping what was fetched
        beyond it."""
        if position < self.position:
            raise ValueError("a feed only moves forward")
        while self._ahead and self._ahead[0][1] <= position:
            begin, stop, data, reserved = self._ahead.popleft()
            if reserved:
                self._release_when_done(data, stop - begin)
        if self._ahead and self._ahead[0][0] < position:
            begin, stop, data, reserved = self._ahead.popleft()
            if isinstance(data, Future):
                data = data.result()
            if reserved:
                self._release(stop - begin)
            self._ahead.appendleft((position, stop, data[position - begin:], False))
        self.position = position
        self._next = max(self._next, position)
        self._returned = 0.0  # the time since the last piece was not spent consuming

    def close(self) -> None:
        """Forget what is in flight (its budget is given back as each request ends)."""
        if self.depth:
            log.debug("read ahead: %d requests, window %d bytes, request %.3f s, consumer %.0f "
                      "B/s, %d waits (%.3f s)", self.requests, self.window, self._seconds,
                      self._rate, self.stalls, self.waited)
        self._drop_held()
        while self._ahead:
            begin, stop, data, reserved = self._ahead.popleft()
            if isinstance(data, Future):
                data.cancel()
            if reserved:
                self._release_when_done(data, stop - begin)
        self.position = self._next = self.end

    # -- fetching ----------------------------------------------------------------------------

    def _size(self, hint: int) -> int:
        """The next request's size: doubling from ``first`` to ``maximum``; a wide window
        takes larger ranges (an eighth of it, up to ``TUNING.max_far_request``), so that
        fewer connections carry it."""
        far = min(TUNING.max_far_request, self.window // 8)
        self._request = min(self._request * 2, max(self._maximum, far))
        return max(self._request, min(hint, self._maximum))

    def _timed(self, begin: int, end: int) -> bytes:
        """``checked_fetch``, timing the request (in the worker: time queued for a worker is
        not the link's)."""
        started = time.monotonic()
        data = checked_fetch(self._fetch, begin, end)
        self._seconds = _smooth(self._seconds, time.monotonic() - started)
        return data

    def _ask(self, hint: int, wait: bool) -> bool:
        """One more range at ``_next``: fetched now (``wait``, whatever the budget says) or on
        the pool (only if the budget takes it: False otherwise)."""
        begin = self._next
        size = min(self.end, begin + self._size(hint)) - begin
        if size <= 0:
            return False
        budget = self._budget
        data: Future[bytes] | bytes
        if wait:
            reserved = budget is not None and budget.reserve(size)
            try:
                data = self._timed(begin, begin + size)
            except BaseException:
                if reserved:
                    self._release(size)
                raise
        else:
            # Counted twice while in flight: the HTTP layer holds the body's pieces, then
            # their join, for a moment.
            reserved = budget is not None and budget.reserve(2 * size)
            if budget is not None and not reserved:
                self._request = max(self._first, self._request // 2)
                return False  # the budget is taken: fetch when asked instead
            pool = self._pool
            assert pool is not None  # ranges go ahead of the consumer only with a pool
            future = pool.submit(self._timed, begin, begin + size)
            if reserved:
                future.add_done_callback(lambda _: self._release(size))
            data = future
        self._next = begin + size
        self.requests += 1
        self.fetched += size
        self._ahead.append((begin, begin + size, data, reserved))
        return True

    def _top_up(self) -> None:
        """Keep ``depth`` ranges, and ``window`` bytes, asked for beyond ``position``."""
        if not self.depth:
            return
        while self._next < self.end and (len(self._ahead) < self.depth or
                                         self._next - self.position < self.window):
            if not self._ask(0, wait=False):
                break

    def _release_when_done(self, data: Future[bytes] | bytes, size: int) -> None:
        if isinstance(data, Future):
            data.add_done_callback(lambda _: self._release(size))
        else:
            self._release(size)

    def _release(self, size: int) -> None:
        """Give back ``size`` reserved bytes (reserved only ever with a budget)."""
        if self._budget is not None:
            self._budget.release(size)


def _smooth(average: float, sample: float, weight: float = 0.25) -> float:
    """An exponentially weighted average (the first sample taken as it is)."""
    return sample if not average else average + weight * (sample - average)
