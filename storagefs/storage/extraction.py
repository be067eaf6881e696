"""Extraction of a downloaded zip (``download(decompress=True)``), with the decoders and checks
of member downloads, and the SDK's rule that a task output yields only its ``artifacts/``."""

from __future__ import annotations

import logging
import os
import zipfile
from typing import BinaryIO, Iterator

from ..errors import CorruptArchive, UnsupportedMethod
from ..zipfmt import codecs
from ..zipfmt import local as ziplocal
from .localpaths import Dirs, atomic_file, inside, safe_segments
from .overwrite import already_there
from .sdktypes import ARTIFACTS_DIRNAME, TASK_OUTPUT_ZIP

logger = logging.getLogger(__package__)  # the library logs under one name, "storagefs.storage"

_MADE_ON_UNIX = 3  # "version made by" host: external attributes hold st_mode in the high half


def extract_zip(path: str, out_dir: str) -> bool:
    """Extracts a downloaded zip into ``out_dir`` with the same decoders and checks.

    Task outputs (an explicit ``artifacts/`` entry, or an ``output.zip`` whose members all
    sit under ``artifacts/``) extract only what is under ``artifacts/``, as the SDK does.
    Files get the modes ``unzip`` gives (the umask applied; executable where the archive
    records it). Files already there and identical (size, CRC-32) are kept; a different one
    stops the extraction before anything is written, unless overwriting is allowed.
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
    placed = []
    for info in infos:
        name = info.filename
        if artifacts_only:
            if not name.startswith(prefix):
                continue
            name = name[len(prefix):]
        segments = safe_segments(name.split("/"), info.filename)
        if segments:
            placed.append((info, inside(out_dir, segments, info.filename)))
    todo = [(info, target) for info, target in placed
            if info.is_dir() or not already_there(target, info.file_size, info.CRC)]
    dirs = Dirs()
    dirs.make(out_dir)
    with open(path, "rb") as handle:
        for info, target in todo:
            if info.is_dir():
                dirs.make(target)
                continue
            if info.flag_bits & ziplocal.FLAG_ENCRYPTED:
                raise UnsupportedMethod(f"{info.filename} in {path} is encrypted")
            with atomic_file(target, dirs, _executable(info)) as out:
                for data in codecs.decode_chunks(info.compress_type,
                                                 _member_chunks(handle, info, path),
                                                 crc32=info.CRC, size=info.file_size,
                                                 name=info.filename):
                    out.write(data)
    return True


def _executable(info: zipfile.ZipInfo) -> bool:
    """Whether the archive records the member as executable (Unix modes, made on Unix)."""
    return info.create_system == _MADE_ON_UNIX and bool((info.external_attr >> 16) & 0o111)


def _member_chunks(handle: BinaryIO, info: zipfile.ZipInfo, path: str,
                   chunk: int = 1024 * 1024) -> Iterator[bytes]:
    """The member's compressed data, read from just after its local header."""
    handle.seek(info.header_offset)
    header_length = ziplocal.header_length(handle.read(ziplocal.LOCAL_HEADER_SIZE))
    if header_length is None:
        raise CorruptArchive(f"{path}: bad local header for {info.filename}")
    handle.seek(info.header_offset + header_length)
    remaining = info.compress_size
    while remaining > 0:
        data = handle.read(min(chunk, remaining))
        if not data:
            raise CorruptArchive(f"{path}: {info.filename} is cut short")
        remaining -= len(data)
        yield data
