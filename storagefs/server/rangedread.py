"""A remote object as a seekable binary file, read through ranged GETs.

The server reads archives kept in an object store this way: the end records and the central
directory (one large read each), then local headers (30-byte reads, in archive order, for the
members listed). A read that misses the windows held fetches at least ``window`` bytes, and the
window doubles while reads go forward just past the last one (up to ``max_window``), so the
local headers of a run of small members come in a few large GETs rather than one GET each,
while an archive's end is read without its body.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from typing import Callable

Fetch = Callable[[int, int], bytes]
"""``fetch(start, end_exclusive)``: exactly those bytes of the object, or an exception."""

WINDOW = 64 * 1024
MAX_WINDOW = 8 * 1024 * 1024
HELD_WINDOWS = 4


class RangedFile(io.RawIOBase):
    """Read-only, seekable view of ``size`` bytes that ``fetch`` returns by range."""

    def __init__(self, fetch: Fetch, size: int, window: int = WINDOW,
                 max_window: int = MAX_WINDOW) -> None:
        super().__init__()
        self._fetch = fetch
        self._size = size
        self._pos = 0
        self._min_window = window
        self._window = window
        self._max_window = max_window
        self._held: OrderedDict[int, bytes] = OrderedDict()  # start -> bytes, most recent last
        self._last_end: int | None = None  # end of the last fetch
        self.requests = 0  # GETs made, for tests and logs

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all to the end when negative); short only at the end."""
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        if end <= self._pos:
            return b""
        data = self._held_bytes(self._pos, end)
        if data is None:
            data = self._miss(self._pos, end)
        self._pos = end
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def _held_bytes(self, start: int, end: int) -> bytes | None:
        for base, data in self._held.items():
            if base <= start and end <= base + len(data):
                self._held.move_to_end(base)
                return data[start - base:end - base]
        return None

    def _miss(self, start: int, end: int) -> bytes:
        last_end = self._last_end
        if last_end is not None and last_end <= start < last_end + self._window:
            self._window = min(self._window * 2, self._max_window)  # going forward: read more
        elif last_end is not None:
            self._window = self._min_window
        fetch_end = min(self._size, max(end, start + self._window))
        data = self._fetch(start, fetch_end)
        self.requests += 1
        self._last_end = fetch_end
        if end - start < self._max_window:  # large reads (a central directory) are not kept
            self._held[start] = data
            while len(self._held) > HELD_WINDOWS:
                self._held.popitem(last=False)
        return data[:end - start]
