"""One file inside a stored zip, fetched with one ranged GET, decoded and verified.

``task/output.zip/stdout.txt`` names a member the SDK's way (``artifacts/`` or ``sim_dir/``
implied for task archives). The API gives the member's data range but not always its CRC-32,
so the range fetched may start at its local header and end past its data descriptor.
"""

from __future__ import annotations

import contextlib
import posixpath
from typing import Any, BinaryIO, ContextManager, Iterator, Optional, Tuple

from .. import protocol
from ..client import StorageClient
from ..errors import CorruptArchive, InvalidRequest, ServerError, TransferError, UnsupportedMethod
from ..zipfmt import codecs
from ..zipfmt import local as ziplocal
from .localpaths import Dirs, atomic_file, inside, safe_segments
from .progress import progress_bar
from .sdktypes import (ARTIFACTS_DIRNAME, INPUT_DIRNAME, TASK_INPUT_ZIP, TASK_OUTPUT_ZIP,
                       MemberNotFound)


def split_zip_path(remote_path: str) -> Optional[Tuple[str, str]]:
    """``task/output.zip/sub/f.txt`` -> (``task/output.zip``, ``sub/f.txt``); None otherwise."""
    parts = protocol.clean_path(remote_path).split("/")
    for i, part in enumerate(parts[:-1]):
        if part.lower().endswith(".zip"):
            return "/".join(parts[:i + 1]), "/".join(parts[i + 1:])
    return None


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
_DESCRIPTOR_MAX = 24  # a data descriptor: signature, CRC-32, two 8-byte (ZIP64) sizes


def download_member(client: StorageClient, zip_path: str, after: str, local_dir: str,
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
    segments = safe_segments(zip_path[:-4].split("/") + after.split("/"), after)
    target = inside(local_dir, segments, after)

    if entry.crc32 is not None:  # this project's server sends the CRC: fetch the data only
        head_start, end = rng.range_start, rng.range_end
    else:
        head_start = max(0, rng.range_start - ziplocal.LOCAL_HEADER_SIZE - len(member.encode())
                         - _HEADER_SLACK)
        end = min(rng.range_end + _DESCRIPTOR_MAX, archive_size - 1)
    data_len = rng.range_end - rng.range_start + 1
    dirs = Dirs()
    desc = f'Downloading "{name}" from "{zip_path}"'
    try:
        with progress_bar(desc, end - head_start + 1) as bar, \
                atomic_file(target, dirs) as handle:
            fetch: ContextManager[Iterator[bytes]] = \
                client.stream(urls[0], head_start, end) if end >= head_start \
                else contextlib.nullcontext(iter(()))  # an empty member: nothing to fetch
            with fetch as chunks:
                decode_member(chunks, rng.range_start - head_start, data_len, method,
                              entry.size, handle, bar, member, entry.crc32)
    except BaseException:
        dirs.undo()
        raise
    return target


def decode_member(chunks: Iterator[bytes], head_len: int, data_len: int, method: int,
                  size: Optional[int], out: BinaryIO, bar: Any, member: str,
                  crc32: Optional[int] = None) -> None:
    """Splits a fetched window into local header, compressed data and trailing bytes; decodes
    the data into ``out`` and verifies its size and CRC-32 (given, or from the header or the
    data descriptor)."""
    head, tail = bytearray(), bytearray()
    decoder = codecs.make_decoder(method)
    check = codecs.Crc32Check(crc32, size, member)
    header = None
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
                header = _local_header(bytes(head), member)
                if crc32 is None and not header.crc_in_descriptor:
                    check.expected_crc = header.crc32
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
    if crc32 is None and header is not None and header.crc_in_descriptor:
        check.expected_crc = _descriptor_crc(bytes(tail), member)
    check.verify()


def _local_header(window: bytes, member: str) -> ziplocal.LocalHeader:
    """The local header that ends exactly where the window ends; refused when missing or
    encrypted."""
    header = ziplocal.header_ending_at(window)
    if header is None:
        raise CorruptArchive(f"{member}: local header not found before its data")
    if header.encrypted:
        raise UnsupportedMethod(f"{member} is encrypted")
    return header


def _descriptor_crc(tail: bytes, member: str) -> int:
    """The CRC-32 of the data descriptor starting ``tail``; refused when it is cut short."""
    crc = ziplocal.descriptor_crc(tail)
    if crc is None:
        raise CorruptArchive(f"{member}: data descriptor missing after its data")
    return crc
