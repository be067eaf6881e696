"""``upload``: a file or a folder's files, streamed in parallel to presigned URLs."""

from __future__ import annotations

import logging
import os
import posixpath
import threading
from typing import BinaryIO, Optional, Tuple, cast

from .. import protocol
from ..client import StorageClient
from ..errors import InvalidRequest, NotFound
from .defaults import get_client
from .overwrite import overwrite_allowed
from .parallel import Cancelled, run_parallel
from .progress import LockedBar, progress_bar

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


def _already_stored(client: StorageClient, plan: list[Tuple[str, str, int]],
                    region: Optional[str]) -> set[str]:
    """The remote paths of the plan that already hold their local file: the same size, stored
    after the local file last changed (the quick check of rsync and rclone, from one listing
    per remote folder). A file edited since its upload has a later mtime and is sent again;
    an upload cut short stores nothing, or not the same size."""
    stored: dict[str, protocol.StorageFile] = {}
    for folder in sorted({posixpath.dirname(remote) for _, remote, _ in plan}):
        try:
            for entry in client.iter_contents(folder or "/", region=region):
                if not entry.is_directory:
                    stored[posixpath.join(folder, entry.name)] = entry
        except NotFound:
            continue
    same = set()
    for path, remote, size in plan:
        found = stored.get(remote)
        if found is not None and found.size_bytes == size and found.creation_time is not None \
                and found.creation_time.timestamp() >= os.path.getmtime(path):
            same.add(remote)
    return same


def upload(local_path: str, remote_dir: str, region: Optional[str] = None) -> None:
    """Uploads a local file or folder into ``remote_dir``, streamed and in parallel.

    A file goes to ``remote_dir/<its name>``; a folder's files go to
    ``remote_dir/<path relative to the folder>``. Files already stored (same size, stored
    after their last local change) are skipped, so running an interrupted upload again
    resumes it; ``overwrite.set_overwrite(True)`` sends every file. Unlike the SDK, a file
    named ``output.zip`` is uploaded like any other: task folders hold exactly such files.
    """
    if not os.path.exists(local_path):
        raise InvalidRequest(f"File or directory '{local_path}' does not exist.")
    plan = _upload_plan(local_path, remote_dir)
    if not plan:
        logger.info("Nothing to upload: %s holds no files.", local_path)
        return
    client = get_client()
    same: set[str] = set()
    if not overwrite_allowed():
        same = _already_stored(client, plan, region)
        if same:
            logger.info("%d of %d file(s) skipped: stored with the same size after their last "
                        "local change.", len(same), len(plan))
            plan = [item for item in plan if item[1] not in same]
        if not plan:
            return
    logger.info("Uploading content...")
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
                              for url, (path, _, size) in zip(urls, plan)], "uploaded", len(same))
    logger.info("Content uploaded successfully.")
