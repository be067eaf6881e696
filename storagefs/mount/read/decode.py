"""Decoding one block from a stream: inflate or copy it, lay a snapshot, check the member's end.

Snapshots: a stream inflating with ``IndexedInflater`` is asked, before a block that ends on
a multiple of the member's spacing, for a checkpoint near that end, and hands over what it
has after each block (``placement._keep_checkpoint``); other copyable decoders are copied at
those offsets. A stream resumed from a checkpoint first drops the output before its block.

Structure is checked where the data ends: any stream that reaches the member's end checks
that the data ends there (no output beyond the recorded size, the compressed stream complete).
The block holding the end is cached and returned only after that check. Data that stops short
of the recorded size, a decoder that stops producing, and output beyond it are
``CorruptArchive``.
"""

from __future__ import annotations

import logging

from ...errors import CorruptArchive
from ...zipfmt.inflate import IndexedInflater
from .placement import StreamPlacement
from .stream import Stream

log = logging.getLogger(__name__)


class BlockDecoding(StreamPlacement):
    """The part of a block reader that turns a stream's input into its next block."""

    def _decode_block(self, s: Stream) -> bytes:
        """The block at ``s.out_pos``: decode it, check the end if it holds it, snapshot."""
        stop = min(self.size, (s.out_pos // self._block + 1) * self._block)
        if self._stored:
            block = self._copy_block(s, stop)
            if stop == self.size:
                self._check_end(s)
        elif s.resumed is None:
            block = self._inflate_next(s, stop)
        else:  # the first block from a checkpoint read from disk: it may not decode
            start = s.out_pos
            try:
                block = self._inflate_next(s, stop)
            except CorruptArchive as exc:
                log.warning("%s: the checkpoint at %d does not decode (%s); decoding from "
                            "the start instead", self.name, s.resumed, exc)
                self._distrust_index(s.resumed)
                s.restart(IndexedInflater(), start, 0, self._new_feed(0))
                block = self._inflate_next(s, stop)
            s.resumed = None
        self.decoded += len(block)
        if stop < self.size and s.decoder is not None and s.decoder.can_copy and \
                s.out_pos % self._spacing() == 0:
            key = (self._token, "snap", s.out_pos)
            if key not in self._ctx.cache:
                decoder, held = s.decoder.checkpoint()
                if self._ctx.cache.put(key, (decoder, s.in_given - held),
                                       self._tuning.snapshot_cost, keep=True):
                    self._state.add_snapshot(s.out_pos)
        return block

    def _inflate_next(self, s: Stream, stop: int) -> bytes:
        """Inflate the block ending at ``stop`` (checking the end there), leaving a checkpoint
        if one is due."""
        if s.behind:
            self._drop_behind(s)
        indexed = s.decoder if isinstance(s.decoder, IndexedInflater) else None
        if indexed is not None and stop < self.size and stop % self._spacing() == 0 and \
                not self._has_snapshot(stop):
            indexed.mark(stop)
        block = self._inflate_block(s, stop)
        if indexed is not None:
            point = indexed.take_checkpoint()
            if point is not None:
                self._keep_checkpoint(point)
        if stop == self.size:
            self._check_end(s)
        return block

    def _drop_behind(self, s: Stream) -> None:
        """A stream resumed from a checkpoint: decode and drop the output before its block."""
        start, s.out_pos = s.out_pos, s.out_pos - s.behind
        self.decoded += s.behind
        s.behind = 0
        self._inflate_block(s, start)

    def _copy_block(self, s: Stream, stop: int) -> bytes:
        parts = []
        while s.out_pos < stop:
            piece = s.take(stop - s.out_pos)
            if piece is None:
                raise CorruptArchive(f"{self.name}: member has {s.out_pos} bytes, "
                                     f"expected {self.size}")
            parts.append(piece)
            s.out_pos += len(piece)
        return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)

    def _inflate_block(self, s: Stream, stop: int) -> bytes:
        decoder = s.decoder
        assert decoder is not None  # compressed data: every stream has a decoder
        input_piece, max_idle = self._tuning.input_piece, self._tuning.max_idle_steps
        if isinstance(decoder, IndexedInflater):  # fills the block itself: no pieces to join
            block = decoder.fill(stop - s.out_pos, lambda: s.take(input_piece))
            s.out_pos += len(block)
            if s.out_pos < stop:
                decoder.flush()  # CorruptArchive when the stream is cut short
                raise CorruptArchive(f"{self.name}: member has {s.out_pos} bytes, "
                                     f"expected {self.size}")
            return block
        parts = []
        idle = 0
        while s.out_pos < stop:
            want = stop - s.out_pos
            if decoder.needs_input:
                piece = s.take(input_piece)
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
                if idle > max_idle:
                    raise CorruptArchive(f"{self.name}: the {decoder.name} decoder stopped "
                                         "producing data")
            if out:
                parts.append(out)
                s.out_pos += len(out)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _check_end(self, s: Stream) -> None:
        """The decoder produced ``size`` bytes: the data must end here."""
        if self._stored:
            if self._compressed_size != self.size:
                raise CorruptArchive(f"{self.name}: member has {self._compressed_size} bytes, "
                                     f"expected {self.size}")
            return
        decoder = s.decoder
        assert decoder is not None  # compressed data: every stream has a decoder
        max_idle = self._tuning.max_idle_steps
        idle = 0
        while not decoder.eof:
            if decoder.needs_input:
                piece = s.take(self._tuning.input_piece)
                if piece is None:
                    break
                out = decoder.decompress(piece, 1)
            else:
                out = decoder.decompress(b"", 1)
                idle += 1
                if idle > max_idle:
                    break
            if out:
                raise CorruptArchive(f"{self.name}: member is longer than its recorded size")
        if decoder.flush():  # CorruptArchive when the stream is cut short
            raise CorruptArchive(f"{self.name}: member is longer than its recorded size")
