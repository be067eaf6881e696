"""The functions of the Inductiva SDK's ``inductiva.storage``, on top of ``client.py``.

``from storagefs import storage`` replaces ``from inductiva import storage``: same names,
signatures, defaults, printed table and local file layout. What differs is what was a bug in
the SDK (docs/protocol.md §4, §7): nested paths inside ``output.zip`` resolve, every zip of a
folder download is extracted, progress totals are positive, export works, nothing is written
outside ``local_dir``, and an interrupted download leaves no partial file behind (files are
written under a temporary name and renamed once complete and verified).

All functions use one client, built on first use from ``ClientConfig.from_env()``
(``INDUCTIVA_API_URL``, ``INDUCTIVA_API_KEY``, the config file), and replaceable with
``configure(...)`` or ``set_client(client)``.

The modules of this package each do one job (``defaults``, ``listing``, ``changes``,
``operations``, ``downloads``, ``members``, ``extraction``, ``uploads``, ``s3export``, and
what they share: ``sdktypes``, ``formatting``, ``localpaths``, ``progress``, ``parallel``);
this one gathers their public names. ``cli`` holds the command-line verbs.
"""

from __future__ import annotations

import logging

# Public names outside __all__ before the modules were split, still reachable from here: the
# client the functions use, the errors they raise, the SDK's names for task archives.
from ..client import StorageClient  # noqa: F401
from ..config import ClientConfig  # noqa: F401
from ..errors import (AuthenticationError, CorruptArchive, InvalidRequest,  # noqa: F401
                      NotFound, PermissionDenied, ServerError, StorageError, TransferError,
                      UnsupportedMethod)
from .changes import copy, remove, upload_from_url
from .defaults import configure, get_client, set_client, using
from .downloads import download
from .listing import get_file_range, get_signed_urls, get_space_used, get_zip_contents, listdir
from .operations import StorageOperation
from .s3export import MB  # noqa: F401
from .s3export import export, export_to_aws_s3, multipart_upload
from .sdktypes import (ARTIFACTS_DIRNAME, INPUT_DIRNAME, TASK_INPUT_ZIP,  # noqa: F401
                       TASK_OUTPUT_ZIP)
from .sdktypes import (ExportDestination, MemberNotFound, ZipArchiveInfo, ZipFileInfo,
                       ZipFileRange)
from .uploads import upload

logger = logging.getLogger(__name__)  # the one logger of every module of the package

__all__ = [
    "listdir", "download", "upload", "upload_from_url", "remove", "copy", "get_zip_contents",
    "get_file_range", "get_signed_urls", "get_space_used", "export", "export_to_aws_s3",
    "multipart_upload", "StorageOperation", "ExportDestination", "ZipArchiveInfo",
    "ZipFileInfo", "ZipFileRange", "configure", "set_client", "get_client", "using",
    "MemberNotFound",
]
