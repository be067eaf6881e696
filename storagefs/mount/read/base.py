"""The fields of one open file's block reader, which each part of it works on.

``BlockReader`` (``front.py``) is put together from parts, one job each: its front (slicing,
cache lookups, CRC progress, waiting for the job), the decode job (``jobs.py``), decoding a
block and checking the end (``decode.py``) and where a stream starts (``placement.py``). They
are mixins over this base, so a call between them is an ordinary method call.

Threads: FUSE's multithreaded loop may call ``read`` on one handle from several threads and
on many handles at once. Each reader has one condition variable guarding its stream and job;
the shared state has its own lock; the cache has one lock.
"""

from __future__ import annotations

import threading
from typing import Callable, Hashable

from ... import protocol
from ...zipfmt import Fetch, codecs
from .context import ReadContext, default_context
from .member import MemberState
from .readahead import ReadAhead
from .stream import Stream


class BlockReaderBase:
    """What an open file's reader holds: its member, its stream and job, the blocks it keeps."""

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
        self._key = key  # names the member version (its checkpoints on disk)
        self._ctx = ctx = context or default_context()
        self._tuning = tuning = ctx.tuning
        self._stored = method == protocol.STORED
        self._block = tuning.stored_block if self._stored else tuning.block
        self._last = (size - 1) // self._block if size > 0 else -1
        self._whole = whole and size > 0
        self._checked = checked  # a CRC-32/size verdict exists for this data (not plain files)
        self._state = ctx.state(key, lambda: MemberState(size, crc32, crc_lookup, name))
        self._token = self._state.token
        self._can_snapshot = not self._stored and codecs.make_decoder(method).can_copy
        self._ratio = min(1.0, compressed_size / size) if size else 1.0
        self._ra = ReadAhead(initial=self._block, maximum=ctx.read_ahead)
        self._cond = threading.Condition(threading.Lock())
        self._stream: Stream | None = None
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
        ctx.opened()
        self.decoded = 0  # bytes decoded (or copied, stored data) by this reader's jobs

    def _cached(self, offset: int) -> bytes | None:
        """The block at ``offset`` if this reader or the cache has it."""
        index = offset // self._block
        block = self._recent.get(index)
        return block if block is not None else self._ctx.cache.get((self._token, index))
