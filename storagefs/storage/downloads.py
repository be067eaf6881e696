"""``download``: files and folders in the SDK's local layout, members of zips on their own,
and downloaded zips extracted; nothing partial is left behind when a download fails."""

from __future__ import annotations

import logging
import os
import threading
import urllib.parse
from typing import Optional

from .. import protocol
from ..client import StorageClient
from ..errors import ServerError, TransferError
from .defaults import get_client
from .extraction import extract_zip
from .localpaths import Dirs, atomic_file, inside, local_segments, safe_segments
from .members import download_member, split_zip_path
from .overwrite import already_there
from .parallel import Cancelled, run_parallel
from .progress import LockedBar, progress_bar

logger = logging.getLogger(__package__)  # the library logs under one name, "storagefs.storage"


def download(
    remote_path: str,
    local_dir: str = "",
    decompress: bool = True,
    region: Optional[str] = None,
) -> str:
    """Downloads a file or folder from storage into ``local_dir`` (default: the current folder).

    Files land at ``local_dir/<remote path>``; a file inside a zip, e.g.
    ``task_id/output.zip/stdout.txt``, lands at ``local_dir/task_id/output/stdout.txt`` and is
    fetched alone with one ranged request (a folder inside a zip: each file under it). With
    ``decompress``, downloaded ``.zip`` files are extracted next to themselves (``x.zip`` ->
    ``x/``; only ``artifacts/`` of a task output) and removed. A local file already there and
    identical is kept (so a re-run resumes); a different one is refused unless
    ``overwrite.set_overwrite(True)``. Returns the local path of the file or folder.
    """
    client = get_client()
    zipped = split_zip_path(remote_path)
    if zipped is not None:
        result, paths = download_member(client, zipped[0], zipped[1], local_dir, region)
    else:
        paths = _download_path(client, remote_path, local_dir, region)
        remote = protocol.clean_path(remote_path)
        result = paths[0] if len(paths) == 1 else os.path.join(local_dir, *remote.split("/"))
    if decompress:
        for path in paths:
            if path.lower().endswith(".zip") and os.path.isfile(path):
                target = path[:-4]
                if extract_zip(path, target):
                    os.remove(path)
                    if path == result:
                        result = target
    logger.info('Successfully downloaded %d file(s) to "%s".', len(paths), result)
    return result


def _under(urls: list[str], remote: str) -> list[str]:
    """The URLs of files at or under ``remote``: a service that expands a folder by raw prefix
    also gives ``mydata2/...`` for ``mydata``; those are left out, not a reason to fail."""
    kept = []
    for url in urls:
        try:
            local_segments(url, remote)
        except ServerError:
            logger.debug("skipping %s: not under %r", urllib.parse.urlsplit(url).path, remote)
            continue
        kept.append(url)
    if urls and not kept:
        local_segments(urls[0], remote)  # none fits: say so
    return kept


def _download_path(client: StorageClient, remote_path: str, local_dir: str,
                   region: Optional[str]) -> list[str]:
    remote = protocol.clean_path(remote_path)
    # As typed: a trailing slash says "folder" to a service that expands paths by prefix.
    asked = remote + "/" if remote and remote_path.endswith("/") else remote or "/"
    urls = _under(client.signed_urls([asked], protocol.OPERATION_DOWNLOAD, region), remote)
    targets = [inside(local_dir, safe_segments(local_segments(url, remote), url), url)
               for url in urls]
    if len(set(targets)) != len(targets):
        raise ServerError("two signed URLs map to the same local file")
    sizes = run_parallel(client, [lambda cancel, u=url: client.object_size(u) for url in urls])
    for target, size in zip(targets, sizes):
        already_there(target, size)  # a different local file: refused before any transfer
    dirs = Dirs()
    desc = f'Downloading {len(urls)} file(s) from "{remote_path}"'
    try:
        with progress_bar(desc, sum(sizes)) as bar:
            locked = LockedBar(bar)
            jobs = [lambda cancel, u=url, t=target, s=size:
                    _download_file(client, u, t, s, locked, cancel, dirs)
                    for url, target, size in zip(urls, targets, sizes)]
            return run_parallel(client, jobs, "downloaded")
    except BaseException:
        dirs.undo()
        raise


def _download_file(client: StorageClient, url: str, target: str, size: int, bar: LockedBar,
                   cancel: threading.Event, dirs: Dirs) -> str:
    if cancel.is_set():
        raise Cancelled()
    with atomic_file(target, dirs) as handle:
        with client.stream(url) as chunks:
            for chunk in chunks:
                if cancel.is_set():
                    raise Cancelled()
                handle.write(chunk)
                bar.update(len(chunk))
        if handle.tell() != size:
            raise TransferError(f"{target}: received {handle.tell()} bytes, expected {size}")
    return target
