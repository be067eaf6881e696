"""The fast inflater: raw deflate for sequential passes, through zlib-ng's ``_ZlibDecompressor``.

The mount's reader uses it for a pass from a deflate member's start; everywhere else (and for
passes that must leave snapshots) ``codecs.DeflateDecoder`` decodes deflate.
"""

from __future__ import annotations

import zlib

from .. import protocol
from ..errors import CorruptArchive
from . import codecs


class FastInflater(codecs.Decoder):
    """Raw deflate for sequential passes, through zlib-ng's ``_ZlibDecompressor``.

    It allocates its output at the size asked for and inflates a block in one call, where
    ``decompressobj`` grows its buffer from 16 KiB by doubling (a reallocation and a GIL
    round trip each time): inflating 512 MiB took 0.65-0.9 s instead of 1.2-1.3 s here. Its
    state cannot be copied, so a stream that starts with it leaves no snapshots: a reader that
    goes on sequentially never needs them, and the first random read after such a pass lays
    them as it decodes. It is the part of ``codecs.Decoder`` a stream uses: ``decompress`` is
    its own whole (zlib-ng bounds the output itself), nothing is held back by the base class.
    """

    available = hasattr(codecs.fast_zlib, "_ZlibDecompressor")
    method = protocol.DEFLATED
    can_copy = False

    def __init__(self) -> None:
        super().__init__()
        self._obj = codecs.fast_zlib._ZlibDecompressor(-zlib.MAX_WBITS)

    @property
    def eof(self) -> bool:
        return self._obj.eof

    @property
    def needs_input(self) -> bool:
        return self._obj.eof or self._obj.needs_input

    def decompress(self, data: codecs.BytesLike, max_length: int = -1) -> bytes:
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
