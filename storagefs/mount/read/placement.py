"""Where decoding starts: going on with the current stream, or starting one (random access).

- Stored members and plain files map offsets directly: a stream starts at the block.
- Deflate: every ``interval`` (4 MiB) of output a decoder passes, it leaves a *snapshot*: a copy
  of the inflater state (``zlib.decompressobj().copy()``, ~40 KB) and the compressed offset to
  go on from. Snapshots live in the shared budget, least recently used out. A read far from
  the current stream starts from the nearest snapshot before it, so it inflates at most one
  interval (CPython has no ``inflatePrime``, so zran's bit-exact index is out of reach, but a
  copy taken at a byte boundary of the *input* needs none).
- A sequential pass from a deflate member's start inflates with zlib-ng's
  ``_ZlibDecompressor`` when it is there (``zipfmt.inflate.FastInflater``: markedly faster,
  but it cannot be copied), so it leaves no snapshots; the first random read after it decodes
  from the start with ``decompressobj`` and lays them on its way. A member whose blocks were
  needed again after such a pass is decoded with snapshots from then on.
- Deflate64, bzip2, LZMA, xz and zstd cannot be copied: a read ahead of the open file's stream
  decodes through, a read behind it restarts from the member's start; decoded blocks stay in
  the cache, so going back over recent data costs nothing.
"""

from __future__ import annotations

from ... import protocol
from ...zipfmt import codecs
from ...zipfmt.inflate import FastInflater
from .base import BlockReaderBase
from .readahead import RangeFeed
from .stream import Stream


class StreamPlacement(BlockReaderBase):
    """The part of a block reader that chooses and starts its streams."""

    def _reaches(self, s: Stream, start: int) -> bool:
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
            cache = self._ctx.cache
            for offset in self._state.snapshots_before(start):
                snap = cache.get((self._token, "snap", offset))
                if snap is None:
                    self._state.forget_snapshot(offset)
                    continue
                decoder, in_pos = snap
                return self._new_stream(decoder.copy(), offset, in_pos)
        if sequential and self.method == protocol.DEFLATED and FastInflater.available and \
                not self._state.no_fast:
            return self._new_stream(FastInflater(), 0, 0)
        return self._new_stream(codecs.make_decoder(self.method), 0, 0)

    def _new_stream(self, decoder: codecs.Decoder | None, out_pos: int, in_pos: int) -> Stream:
        ctx = self._ctx
        tuning = self._tuning
        if not self._holding:  # the blocks this reader keeps out of the cache (_recent, _cur)
            held = (tuning.recent + 1) * self._block
            self._holding = held if ctx.cache.reserve(held) else -1
        feed = RangeFeed(self._fetch, self._data_start + in_pos,
                         self._data_start + self._compressed_size, pool=ctx.fetch_pool,
                         budget=ctx.cache, first=tuning.first_request,
                         maximum=tuning.max_request, link=ctx.link)
        return Stream(decoder, out_pos, in_pos, feed)
