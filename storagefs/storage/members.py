"""A file inside a stored zip (or each file under a folder of it), fetched with one ranged GET,
decoded and verified.

``task/output.zip/stdout.txt`` names a member the SDK's way (``artifacts/`` or ``sim_dir/``
implied for task archives). The API gives the member's data range but not always its CRC-32,
so the range fetched may start at its local header and end past its data descriptor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import posixpath
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, ContextManager, Iterator, Optional, Tuple

from .. import protocol
from ..client import StorageClient
from ..errors import CorruptArchive, ServerError, TransferError, UnsupportedMethod
from ..zipfmt import codecs
from ..zipfmt import local as ziplocal
from .localpaths import Dirs, atomic_file, inside, safe_segments
from .overwrite import already_there
from .parallel import Cancelled, run_parallel
from .progress import LockedBar, progress_bar
from .sdktypes import (ARTIFACTS_DIRNAME, INPUT_DIRNAME, TASK_INPUT_ZIP, TASK_OUTPUT_ZIP,
                       MemberNotFound)

log = logging.getLogger(__name__)


def split_zip_path(remote_path: str) -> Optional[Tuple[str, str]]:
    """``task/output.zip/sub/f.txt`` -> (``task/output.zip``, ``sub/f.txt``); None otherwise."""
    parts = protocol.clean_path(remote_path).split("/")
    for i, part in enumerate(parts[:-1]):
        if part.lower().endswith(".zip"):
            return "/".join(parts[:i + 1]), "/".join(parts[i + 1:])
    return None


def _resolve_member(client: StorageClient, zip_path: str, after: str,
                    region: Optional[str]) -> Tuple[str, protocol.ZipEntry]:
    """The member named by ``after``: the SDK's reading first (``artifacts/`` or ``sim_dir/``
    before it for task archives), then the path exactly as written. Returns (member path,
    entry); a folder's entry ends in '/'."""
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
            if entry.name in (name, name + "/"):
                return member, entry
    raise MemberNotFound(f'File "{after}" not found in "{zip_path}".')


_HEADER_SLACK = 1024  # room for the local header's extra field, which the API does not give
_DESCRIPTOR_MAX = 24  # a data descriptor: signature, CRC-32, two 8-byte (ZIP64) sizes


class _Unproven(Exception):
    """The bytes before a listed data offset are not that member's local header."""


@dataclass(frozen=True)
class _Fetch:
    """Where one member's compressed data is thought to be, and how to read it."""

    url: str
    member: str
    start: int
    length: int
    method: int
    size: Optional[int]
    crc32: Optional[int]
    prove: bool  # the offset comes from the listing: the local header must confirm it
    header_span: int = _HEADER_SLACK


@dataclass(frozen=True)
class _Wanted:
    """One file member to fetch, and where it goes."""

    member: str
    entry: protocol.ZipEntry
    target: str


