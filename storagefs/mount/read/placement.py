"""Where decoding starts: going on with the current stream, or starting one (random access).

- Stored members and plain files map offsets directly: a stream starts at the block.
- Deflate: every pass over a member, sequential or not, leaves *checkpoints* behind as it goes
  (``zipfmt.inflate.IndexedInflater``: zlib-ng's inflater through its C API, as fast as the
  plain one; a checkpoint is a block boundary's bit position and the 32 KiB before it), one
  per ``spacing`` of output, kept by the block offset they serve (the boundary is at most a
  block before it). A read far from the current stream starts from the nearest one before
  it, so a seek costs one spacing of inflate at most, right after a ``cat`` too.
- Spacing and memory: checkpoints count in the shared budget (``ReadTuning.snapshot_cost``),
  least recently used out; without ``--cache-dir`` the spacing widens with the member's size
  so that its checkpoints fit half the budget's share for kept entries (a 5 GiB member gets
  one every 18 MiB or so with the default 256 MiB); with ``--cache-dir`` every checkpoint is
  also on disk (``checkpoints.py``), the spacing stays at ``interval``, memory keeps those
  used last, and a new mount of the same archive version starts from them.
- Where ``IndexedInflater`` cannot load a zlib library, deflate falls back to what came before
  it: snapshots that are copies of the inflater (``zlib.decompressobj().copy()``, in memory
  only), and a sequential pass from the start with zlib-ng's ``_ZlibDecompressor``
  (``FastInflater``: fast, but no snapshots).
- Deflate64, bzip2, LZMA, xz and zstd cannot be copied: a read ahead of the open file's stream
  decodes through, a read behind it restarts from the member's start; decoded blocks stay in
  the cache, so going back over recent data costs nothing.
"""

from __future__ import annotations

from typing import Any

from ... import protocol
from ...errors import CorruptArchive
from ...zipfmt import codecs
from ...zipfmt.inflate import Checkpoint, FastInflater, IndexedInflater
from .base import BlockReaderBase
from .checkpoints import MemberIndex, spacing
from .readahead import RangeFeed
from .stream import Stream


