"""The decode job: one per open file at a time, on the context's decode pool.

A reader that misses a block sets a *target* (an output offset) and submits the job; the job
decodes blocks from the reader's stream until the stream reaches the target, puts each in the
cache and in the reader's recent blocks, and wakes the readers waiting for it. After a few
blocks it yields its worker when other files' jobs wait (fairness). A failure is handed to the
waiting readers (and, if the data is corrupt, marks the member bad for every handle). Reader
and job meet under the reader's condition variable: the job owns the stream while it runs.
"""

from __future__ import annotations

from ...errors import CorruptArchive
from .decode import BlockDecoding


class DecodeJobs(BlockDecoding):
    """The part of a block reader that runs in a decode worker."""

    def _job(self) -> None:
        self._ctx.started()
        # The decoder's own buffers (its input piece, zlib's output pieces, the block being
        # joined) count too.
        memory = self._tuning.job_memory
        working = memory if self._ctx.cache.reserve(memory) else 0
        try:
            self._run_job()
        finally:
            if working:
                self._ctx.cache.release(working)

    def _run_job(self) -> None:
        job_blocks, recent = self._tuning.job_blocks, self._tuning.recent
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
                if made >= job_blocks and self._ctx.queued:  # other files' jobs wait
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
                if len(self._recent) > recent:
                    del self._recent[next(iter(self._recent))]
                if self._waiting:
                    self._cond.notify_all()
            made += 1
