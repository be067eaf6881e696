"""What every open handle of one member shares: snapshots, the running CRC-32, the verdict.

Snapshots are kept by the block offset they serve: a ``codecs`` decoder copy (taken there) or a
deflate ``Checkpoint`` (at most a block before it); with ``--cache-dir`` the member's
``MemberIndex`` (``checkpoints.py``) has them on disk too, and its offsets are known here.

The context keeps one ``MemberState`` per member key, so a second ``open`` of a member finds
the snapshots the first one laid, goes on with its CRC-32, and sees its verdict: a member
found bad is refused to every handle, even from the cache.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from typing import TYPE_CHECKING, Callable

from ...errors import CorruptArchive
from ...zipfmt import codecs

if TYPE_CHECKING:
    from .checkpoints import MemberIndex

_tokens = itertools.count(1)


class MemberState:
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
        self.index: MemberIndex | None = None  # the member's checkpoints on disk, if kept
        self.index_known = False  # whether ``index`` was looked up
        self.spacing = 0  # output between checkpoints (set by the first reader)
        self.error: CorruptArchive | None = None

    def fail(self, error: CorruptArchive) -> CorruptArchive:
        """Mark the member bad (the first error stays); the error it is known by."""
        if self.error is None:
            self.error = error
        return self.error

    def advance(self, start: int, block: bytes | None,
                cached: Callable[[int], bytes | None]) -> None:
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
                raise self.fail(CorruptArchive(
                    f"{self.name}: CRC-32 mismatch: got {self.crc:08x}, "
                    f"expected {self.expected_crc:08x}"))
            self.verified = True

    def add_snapshots(self, offsets: list[int]) -> None:
        with self.lock:
            self.snapshots = sorted(set(self.snapshots).union(offsets))

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
