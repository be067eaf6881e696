"""A ``ZipIndex`` on disk, so a restarted server, or another worker process, need not parse a
big archive again: the index's arrays written as they are in memory, read back by mapping the
file (no parse, no copy: the pages are the kernel's, shared by every process that maps them).

Layout: ``MAGIC``, a little-endian 8-byte length, a JSON header (the archive's size, the entry
count, and for each section its offset and length), then the sections, each 8-byte aligned: the
arrays, the names, and the small tables (``marshal``: dicts and sets of ints and bytes, which
``marshal`` reads without running anything). Files live in the server's own folder, out of
reach of the API; one that does not read back as expected is ignored (and parsed again).
"""

from __future__ import annotations

import json
import logging
import marshal
import mmap
import os
import struct
import sys
from pathlib import Path
from typing import Any

from .zipindex import ZipIndex

log = logging.getLogger(__name__)

MAGIC = b"storagefs zip index 1\n"
_ARRAYS = ("_offset", "_csize", "_usize", "_crc", "_dostime", "_method", "_flags", "_extra_len",
           "_order", "_starts")
_TABLES = ("_keys", "_unlisted", "_cd_name_len", "_winner", "_shadowed", "_folders")


def save(index: ZipIndex, path: Path) -> None:
    """Write ``index`` to ``path`` atomically (a temporary file renamed over it)."""
    sections: list[tuple[str, bytes | memoryview]] = []
    header: dict[str, Any] = {"size": index.size, "count": index.count, "byteorder": sys.byteorder,
                              "sections": {}}
    for name in _ARRAYS:
        values = getattr(index, name)
        sections.append((name, memoryview(values).cast("B")))
        header["sections"][name] = [values.typecode if hasattr(values, "typecode")
                                    else values.format, 0, 0]
    base = index._base
    sections.append(("_blob", index._blob[base:base + index._starts[-1]]))
    header["sections"]["_blob"] = ["B", 0, 0]
    sections.append(("_tables", marshal.dumps(tuple(getattr(index, t) for t in _TABLES))))
    header["sections"]["_tables"] = ["B", 0, 0]
    offset = 0
    for name, data in sections:
        header["sections"][name][1:] = [offset, len(data)]
        offset += _aligned(len(data))
    head = json.dumps(header).encode()
    start = _aligned(len(MAGIC) + 8 + len(head))
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as f:
            f.write(MAGIC + struct.pack("<Q", len(head)) + head)
            f.write(b"\0" * (start - f.tell()))
            for _, data in sections:
                f.write(data)
                f.write(b"\0" * (_aligned(len(data)) - len(data)))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load(path: Path, size: int) -> ZipIndex | None:
    """The index saved at ``path`` for an archive of ``size`` bytes, or None when there is
    none or it does not read back whole."""
    try:
        with path.open("rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (FileNotFoundError, ValueError):  # ValueError: an empty file
        return None
    try:
        return _read(mapped, size)
    except (ValueError, KeyError, TypeError, EOFError, struct.error) as exc:
        log.warning("ignoring the saved archive index %s (%s); parsing the archive again",
                    path, exc)
        return None


def _read(mapped: mmap.mmap, size: int) -> ZipIndex:
    if mapped[:len(MAGIC)] != MAGIC:
        raise ValueError("not an index file")
    (length,) = struct.unpack_from("<Q", mapped, len(MAGIC))
    header = json.loads(mapped[len(MAGIC) + 8:len(MAGIC) + 8 + length])
    if header["size"] != size or header["byteorder"] != sys.byteorder:
        raise ValueError("made for another archive or machine")
    start = _aligned(len(MAGIC) + 8 + length)
    view = memoryview(mapped)
    index = ZipIndex.__new__(ZipIndex)
    index.size, index.count = size, header["count"]
    for name, (code, offset, nbytes) in header["sections"].items():
        if start + offset + nbytes > len(mapped):
            raise ValueError(f"section {name} runs past the end of the file")
        if name in _ARRAYS:
            setattr(index, name, view[start + offset:start + offset + nbytes].cast(code))
        elif name == "_blob":
            index._blob, index._base = mapped, start + offset
        else:
            for table, value in zip(_TABLES, marshal.loads(mapped[start + offset:
                                                                  start + offset + nbytes])):
                setattr(index, table, value)
    lengths = {name: len(getattr(index, name)) for name in _ARRAYS}
    if any(n != index.count for name, n in lengths.items() if name not in ("_order", "_starts")):
        raise ValueError("arrays of unequal lengths")
    if lengths["_starts"] != index.count + 1 or lengths["_order"] > index.count:
        raise ValueError("arrays of unequal lengths")
    if index._starts[-1] != header["sections"]["_blob"][2]:
        raise ValueError("names of the wrong length")
    return index


def _aligned(n: int) -> int:
    return (n + 7) & ~7
