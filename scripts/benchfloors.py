"""The floors a read through the mount is measured against, in the same run as the mount.

``unzip -p`` of the archive on local disk is what a user would otherwise run. In-process
inflate is what the member costs to decode at all: its compressed bytes, already in memory,
through zlib-ng (what the mount's ``speed`` extra uses), with and without the CRC-32 the mount
checks; no read can be faster than that on one core. Both run here, on this machine, right
before or after the mount's figures, so a busy machine slows all of them alike.
"""

from __future__ import annotations

import resource
import struct
import subprocess
import time
import zipfile
import zlib
from pathlib import Path
from typing import Callable

CHUNK = 1 << 20  # compressed bytes handed to the decoder at a time, as the mount does
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")


def unzip_p(archive: Path, member: str, timeout: float) -> tuple[float, float]:
    """Wall and CPU seconds of ``unzip -p ARCHIVE MEMBER > /dev/null`` (CPU time is what a
    busy machine does not change)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(["unzip", "-p", str(archive), member], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=timeout)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"unzip -p failed ({done.returncode}): "
                           f"{done.stderr.decode(errors='replace')[-300:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return elapsed, cpu


def compressed_bytes(archive: Path, member: str) -> tuple[bytes, zipfile.ZipInfo]:
    """The member's raw deflate stream, read past its local header."""
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(member)
    if info.compress_type != zipfile.ZIP_DEFLATED:
        raise ValueError(f"{member} is not deflated (method {info.compress_type})")
    with archive.open("rb") as f:
        f.seek(info.header_offset)
        fields = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
        name_len, extra_len = fields[-2], fields[-1]
        f.seek(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
        data = f.read(info.compress_size)
    return data, info


def _decoders() -> dict[str, tuple[Callable, Callable]]:
    """(decompressobj, crc32) of each inflate library installed: zlib-ng first."""
    found: dict[str, tuple[Callable, Callable]] = {}
    try:
        from zlib_ng import zlib_ng
        found["zlib-ng"] = (zlib_ng.decompressobj, zlib_ng.crc32)
    except ImportError:
        pass
    try:
        from isal import isal_zlib
        found["isa-l"] = (isal_zlib.decompressobj, isal_zlib.crc32)
    except ImportError:
        pass
    found["zlib"] = (zlib.decompressobj, zlib.crc32)
    return found


def inflate(data: bytes, expected_size: int, expected_crc: int, library: str = "zlib-ng",
            check_crc: bool = True) -> tuple[float, float]:
    """Wall and CPU seconds to inflate ``data`` in 1 MiB pieces (and CRC the output when
    asked); checks the result, so a wrong floor cannot pass unnoticed."""
    decompressobj, crc32 = _decoders()[library]
    view = memoryview(data)
    started, cpu = time.perf_counter(), time.thread_time()
    decoder = decompressobj(-15)
    size, crc = 0, 0
    for start in range(0, len(view), CHUNK):
        out = decoder.decompress(view[start:start + CHUNK])
        size += len(out)
        if check_crc:
            crc = crc32(out, crc)
    out = decoder.flush()
    size += len(out)
    if check_crc:
        crc = crc32(out, crc)
    elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu
    if size != expected_size or (check_crc and crc != expected_crc):
        raise RuntimeError(f"in-process inflate gave {size} bytes, crc {crc:#x}; "
                           f"expected {expected_size}, {expected_crc:#x}")
    return elapsed, cpu


def measure(archive: Path, member: str, timeout: float, drop_caches: Callable[[], bool]) -> dict:
    """Every floor of one member, in one go: ``unzip -p`` cold and warm, then in-process
    inflate with each library installed (best of two, bytes in memory)."""
    drop_caches()
    cold, cold_cpu = unzip_p(archive, member, timeout)
    warm, _ = unzip_p(archive, member, timeout)
    data, info = compressed_bytes(archive, member)
    size = info.file_size
    result: dict = {"member": member, "size": size, "compressed": info.compress_size,
                    "ratio": info.compress_size / max(size, 1),
                    "unzip_cold_s": cold, "unzip_warm_s": warm, "unzip_cpu_s": cold_cpu,
                    "unzip_mb_s": size / cold / 1e6, "inflate": {}}
    for library in _decoders():
        bare, bare_cpu = min(inflate(data, size, info.CRC, library, check_crc=False)
                             for _ in range(2))
        with_crc, with_crc_cpu = inflate(data, size, info.CRC, library, check_crc=True)
        result["inflate"][library] = {"seconds": bare, "mb_s": size / bare / 1e6,
                                      "cpu_s": bare_cpu, "with_crc_s": with_crc,
                                      "with_crc_cpu_s": with_crc_cpu}
    return result
