"""The functions of the Inductiva SDK's ``inductiva.storage``, on top of ``client.py``.

``from storagefs import storage`` replaces ``from inductiva import storage``: same names,
signatures, defaults, printed table and local file layout. What differs is what was a bug in
the SDK (PROTOCOL.md §4, §7): nested paths inside ``output.zip`` resolve, every zip of a folder
download is extracted, progress totals are positive, export works, nothing is written outside
``local_dir``, and an interrupted download leaves no partial file behind (files are written
under a temporary name and renamed once complete and verified).

All functions use one client, built on first use from ``ClientConfig.from_env()``
(``INDUCTIVA_API_URL``, ``INDUCTIVA_API_KEY``, the config file), and replaceable with
``configure(...)`` or ``set_client(client)``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import logging
import math
import os
import pathlib
import posixpath
import re
import struct
import sys
import tempfile
import threading
import time
import urllib.parse
import zipfile
from dataclasses import dataclass
from enum import Enum
from typing import Any, BinaryIO, Callable, Iterable, Iterator, List, Literal, Optional, Tuple

from .. import protocol
from ..zipfmt import codecs
from ..zipfmt import local as ziplocal
from ..client import StorageClient
from ..config import ClientConfig
from ..errors import (AuthenticationError, CorruptArchive, InvalidRequest, NotFound,
                     PermissionDenied, ServerError, StorageError, TransferError,
                     UnsupportedMethod)

logger = logging.getLogger(__name__)

MB = 1024 * 1024
TASK_OUTPUT_ZIP = "output.zip"
TASK_INPUT_ZIP = "input.zip"
ARTIFACTS_DIRNAME = "artifacts"
INPUT_DIRNAME = "sim_dir"
_URL_BATCH = 100  # paths per signed-URL request, to keep query strings reasonable
_UNSAFE_CHARS = re.compile(r'[<>:"|?*]')  # replaced with '_' in local names, as the SDK does

__all__ = [
    "listdir", "download", "upload", "upload_from_url", "remove", "copy", "get_zip_contents",
    "get_file_range", "get_signed_urls", "get_space_used", "export", "export_to_aws_s3",
    "multipart_upload", "StorageOperation", "ExportDestination", "ZipArchiveInfo",
    "ZipFileInfo", "ZipFileRange", "configure", "set_client", "get_client", "using",
    "MemberNotFound",
]


# -- the default client -------------------------------------------------------------------------

class _Defaults:
    """The one place module-level functions get their client and output settings from."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.client: StorageClient | None = None
        self.progress = True


_defaults = _Defaults()


def get_client() -> StorageClient:
    """The client the module functions use; built from the environment on first use."""
    with _defaults.lock:
        if _defaults.client is None:
            _defaults.client = StorageClient(ClientConfig.from_env())
        return _defaults.client


def set_client(client: StorageClient | None) -> None:
    """Use ``client`` from now on (``None``: build a new one from the environment when needed)."""
    with _defaults.lock:
        _defaults.client = client


def configure(api_url: str | None = None, api_key: str | None = None, region: str | None = None,
              progress: bool | None = None, **options: Any) -> StorageClient:
    """Point the module functions at an API; unset values come from the environment.

    ``options`` are other ``ClientConfig`` fields (timeouts, retries, transfer_workers, ...).
    ``progress=False`` hides the progress bars.
    """
    client = StorageClient(ClientConfig.from_env(api_url=api_url, api_key=api_key,
                                                 region=region, **options))
    with _defaults.lock:
        old, _defaults.client = _defaults.client, client
        if progress is not None:
            _defaults.progress = progress
    if old is not None:
        old.close()
    return client


@contextlib.contextmanager
def using(client: StorageClient, progress: bool | None = None) -> Iterator[StorageClient]:
    """Within the block, the module functions use ``client`` (and the progress setting)."""
    with _defaults.lock:
        saved = _defaults.client, _defaults.progress
        _defaults.client = client
        if progress is not None:
            _defaults.progress = progress
    try:
        yield client
    finally:
        with _defaults.lock:
            _defaults.client, _defaults.progress = saved


# -- SDK data classes -------------------------------------------------------------------------

@dataclass
class ZipFileInfo:
    """Represents information about a file within a ZIP archive."""
    name: str
    size: Optional[int]
    compressed_size: Optional[int]
    range_start: Optional[int]
    creation_time: Optional[datetime.datetime]
    compress_type: Optional[int]


@dataclass
class ZipArchiveInfo:
    """Represents the total ZIP size and file contents of a ZIP archive."""
    size: int
    files: List[ZipFileInfo]


