"""A task output with a million members, shaped as a parallel solver writes one.

``processor{p}/{time}/{field}`` under ``artifacts/``: 64 processor folders x 1,000 time steps x
16 fields is 1,024,000 members. Python's zipfile needs minutes for that many; this writer packs
the headers itself (stored members, a few bytes each, zip64 end records) in a few seconds, so a
test run can build it once and share it. ``member_bytes`` gives any member's content back for
byte-for-byte checks.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Iterator

FIELDS = ("U", "p", "p_rgh", "k", "epsilon", "omega", "nut", "alphat", "T", "rho", "phi",
          "alpha.water", "Co", "yPlus", "wallShearStress", "vorticity")
PROCESSORS = 64
STEPS = 1000
FULL_COUNT = PROCESSORS * STEPS * len(FIELDS)  # 1,024,000
_DOS_TIME, _DOS_DATE = 0x6000, 0x5A21  # 2025-01-01 12:00:00


def step_name(step: int) -> str:
    """Time step folder names as solvers write them: 0.001 .. 1.000."""
    return f"{(step + 1) / STEPS:.3f}"


def member_names(count: int = FULL_COUNT) -> Iterator[str]:
    """The first ``count`` member names, processor by processor, step by step."""
    produced = 0
    for p in range(PROCESSORS):
        for s in range(STEPS):
            for f in FIELDS:
                if produced == count:
                    return
                yield f"artifacts/processor{p}/{step_name(s)}/{f}"
                produced += 1


def member_bytes(name: str) -> bytes:
    """Deterministic, distinct content for each member."""
    return f"{name} {zlib.crc32(name.encode()):08x}\n".encode()


def write_task_archive(path: Path, count: int = FULL_COUNT) -> Path:
    """Write the archive of the first ``count`` members (stored, zip64 end records)."""
    central = bytearray()
    entries = 0
    with path.open("wb", buffering=1 << 20) as f:
        offset = 0
        for name in member_names(count):
            raw = name.encode()
            data = member_bytes(name)
            crc = zlib.crc32(data)
            header = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0x800, 0, _DOS_TIME, _DOS_DATE,
                                 crc, len(data), len(data), len(raw), 0)
            f.write(header + raw + data)
            central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", (3 << 8) | 20, 20, 0x800, 0,
                                   _DOS_TIME, _DOS_DATE, crc, len(data), len(data), len(raw), 0,
                                   0, 0, 0, 0o100644 << 16, offset) + raw
            offset += len(header) + len(raw) + len(data)
            entries += 1
        f.write(central)
        eocd64 = offset + len(central)
        f.write(struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries,
                            len(central), offset))
        f.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, eocd64, 1))
        f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF,
                            0xFFFFFFFF, 0))
    return path
