"""An open file of the mount: byte ranges of what the user sees -> bytes.

Both readers see their object only through ``fetch(start, end) -> bytes``, absolute half-open
offsets in the stored object (a plain file, or the whole ZIP archive), so their tests need
nothing but bytes. Each reader has one lock: FUSE's multithreaded loop may call ``read`` on
one handle from several threads, and the kernel may reorder neighbouring reads.

``RangeReader`` (a plain file) fetches what is asked; while reads stay sequential each request
doubles in size up to the window, and the last fetched window answers reads that fall inside
it, so ``cat`` of a large file costs a few requests, not one per 128 KiB kernel read.

``MemberReader`` (a ZIP member) decodes a stream of compressed bytes:

- The stream starts at the member's first compressed byte; sequential reads keep one decoder
  and continue it, fetching compressed chunks that grow while the reading goes on.
- The last decoded window (``window`` bytes) answers repeated and slightly reordered reads.
- A read before the window restarts the decoder from the beginning; a read ahead of it decodes
  and discards up to there. (Snapshots of decoder state every few MiB, read-ahead and a shared
  block cache are meant to slot in here: ``_Stream`` is the unit they would save and resume.)
- A stored member is the exception: far jumps start a new stream at the requested offset, so
  random access (a database file) costs one ranged read per miss.
- CRC-32 and size are checked whenever a stream that began at offset 0 reaches the member's
  end. The read that reaches the end returns nothing unless the check passes, and members no
  larger than the window are decoded and checked whole before their first byte is returned,
  so a corrupt small member never yields data. A large member read sequentially yields its
  earlier windows before the end is checked; its last read fails, so ``cp``/``cat``/``cmp``
  still end with an error.
- The expected CRC-32 comes from the listing (``crc32``, sent by this project's server) or,
  when the listing lacks it (the Inductiva API), from ``crc_lookup``: ``archive_crc`` reads it
  from the member's data descriptor or local header, fetching at most a few KiB, only when a
  member was read to its end.
"""

from __future__ import annotations

import struct
import threading
from typing import Callable

from . import codecs, protocol
from .errors import CorruptArchive, TransferError

Fetch = Callable[[int, int], bytes]

MiB = 1 << 20
_FIRST_REQUEST = 128 * 1024  # one kernel read-ahead unit
_MAX_REQUEST = 4 * MiB
_DECODE_STEP = 256 * 1024  # output bound per decoder call (bombs stay bounded)
_MAX_IDLE_STEPS = 64


def _checked_fetch(fetch: Fetch, start: int, end: int) -> bytes:
    data = fetch(start, end)
    if len(data) != end - start:
        raise TransferError(f"asked for bytes {start}-{end - 1}, got {len(data)} bytes")
    return data


class RangeReader:
    """A plain file: ``read`` = ranged fetches, growing while sequential, last window kept."""

    def __init__(self, fetch: Fetch, size: int, *, window: int = 8 * MiB, name: str = "") -> None:
        self.size = size
        self.name = name
        self._fetch = fetch
        self._window_max = max(window, _FIRST_REQUEST)
        self._lock = threading.Lock()
        self._window = b""
        self._wstart = 0
        self._next = -1  # where a sequential read would start
        self._request = _FIRST_REQUEST

    def read(self, offset: int, length: int) -> bytes:
        with self._lock:
            end = min(offset + length, self.size)
            if offset >= end:
                return b""
            wend = self._wstart + len(self._window)
            if self._wstart <= offset and end <= wend:
                return self._window[offset - self._wstart:end - self._wstart]
            if offset == self._next or self._wstart <= offset <= wend:
                self._request = min(self._request * 2, self._window_max)
            else:
                self._request = _FIRST_REQUEST
            stop = min(self.size, offset + max(end - offset, self._request))
            self._window = _checked_fetch(self._fetch, offset, stop)
            self._wstart = offset
            self._next = end
            return self._window[:end - offset]

    def close(self) -> None:
        with self._lock:
            self._window = b""