class StreamPlacement(BlockReaderBase):
    """The part of a block reader that chooses and starts its streams."""

    # -- snapshots and checkpoints ---------------------------------------------------------------

    def _indexed(self) -> bool:
        """Whether this member is inflated by ``IndexedInflater`` (leaves checkpoints)."""
        return self.method == protocol.DEFLATED and IndexedInflater.available

    def _disk_index(self) -> MemberIndex | None:
        """The member's checkpoint file (``--cache-dir``), looked up once per member."""
        state = self._state
        if not state.index_known:
            store = self._ctx.checkpoints
            index = None
            if store is not None and self._key is not None and self._indexed():
                index = store.member(self._key, self.size, self._compressed_size,
                                     state.expected_crc, self.method)
                state.add_snapshots([o for o in index.offsets() if 0 < o < self.size])
            state.index = index
            state.index_known = True
        return state.index

    def _spacing(self) -> int:
        """Output between two snapshots of this member (see the module notes)."""
        state = self._state
        if not state.spacing:
            state.spacing = spacing(self.size, interval=self._ctx.interval, block=self._block,
                                    share=self._ctx.cache.keep_limit,
                                    cost=self._tuning.snapshot_cost,
                                    spill=self._disk_index() is not None)
        return state.spacing

    def _has_snapshot(self, offset: int) -> bool:
        if (self._token, "snap", offset) in self._ctx.cache:
            return True
        index = self._disk_index()
        return index is not None and offset in index

    def _snapshot_at(self, offset: int) -> tuple[Any, bool]:
        """The snapshot serving block ``offset`` (None if gone), and whether it was read from
        disk just now."""
        key = (self._token, "snap", offset)
        snap = self._ctx.cache.get(key)
        if snap is not None:
            return snap, False
        index = self._disk_index()
        if index is None:
            return None, False
        snap = index.get(offset)
        if snap is not None and not 0 <= offset - snap.out <= 2 * self._block:
            snap = None  # not the checkpoint of this block: never resumed from
        if snap is not None:
            self._ctx.cache.put(key, snap, self._tuning.snapshot_cost, keep=True)
        return snap, True

    def _distrust_index(self, offset: int) -> None:
        """A checkpoint from disk passed its checks yet does not decode: the whole file goes
        (and the checkpoints memory took from it)."""
        index = self._disk_index()
        offsets = index.offsets() if index is not None else [offset]
        for known in offsets + [offset]:
            self._ctx.cache.discard((self._token, "snap", known))
            self._state.forget_snapshot(known)
        if index is not None:
            index.discard()

    def _keep_checkpoint(self, point: Checkpoint) -> None:
        """Keep a checkpoint an indexed stream left, for the block at or just after it."""
        offset = -(-point.out // self._block) * self._block
        if offset <= 0 or offset >= self.size:
            return
        key = (self._token, "snap", offset)
        if key not in self._ctx.cache and \
                self._ctx.cache.put(key, point, self._tuning.snapshot_cost, keep=True):
            self._state.add_snapshot(offset)
        index = self._disk_index()
        if index is not None:
            index.add(offset, point)
            self._state.add_snapshot(offset)

    # -- streams ---------------------------------------------------------------------------------

    def _reaches(self, s: Stream, start: int) -> bool:
        """Whether stream ``s`` (before ``start``) should go on to ``start`` rather than a new
        stream begin there."""
        distance = start - s.out_pos
        if self._stored:
            return distance <= 4 * self._block
        if not self._can_snapshot or distance <= self._block:
            return True
        for offset in self._state.snapshots_before(start):  # nearest first
            if offset <= s.out_pos:
                return True
            if self._has_snapshot(offset):
                return False  # a snapshot closer than the stream
        return True

    def _start_for(self, start: int, current: Stream | None,
                   sequential: bool = False) -> Stream:
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
            self._disk_index()
            for offset in self._state.snapshots_before(start):
                snap, from_disk = self._snapshot_at(offset)
                if isinstance(snap, Checkpoint):
                    try:
                        decoder = IndexedInflater(snap)
                    except CorruptArchive:
                        snap = None
                    else:
                        s = self._new_stream(decoder, offset, snap.in_pos,
                                             behind=offset - snap.out)
                        s.resumed = offset if from_disk else None
                        return s
                if snap is None:
                    self._state.forget_snapshot(offset)
                    continue
                copied, in_pos = snap
                return self._new_stream(copied.copy(), offset, in_pos)
        if self._indexed():
            return self._new_stream(IndexedInflater(), 0, 0)
        if sequential and self.method == protocol.DEFLATED and FastInflater.available and \
                not self._state.no_fast:
            return self._new_stream(FastInflater(), 0, 0)
        return self._new_stream(codecs.make_decoder(self.method), 0, 0)

    def _new_stream(self, decoder: codecs.Decoder | None, out_pos: int, in_pos: int,
                    behind: int = 0) -> Stream:
        ctx = self._ctx
        tuning = self._tuning
        if not self._holding:  # the blocks this reader keeps out of the cache (_recent, _cur)
            held = (tuning.recent + 1) * self._block
            self._holding = held if ctx.cache.reserve(held) else -1
        return Stream(decoder, out_pos, in_pos, self._new_feed(in_pos), behind)

    def _new_feed(self, in_pos: int) -> RangeFeed:
        """Compressed bytes from member offset ``in_pos`` on, fetched ahead."""
        ctx, tuning = self._ctx, self._tuning
        return RangeFeed(self._fetch, self._data_start + in_pos,
                         self._data_start + self._compressed_size, pool=ctx.fetch_pool,
                         budget=ctx.cache, first=tuning.first_request,
                         maximum=tuning.max_request, link=ctx.link)