@dataclass
class ZipFileRange:
    """The byte range of a file's compressed data within a ZIP archive (end inclusive)."""
    range_start: int
    range_end: int
    compress_type: Optional[int] = None


class ExportDestination(Enum):
    AWS_S3 = "aws-s3"

    def __str__(self) -> str:
        return self.value


class MemberNotFound(NotFound, ValueError):
    """A file named inside a zip is not in it (a ValueError too, as in the SDK)."""


# -- output helpers (the SDK's formatting) -----------------------------------------------------

def _ansi_enabled() -> bool:
    value = os.environ.get("INDUCTIVA_DISABLE_ANSI", "false").strip().lower()
    if value in ("y", "yes", "t", "true", "on", "1"):
        return False
    return hasattr(sys.stdout, "isatty") and sys.stdout.isatty()


def _bytes_formatter(n_bytes: Optional[float]) -> Optional[str]:
    if n_bytes is None:
        return None
    res = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if res < 1000:
            return f"{res:.0f} {unit}" if unit == "B" else f"{res:.2f} {unit}"
        res /= 1000
    return f"{res:.2f} PB"


def _currency_formatter(amount: float) -> str:
    if amount == 0:
        return "0 US$"
    decimals = f"{amount:.15f}".split(".")[1]
    first_non_zero = next((i for i, digit in enumerate(decimals) if digit != "0"), 10)
    places = max(2, first_non_zero + 2)
    if amount < 0.1:
        return f"{amount:.{places}f} US$"
    return f"{amount:.2f} US$"


