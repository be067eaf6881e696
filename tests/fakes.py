"""A storage in memory for the mount's tree: ``FakeStorage``, a ``mount.backend.Backend``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import time
import zipfile

from storagefs import protocol
from storagefs.errors import CorruptArchive, InvalidRequest, NotFound, PermissionDenied

from archives import read_local_data_offset

WHEN = dt.datetime(2025, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)


class FakeStorage:
    """A ``Backend`` over ``{storage path: bytes}``, counting what it is asked."""

    def __init__(self, files: dict[str, bytes], *, with_crc: bool = True) -> None:
        self.files = dict(files)
        self.with_crc = with_crc
        self.listings: dict[str, protocol.ZipListing] = {}  # hand-made archive listings
        self.calls: list[tuple] = []
        self.refuse_reads = 0  # answer this many reads with 403
        self.broken_ranges = False
        self.refused_folders: set[str] = set()  # zip_folder answers these as a corrupt archive

    def _folders(self) -> set[str]:
        found = {""}
        for path in self.files:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                found.add("/".join(parts[:i]))
        return found

    def list_folder(self, path: str, max_age=None) -> list[protocol.StorageFile]:
        self.calls.append(("list", path))
        if path not in self._folders():
            raise NotFound(f"no folder {path}")
        prefix = path + "/" if path else ""
        names: dict[str, protocol.StorageFile] = {}
        for name, data in self.files.items():
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):]
            head, sep, _ = rest.partition("/")
            if sep:
                names[head + "/"] = protocol.StorageFile(head + "/", None, None, True, "LOCAL", "r")
            else:
                names[head] = protocol.StorageFile(head, len(data), WHEN, False, "LOCAL", "r")
        return sorted(names.values(), key=lambda f: f.name)

    def zip_listing(self, path: str, version=None) -> protocol.ZipListing:
        self.calls.append(("zip", path))
        if path in self.listings:
            return self.listings[path]
        return self._listing(path)

    def _listing(self, path: str) -> protocol.ZipListing:
        """What the archive's bytes hold (whatever ``listings`` says)."""
        data = self.files[path]
        entries = []
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist():
                start = read_local_data_offset(io.BytesIO(data), info.header_offset)
                entries.append(protocol.ZipEntry(
                    name=info.filename, size=info.file_size, compressed_size=info.compress_size,
                    range_start=start, creation_time=dt.datetime(*info.date_time),
                    compress_type=info.compress_type, crc32=info.CRC if self.with_crc else None))
        return protocol.ZipListing(size=len(data), contents=entries)

    def zip_folder(self, path: str, folder: str, version=None,
                   recursive: bool = False) -> protocol.ZipListing:
        """As the server lists one folder of an archive: names relative to it, sub-folders
        once with a trailing "/" (``recursive``: everything below it)."""
        self.calls.append(("zip_folder", path, folder, recursive))
        if folder in self.refused_folders:
            raise CorruptArchive("bad central directory")
        whole = self._listing(path)
        prefix = folder + "/" if folder else ""
        found: dict[str, protocol.ZipEntry] = {}
        for entry in whole.contents:
            if not entry.name.startswith(prefix) or entry.name == prefix:
                continue
            rest = entry.name[len(prefix):]
            head, sep, tail = rest.partition("/")
            if sep and (tail and not recursive):
                found.setdefault(head + "/", protocol.ZipEntry(head + "/", 0, 0, None, None, 0))
            else:
                found[rest] = dataclasses.replace(entry, name=rest)
        return protocol.ZipListing(whole.size, list(found.values()))

    def member_range(self, path: str, member: str, version=None) -> protocol.ZipRange:
        self.calls.append(("range", path, member))
        if self.broken_ranges:
            raise InvalidRequest("path may not contain '..'")
        for entry in self._listing(path).contents:
            if entry.name == member:
                return protocol.ZipRange(entry.range_start,
                                         entry.range_start + entry.compressed_size - 1,
                                         entry.compress_type)
        raise NotFound(member)

    def space_used(self) -> int:
        self.calls.append(("space",))
        return sum(len(d) for d in self.files.values())

    def download_url(self, path: str) -> str:
        self.calls.append(("url", path))
        return f"mem:///{path}?expires={int(time.time()) + 3600}"

    def forget_url(self, path: str) -> None:
        self.calls.append(("forget", path))

    def read_range(self, url: str, start: int, end_inclusive: int) -> bytes:
        self.calls.append(("read", url, start, end_inclusive))
        if self.refuse_reads:
            self.refuse_reads -= 1
            raise PermissionDenied("signed URL has expired")
        path = url[len("mem:///"):].split("?")[0]
        return self.files[path][start:end_inclusive + 1]

    def count(self, kind: str) -> int:
        return sum(1 for call in self.calls if call[0] == kind)
