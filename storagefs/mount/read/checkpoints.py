"""Deflate checkpoints kept on disk (``--cache-dir``), so a new mount starts inflating anywhere.

A checkpoint (``zipfmt.inflate.Checkpoint``: a block boundary's bit position and the 32 KiB
of output before it) is laid by every pass over a deflate member, in memory first (the shared
budget, ``BlockCache``), and with ``--cache-dir`` also appended to the member's index file, so
what a mount learned survives it and memory can let checkpoints go without losing them.

Layout: ``<cache-dir>/checkpoints/<digest[:32]>.ckpt``, one file per member *version*: the
digest is SHA-256 of the member's key (archive path and version: size, time or ETag; data
offset, sizes, CRC-32, method). A replaced archive has another digest, so its old index is
never read. The files take about 0.8% of what they index (a 32 KiB window per 4 MiB); when
a mount starts, the least recently used go until they fit their ``limit`` (a sixteenth of
``--cache-dir-size``). ::

    header: b"SFCK" | version u8 | pad 3 | digest[32]
    record: crc32 u32 | key u64 | out u64 | in u64 | bits u8 | prime u8 | len u32 | window

``key`` is the block offset the checkpoint serves (``out`` at most one block before it); the
window is stored as it is (compressing it cost the pass ~0.8 ms per checkpoint, 5% of the
inflate, to save 20 KB of disk per 4 MiB); the CRC-32 covers the rest of the record. Records
are appended with one ``write`` each (O_APPEND), so a crash leaves at most a torn last
record, which fails its check. What is read back is checked: the header's digest (another
member or version: the file is ignored), each record's CRC-32 and fields (a damaged record is
skipped, logged, and its offset forgotten); a checkpoint that passes them and still does not
decode has its whole file deleted, and the block is decoded from the start (``decode.py``).
Data decoded from a checkpoint goes through the member's running CRC-32 like any other, so a
member read to its end is still checked against the archive.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import threading
import uuid
from pathlib import Path
from typing import Hashable

from cachetools import LRUCache

from ...zipfmt.codecs import fast_zlib
from ...zipfmt.inflate import WINDOW, Checkpoint

log = logging.getLogger(__name__)

_MAGIC, _VERSION = b"SFCK", 1
_HEADER = struct.Struct("<4sB3x32s")
_RECORD = struct.Struct("<IQQQBBI")  # crc, key, out, in, bits, prime, window length


def spacing(size: int, *, interval: int, block: int, share: int, cost: int,
            spill: bool) -> int:
    """Output between two checkpoints of a member of ``size`` bytes: ``interval``, or wider
    so that its checkpoints fit half of ``share`` (the budget's part for small kept entries)
    at ``cost`` each. With a disk index (``spill``) they need not: memory keeps those used
    last and the file has them all."""
    if spill or size <= 0:
        return interval
    most = max(1, share // 2 // max(1, cost))
    wanted = -(-size // most)
    return max(interval, -(-wanted // block) * block)


def member_digest(key: Hashable, size: int, compressed_size: int, crc32: int | None,
                  method: int) -> bytes:
    """What names one member version: everything that changes its compressed bytes."""
    return hashlib.sha256(repr((key, size, compressed_size, crc32, method)).encode()).digest()


class MemberIndex:
    """The checkpoints of one member version on disk: offsets known, windows read on use."""

    def __init__(self, path: Path, digest: bytes) -> None:
        self.path = path
        self._digest = digest
        self._lock = threading.Lock()
        self._where: dict[int, tuple[int, int]] = {}  # key -> (file position, record length)
        self.rejected = 0  # records or files found damaged or foreign
        self._scan()
        if self._where:
            try:
                os.utime(path)  # used: the last to go when the folder is pruned
            except OSError:
                pass

    def offsets(self) -> list[int]:
        with self._lock:
            return sorted(self._where)

    def __contains__(self, offset: int) -> bool:
        return offset in self._where

    def get(self, offset: int) -> Checkpoint | None:
        """The checkpoint for block offset ``offset``, checked; None if absent or damaged."""
        with self._lock:
            where = self._where.get(offset)
        if where is None:
            return None
        try:
            with open(self.path, "rb") as f:
                f.seek(where[0])
                raw = f.read(where[1])
        except OSError:
            return None
        point = self._parse(raw, offset)
        if point is None:
            self.rejected += 1
            log.warning("%s: checkpoint at %d is damaged; inflating from an earlier one",
                        self.path, offset)
            with self._lock:
                self._where.pop(offset, None)
        return point

    def add(self, offset: int, point: Checkpoint) -> None:
        """Append the checkpoint serving block offset ``offset`` (kept once)."""
        with self._lock:
            if offset in self._where:
                return
            window = point.window
            body = _RECORD.pack(0, offset, point.out, point.in_pos, point.bits, point.prime,
                                len(window))[4:] + window
            record = struct.pack("<I", fast_zlib.crc32(body)) + body
            try:
                fd = self._open_for_append()
                try:
                    position = os.lseek(fd, 0, os.SEEK_END)
                    os.write(fd, record)
                finally:
                    os.close(fd)
            except OSError as exc:
                log.warning("cannot write the checkpoint index %s: %s", self.path, exc)
                return
            self._where[offset] = (position, len(record))

    def discard(self) -> None:
        """Forget every checkpoint and delete the file (one of them proved wrong)."""
        with self._lock:
            self._where.clear()
            self.rejected += 1
            try:
                self.path.unlink()
            except OSError:
                pass

    # -- the file ------------------------------------------------------------------------------

    def _open_for_append(self) -> int:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            pass
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex}")
        with open(tmp, "wb") as f:
            f.write(_HEADER.pack(_MAGIC, _VERSION, self._digest))
        try:
            os.link(tmp, self.path)  # never over another process's file
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def _scan(self) -> None:
        """Learn the offsets the file holds (records are checked when read)."""
        try:
            with open(self.path, "rb") as f:
                head = f.read(_HEADER.size)
                if not head:
                    return
                magic, version, digest = _HEADER.unpack(head) if len(head) == _HEADER.size \
                    else (b"", 0, b"")
                if (magic, version, digest) != (_MAGIC, _VERSION, self._digest):
                    self.rejected += 1
                    log.warning("%s is not the checkpoint index of this member; replacing it",
                                self.path)
                    self.path.unlink()
                    return
                position = _HEADER.size
                while True:
                    fixed = f.read(_RECORD.size)
                    if len(fixed) < _RECORD.size:
                        return  # the end, or a torn last record
                    _, key, *_, length = _RECORD.unpack(fixed)
                    if length > WINDOW:
                        self.rejected += 1
                        return
                    f.seek(length, os.SEEK_CUR)
                    total = _RECORD.size + length
                    if position + total > os.fstat(f.fileno()).st_size:
                        return
                    self._where.setdefault(key, (position, total))
                    position += total
        except OSError:
            return

    @staticmethod
    def _parse(raw: bytes, offset: int) -> Checkpoint | None:
        if len(raw) < _RECORD.size:
            return None
        crc, key, out, in_pos, bits, prime, length = _RECORD.unpack_from(raw)
        if crc != fast_zlib.crc32(raw[4:]) or key != offset or \
                len(raw) != _RECORD.size + length:
            return None
        try:
            return Checkpoint(out, in_pos, bits, prime, raw[_RECORD.size:])
        except ValueError:
            return None


class CheckpointIndex:
    """The checkpoint files of a cache folder: one ``MemberIndex`` per member version."""

    def __init__(self, root: Path | str, limit: int = 256 << 20) -> None:
        self.root = Path(root)
        self.limit = limit
        self._lock = threading.Lock()
        self._open: LRUCache[bytes, MemberIndex] = LRUCache(1024)  # members used last
        self._prune()

    def _prune(self) -> None:
        """Delete crash leftovers, then the least recently used files beyond ``limit``."""
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return
        files = []
        for entry in entries:
            try:
                if entry.name.startswith(".tmp-"):
                    os.unlink(entry.path)
                elif entry.name.endswith(".ckpt"):
                    st = entry.stat()
                    files.append((st.st_mtime, st.st_size, entry.path))
            except OSError:
                continue
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.limit:
                break
            try:
                os.unlink(path)
                total -= size
            except OSError:
                pass

    def member(self, key: Hashable, size: int, compressed_size: int, crc32: int | None,
               method: int) -> MemberIndex:
        digest = member_digest(key, size, compressed_size, crc32, method)
        with self._lock:
            index = self._open.get(digest)
            if index is None:
                path = self.root / f"{digest.hex()[:32]}.ckpt"
                index = self._open[digest] = MemberIndex(path, digest)
            return index