def _datetime_formatter(value: Optional[datetime.datetime]) -> Optional[str]:
    return None if value is None else value.strftime("%d/%m, %H:%M:%S")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _table(rows: list[list[Optional[str]]], columns: list[str]) -> str:
    """The SDK's table: bold upper-case headers, columns three spaces apart, 'n/a' for None.

    Column widths are those of ``tabulate`` as the SDK calls it: the widest cell, or the
    header plus two; lines carry no trailing spaces and are indented by one space.
    """
    bold = _ansi_enabled()
    headers = [f"\033[1m{c.upper()}\033[0m" if bold else c.upper() for c in columns]
    cells = [["n/a" if v is None else str(v) for v in row] for row in rows]
    widths = [max([len(c) + 2] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        padded = [v + " " * (w - len(_ANSI.sub("", v))) for v, w in zip(values, widths)]
        return " " + "   ".join(padded).rstrip()

    table = "\n".join([line(headers)] + [line(r) for r in cells])
    return f"\n{table}\n"


def _print_storage_size_and_cost(client: StorageClient) -> int:
    total = client.space_used()
    cost = client.cost()["estimated_monthly_cost"]
    print("\nTotal storage size used across all regions:")
    print(f"\tVolume: {_bytes_formatter(total)}")
    print(f"\tCost: {_currency_formatter(cost)}/month\n")
    return total


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc) -> None:
        pass


def _progress_bar(desc: str, total: int):
    """One tqdm bar in bytes (decimal units, as the SDK), or nothing without tqdm."""
    if not _defaults.progress:
        return _NoBar()
    try:
        import tqdm
    except ImportError:
        return _NoBar()
    return tqdm.tqdm(total=max(total, 0), unit="B", unit_scale=True, unit_divisor=1000,
                     desc=desc)


class _LockedBar:
    """Serialises updates from the transfer threads."""

    def __init__(self, bar) -> None:
        self._bar = bar
        self._lock = threading.Lock()

    def update(self, n: int) -> None:
        if n:
            with self._lock:
                self._bar.update(n)


# -- listing and account -----------------------------------------------------------------------

def get_space_used() -> float:
    """Prints the storage used across all regions and its monthly cost; returns GB (GiB)."""
    total = _print_storage_size_and_cost(get_client())
    return round(float(total) / (1024 ** 3), 3)


def listdir(
    path: str = "/",
    region: Optional[str] = None,
    max_results: Optional[int] = 10,
    order_by: Literal["size", "creation_time"] = "creation_time",
    sort_order: Literal["asc", "desc"] = "desc",
    recursive: bool = False,
    print_results: bool = True,
) -> list[dict]:
    """List a storage folder: a list of dicts (name, size, creation_time, provider, region).

    ``max_results=None`` lists everything. ``recursive`` asks for the sizes and times of
    sub-folders (not a recursive listing). With ``print_results``, prints the SDK's table,
    the regions, and the storage used and its cost.
    """
    client = get_client()
    if len(path.split("/")) < 2:  # 'task1' names a folder; '' is the root (as the SDK sends)
        path += "/"
    entries: list[dict] = []
    limit = sys.maxsize if not max_results else max_results
    current_region = region
    available: list[str] = []
    page = 1
    while limit > 0:
        page_size = min(protocol.MAX_PER_PAGE, limit)
        result = client.contents(path, sort_by=order_by, order=sort_order, recursive=recursive,
                                 page=page, per_page=page_size, region=region)
        available = result.available_regions
        for item in result.contents:
            entries.append({
                "name": item.name,
                "size": round(float(item.size_bytes), 3) if item.size_bytes else None,
                "creation_time": item.creation_time,
                "provider": item.provider_id,
                "region": item.region,
            })
            if current_region is None:
                current_region = item.region
        page += 1
        limit -= len(result.contents)
        if len(result.contents) < page_size:
            break

    if print_results:
        rows = [[e["name"], _bytes_formatter(e["size"]), _datetime_formatter(e["creation_time"]),
                 e["provider"], e["region"]] for e in entries]
        print(_table(rows, ["Name", "Size", "Creation Time", "Provider", "Region"]))
        print(f"Listed {len(entries)} folder(s). Ordered by {order_by}.\n"
              "Use --max-results/-m to control the number of results displayed.")
        print("\nCurrent region(s):", current_region)
        print("\nYou have storage in the following regions: " + ", ".join(available))
        _print_storage_size_and_cost(client)
    return entries


def get_signed_urls(
    paths: List[str],
    operation: Literal["upload", "download"],
    region: Optional[str] = None,
) -> List[str]:
    """Presigned URLs to upload ``paths`` or download the files under them."""
    return get_client().signed_urls(list(paths), operation, region)


def get_zip_contents(
    path: str,
    zip_relative_path: str = "",
    recursive: bool = False,
    region: Optional[str] = None,
) -> ZipArchiveInfo:
    """The archive's size and the entries under ``zip_relative_path`` (names relative to it)."""
    listing = get_client().zip_contents(path, zip_relative_path, recursive, region)
    files = [ZipFileInfo(name=e.name, size=e.size, compressed_size=e.compressed_size,
                         range_start=e.range_start, creation_time=e.creation_time,
                         compress_type=e.compress_type) for e in listing.contents]
    return ZipArchiveInfo(size=listing.size, files=files)


def get_file_range(
    path: str,
    zip_relative_path: str = "",
    filename: str = "",
    region: Optional[str] = None,
) -> ZipFileRange:
    """Offsets of a member's compressed data in the archive (``range_end`` inclusive)."""
    rng = get_client().zip_file_range(path, filename, zip_relative_path, region)
    return ZipFileRange(range_start=rng.range_start, range_end=rng.range_end,
                        compress_type=rng.compress_type)


# -- operations ---------------------------------------------------------------------------------

class StorageOperation:
    """A storage operation running remotely (export, copy, upload from URL)."""

    def __init__(self, api: StorageClient | None, id_: str) -> None:
        self._api = api
        self.id = id_
        self._name: Optional[str] = None
        self._status: Optional[str] = None
        self._attributes: dict = {}
        self._start_time: Optional[datetime.datetime] = None
        self._end_time: Optional[datetime.datetime] = None
        self._error_message: Optional[str] = None

    def __repr__(self) -> str:
        return f"StorageOperation(id={self.id!r}, name={self._name!r}, status={self._status!r})"

    def _update_from_api_response(self, response: Any) -> None:
        if isinstance(response, dict):
            response = protocol.Operation.from_json(response)
        self._name = response.name
        self._status = response.status
        self._attributes = dict(response.attributes)
        self._start_time = response.start_time
        self._end_time = response.end_time
        self._error_message = response.error_message

    @classmethod
    def from_api_response(cls, api: StorageClient | None, response: Any) -> "StorageOperation":
        """From the JSON object (or ``protocol.Operation``) the API answered with."""
        op_id = response["id"] if isinstance(response, dict) else response.id
        op = cls(api, op_id)
        op._update_from_api_response(response)
        return op

    @property
    def client(self) -> StorageClient:
        return self._api if self._api is not None else get_client()

    name = property(lambda self: self._name)
    status = property(lambda self: self._status)
    attributes = property(lambda self: dict(self._attributes))
    start_time = property(lambda self: self._start_time)
    end_time = property(lambda self: self._end_time)
    error_message = property(lambda self: self._error_message)

    def _refresh(self) -> None:
        self._update_from_api_response(self.client.operation(self.id))

    def wait(self, poll_s: int = 2) -> str:
        """Poll every ``poll_s`` seconds until the operation ends; returns 'OK' or 'FAILED'."""
        if self._status is None:
            self._refresh()
        while self._status == "RUNNING":
            time.sleep(poll_s)
            self._refresh()
        if self._status == "FAILED":
            logger.error("Operation failed: %s", self._error_message)
        else:
            logger.info("Operation completed successfully.")
        return self._status


def _operation_or_none(client: StorageClient, answer: Any) -> Optional[StorageOperation]:
    """The answer as a StorageOperation when it is one (the reference server returns them)."""
    if isinstance(answer, dict) and {"id", "status", "name"} <= answer.keys():
        try:
            return StorageOperation.from_api_response(client, answer)
        except InvalidRequest:
            return None
    return None


# -- changes ------------------------------------------------------------------------------------

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
    op = _operation_or_none(client, client.copy(source, target, region))
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
    op = _operation_or_none(client, client.input_remote(url, remote_path, region))
    logger.info("File is being uploaded...")
    logger.info("You can use 'storagefs ls' to check the status.")
    return op


# -- local paths --------------------------------------------------------------------------------

def _safe_segments(segments: Iterable[str], what: str) -> list[str]:
    """Path segments fit for a local path: unsafe characters replaced, escapes refused."""
    out = []
    for segment in segments:
        if segment in ("", "."):
            continue
        if segment == ".." or "\x00" in segment or "\\" in segment:
            raise InvalidRequest(f"refusing to write outside the download folder: {what!r}")
        out.append(_UNSAFE_CHARS.sub("_", segment))
    return out


def _inside(local_dir: str, segments: list[str], what: str) -> str:
    """``local_dir/segments...``, refused unless it stays inside ``local_dir`` (symlinks too)."""
    base = os.path.realpath(local_dir or ".")
    target = os.path.join(local_dir or ".", *segments) if segments else (local_dir or ".")
    resolved = os.path.realpath(target)
    if resolved != base and not resolved.startswith(base.rstrip(os.sep) + os.sep):
        raise InvalidRequest(f"refusing to write outside the download folder: {what!r}")
    return os.path.join(local_dir, *segments) if local_dir else os.path.join(*segments)


def _local_segments(url: str, remote: str) -> list[str]:
    """Where a downloaded file goes, relative to ``local_dir``: the SDK's layout (§4.2).

    The signed URL's path holds the storage path (§3.5 a); the local path is the part from
    where the requested path starts. The match is made on whole segments, preferring the
    recommended ``/<one segment>/<user path>`` shape.
    """
    segments = [s for s in urllib.parse.unquote(urllib.parse.urlsplit(url).path).split("/") if s]
    wanted = [s for s in remote.split("/") if s]
    if not wanted:  # the whole storage: drop the bucket-like first segment
        return segments[1:]
    k = len(wanted)
    starts = [i for i in range(len(segments) - k + 1) if segments[i:i + k] == wanted]
    if not starts:
        raise ServerError(f"signed URL {urllib.parse.urlsplit(url).path!r} does not contain "
                          f"the requested path {remote!r}")
    start = 1 if 1 in starts else starts[0]
    return segments[start:]


class _Dirs:
    """Creates parent folders and remembers which, to remove them again if a download fails."""

    def __init__(self) -> None:
        self.created: list[str] = []
        self._lock = threading.Lock()

    def make(self, path: str) -> None:
        missing = []
        parent = path
        while parent and not os.path.isdir(parent):
            missing.append(parent)
            parent = os.path.dirname(parent)
        for folder in reversed(missing):
            try:
                os.mkdir(folder)
            except FileExistsError:
                if not os.path.isdir(folder):
                    raise
                continue
            with self._lock:
                self.created.append(folder)

    def undo(self) -> None:
        for folder in sorted(self.created, key=len, reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only if empty: completed files stay


@contextlib.contextmanager
def _atomic_file(path: str, dirs: _Dirs) -> Iterator[BinaryIO]:
    """A temporary file next to ``path``, renamed to it only if the block completes."""
    folder = os.path.dirname(path) or "."
    dirs.make(folder)
    if os.path.isdir(path):
        raise InvalidRequest(f"cannot write file {path}: a folder has that name")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path)[:100] + ".",
                               suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- download -----------------------------------------------------------------------------------

class _Cancelled(Exception):
    pass


def _split_zip_path(remote_path: str) -> Optional[Tuple[str, str]]:
    """``task/output.zip/sub/f.txt`` -> (``task/output.zip``, ``sub/f.txt``); None otherwise."""
    parts = protocol.clean_path(remote_path).split("/")
    for i, part in enumerate(parts[:-1]):
        if part.lower().endswith(".zip"):
            return "/".join(parts[:i + 1]), "/".join(parts[i + 1:])
    return None


def download(
    remote_path: str,
    local_dir: str = "",
    decompress: bool = True,
    region: Optional[str] = None,
) -> str:
    """Downloads a file or folder from storage into ``local_dir`` (default: the current folder).

    Files land at ``local_dir/<remote path>``; a file inside a zip, e.g.
    ``task_id/output.zip/stdout.txt``, lands at ``local_dir/task_id/output/stdout.txt`` and is
    fetched alone with one ranged request. With ``decompress``, downloaded ``.zip`` files are
    extracted next to themselves (``x.zip`` -> ``x/``; only ``artifacts/`` of a task output)
    and removed. Returns the local path of the file or folder.
    """
    client = get_client()
    inside = _split_zip_path(remote_path)
    if inside is not None:
        paths = [_download_member(client, inside[0], inside[1], local_dir, region)]
        result = paths[0]
    else:
        paths = _download_path(client, remote_path, local_dir, region)
        remote = protocol.clean_path(remote_path)
        result = paths[0] if len(paths) == 1 else os.path.join(local_dir, *remote.split("/"))
    if decompress:
        for path in paths:
            if path.lower().endswith(".zip") and os.path.isfile(path):
                target = path[:-4]
                if _extract_zip(path, target):
                    os.remove(path)
                    if path == result:
                        result = target
    logger.info('Successfully downloaded %d file(s) to "%s".', len(paths), result)
    return result


def _run_parallel(client: StorageClient, jobs: list[Callable[[threading.Event], Any]]) -> list:
    """Runs jobs on the client's transfer pool; the first failure cancels the others."""
    if not jobs:
        return []
    cancel = threading.Event()
    workers = max(1, min(client.config.transfer_workers, len(jobs)))
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="transfer") as pool:
        futures = [pool.submit(job, cancel) for job in jobs]
        try:
            concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
        except BaseException:
            cancel.set()
            for future in futures:
                future.cancel()
            raise
        errors = [f.exception() for f in futures if f.done() and not f.cancelled()
                  and f.exception() is not None and not isinstance(f.exception(), _Cancelled)]
        if errors:
            cancel.set()
            for future in futures:
                future.cancel()
            concurrent.futures.wait(futures)
            raise errors[0]
        return [f.result() for f in futures]


