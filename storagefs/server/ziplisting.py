"""The ``zip-contents`` answer (docs/protocol.md §3.3) from a ``ZipIndex``, whole or streamed.

A listing of up to ``STREAM_MIN_ENTRIES`` entries is built whole, as a dict (the server keeps
the answer for repeated requests). A longer one is streamed: the same JSON, produced in batches
of ``BATCH`` entries, so neither the server nor a client's read timeout ever waits for a million
entries at once (a recursive listing of a 1,000,000-member archive is about 180 MB of JSON).

``range_start`` is the data offset proven by the member's local header, the headers read in
large windows (``ZipIndex.data_starts``). A streamed *recursive* listing gives a member whose
local header lies far from every other one (more than ``zipindex.HEADER_GAP`` away) the central
directory's estimate instead of a request of its own: a million big members would otherwise
cost a million reads (ranged GETs on an object store). Folder listings (``recursive=false``,
what in-archive downloads use) and listings up to ``STREAM_MIN_ENTRIES`` are always exact.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from itertools import islice
from typing import BinaryIO, Callable, Iterable, Iterator

from ..errors import StorageError
from ..gcpause import gc_paused
from .zipindex import ZipIndex

log = logging.getLogger(__name__)

STREAM_MIN_ENTRIES = 100_000
BATCH = 8192
ArchiveOpener = Callable[[], BinaryIO]  # opens an archive's bytes for reading; a context manager

Listing = dict | Iterator[bytes]
"""A whole ``ZipListing`` as a dict, or its JSON text in pieces."""


def zip_listing(index: ZipIndex, opener: ArchiveOpener, zip_relative_path: str,
                recursive: bool) -> Listing:
    """The listing of one folder inside the archive, whole or streamed (see the module)."""
    if recursive:
        stream = index.count_under(zip_relative_path) > STREAM_MIN_ENTRIES
        entries: Iterable[tuple[str, int]] = index.entries(zip_relative_path, True)
    else:
        children = list(index.entries(zip_relative_path, False))
        stream = len(children) > STREAM_MIN_ENTRIES
        entries = children
    if not stream:
        listed = list(entries)
        with opener() as handle:
            return {"size": index.size, "contents": _rows(index, handle, listed, {}, False)}
    chunks = _stream(index, opener, iter(entries), estimate_isolated=recursive)
    first = next(chunks)  # errors in the first batch still get their own status
    return _chained(first, chunks)


def _chained(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _stream(index: ZipIndex, opener: ArchiveOpener, entries: Iterator[tuple[str, int]],
            estimate_isolated: bool) -> Iterator[bytes]:
    times: dict[int, str | None] = {}
    with opener() as handle:
        opening = b'{"size":%d,"contents":[' % index.size
        batch = list(islice(entries, BATCH))
        yield opening + _json(_rows(index, handle, batch, times, estimate_isolated))
        try:
            while batch := list(islice(entries, BATCH)):
                yield b"," + _json(_rows(index, handle, batch, times, estimate_isolated))
        except StorageError as exc:
            # The status went out with the first batch: the answer is cut off, never finished
            # as if complete, and the log says why.
            log.error("archive listing cut off: %s", exc)
            raise
        yield b"]}"


def _json(rows: list[dict]) -> bytes:
    """The rows as JSON array items, without the brackets (as ``JSONResponse`` renders)."""
    if not rows:
        return b""
    text = json.dumps(rows, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text[1:-1].encode("utf-8")


def _rows(index: ZipIndex, handle: BinaryIO, entries: list[tuple[str, int]],
          times: dict[int, str | None], estimate_isolated: bool) -> list[dict]:
    """Each entry as a ``protocol.ZipEntry`` JSON dict (the same fields, in the same order)."""
    members = [i for _, i in entries if i >= 0]
    starts = index.data_starts(handle, members, estimate_isolated=estimate_isolated)
    starts.reverse()  # popped in listing order below
    with gc_paused():  # thousands of new dicts, none of them cyclic
        return _shaped(index, entries, starts, times)


def _shaped(index: ZipIndex, entries: list[tuple[str, int]], starts: list[int],
            times: dict[int, str | None]) -> list[dict]:
    rows = []
    for name, i in entries:
        if i < 0:
            rows.append({"name": name, "size": 0, "compressed_size": 0, "range_start": None,
                         "creation_time": None, "compress_type": 0, "crc32": None})
            continue
        size, compressed, method, crc, dostime = index.fields(i)
        when = times.get(dostime, False)
        if when is False:  # DOS times have a 2 s step: many members share one
            when = times[dostime] = _dos_time(dostime)
        if name.endswith("/"):
            rows.append({"name": name, "size": 0, "compressed_size": 0,
                         "range_start": starts.pop(), "creation_time": when,
                         "compress_type": 0, "crc32": None})
        else:
            rows.append({"name": name, "size": size, "compressed_size": compressed,
                         "range_start": starts.pop(), "creation_time": when,
                         "compress_type": method, "crc32": crc})
    return rows


def _dos_time(dostime: int) -> str | None:
    """A DOS date and time (date << 16 | time) as ISO 8601 in UTC (as ``protocol.format_time``),
    None if it is no date."""
    date, time = dostime >> 16, dostime & 0xFFFF
    try:
        return dt.datetime((date >> 9) + 1980, (date >> 5) & 0xF, date & 0x1F, time >> 11,
                           (time >> 5) & 0x3F, (time & 0x1F) * 2,
                           tzinfo=dt.timezone.utc).isoformat()
    except ValueError:  # DOS fields can hold month 0 or second 60
        return None
