"""Changes to what is stored, done by the server: remove, copy, and upload from a URL."""

from __future__ import annotations

import logging
import posixpath
import urllib.parse
from typing import Optional

from ..errors import InvalidRequest, ServerError
from .defaults import get_client
from .operations import StorageOperation, operation_or_none

logger = logging.getLogger(__package__)  # the library logs under one name, "storagefs.storage"


def remove(remote_path: str, region: Optional[str] = None) -> None:
    """Removes a file or a folder (recursively) from storage."""
    logger.info("Removing '%s' from remote storage...", remote_path)
    if "/" not in remote_path:  # a bare name at the root is a folder (the SDK's rule)
        remote_path += "/"
    get_client().remove(remote_path, region)
    logger.info("Successfully removed '%s' from remote storage.", remote_path)


def copy(source: str, target: str, region: Optional[str] = None) -> Optional[StorageOperation]:
    """Copies a file, or a folder's contents, to ``target`` on the server side."""
    client = get_client()
    op = operation_or_none(client, client.copy(source, target, region))
    if op is not None and op.status == "FAILED":
        raise ServerError(f"copy of {source} to {target} failed: {op.error_message}")
    if op is not None and op.status == "RUNNING":
        logger.info("Copy of %s to %s is running (operation %s).", source, target, op.id)
    else:
        logger.info("Copied %s to %s successfully.", source, target)
    return op


def upload_from_url(
    url: str,
    remote_dir: str,
    file_name: Optional[str] = None,
    region: Optional[str] = None,
) -> Optional[StorageOperation]:
    """Asks the server to fetch ``url`` into ``remote_dir/file_name`` (name from the URL)."""
    if not file_name:
        file_name = urllib.parse.unquote(urllib.parse.urlparse(url).path.split("/")[-1])
    if not file_name:
        raise InvalidRequest(f"cannot tell a file name from {url!r}; pass file_name")
    remote_path = posixpath.join(remote_dir, file_name)
    client = get_client()
    op = operation_or_none(client, client.input_remote(url, remote_path, region))
    logger.info("File is being uploaded...")
    logger.info("You can use 'storagefs ls' to check the status.")
    return op