def _download_path(client: StorageClient, remote_path: str, local_dir: str,
                   region: Optional[str]) -> list[str]:
    remote = protocol.clean_path(remote_path)
    urls = client.signed_urls([remote or "/"], protocol.OPERATION_DOWNLOAD, region)
    targets = [_inside(local_dir, _safe_segments(_local_segments(url, remote), url), url)
               for url in urls]
    if len(set(targets)) != len(targets):
        raise ServerError("two signed URLs map to the same local file")
    sizes = _run_parallel(client, [lambda cancel, u=url: client.object_size(u) for url in urls])
    dirs = _Dirs()
    desc = f'Downloading {len(urls)} file(s) from "{remote_path}"'
    try:
        with _progress_bar(desc, sum(sizes)) as bar:
            locked = _LockedBar(bar)
            jobs = [lambda cancel, u=url, t=target, s=size:
                    _download_file(client, u, t, s, locked, cancel, dirs)
                    for url, target, size in zip(urls, targets, sizes)]
            return _run_parallel(client, jobs)
    except BaseException:
        dirs.undo()
        raise


def _download_file(client: StorageClient, url: str, target: str, size: int, bar: _LockedBar,
                   cancel: threading.Event, dirs: _Dirs) -> str:
    if cancel.is_set():
        raise _Cancelled()
    with _atomic_file(target, dirs) as handle:
        with client.stream(url) as chunks:
            for chunk in chunks:
                if cancel.is_set():
                    raise _Cancelled()
                handle.write(chunk)
                bar.update(len(chunk))
        if handle.tell() != size:
            raise TransferError(f"{target}: received {handle.tell()} bytes, expected {size}")
    return target


