"""What can be checked before mounting: FUSE present, mount point and cache folder usable, API
reachable and the key accepted. Each failure is a ``MountError`` of one line that says the fix.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ... import protocol
from ...config import API_KEY_ENV, API_URL_ENV
from ...errors import AuthenticationError, PermissionDenied, StorageError, TransferError

if TYPE_CHECKING:
    from ...client import StorageClient


class MountError(Exception):
    """Why a mount cannot be made, in one line that says how to fix it."""


def check_fuse() -> None:
    if not os.path.exists("/dev/fuse"):
        raise MountError("FUSE is not available: /dev/fuse is missing (load it with "
                         "'modprobe fuse'; in a container, run with --device /dev/fuse "
                         "--cap-add SYS_ADMIN)")
    if os.geteuid() != 0:
        if not os.access("/dev/fuse", os.R_OK | os.W_OK):
            raise MountError("FUSE is not usable: no permission on /dev/fuse (ask for access, "
                             "or add yourself to the 'fuse' group)")
        if not (shutil.which("fusermount") or shutil.which("fusermount3")):
            raise MountError("FUSE is not usable: fusermount is missing "
                             "(install it: apt-get install fuse3)")
    try:
        import fuse  # noqa: F401 - loads libfuse.so.2
    except (ImportError, OSError) as exc:
        raise MountError(f"FUSE is not usable: {exc} (install libfuse 2: apt-get install "
                         "libfuse2, or libfuse2t64 on newer releases)") from None


def check_mountpoint(path: Path, options: dict) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MountError(f"mount point {path} does not exist (create it: mkdir -p {path})") \
            from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise MountError(f"{path} is a stale mount: the process that served it is gone "
                             f"(clean it up: storagefs umount {path})") from None
        raise MountError(f"cannot use {path} as a mount point: {exc.strerror}") from None
    if not os.path.isdir(path):
        raise MountError(f"mount point {path} is not a folder")
    if os.path.ismount(path):
        # The kernel may answer stat from its cache for a while after the server died;
        # listing the folder always asks the server.
        try:
            with os.scandir(path) as entries:
                next(entries, None)
        except OSError as exc:
            if exc.errno == errno.ENOTCONN:
                raise MountError(f"{path} is a stale mount: the process that served it is "
                                 f"gone (clean it up: storagefs umount {path})") from None
        raise MountError(f"{path} is already a mount point (unmount it first: "
                         f"storagefs umount {path})")
    if os.geteuid() != 0 and (st.st_uid != os.geteuid() or not os.access(path, os.W_OK)):
        raise MountError(f"mount point {path} must be a folder you own and can write to")
    if "nonempty" not in options and any(os.scandir(path)):
        raise MountError(f"mount point {path} is not empty (its files would be hidden; "
                         "use an empty folder, or -o nonempty)")


def check_cache_dir(path: Path) -> None:
    """Creates the folder if missing: a cache folder is ours to make, a mount point is not."""
    path.mkdir(parents=True, exist_ok=True)
    if not os.access(path, os.W_OK):
        raise MountError(f"cache folder {path} is not writable")


def check_storage(client: StorageClient) -> list[protocol.StorageFile] | None:
    """One listing of the top folder: the URL answers and accepts the key. The entries when
    that one page holds them all (the mount starts knowing its top folder, so the first path
    used costs one request less), else None."""
    url = client.config.api_url
    if not client.config.api_key:
        raise MountError(f"no API key (pass --api-key, set {API_KEY_ENV}, or log in so that "
                         "~/.inductiva/api_key exists)")
    try:
        page = client.contents("/", sort_by="name", order="asc", region=client.config.region)
    except (AuthenticationError, PermissionDenied):
        source = client.config.api_key_source
        if source:  # the one place the key came from (config.ClientConfig.from_env)
            raise MountError(f"the API key from {source} was refused by {url} (check the "
                             "key there)") from None
        raise MountError(f"the API key was refused by {url} (check --api-key, {API_KEY_ENV} "
                         "or ~/.inductiva/api_key)") from None
    except TransferError as exc:
        reason = exc.message.rsplit(": ", 1)[-1]
        raise MountError(f"cannot reach the storage API at {url}: {reason} "
                         f"(check --api-url or {API_URL_ENV}, and that the server is up)") \
            from None
    except StorageError as exc:
        raise MountError(f"the storage API at {url} failed: {exc}") from None
    return page.contents if len(page.contents) < protocol.MAX_PER_PAGE else None
