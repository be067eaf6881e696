"""A stream: one decoder run through a member from some output offset on, fed by a RangeFeed.

A stream resumed from a deflate checkpoint starts a little before its first block: ``behind``
bytes of output are decoded and dropped before ``out_pos``."""

from __future__ import annotations

from ...zipfmt import codecs
from ...zipfmt.inflate import IndexedInflater
from .readahead import RangeFeed


class Stream:
    """One decoder run from ``out_pos`` on, fed by a ``RangeFeed``; owned by one thread at a
    time (the reader's job, or the reader while no job runs)."""

    def __init__(self, decoder: codecs.Decoder | None, out_pos: int, in_pos: int,
                 feed: RangeFeed, behind: int = 0) -> None:
        self.decoder = decoder  # None for stored data
        self.out_pos = out_pos
        self.behind = behind  # output to drop before out_pos (resumed from a checkpoint)
        self.resumed: int | None = None  # the disk checkpoint it started from, until it decodes
        self.in_given = in_pos  # compressed bytes given to the decoder (member offsets)
        self.feed = feed
        self.depth = 0  # read-ahead depth the reader wants; the job applies it
        # Whether the decoder leaves snapshots or checkpoints (stored data needs none: it maps
        # directly).
        self.indexed = isinstance(decoder, IndexedInflater)
        self.decoder_can_copy = decoder is None or decoder.can_copy or self.indexed
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

    def restart(self, decoder: codecs.Decoder, out_pos: int, in_pos: int,
                feed: RangeFeed) -> None:
        """Start again from ``in_pos`` (output 0) and drop what comes before ``out_pos``."""
        self.close()
        self.decoder = decoder
        self.indexed = isinstance(decoder, IndexedInflater)
        self.out_pos, self.behind, self.in_given = out_pos, out_pos, in_pos
        self.feed, self.resumed = feed, None

    def close(self) -> None:
        self.feed.close()
        self._piece = memoryview(b"")
        if self.indexed:
            self.decoder.close()  # type: ignore[union-attr]  # zlib's state, at once