def download_member(client: StorageClient, zip_path: str, after: str, local_dir: str,
                    region: Optional[str]) -> Tuple[str, list[str]]:
    """One member of a stored zip, or every file under a folder of it, each with a single
    ranged GET, decoded and verified (CRC-32). Returns (the local file or folder, the local
    files).

    The range asked for starts a little before the compressed data, to read the member's local
    header (flags and CRC-32), and ends a little after it, for the data descriptor that
    streamed archives put there instead (flag bit 3). The listing's ``range_start`` is used
    only when that header proves it (a listing may compute it from the central directory
    alone); otherwise ``zip-file-range`` says where the data is, as the official client asks.
    """
    member, entry = _resolve_member(client, zip_path, after, region)
    base = zip_path[:-4].split("/") + after.split("/")
    target = inside(local_dir, safe_segments(base, after), after)
    if entry.is_dir:
        listing = client.zip_contents(zip_path, member, True, region).contents
        wanted = [_Wanted(f"{member}/{e.name}", e, inside(
            local_dir, safe_segments(base + e.name.split("/"), e.name), e.name))
            for e in listing if not e.is_dir]
        folders = [inside(local_dir, safe_segments(base + e.name.split("/"), e.name), e.name)
                   for e in listing if e.is_dir]
    else:
        wanted, folders = [_Wanted(member, entry, target)], []
    for item in wanted:
        codecs.make_decoder(_method(item.entry))  # UnsupportedMethod before anything is fetched
    # Identical local files are kept (a re-run resumes); a different one is refused up front.
    todo = [w for w in wanted if not already_there(w.target, w.entry.size, w.entry.crc32)]
    urls = client.signed_urls([zip_path], protocol.OPERATION_DOWNLOAD, region)
    if len(urls) != 1:
        raise ServerError(f"expected one signed URL for {zip_path}, got {len(urls)}")
    what = f"{len(todo)} file(s) under \"{after}\"" if entry.is_dir \
        else f'"{posixpath.basename(member)}"'
    dirs = Dirs()
    try:
        with progress_bar(f'Downloading {what} from "{zip_path}"',
                          sum(w.entry.size or 0 for w in todo)) as bar:
            locked = LockedBar(bar)
            run_parallel(client, [lambda cancel, w=w: _download_one(
                client, zip_path, urls[0], w, region, dirs, locked, cancel)
                for w in todo], "downloaded", len(wanted) - len(todo))
        if entry.is_dir:
            for folder in folders + [target]:
                dirs.make(folder)  # empty folders too, as cp -r makes them
    except BaseException:
        dirs.undo()
        raise
    return target, [w.target for w in wanted]


def _method(entry: protocol.ZipEntry) -> int:
    return entry.compress_type if entry.compress_type is not None else protocol.STORED


def _download_one(client: StorageClient, zip_path: str, url: str, wanted: _Wanted,
                  region: Optional[str], dirs: Dirs, bar: Any, cancel: threading.Event) -> str:
    """One file member into its local place."""
    entry, member = wanted.entry, wanted.member
    if cancel.is_set():
        raise Cancelled()
    if entry.range_start is not None and entry.compressed_size is not None:
        try:
            _fetch_member(client, _Fetch(url, member, entry.range_start, entry.compressed_size,
                                         _method(entry), entry.size, entry.crc32, prove=True),
                          wanted.target, dirs, bar, cancel)
            return wanted.target
        except _Unproven:
            log.info("%s: the listing's offset %d is not confirmed by a local header; "
                     "asking zip-file-range", member, entry.range_start)
    folder, name = posixpath.split(member)
    rng = client.zip_file_range(zip_path, name, folder, region)
    where = _Fetch(url, member, rng.range_start, rng.range_end - rng.range_start + 1,
                   rng.compress_type, entry.size, entry.crc32, prove=False)
    try:
        _fetch_member(client, where, wanted.target, dirs, bar, cancel)
    except _Unproven:  # an extra field longer than the slack: look as far as one can be
        _fetch_member(client, dataclasses.replace(
            where, header_span=ziplocal.LOCAL_HEADER_MAX), wanted.target, dirs, bar, cancel)
    return wanted.target


