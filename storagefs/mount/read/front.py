"""The block reader's front: a read cut from cached blocks, the CRC kept up, the job driven.

What a reader returns is cut from *blocks* of decoded data at fixed offsets (1 MiB for
compressed members, 256 KiB for stored members and plain files), kept in the shared cache.
A FUSE read (128 KiB) is a lookup and a slice; only a miss decodes. Decoding happens in a
worker of the decode pool, one job per open file at a time (``jobs.py``), so that the FUSE
thread returns as soon as its block is ready while the worker goes on decoding the read-ahead
window (``readahead.ReadAhead``: grows while reads are sequential, 0 after a seek) and the next
compressed ranges are already on their way (``readahead.RangeFeed``): network, inflating and
FUSE copies overlap. Each open file's read-ahead is at most a fair share of what the budget
has left, and blocks a sequential reader has gone past are the first evicted, so blocks
decoded ahead are still there when their reader gets to them, however many files are read.

The running CRC-32 goes on here too: over blocks found in the cache (by any handle of the
member), in order, while the job extends it over the blocks it makes.
"""

from __future__ import annotations

from ...errors import CorruptArchive
from .jobs import DecodeJobs
from .placement import StreamPlacement
from .tuning import KiB


class BlockReader(DecodeJobs, StreamPlacement):
    """The engine of both readers: blocks, a decode job, read-ahead (see the module notes)."""

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
            self._ctx.opened(-1)
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

    # -- driving the job -----------------------------------------------------------------------

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
                if self._errors != seen and self._error is not None:
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
                s.depth = self._tuning.depth if ahead and want > start + size else 0
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
            s.depth = self._tuning.depth
            self._running = True
            self._ctx.submit(self._job)
