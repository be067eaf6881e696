"""An open file of the mount: byte ranges of what the user sees -> bytes.

``FileReader`` is the contract the path tree hands to FUSE; ``MemberReader`` (a ZIP member)
and ``RangeReader`` (a plain file) fulfil it over one ``BlockReader`` engine.

What is verified (CRC-32 and size)
----------------------------------
- Structure: any stream that reaches the member's end checks that the data ends there (no
  output beyond the recorded size, the compressed stream complete). The block holding the end
  is cached and returned only after that check (``decode.py``).
- CRC-32 is computed incrementally over blocks in order from offset 0: by the decode job as
  it makes them, and by readers over blocks found in the cache (any handle of the member). When
  that running CRC reaches the member's end it is compared with the expected one, *before* the
  last block is returned. A mismatch (or any corrupt-data error) marks the member bad for
  every handle, so no further byte of it is returned, even from the cache (``member.py``).
- Members no larger than ``window`` (8 MiB in the mount) are decoded and checked whole before
  their first byte is returned, so a damaged small member never yields data.
- A large member returns its blocks as they are decoded; if it is damaged, the read that
  reaches its end fails (as may reads after the decoder got there ahead of the reader), so
  ``cp``/``cat``/``cmp`` end with an error.
- Not verified: a member never read in order through its end (random access only, e.g. a
  database read page by page) cannot be CRC-checked; its last block is returned after the
  structural check only. Plain files have no checksum.
- The expected CRC-32 comes from the listing (``crc32``, sent by this project's server) or,
  when the listing lacks it (the Inductiva API), from ``crc_lookup``:
  ``zipfmt.local.archive_crc`` reads it from the member's data descriptor or local header,
  fetching at most a few KiB, only when a member was read to its end.
"""

from __future__ import annotations

from typing import Callable, Hashable, Protocol

from ... import protocol
from ...zipfmt import Fetch, codecs
from .context import ReadContext
from .front import BlockReader
from .tuning import MiB


class FileReader(Protocol):
    """An open file: what FUSE's ``read`` and ``release`` need."""

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer only at the end of the file)."""
        ...

    def close(self) -> None:
        """Give back what the open file holds; reads after it fail."""
        ...


class MemberReader(BlockReader):
    """A ZIP member: decoded bytes at any offset, verified at the end (see module notes).

    ``key`` names the member for the context (archive path, version, data offset): handles
    with the same key share blocks, snapshots and the CRC verdict. ``window``: members up to
    this size are checked whole before their first byte is returned.
    """

    def __init__(self, fetch: Fetch, *, data_start: int, compressed_size: int, size: int,
                 method: int, crc32: int | None = None,
                 crc_lookup: Callable[[], int | None] | None = None, name: str = "",
                 window: int = 8 * MiB, context: ReadContext | None = None,
                 key: Hashable | None = None) -> None:
        codecs.make_decoder(method)  # UnsupportedMethod at open, not at the first read
        super().__init__(fetch, size=size, name=name, method=method, data_start=data_start,
                         compressed_size=compressed_size, crc32=crc32, crc_lookup=crc_lookup,
                         whole=size <= window, checked=True, context=context, key=key)


class RangeReader(BlockReader):
    """A plain file: 256 KiB blocks fetched with ranged reads, ahead of sequential readers."""

    def __init__(self, fetch: Fetch, size: int, *, name: str = "",
                 context: ReadContext | None = None, key: Hashable | None = None) -> None:
        super().__init__(fetch, size=size, name=name, method=protocol.STORED, data_start=0,
                         compressed_size=size, crc32=None, crc_lookup=None, whole=False,
                         checked=False, context=context, key=key)