def _resolve_member(client: StorageClient, zip_path: str, after: str,
                    region: Optional[str]) -> Tuple[str, protocol.ZipEntry, int]:
    """The member named by ``after``: the SDK's reading first (``artifacts/`` or ``sim_dir/``
    before it for task archives), then the path exactly as written. Returns (member path,
    entry, archive size)."""
    candidates = []
    if TASK_OUTPUT_ZIP in zip_path:
        candidates.append(f"{ARTIFACTS_DIRNAME}/{after}")
    elif TASK_INPUT_ZIP in zip_path:
        candidates.append(f"{INPUT_DIRNAME}/{after}")
    candidates.append(after)
    for member in candidates:
        folder, name = posixpath.split(member)
        listing = client.zip_contents(zip_path, folder, False, region)
        for entry in listing.contents:
            if entry.name == name:
                return member, entry, listing.size
            if entry.name == name + "/":
                raise InvalidRequest(f'"{after}" is a folder inside "{zip_path}"; name a file')
    raise MemberNotFound(f'File "{after}" not found in "{zip_path}".')


_HEADER_SLACK = 1024  # room for the local header's extra field, which the API does not give


def _download_member(client: StorageClient, zip_path: str, after: str, local_dir: str,
                     region: Optional[str]) -> str:
    """One member of a stored zip, with a single ranged GET, decoded and verified.

    The range asked for starts a little before the compressed data, to read the member's local
    header (flags and CRC-32), and ends a little after it, for the data descriptor that
    streamed archives put there instead (flag bit 3).
    """
    member, entry, archive_size = _resolve_member(client, zip_path, after, region)
    folder, name = posixpath.split(member)
    rng = client.zip_file_range(zip_path, name, folder, region)
    method = rng.compress_type
    codecs.make_decoder(method)  # UnsupportedMethod before anything is fetched
    urls = client.signed_urls([zip_path], protocol.OPERATION_DOWNLOAD, region)
    if len(urls) != 1:
        raise ServerError(f"expected one signed URL for {zip_path}, got {len(urls)}")
    segments = _safe_segments(zip_path[:-4].split("/") + after.split("/"), after)
    target = _inside(local_dir, segments, after)

    if entry.crc32 is not None:  # this project's server sends the CRC: fetch the data only
        head_start, end = rng.range_start, rng.range_end
    else:
        head_start = max(0, rng.range_start - 30 - len(member.encode()) - _HEADER_SLACK)
        end = min(rng.range_end + 24, archive_size - 1)
    data_len = rng.range_end - rng.range_start + 1
    dirs = _Dirs()
    desc = f'Downloading "{name}" from "{zip_path}"'
    try:
        with _progress_bar(desc, end - head_start + 1) as bar, \
                _atomic_file(target, dirs) as handle:
            fetch = client.stream(urls[0], head_start, end) if end >= head_start \
                else contextlib.nullcontext(iter(()))  # an empty member: nothing to fetch
            with fetch as chunks:
                _decode_member(chunks, rng.range_start - head_start, data_len, method,
                               entry.size, handle, bar, member, entry.crc32)
    except BaseException:
        dirs.undo()
        raise
    return target


