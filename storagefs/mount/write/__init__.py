"""Writing through the mount (``storagefs mount --read-write``).

A file opened for writing is a private copy on local disk (``staging``); closing it uploads
the whole copy through a signed upload URL (``uploader``), which the storage stores
atomically, so the remote file is either the old content or the whole new one. A copy that
could not be uploaded is moved to the recovery folder (``recovery``), retried while mounted
and by the next mount. ``layer.WriteLayer`` is what ``fuseops`` calls; ``local`` holds what
exists only in this mount (empty folders, files being written); ``remote`` changes what is
stored (remove, server-side copy) and keeps the mount's caches in step.
"""

from .layer import WriteLayer, WriteSettings

__all__ = ["WriteLayer", "WriteSettings"]
