"""Where a member's compressed data starts, proven by its local header before a byte is served.

A listing's ``range_start`` saves a ``zip-file-range`` request per member opened, but a service
may compute it from the central directory alone, which is off by the difference between the
local and the central extra field (every Info-ZIP archive has one): a stored member would be
served shifted, and a CRC lookup at the wrong place finds nothing to check against. So the
listed offset is used only when the member's own local header (signature, name, method,
compressed size) ends exactly there.

The proof costs no request of its own: one ranged GET fetches a little before the listed start
(the header) and the first bytes of the data (and, for a small member, its data descriptor),
and those bytes are handed to the reader as its first fetch. When the proof fails,
``zip-file-range`` says where the data is; if that start lies in the bytes already fetched, the
header found there proves it and the fetched bytes still serve, so a wrong listing costs one
request more. The local header also gives the CRC-32 when the listing has none.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

from ..zipfmt import Fetch
from ..zipfmt import local as ziplocal

log = logging.getLogger(__name__)

# Room for the local header's extra field before the listed start: Info-ZIP writes 24 to 28
# bytes, 7-Zip 36, ZIP64 20 more; a wrong listing is off by a few bytes either way.
HEADER_SLACK = 512
# Data fetched with the proof: what the reader asks for first (the kernel's first read), and
# a whole small member with its data descriptor (at most 24 bytes) in the same request.
FIRST_DATA = 128 << 10
DESCRIPTOR_MAX = 24


@dataclass(frozen=True)
class MemberStart:
    """A member's compressed data as located: where it starts, how to decode it, what its
    local header says (None when the header was not looked at), and the bytes fetched from
    ``start`` on with the proof (kept until the reader has taken them)."""

    start: int
    compressed_size: int
    method: int
    header: ziplocal.LocalHeader | None
    prefetched: bytes = b""

    def crc_lookup(self, fetch: Fetch) -> Callable[[], int | None]:
        """The CRC-32 the archive records: from the header, else from the data descriptor (in
        the bytes fetched with the proof when they reach it). The function returned holds
        neither those bytes nor this object: a member's shared state keeps it for long."""
        header, start, size = self.header, self.start, self.compressed_size
        if header is not None and not header.crc_in_descriptor:
            crc = header.crc32
            return lambda: crc
        if header is not None:
            if len(self.prefetched) >= size + 8:
                known = ziplocal.descriptor_crc(self.prefetched[size:size + 8])
                return lambda: known
            return lambda: ziplocal.descriptor_crc(fetch(start + size, start + size + 8))
        return lambda: ziplocal.archive_crc(fetch, start, size)


def locate(fetch: Fetch, *, name: str, listed_start: int | None, compressed_size: int,
           method: int, ask_range: Callable[[], tuple[int, int, int]]) -> MemberStart:
    """Prove ``listed_start`` with one ranged GET, or ask ``ask_range`` (zip-file-range:
    start, compressed size, method) and prove that in the bytes already fetched if it can."""
    if listed_start is None:
        start, size, method = ask_range()
        return MemberStart(start, size, method, None)
    head_start = max(0, listed_start - ziplocal.LOCAL_HEADER_SIZE
                     - len(name.encode("utf-8", "surrogatepass")) - HEADER_SLACK)
    wanted = compressed_size + DESCRIPTOR_MAX
    window = fetch(head_start, listed_start + min(wanted, FIRST_DATA))
    header = ziplocal.header_ending_at(window[:listed_start - head_start])
    if ziplocal.proves_offset(header, name, method, compressed_size):
        return MemberStart(listed_start, compressed_size, method, header,
                           window[listed_start - head_start:])
    start, size, method = ask_range()
    log.info("%s: the listing's data offset %d is not that of its local header; "
             "zip-file-range says %d", name, listed_start, start)
    if head_start <= start <= head_start + len(window):
        header = ziplocal.header_ending_at(window[:start - head_start])
        if ziplocal.proves_offset(header, name, method, size):
            return MemberStart(start, size, method, header, window[start - head_start:])
    return MemberStart(start, size, method, None)


def primed(fetch: Fetch, start: int, data: bytes) -> Fetch:
    """``fetch`` that first serves what ``data`` (bytes from ``start`` on) holds, then lets
    it go once a read has reached its end (it is not in the memory budget)."""
    held = [data]
    lock = threading.Lock()

    def read(lo: int, hi: int) -> bytes:
        with lock:
            data = held[0]
        end = start + len(data)
        if not data or not start <= lo < end:
            return fetch(lo, hi)
        if hi >= end:
            with lock:
                held[0] = b""
            return data[lo - start:] + (fetch(end, hi) if hi > end else b"")
        return data[lo - start:hi - start]

    return read