class _Stream:
    """One decoder run over a member's compressed bytes, from ``start`` onwards."""

    def __init__(self, method: int, start: int, check: codecs.Crc32Check | None) -> None:
        self.decoder = codecs.make_decoder(method)
        self.check = check  # None when the stream did not start at 0: no CRC possible
        self.in_pos = start  # compressed bytes consumed (== out_pos for stored members)
        self.out_pos = start  # decoded bytes produced
        self.request = _FIRST_REQUEST // 2
        self.finished = False


class MemberReader:
    """A ZIP member: decoded bytes at any offset, verified at the end (see module notes)."""

    def __init__(self, fetch: Fetch, *, data_start: int, compressed_size: int, size: int,
                 method: int, crc32: int | None = None,
                 crc_lookup: Callable[[], int | None] | None = None, name: str = "",
                 window: int = 8 * MiB) -> None:
        codecs.make_decoder(method)  # UnsupportedMethod at open, not at the first read
        self.size = size
        self.name = name
        self.method = method
        self._fetch = fetch
        self._data_start = data_start
        self._compressed_size = compressed_size
        self._crc32 = crc32
        self._crc_lookup = crc_lookup
        self._window_max = max(window, _FIRST_REQUEST)
        self._lock = threading.Lock()
        self._stream: _Stream | None = None
        self._window = bytearray()  # decoded bytes [_wstart, _stream.out_pos)
        self._wstart = 0
        self.restarts = 0  # streams started, for tests and debugging

    # -- the surface ---------------------------------------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        with self._lock:
            end = min(offset + length, self.size)
            if offset >= end:
                return b""
            s = self._stream
            if s is not None and self._wstart <= offset and end <= s.out_pos:
                return bytes(self._window[offset - self._wstart:end - self._wstart])
            try:
                return self._read(offset, end)
            except BaseException:
                self._stream = None  # never serve a window of a bad stream
                self._window = bytearray()
                raise

    def close(self) -> None:
        with self._lock:
            self._stream, self._window = None, bytearray()

    # -- decoding ------------------------------------------------------------------------------

    def _read(self, offset: int, end: int) -> bytes:
        whole = self.size <= self._window_max  # small: decode and check it all first
        s = self._stream
        if s is None or offset < self._wstart:
            s = self._start(offset if self._jumps(whole) else 0)
        elif self._jumps(whole) and offset > s.out_pos + self._window_max:
            s = self._start(offset)
        target = self.size if whole else end
        idle = 0
        while s.out_pos < target:
            out = self._step(s)
            if out is None:  # compressed data exhausted before the recorded size
                self._finish(s, offset)
                break
            idle = 0 if out else idle + 1
            if idle > _MAX_IDLE_STEPS:
                raise CorruptArchive(f"{self.name}: the {s.decoder.name} decoder stopped "
                                     "producing data")
            self._keep(out, s, offset)
        if s.out_pos >= self.size and not s.finished:
            self._finish(s, offset)
        if end > s.out_pos:
            end = s.out_pos
        return bytes(self._window[offset - self._wstart:end - self._wstart])

    def _jumps(self, whole: bool) -> bool:
        """Whether a stream may start anywhere: stored data maps 1:1, unless checked whole."""
        return self.method == protocol.STORED and not whole

    def _start(self, at: int) -> _Stream:
        check = codecs.Crc32Check(self._crc32, self.size, self.name) if at == 0 else None
        s = _Stream(self.method, at, check)
        self._stream, self._window, self._wstart = s, bytearray(), at
        self.restarts += 1
        return s

    def _step(self, s: _Stream) -> bytes | None:
        """One decoder call: new compressed input if it wants some; None when there is none."""
        if s.decoder.needs_input:
            left = self._compressed_size - s.in_pos
            if left <= 0:
                return None
            s.request = min(s.request * 2, _MAX_REQUEST)
            n = min(s.request, left)
            start = self._data_start + s.in_pos
            data = _checked_fetch(self._fetch, start, start + n)
            s.in_pos += n
            # Stored data cannot expand, so it needs no output bound (and no re-slicing).
            out = s.decoder.decompress(data, -1 if self.method == protocol.STORED
                                       else _DECODE_STEP)
        else:
            out = s.decoder.decompress(b"", _DECODE_STEP)
        if s.check is not None:
            s.check.update(out)
        elif s.out_pos + len(out) > self.size:
            raise CorruptArchive(f"{self.name}: member is longer than its recorded size")
        return out

    def _keep(self, out: bytes, s: _Stream, offset: int) -> None:
        """Append decoded bytes; drop the front beyond the window, never at or after offset."""
        if out:
            self._window += out
            s.out_pos += len(out)
        # Half a window behind the reader survives (the kernel reorders read-ahead requests),
        # and never more than a window in all, plus what one call of the decoder overshoots.
        keep_from = min(max(0, offset - self._window_max // 2), s.out_pos - self._window_max)
        if keep_from - self._wstart > self._window_max // 4:  # in batches: copies stay linear
            del self._window[:keep_from - self._wstart]
            self._wstart = keep_from

    def _finish(self, s: _Stream, offset: int) -> None:
        """The end: drain the rest of the input, flush, and check size and CRC-32."""
        while s.in_pos < self._compressed_size and not s.decoder.eof:
            out = self._step(s)
            if out is None:
                break
            self._keep(out, s, offset)
        tail = s.decoder.flush()
        if s.check is not None:
            s.check.update(tail)
        self._keep(tail, s, offset)
        s.finished = True
        if s.check is None:
            if s.out_pos != self.size:
                raise CorruptArchive(f"{self.name}: member has {s.out_pos} bytes, "
                                     f"expected {self.size}")
            return
        if s.check.expected_crc is None and self._crc_lookup is not None:
            s.check.expected_crc = self._crc_lookup()
        s.check.verify()


# -- the CRC-32 of a member, from the archive itself ------------------------------------------

# APPNOTE 4.3.7 local file header: signature, version (2), flags (2), method (2), time (2),
# date (2), CRC-32 (4), compressed size (4), uncompressed size (4), name length (2), extra (2).
_LFH = struct.Struct("<4s5H3L2H")
_LFH_SIG = b"PK\x03\x04"
_DD_SIG = b"PK\x07\x08"  # 4.3.9.3: the data descriptor's optional signature
_FLAG_DESCRIPTOR = 0x08
_HEADER_MAX = _LFH.size + 2 * 0xFFFF  # name and extra field are at most 64 KiB each


def archive_crc(fetch: Fetch, data_start: int, compressed_size: int) -> int | None:
    """The CRC-32 recorded for the member whose compressed data starts at ``data_start``.

    The local header is the one just before the data (found by its signature, and by its name
    and extra lengths ending exactly at ``data_start``). Without flag bit 3 its CRC field is
    the member's; with it (streamed archives) the CRC sits in the data descriptor right after
    the compressed data, behind an optional ``PK\\x07\\x08`` signature (4.3.9). None when
    the header cannot be found: the member is then served unchecked.
    """
    header = _find_local_header(fetch, data_start)
    if header is None:
        return None
    flags, crc = header[2], header[6]
    if not flags & _FLAG_DESCRIPTOR:
        return crc
    after = data_start + compressed_size
    descriptor = fetch(after, after + 8)
    if len(descriptor) < 8:
        return None
    if descriptor[:4] == _DD_SIG:
        return struct.unpack_from("<L", descriptor, 4)[0]
    return struct.unpack_from("<L", descriptor, 0)[0]


def _find_local_header(fetch: Fetch, data_start: int) -> tuple | None:
    for span in (4096, _HEADER_MAX):
        begin = max(0, data_start - span)
        before = fetch(begin, data_start)
        pos = before.rfind(_LFH_SIG)
        while pos >= 0:
            if pos + _LFH.size <= len(before):
                fields = _LFH.unpack_from(before, pos)
                if pos + _LFH.size + fields[9] + fields[10] == len(before):
                    return fields
            pos = before.rfind(_LFH_SIG, 0, pos)
        if begin == 0:
            return None
    return None