def _fetch_member(client: StorageClient, where: _Fetch, target: str, dirs: Dirs, bar: Any,
                  cancel: threading.Event) -> None:
    """One ranged GET from a little before the data to a little after it, decoded into an
    atomic file. The end may lie past the archive's end (the server clamps it): the listing's
    archive size is not relied on, since the service may report the uncompressed total."""
    need_header = where.prove or where.crc32 is None
    head_start = where.start
    if need_header:
        head_start = max(0, where.start - ziplocal.LOCAL_HEADER_SIZE
                         - len(where.member.encode("utf-8", "surrogatepass"))
                         - where.header_span)
    end = where.start + where.length - 1 + (_DESCRIPTOR_MAX if where.crc32 is None else 0)

    def check_header(head: bytes) -> ziplocal.LocalHeader:
        header = ziplocal.header_ending_at(head)
        if where.prove and not ziplocal.proves_offset(header, where.member, where.method,
                                                      where.length):
            raise _Unproven(where.member)
        if header is None:
            if len(head) < ziplocal.LOCAL_HEADER_MAX and head_start > 0:
                raise _Unproven(where.member)
            raise CorruptArchive(f"{where.member}: local header not found before its data")
        if header.encrypted:
            raise UnsupportedMethod(f"{where.member} is encrypted")
        return header

    def watched(chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            if cancel.is_set():
                raise Cancelled()
            yield chunk

    with atomic_file(target, dirs) as handle:  # listings carry no modes: 0666 & ~umask
        fetch: ContextManager[Iterator[bytes]] = \
            client.stream(where.url, head_start, end) if end >= head_start \
            else contextlib.nullcontext(iter(()))  # an empty member: nothing to fetch
        with fetch as chunks:
            decode_member(watched(chunks), where.start - head_start, where.length, where.method,
                          where.size, handle, bar, where.member, where.crc32,
                          check_header if need_header else None)


def decode_member(chunks: Iterator[bytes], head_len: int, data_len: int, method: int,
                  size: Optional[int], out: BinaryIO, bar: Any, member: str,
                  crc32: Optional[int] = None,
                  check_header: Optional[Callable[[bytes], ziplocal.LocalHeader]] = None
                  ) -> None:
    """Splits a fetched window into local header, compressed data and trailing bytes; decodes
    the data into ``out`` and verifies its size and CRC-32 (given, or from the header or the
    data descriptor). ``check_header`` reads the local header that ends the head (it may
    refuse it by raising, before any data is written). ``bar`` counts the decoded bytes, the
    ones the user gets; the last piece only once verified, so a damaged member never shows
    complete."""
    head, tail = bytearray(), bytearray()
    decoder = codecs.make_decoder(method)
    check = codecs.Crc32Check(crc32, size, member)
    header = None
    consumed = 0
    held = [0]  # decoded bytes written but not yet counted

    def read_header(head: bytes) -> ziplocal.LocalHeader:
        found = (check_header or _header_checker(member))(head)
        if crc32 is None and not found.crc_in_descriptor:
            check.expected_crc = found.crc32
        return found

    if head_len == 0 and check_header is not None:  # nothing before the data: no header there
        header = read_header(b"")

    def write(data: bytes) -> None:
        if data:
            check.update(data)
            out.write(data)
            bar.update(held[0])
            held[0] = len(data)

    for chunk in chunks:
        view = memoryview(chunk)
        if consumed < head_len:
            take = min(head_len - consumed, len(view))
            head += view[:take]
            consumed += take
            view = view[take:]
            if consumed == head_len:
                header = read_header(bytes(head))
        if view and consumed < head_len + data_len:
            take = min(head_len + data_len - consumed, len(view))
            write(decoder.decompress(bytes(view[:take])))
            consumed += take
            view = view[take:]
        tail += view
    if consumed < head_len + data_len:
        raise TransferError(f"{member}: the range ended after {consumed - head_len} of "
                            f"{data_len} compressed bytes")
    write(decoder.flush())
    if crc32 is None and header is not None and header.crc_in_descriptor:
        check.expected_crc = _descriptor_crc(bytes(tail), member)
    check.verify()
    bar.update(held[0])


def _header_checker(member: str) -> Callable[[bytes], ziplocal.LocalHeader]:
    def check(window: bytes) -> ziplocal.LocalHeader:
        """The local header that ends exactly where the window ends; refused when missing or
        encrypted."""
        header = ziplocal.header_ending_at(window)
        if header is None:
            raise CorruptArchive(f"{member}: local header not found before its data")
        if header.encrypted:
            raise UnsupportedMethod(f"{member} is encrypted")
        return header
    return check


def _descriptor_crc(tail: bytes, member: str) -> int:
    """The CRC-32 of the data descriptor starting ``tail``; refused when it is cut short."""
    crc = ziplocal.descriptor_crc(tail)
    if crc is None:
        raise CorruptArchive(f"{member}: data descriptor missing after its data")
    return crc
