"""``upload``: a file or a folder's files, streamed in parallel to presigned URLs."""

from __future__ import annotations

import logging
import os
import posixpath
import threading
from typing import BinaryIO, Optional, Tuple, cast

from .. import protocol
from ..errors import InvalidRequest
from .defaults import get_client
from .parallel import Cancelled, run_parallel
from .progress import LockedBar, progress_bar
from .sdktypes import TASK_OUTPUT_ZIP

logger = logging.getLogger(__package__)  # the library logs under one name, "storagefs.storage"

_URL_BATCH = 100  # paths per signed-URL request, to keep query strings reasonable


class _ProgressReader:
    """A file read by the HTTP library, counted on the progress bar (rewinds uncount)."""

    def __init__(self, handle: BinaryIO, size: int, bar: LockedBar,
                 cancel: threading.Event) -> None:
        self._handle = handle
        self._size = size
        self._bar = bar
        self._cancel = cancel
        self._counted = 0

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        if self._cancel.is_set():
            raise Cancelled()
        data = self._handle.read(n)
        position = self._handle.tell()
        if position > self._counted:
            self._bar.update(position - self._counted)
            self._counted = position
        return data

    def tell(self) -> int:
        return self._handle.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = self._handle.seek(offset, whence)
        if position < self._counted:  # a retry starts the body again
            self._bar.update(position - self._counted)
            self._counted = position
        return position


def _upload_plan(local_path: str, remote_dir: str) -> list[Tuple[str, str, int]]:
    """(local file, remote path, size) for a file or every file under a folder."""
    remote_dir = protocol.clean_path(remote_dir)
    if os.path.isdir(local_path):
        plan = []
        for folder, subdirs, files in os.walk(local_path):
            subdirs.sort()
            for name in sorted(files):
                full = os.path.join(folder, name)
                rel = os.path.relpath(full, local_path).replace(os.sep, "/")
                plan.append((full, posixpath.join(remote_dir, rel) if remote_dir else rel,
                             os.path.getsize(full)))
        return plan
    name = os.path.basename(os.path.normpath(local_path))
    return [(local_path, posixpath.join(remote_dir, name) if remote_dir else name,
             os.path.getsize(local_path))]


def upload(local_path: str, remote_dir: str, region: Optional[str] = None) -> None:
    """Uploads a local file or folder into ``remote_dir``, streamed and in parallel.

    A file goes to ``remote_dir/<its name>``; a folder's files go to
    ``remote_dir/<path relative to the folder>``.
    """
    if not os.path.exists(local_path):
        raise InvalidRequest(f"File or directory '{local_path}' does not exist.")
    plan = _upload_plan(local_path, remote_dir)
    output_zip = posixpath.join(protocol.clean_path(remote_dir), TASK_OUTPUT_ZIP).lstrip("/")
    if any(remote == output_zip for _, remote, _ in plan):
        raise InvalidRequest(f"Invalid file name: '{TASK_OUTPUT_ZIP}'.")
    if not plan:
        logger.info("Nothing to upload: %s holds no files.", local_path)
        return
    logger.info("Uploading content...")
    client = get_client()
    urls: list[str] = []
    for i in range(0, len(plan), _URL_BATCH):
        batch = [remote for _, remote, _ in plan[i:i + _URL_BATCH]]
        urls += client.signed_urls(batch, protocol.OPERATION_UPLOAD, region)
    total = sum(size for _, _, size in plan)
    with progress_bar(f"Uploading {len(plan)} file(s)", total) as bar:
        locked = LockedBar(bar)

        def job(cancel: threading.Event, url: str, path: str, size: int) -> None:
            if cancel.is_set():
                raise Cancelled()
            with open(path, "rb") as handle:
                reader = _ProgressReader(handle, size, locked, cancel)
                # requests reads any object with read, len, tell and seek
                client.put_file(url, cast(BinaryIO, reader), size)

        run_parallel(client, [lambda cancel, u=url, p=path, s=size: job(cancel, u, p, s)
                              for url, (path, _, size) in zip(urls, plan)])
    logger.info("Content uploaded successfully.")
