"""Changes to what is stored, made for the mount, and the mount's caches kept in step.

Each change is one storage call (remove; copy on the server, followed to its end when it runs
as an operation), and once it succeeded the cached listings of the folders concerned are
changed at once (``backend.CachedBackend.changed``), so the mount shows it before any TTL.
"""

from __future__ import annotations

import datetime as _dt
import logging

from ... import protocol
from ...client import StorageClient
from ...errors import NotFound, ServerError
from ...storage.operations import operation_or_none
from ..backend import CachedBackend

log = logging.getLogger(__name__)


class RemoteChanges:
    def __init__(self, client: StorageClient, backend: CachedBackend,
                 region: str | None = None) -> None:
        self.client = client
        self.backend = backend
        self.region = region

    def stored(self, path: str, size: int) -> None:
        """``path`` now holds ``size`` bytes, stored just now."""
        self.backend.changed(path, _item(path, size, False))

    def remove(self, path: str, *, folder: bool = False) -> None:
        """Removes a file, or a folder with everything under it (gone already is fine)."""
        try:
            self.client.remove(path + "/" if folder else path, self.region)
        except NotFound:
            pass
        self.backend.changed(path, None)

    def copy(self, source: str, target: str, *, folder: bool = False, size: int = 0) -> None:
        """A server-side copy, waited for when it runs as an operation."""
        answer = self.client.copy(source, target, self.region)
        op = operation_or_none(self.client, answer)
        if op is not None and op.status == "RUNNING":
            log.info("copy of %s to %s runs as operation %s; waiting for it", source, target,
                     op.id)
            op.wait(poll_s=1)
        if op is not None and op.status == "FAILED":
            raise ServerError(f"copy of {source} to {target} failed: {op.error_message}")
        self.backend.changed(target, _item(target, size, folder))

    def forget(self, path: str) -> None:
        """A folder that no longer exists (its last file is gone)."""
        self.backend.changed(path, None)


def _item(path: str, size: int, folder: bool) -> protocol.StorageFile:
    name = path.rpartition("/")[2]
    now = _dt.datetime.now(_dt.timezone.utc)
    return protocol.StorageFile(name + "/" if folder else name, None if folder else size, now,
                                folder, "", "")