def _decode_member(chunks: Iterator[bytes], head_len: int, data_len: int, method: int,
                   size: Optional[int], out: BinaryIO, bar: Any, member: str,
                   crc32: Optional[int] = None) -> None:
    """Splits a fetched window into local header, compressed data and trailing bytes; decodes
    the data into ``out`` and verifies its size and CRC-32 (given, or from the header or the
    data descriptor)."""
    head, tail = bytearray(), bytearray()
    decoder = codecs.make_decoder(method)
    check = codecs.Crc32Check(crc32, size, member)
    flags = None
    consumed = 0
    for chunk in chunks:
        bar.update(len(chunk))
        view = memoryview(chunk)
        if consumed < head_len:
            take = min(head_len - consumed, len(view))
            head += view[:take]
            consumed += take
            view = view[take:]
            if consumed == head_len:
                flags, crc = _local_header(bytes(head), member)
                if crc32 is None and not flags & 8:
                    check.expected_crc = crc
        if view and consumed < head_len + data_len:
            take = min(head_len + data_len - consumed, len(view))
            data = decoder.decompress(bytes(view[:take]))
            check.update(data)
            out.write(data)
            consumed += take
            view = view[take:]
        tail += view
    if consumed < head_len + data_len:
        raise TransferError(f"{member}: the range ended after {consumed - head_len} of "
                            f"{data_len} compressed bytes")
    data = decoder.flush()
    check.update(data)
    out.write(data)
    if crc32 is None and flags is not None and flags & 8:
        check.expected_crc = _descriptor_crc(bytes(tail), member)
    check.verify()


