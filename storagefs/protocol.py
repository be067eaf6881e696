"""The wire contract shared by the client and the server (see docs/protocol.md).

Only what both sides must agree on lives here: endpoint paths, path rules and the JSON objects
with their field names. Each object converts to and from plain JSON and checks types on the way
in, so a malformed answer fails at the boundary with a clear message instead of deep inside.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidRequest

API_KEY_HEADER = "X-API-Key"

# Endpoints, relative to the API base URL.
VERSION_CHECK = "/version-check"
# The official client whose protocol this package speaks: sent to /version-check, which the
# service answers 406 once it no longer supports that protocol.
SDK_VERSION = "0.18.12"
CONTENTS = "/storage/contents"
CONTENTS_PAGINATED = "/storage/contents/paginated"
ZIP_CONTENTS = "/storage/zip-contents"
ZIP_FILE_RANGE = "/storage/zip-file-range"
SIGNED_URLS = "/storage/signed-urls"
SIZE = "/storage/size"
COST = "/storage/cost"
REMOVE = "/storage/"  # the trailing slash is part of the route
COPY = "/storage/copy"
INPUT_REMOTE = "/storage/input_remote"
EXPORT_MULTIPART = "/storage/export_multipart"
OPERATIONS = "/storage/operations"
UPDATE_OPERATION_STATUS = "/storage/update_operation_status"
DEFAULT_BUCKET = "/storage/default_bucket"
LIST_BUCKETS = "/storage/list_buckets"

OPERATION_UPLOAD = "upload"
OPERATION_DOWNLOAD = "download"
SORT_KEYS = ("creation_time", "size", "name")
ORDERS = ("asc", "desc")
MAX_PER_PAGE = 100

# ZIP compression methods a member may use (APPNOTE 4.4.5).
STORED, DEFLATED, DEFLATE64, BZIP2, LZMA, ZSTD_LEGACY, ZSTD, XZ = 0, 8, 9, 12, 14, 20, 93, 95


def clean_path(path: str | None) -> str:
    """A storage path without leading, trailing or doubled slashes; '' is the root.

    Refuses what could address something outside the user's storage: ``..`` segments and NUL.
    ``.`` segments are dropped, as a shell would.
    """
    if path is None:
        return ""
    if "\x00" in path:
        raise InvalidRequest("path contains a NUL byte")
    parts = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise InvalidRequest(f"path may not contain '..': {path!r}")
        parts.append(part)
    return "/".join(parts)


def names_directory(path: str | None) -> bool:
    """Whether the caller marked the path as a directory with a trailing slash."""
    return path is not None and path.endswith("/")


def zip_dir_prefix(zip_relative_path: str | None) -> str:
    """The member-name prefix of a directory inside an archive: '' or 'dir/sub/'.

    ``artifacts`` and ``artifacts/`` are the same directory (the official client sends both).
    """
    cleaned = clean_path(zip_relative_path)
    return cleaned + "/" if cleaned else ""


def format_time(value: _dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    return value.isoformat()


def parse_time(value: Any) -> _dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"expected an ISO-8601 time, got {value!r}")
    try:
        parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidRequest(f"expected an ISO-8601 time, got {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=_dt.timezone.utc)


def _field(data: dict, name: str, kind: type | tuple, optional: bool = False) -> Any:
    """One typed field of a JSON object; bools are not ints here (pydantic StrictInt)."""
    if not isinstance(data, dict):
        raise InvalidRequest(f"expected a JSON object, got {type(data).__name__}")
    value = data.get(name)
    if value is None:
        if optional:
            return None
        raise InvalidRequest(f"missing field {name!r} in server answer")
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise InvalidRequest(f"field {name!r} should be {kinds[0].__name__}, got {value!r}")
    if not isinstance(value, kinds):
        raise InvalidRequest(f"field {name!r} should be {kinds[0].__name__}, got {value!r}")
    return value


@dataclass(frozen=True)
class StorageFile:
    """One entry of a storage listing; directory names end in '/'."""

    name: str
    size_bytes: int | None
    creation_time: _dt.datetime | None
    is_directory: bool
    provider_id: str
    region: str

    def to_json(self) -> dict:
        return {"name": self.name, "size_bytes": self.size_bytes,
                "creation_time": format_time(self.creation_time),
                "is_directory": self.is_directory, "provider_id": self.provider_id,
                "region": self.region}

    @classmethod
    def from_json(cls, data: dict) -> "StorageFile":
        return cls(
            name=_field(data, "name", str),
            size_bytes=_field(data, "size_bytes", int, optional=True),
            creation_time=parse_time(data.get("creation_time")),
            is_directory=_field(data, "is_directory", bool),
            provider_id=str(data.get("provider_id") or ""),
            region=str(data.get("region") or ""),
        )


@dataclass(frozen=True)
class StorageContents:
    total_files: int
    available_regions: list[str]
    contents: list[StorageFile]

    def to_json(self) -> dict:
        return {
            "total_files": self.total_files,
            "available_regions": list(self.available_regions),
            "contents": [entry.to_json() for entry in self.contents],
        }

    @classmethod
    def from_json(cls, data: dict) -> "StorageContents":
        return cls(
            total_files=_field(data, "total_files", int),
            available_regions=list(_field(data, "available_regions", list)),
            contents=[StorageFile.from_json(item) for item in _field(data, "contents", list)],
        )


@dataclass(frozen=True, slots=True)  # slots: a listing can hold 1e5 of them
class ZipEntry:
    """One entry of ``/storage/zip-contents``; ``name`` is relative to the listed directory.

    ``range_start`` is the absolute offset of the member's compressed data, computed from its
    local header; directories carry zeros rather than nulls (the official client sums them).
    ``crc32`` is this project's addition (clients ignore unknown fields): with it a reader can
    verify a member without fetching its data descriptor. The Inductiva API does not send it.
    """

    name: str
    size: int | None
    compressed_size: int | None
    range_start: int | None
    creation_time: _dt.datetime | None
    compress_type: int | None
    crc32: int | None = None

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")

    def to_json(self) -> dict:
        # Explicit rather than dataclasses.asdict, which deep-copies: listings can be 1e5 long.
        return {"name": self.name, "size": self.size, "compressed_size": self.compressed_size,
                "range_start": self.range_start, "creation_time": format_time(self.creation_time),
                "compress_type": self.compress_type, "crc32": self.crc32}

    @classmethod
    def from_json(cls, data: dict, times: dict | None = None) -> "ZipEntry":
        """``times``: parsed ``creation_time`` strings, shared along one listing."""
        if type(data) is dict:  # the usual case, checked without _field's messages
            name, size, compressed, start, method, crc, when = (
                data.get("name"), data.get("size"), data.get("compressed_size"),
                data.get("range_start"), data.get("compress_type"), data.get("crc32"),
                data.get("creation_time"))
            if (type(name) is str and (size is None or type(size) is int)
                    and (compressed is None or type(compressed) is int)
                    and (start is None or type(start) is int)
                    and (method is None or type(method) is int)
                    and (crc is None or type(crc) is int)):
                if times is None:
                    created = parse_time(when)
                else:
                    created = times.get(when)
                    if created is None:
                        created = times[when] = parse_time(when)
                return cls(name, size, compressed, start, created, method, crc)
        return cls(
            name=_field(data, "name", str),
            size=_field(data, "size", int, optional=True),
            compressed_size=_field(data, "compressed_size", int, optional=True),
            range_start=_field(data, "range_start", int, optional=True),
            creation_time=parse_time(data.get("creation_time")),
            compress_type=_field(data, "compress_type", int, optional=True),
            crc32=_field(data, "crc32", int, optional=True),
        )


@dataclass(frozen=True)
class ZipListing:
    """``size`` is the byte size of the archive itself, not of its members."""

    size: int
    contents: list[ZipEntry]

    def to_json(self) -> dict:
        return {"size": self.size, "contents": [entry.to_json() for entry in self.contents]}

    @classmethod
    def from_json(cls, data: dict) -> "ZipListing":
        times: dict = {}  # DOS times have a 2 s step: many members share one
        return cls(
            size=_field(data, "size", int),
            contents=[ZipEntry.from_json(item, times) for item in _field(data, "contents", list)],
        )


@dataclass(frozen=True)
class ZipRange:
    """Compressed bytes of one member: ``range_end`` is inclusive, as in an HTTP Range."""

    range_start: int
    range_end: int
    compress_type: int

    def to_json(self) -> dict:
        return {"range_start": self.range_start, "range_end": self.range_end,
                "compress_type": self.compress_type}

    @classmethod
    def from_json(cls, data: dict) -> "ZipRange":
        return cls(
            range_start=_field(data, "range_start", int),
            range_end=_field(data, "range_end", int),
            compress_type=_field(data, "compress_type", int),
        )


OPERATION_STATUSES = ("RUNNING", "OK", "FAILED")


@dataclass(frozen=True)
class Operation:
    """Long-running server-side work (export, copy, upload from URL) that can be polled.

    The official client's schema only knows ``name == "export"``; copy and upload-from-URL
    operations use their own names and are meant for this project's client.
    """

    id: str
    name: str
    status: str
    attributes: dict = field(default_factory=dict)
    start_time: _dt.datetime | None = None
    end_time: _dt.datetime | None = None
    error_message: str | None = None

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "status": self.status,
                "attributes": dict(self.attributes), "start_time": format_time(self.start_time),
                "end_time": format_time(self.end_time), "error_message": self.error_message}

    @classmethod
    def from_json(cls, data: dict) -> "Operation":
        status = _field(data, "status", str)
        if status not in OPERATION_STATUSES:
            raise InvalidRequest(f"unknown operation status {status!r}")
        return cls(
            id=_field(data, "id", str),
            name=_field(data, "name", str),
            status=status,
            attributes=dict(_field(data, "attributes", dict, optional=True) or {}),
            start_time=parse_time(data.get("start_time")),
            end_time=parse_time(data.get("end_time")),
            error_message=_field(data, "error_message", str, optional=True),
        )
