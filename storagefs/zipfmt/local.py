"""What a client learns about a member from the bytes around its compressed data.

The storage API gives a member's data range but not always its CRC-32 (the Inductiva API does
not send it). The local header just before the data has it (APPNOTE 4.3.7), unless flag bit 3
says the writer could not seek back (streamed archives): then the data descriptor right after
the data holds it (4.3.9), behind an optional signature. Shared by ``storage.download`` and the
mount's reader; the server parses archives on its own (``server/zipindex.py``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from . import Fetch

LOCAL_HEADER_SIGNATURE = b"PK\x03\x04"
DESCRIPTOR_SIGNATURE = b"PK\x07\x08"
FLAG_ENCRYPTED = 0x01
FLAG_DESCRIPTOR = 0x08
# signature, version, flags, method, time, date, crc32, compressed, size, name len, extra len
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
LOCAL_HEADER_SIZE = _LOCAL_HEADER.size
# A local header with its name and extra field spans at most this many bytes.
LOCAL_HEADER_MAX = LOCAL_HEADER_SIZE + 2 * 0xFFFF


FLAG_UTF8_NAME = 0x800
_ZIP64_SIZE = 0xFFFFFFFF  # the real sizes are in the ZIP64 extra field


@dataclass(frozen=True)
class LocalHeader:
    flags: int
    method: int
    crc32: int
    compressed_size: int = 0
    name: bytes = b""

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & FLAG_ENCRYPTED)

    @property
    def crc_in_descriptor(self) -> bool:
        return bool(self.flags & FLAG_DESCRIPTOR)


def header_ending_at(window: bytes) -> LocalHeader | None:
    """The local header whose name and extra field end exactly where ``window`` ends.

    Searched backwards by signature, so a member's name containing ``PK\\x03\\x04`` does not
    fool it; None when no header fits.
    """
    pos = window.rfind(LOCAL_HEADER_SIGNATURE)
    while pos >= 0:
        if pos + LOCAL_HEADER_SIZE <= len(window):
            fields = _LOCAL_HEADER.unpack_from(window, pos)
            if pos + LOCAL_HEADER_SIZE + fields[9] + fields[10] == len(window):
                name_start = pos + LOCAL_HEADER_SIZE
                return LocalHeader(flags=fields[2], method=fields[3], crc32=fields[6],
                                   compressed_size=fields[7],
                                   name=bytes(window[name_start:name_start + fields[9]]))
        pos = window.rfind(LOCAL_HEADER_SIGNATURE, 0, pos)
    return None


def proves_offset(header: LocalHeader | None, name: str, method: int,
                  compressed_size: int) -> bool:
    """Whether ``header``, found ending exactly at a listed data offset, is the named member's.

    A listing may compute offsets from the central directory alone, which is wrong by the
    difference between the local and central extra fields; only the member's own local header
    ending right there (its name, method and, unless deferred to a descriptor or ZIP64, its
    compressed size) proves that the compressed data starts at that offset.
    """
    if header is None or header.method != method:
        return False
    if header.name.decode("utf-8" if header.flags & FLAG_UTF8_NAME else "cp437",
                          "replace") != name and header.name != name.encode("utf-8", "replace"):
        return False
    recorded = header.compressed_size
    return header.crc_in_descriptor or recorded in (_ZIP64_SIZE, compressed_size)


def header_length(start: bytes) -> int | None:
    """The length of the local header that ``start`` begins with, name and extra field
    included, read from its fixed part (``LOCAL_HEADER_SIZE`` bytes); None when ``start`` does
    not begin with the whole fixed part of a local header."""
    if len(start) < LOCAL_HEADER_SIZE or not start.startswith(LOCAL_HEADER_SIGNATURE):
        return None
    fields = _LOCAL_HEADER.unpack_from(start)
    return LOCAL_HEADER_SIZE + fields[9] + fields[10]


def descriptor_crc(tail: bytes) -> int | None:
    """The CRC-32 of a data descriptor starting ``tail``; None when ``tail`` is too short."""
    if tail[:4] == DESCRIPTOR_SIGNATURE:
        return struct.unpack_from("<L", tail, 4)[0] if len(tail) >= 8 else None
    return struct.unpack_from("<L", tail, 0)[0] if len(tail) >= 4 else None


# -- the CRC-32 of a member, from the archive itself ------------------------------------------

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
    if not header.crc_in_descriptor:
        return header.crc32
    after = data_start + compressed_size
    return descriptor_crc(fetch(after, after + 8))


def _find_local_header(fetch: Fetch, data_start: int) -> LocalHeader | None:
    """Look 4 KiB back first (names and extras are short), then as far as a header can span."""
    for span in (4096, LOCAL_HEADER_MAX):
        begin = max(0, data_start - span)
        header = header_ending_at(fetch(begin, data_start))
        if header is not None or begin == 0:
            return header
    return None