def _local_header(window: bytes, member: str) -> Tuple[int, int]:
    """(flags, CRC-32) of the local header that ends exactly where the window ends."""
    header = ziplocal.header_ending_at(window)
    if header is None:
        raise CorruptArchive(f"{member}: local header not found before its data")
    if header.encrypted:
        raise UnsupportedMethod(f"{member} is encrypted")
    return header.flags, header.crc32


def _descriptor_crc(tail: bytes, member: str) -> int:
    crc = ziplocal.descriptor_crc(tail)
    if crc is None:
        raise CorruptArchive(f"{member}: data descriptor missing after its data")
    return crc


# -- extraction (decompress=True) ---------------------------------------------------------------

def _extract_zip(path: str, out_dir: str) -> bool:
    """Extracts a downloaded zip into ``out_dir`` with the same decoders and checks.

    Task outputs (an explicit ``artifacts/`` entry, or an ``output.zip`` whose members all
    sit under ``artifacts/``) extract only what is under ``artifacts/``, as the SDK does.
    Returns False, leaving the file alone, when it is not a zip.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        logger.warning("%s is not a readable zip archive; kept as is (%s)", path, exc)
        return False
    prefix = ARTIFACTS_DIRNAME + "/"
    names = [i.filename for i in infos]
    artifacts_only = prefix in names or (
        os.path.basename(path) == TASK_OUTPUT_ZIP and names
        and all(n.startswith(prefix) for n in names))
    dirs = _Dirs()
    dirs.make(out_dir)
    with open(path, "rb") as handle:
        for info in infos:
            name = info.filename
            if artifacts_only:
                if not name.startswith(prefix):
                    continue
                name = name[len(prefix):]
            segments = _safe_segments(name.split("/"), info.filename)
            if not segments:
                continue
            target = _inside(out_dir, segments, info.filename)
            if info.is_dir():
                dirs.make(target)
                continue
            if info.flag_bits & 1:
                raise UnsupportedMethod(f"{info.filename} in {path} is encrypted")
            with _atomic_file(target, dirs) as out:
                for data in codecs.decode_chunks(info.compress_type,
                                                 _member_chunks(handle, info, path),
                                                 crc32=info.CRC, size=info.file_size,
                                                 name=info.filename):
                    out.write(data)
    return True


def _member_chunks(handle: BinaryIO, info: zipfile.ZipInfo, path: str,
                   chunk: int = 1024 * 1024) -> Iterator[bytes]:
    handle.seek(info.header_offset)
    header = handle.read(30)
    if len(header) != 30 or header[:4] != ziplocal.LOCAL_HEADER_SIGNATURE:
        raise CorruptArchive(f"{path}: bad local header for {info.filename}")
    name_len, extra_len = struct.unpack_from("<HH", header, 26)
    handle.seek(info.header_offset + 30 + name_len + extra_len)
    remaining = info.compress_size
    while remaining > 0:
        data = handle.read(min(chunk, remaining))
        if not data:
            raise CorruptArchive(f"{path}: {info.filename} is cut short")
        remaining -= len(data)
        yield data


# -- upload -------------------------------------------------------------------------------------

class _ProgressReader:
    """A file read by the HTTP library, counted on the progress bar (rewinds uncount)."""

    def __init__(self, handle: BinaryIO, size: int, bar: _LockedBar,
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
            raise _Cancelled()
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
    with _progress_bar(f"Uploading {len(plan)} file(s)", total) as bar:
        locked = _LockedBar(bar)

        def job(cancel: threading.Event, url: str, path: str, size: int) -> None:
            if cancel.is_set():
                raise _Cancelled()
            with open(path, "rb") as handle:
                client.put_file(url, _ProgressReader(handle, size, locked, cancel), size)

        _run_parallel(client, [lambda cancel, u=url, p=path, s=size: job(cancel, u, p, s)
                               for url, (path, _, size) in zip(urls, plan)])
    logger.info("Content uploaded successfully.")


# -- export to S3 -------------------------------------------------------------------------------

def _get_multipart_parts(size: int, part_size: int = 128 * MB) -> Tuple[int, int]:
    """(part size, part count): at least 5 MiB a part, at most 10 000 parts (S3's limits)."""
    max_parts = 10_000
    part_size = max(part_size, 5 * MB)
    if size <= part_size:
        return size, 1
    part_size = max(part_size, math.ceil(size / max_parts))
    return part_size, math.ceil(size / part_size)


def _file_size(client: StorageClient, path: str, region: Optional[str]) -> int:
    result = client.contents(path, per_page=2, region=region)
    name = protocol.clean_path(path).rpartition("/")[2]
    files = [e for e in result.contents if not e.is_directory and e.name.rstrip("/") == name]
    if len(result.contents) != 1 or not files:  # a folder lists its children instead
        raise InvalidRequest(f"export needs a single file, and {path!r} is a folder")
    if files[0].size_bytes is None:
        raise ServerError(f"the listing gives no size for {path!r}")
    return files[0].size_bytes


def multipart_upload(
    path: str,
    parts_size: int,
    upload_parts: list,
    complete_multipart_url: str,
    region: Optional[str] = None,
) -> Optional[StorageOperation]:
    """Asks the server to PUT ``path`` part by part to presigned URLs, then complete."""
    client = get_client()
    answer = client.export_multipart(path, parts_size, upload_parts, complete_multipart_url,
                                     region)
    return _operation_or_none(client, answer)


def export_to_aws_s3(
    path_to_export: str,
    part_size: int,
    filename: str,
    bucket_name: str,
    region: Optional[str] = None,
) -> Optional[StorageOperation]:
    """Exports a stored file to ``s3://bucket_name/filename`` with an S3 multipart upload.

    Uses the local AWS credentials and region (boto3) to presign the parts; the server moves
    the bytes. Returns the server's operation, which ``wait()`` follows to the end.
    """
    try:
        import boto3
        import botocore.exceptions
        from botocore.config import Config
    except ImportError:
        raise StorageError("export to AWS S3 needs boto3",
                           hint="pip install 'storagefs[aws]'") from None
    logging.getLogger("botocore").setLevel(logging.WARNING)
    session = boto3.Session()
    region_name = session.region_name
    if not region_name:
        raise InvalidRequest("AWS region not found",
                             hint="set it with 'aws configure' or AWS_DEFAULT_REGION")
    try:
        session.client("sts", region_name=region_name).get_caller_identity()
    except Exception as exc:  # botocore raises many types; all mean "no usable credentials"
        raise AuthenticationError(f"AWS credentials not found or refused: {exc}",
                                  hint="set them with 'aws configure'") from None
    s3 = session.client("s3", region_name=region_name,
                        config=Config(region_name=region_name, signature_version="s3v4"))
    try:
        s3.head_bucket(Bucket=bucket_name)
    except botocore.exceptions.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("403", "AccessDenied", "Forbidden"):
            raise PermissionDenied(f"no access to S3 bucket {bucket_name!r}") from None
        raise NotFound(f"S3 bucket {bucket_name!r} not found") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise TransferError(f"cannot reach S3: {exc}") from None

    client = get_client()
    size = _file_size(client, path_to_export, region)
    parts_size, parts_count = _get_multipart_parts(size, part_size * MB)
    upload_id = s3.create_multipart_upload(Bucket=bucket_name, Key=filename)["UploadId"]
    try:
        upload_parts = [{
            "part_number": n,
            "part_url": s3.generate_presigned_url(
                "upload_part", ExpiresIn=3600,
                Params={"Bucket": bucket_name, "Key": filename, "PartNumber": n,
                        "UploadId": upload_id}),
        } for n in range(1, parts_count + 1)]
        complete_url = s3.generate_presigned_url(
            ClientMethod="complete_multipart_upload", HttpMethod="POST", ExpiresIn=3600 * 24,
            Params={"Bucket": bucket_name, "Key": filename, "UploadId": upload_id})
        op = multipart_upload(path_to_export, parts_size, upload_parts, complete_url, region)
    except BaseException:
        with contextlib.suppress(Exception):
            s3.abort_multipart_upload(Bucket=bucket_name, Key=filename, UploadId=upload_id)
        raise
    print("Export is being done by inductiva server. You can close the terminal.")
    return op


def export(
    path_to_export: str,
    export_to: ExportDestination,
    bucket_name: str,
    file_name: Optional[str] = None,
    part_size: int = 128,
    region: Optional[str] = None,
) -> Optional[StorageOperation]:
    """Exports a stored file to another cloud (AWS S3), named ``file_name`` (default: its own
    name), in parts of ``part_size`` MiB (at least 5)."""
    file_name = file_name or pathlib.PurePosixPath(path_to_export).name
    try:
        destination = ExportDestination(export_to)
    except ValueError:
        raise InvalidRequest(f"Unsupported export destination: {export_to}") from None
    if destination == ExportDestination.AWS_S3:
        print(f"Exporting {path_to_export} to {bucket_name}...")
        return export_to_aws_s3(path_to_export, part_size, file_name, bucket_name, region)
    raise InvalidRequest(f"Unsupported export destination: {export_to}")
