"""Proving where a member's data starts (storagefs/mount/memberstart.py), on bytes alone."""

from __future__ import annotations

import io
import zipfile

from storagefs import protocol
from storagefs.mount.memberstart import locate, primed


def stored_zip(members: dict[str, bytes]) -> tuple[bytes, dict[str, int]]:
    """An archive and the data offset of each member, from its local header."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    raw = buffer.getvalue()
    offsets = {}
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        for info in zf.infolist():
            at = info.header_offset
            name_len = int.from_bytes(raw[at + 26:at + 28], "little")
            extra_len = int.from_bytes(raw[at + 28:at + 30], "little")
            offsets[info.filename] = at + 30 + name_len + extra_len
    return raw, offsets


def fetcher(raw: bytes):
    def fetch(start: int, end: int) -> bytes:
        return raw[start:end]
    return fetch


def never_asked() -> tuple[int, int, int]:
    raise AssertionError("zip-file-range asked although the listing was right")


def test_a_wrong_offset_at_the_archive_start_is_not_taken():
    raw, offsets = stored_zip({"a.txt": b"alpha" * 10, "b.txt": b"beta"})
    asked = []

    def ask_range() -> tuple[int, int, int]:
        asked.append(1)
        return offsets["a.txt"], 50, protocol.STORED

    start = locate(fetcher(raw), name="a.txt", listed_start=0, compressed_size=50,
                   method=protocol.STORED, ask_range=ask_range)
    assert asked and start.start == offsets["a.txt"]
    assert start.prefetched and (b"alpha" * 10).startswith(start.prefetched[:50])


def test_a_name_that_is_no_valid_text_is_no_crash():
    raw, offsets = stored_zip({"a.txt": b"alpha"})
    start = locate(fetcher(raw), name="r\udcfe.txt", listed_start=offsets["a.txt"],
                   compressed_size=5, method=protocol.STORED,
                   ask_range=lambda: (offsets["a.txt"], 5, protocol.STORED))
    assert start.start == offsets["a.txt"]


def test_the_crc_lookup_keeps_none_of_the_fetched_bytes():
    """A member's shared state keeps its CRC lookup long after the open that made it."""
    data = b"x" * 100_000
    raw, offsets = stored_zip({"big.bin": data})
    start = locate(fetcher(raw), name="big.bin", listed_start=offsets["big.bin"],
                   compressed_size=len(data), method=protocol.STORED, ask_range=never_asked)
    assert len(start.prefetched) >= len(data)
    lookup = start.crc_lookup(fetcher(raw))
    held = [cell.cell_contents for cell in lookup.__closure__ or ()]
    assert not any(isinstance(value, (bytes, bytearray)) and len(value) > 8 for value in held)
    assert not any(value is start for value in held)
    assert lookup() == zipfile.ZipFile(io.BytesIO(raw)).getinfo("big.bin").CRC


def test_primed_bytes_serve_first_and_are_let_go_at_their_end():
    raw = bytes(range(256)) * 10
    calls = []

    def fetch(start: int, end: int) -> bytes:
        calls.append((start, end))
        return raw[start:end]

    read = primed(fetch, 100, raw[100:300])
    assert read(100, 150) == raw[100:150] and not calls
    assert read(250, 400) == raw[250:400] and calls == [(300, 400)]
    assert read(120, 130) == raw[120:130] and calls[-1] == (120, 130)  # let go: fetched again
