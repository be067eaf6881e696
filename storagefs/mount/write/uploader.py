"""Uploads of whole files through signed upload URLs, on threads of their own.

A file goes up in one ``PUT`` (the protocol has no parts for uploads: multipart exists only
for exports to the user's own bucket, see the README), which the storage stores atomically:
the reference server writes a temporary file and renames it (``server/store.AtomicWriter``),
Google Cloud Storage makes an object visible only once its single PUT completed. So a failed
upload leaves the old content, never a partial one.

Uploads run on the uploader's threads, not on the FUSE thread that waits for one: when the
mount ends, whatever is still being sent finishes (``wait_idle``) instead of dying with the
FUSE loop.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from ... import protocol
from ...client import StorageClient
from ...errors import AuthenticationError, PermissionDenied, StorageError, TooLarge

log = logging.getLogger(__name__)

# Statuses by which a storage says the account is full.
_QUOTA_STATUSES = (413, 507)


class UploadFailed(StorageError):
    """An upload did not store the file; ``errno`` is what the writer is told."""

    def __init__(self, message: str, code: int = errno.EIO) -> None:
        super().__init__(message)
        self.errno = code


def errno_for_upload(exc: BaseException) -> int:
    """EACCES for a refused key or URL, ENOSPC for a full account, EIO for the rest."""
    if isinstance(exc, (AuthenticationError, PermissionDenied)):
        return errno.EACCES
    if isinstance(exc, TooLarge) or getattr(exc, "http_status", None) in _QUOTA_STATUSES:
        return errno.ENOSPC
    return errno.EIO


class Uploader:
    def __init__(self, client: StorageClient, region: str | None = None,
                 workers: int = 4) -> None:
        self.client = client
        self.region = region
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upload")
        self._busy = 0
        self._idle = threading.Condition()

    def upload(self, local: Path, remote: str) -> int:
        """Stores ``local`` at ``remote``; returns its size. Raises ``UploadFailed``."""
        return self.submit(local, remote).result()

    def submit(self, local: Path, remote: str) -> Future:
        with self._idle:
            self._busy += 1
        try:
            return self._pool.submit(self._run, local, remote)
        except RuntimeError:  # shut down
            self._done()
            raise UploadFailed(f"{remote}: not uploaded: the mount is ending") from None

    def _run(self, local: Path, remote: str) -> int:
        try:
            started = time.monotonic()
            try:
                url = self.client.signed_urls([remote], protocol.OPERATION_UPLOAD,
                                              self.region)[0]
                with open(local, "rb") as handle:
                    size = _size(handle)
                    self.client.put_file(url, handle, size)
            except Exception as exc:  # noqa: BLE001 - every failure is the writer's error
                raise UploadFailed(f"{remote}: upload failed: {exc}",
                                   errno_for_upload(exc)) from None
            log.info("uploaded %s (%d bytes, %.2f s)", remote, size, time.monotonic() - started)
            return size
        finally:
            self._done()

    def _done(self) -> None:
        with self._idle:
            self._busy -= 1
            self._idle.notify_all()

    @property
    def busy(self) -> int:
        return self._busy

    def wait_idle(self, timeout: float) -> bool:
        """Waits until no upload runs; False if some still did after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _size(handle: BinaryIO) -> int:
    return os.fstat(handle.fileno()).st_size
