"""A file open for writing: a private staged copy, and what happened to it.

Every open for writing gets its own copy, so two writers of one path never mix: each close
uploads the whole of its own copy, and the last close is what is stored. Reads through the
same handle see its writes (SQLite reads back what it wrote).
"""

from __future__ import annotations

import errno
import os
import threading
import time

from .staging import StagedCopy, Staging


class WriteHandle:
    def __init__(self, path: str, copy: StagedCopy, staging: Staging, *, dirty: bool) -> None:
        self.path = path  # in the mount; follows renames
        self.copy = copy
        self.staging = staging
        self.fd = os.open(copy.data, os.O_RDWR)
        self.dirty = dirty  # changed since the last upload (a new file is, even empty)
        self.written = False  # a write or truncate came since the last upload
        self.new = False  # made by create and not stored yet
        self.broken: OSError | None = None  # a write failed: this copy is never uploaded
        self.failed: OSError | None = None  # the last upload failed: kept at release
        self.unlinked = False  # removed while open: nothing to upload at close
        self.closed = False
        self._closed_size = 0
        self.mtime = time.time()
        self.lock = threading.RLock()  # writes wait while the copy is being uploaded

    def size(self) -> int:
        """Without the lock, which an upload holds: ``stat`` does not wait for one."""
        if not self.closed:
            try:
                return os.fstat(self.fd).st_size
            except OSError:
                pass  # closed meanwhile
        return self._closed_size

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def write(self, data: bytes, offset: int) -> int:
        with self.lock:
            self._check()
            end = offset + len(data)
            try:  # refused or short: the copy lacks what the writer meant, never uploaded
                self.staging.check_room(self.path, end, max(0, end - self.size()))
                written = os.pwrite(self.fd, data, offset)
                if written != len(data):
                    raise OSError(errno.ENOSPC, f"{self.path}: short write to the staged copy")
            except OSError as exc:
                self.broken = exc
                raise
            self._changed()
            return written

    def truncate(self, length: int) -> None:
        with self.lock:
            self._check()
            try:
                self.staging.check_room(self.path, length, max(0, length - self.size()))
                os.ftruncate(self.fd, length)
            except OSError as exc:
                self.broken = exc
                raise
            self._changed()

    def _check(self) -> None:
        if self.broken is not None:  # the copy is short of a write the writer was refused
            raise OSError(self.broken.errno, f"{self.path}: an earlier write failed")

    def _changed(self) -> None:
        self.dirty = self.written = True
        self.mtime = time.time()

    def close_file(self) -> None:
        with self.lock:
            if not self.closed:
                self._closed_size = os.fstat(self.fd).st_size
                self.closed = True
                os.close(self.fd)
