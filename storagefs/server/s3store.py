"""An S3 bucket (or a prefix of one) as the storage: ``storagefs serve --store s3://BUCKET/PREFIX``.

Anything speaking the S3 API will do (AWS S3, Google Cloud Storage's XML API with HMAC keys,
Ceph RGW, MinIO, ...); credentials come from boto3's standard sources. Folders are key prefixes
(``ListObjectsV2`` with a ``/`` delimiter); signed URLs are the store's own presigned URLs, so
object bytes never pass through the server; archives are read by ranged GETs of their end and
central directory (``rangedread``); copies are server-side (``CopyObject``, multipart copy above
5 GiB); deletes go in batches of 1000 keys; writes by the server (upload from URL) stream into a
multipart upload, so an interrupted one leaves the old object in place.

Safety: every key is ``PREFIX + clean storage path`` (``protocol.clean_path`` refuses ``..``
and NUL), the reserved ``.storagefs/`` folder under the prefix holds the server's own state and
is never addressed by a storage path, and keys under the prefix that no clean path names
(``a//b``, ``./x``) are left out of listings, so every listed path can be asked for again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from ..errors import (Conflict, InvalidRequest, NotFound, PermissionDenied, StorageError,
                      TransferError)
from ..protocol import OPERATION_UPLOAD, clean_path
from .rangedread import RangedFile
from .store import RESERVED, Entry

log = logging.getLogger(__name__)

GiB = 1024 ** 3
COPY_LIMIT = 5 * GiB  # the largest object one CopyObject may copy
COPY_PART = 512 * 1024 ** 2
WRITE_PART = 8 * 1024 ** 2
DELETE_BATCH = 1000  # the most keys one DeleteObjects takes
MAX_PARTS = 10_000
MAX_PRESIGN_S = 7 * 24 * 3600  # SigV4 presigned URLs live at most a week


@dataclass(frozen=True)
class S3Location:
    """``s3://BUCKET[/PREFIX]`` and how to reach it."""

    bucket: str
    prefix: str  # '' or 'some/prefix/' (with its slash)
    endpoint_url: str | None = None
    region: str | None = None

    @classmethod
    def parse(cls, url: str, endpoint_url: str | None = None,
              region: str | None = None) -> "S3Location":
        """Refuses anything but ``s3://BUCKET`` or ``s3://BUCKET/PREFIX`` (a clean prefix)."""
        if not url.startswith("s3://"):
            raise InvalidRequest(f"expected s3://BUCKET or s3://BUCKET/PREFIX, got {url!r}")
        bucket, _, prefix = url[len("s3://"):].partition("/")
        if not bucket or any(c in bucket for c in "?#\\ "):
            raise InvalidRequest(f"no valid bucket name in {url!r}: write s3://BUCKET[/PREFIX]")
        clean = clean_path(prefix)
        if clean.split("/", 1)[0] == RESERVED:
            raise InvalidRequest(f"the prefix may not start with {RESERVED}/")
        return cls(bucket, clean + "/" if clean else "", endpoint_url, region)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def make_client(location: S3Location) -> Any:
    """A boto3 S3 client for ``location``: SigV4, path-style addressing when an endpoint is given
    (local stores rarely resolve bucket host names), standard retries."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise InvalidRequest(f"serving from S3 needs {exc.name}: "
                             "pip install 'storagefs[s3]'") from None
    style = "path" if location.endpoint_url else "auto"
    # Checksums only where the API requires them: stores other than AWS send the whole
    # object's checksum with a ranged GET (which then never matches) or reject the headers.
    config = Config(signature_version="s3v4", s3={"addressing_style": style},
                    retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32,
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required")
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=location.endpoint_url,
                          region_name=location.region or session.region_name or "us-east-1",
                          config=config)


@contextlib.contextmanager
def calling(what: str) -> Iterator[None]:
    """The store's refusals as this project's errors, each saying what to check."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        raise _translated(code, status, what, str(error.get("Message", ""))) from None
    except NoCredentialsError:
        raise PermissionDenied("no S3 credentials found: set AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, for the server") from None
    except BotoCoreError as exc:
        raise TransferError(f"cannot reach the store for {what}: {exc}; check "
                            "--s3-endpoint-url and the network") from None


def _translated(code: str, status: int | None, what: str, message: str) -> StorageError:
    if code == "NoSuchBucket":
        return NotFound(f"the bucket does not exist ({what}); check --store")
    if code in ("NoSuchKey", "NotFound", "404") or status == 404:
        return NotFound(f"no such file or folder: {what}")
    if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
        return PermissionDenied(f"the store refused {what} ({code or status}); check the "
                                "server's S3 credentials and their permissions")
    if code == "PreconditionFailed" or status == 412:
        return Conflict(f"{what} changed while it was being read; try again")
    return TransferError(f"the store answered {code or status} for {what}: {message[:200]}")


class S3Store:
    """The ``Store`` of a bucket prefix. One boto3 client per process (clients do not survive
    a fork: ``serve --workers`` forks after this is made), shared by its threads."""

    def __init__(self, location: S3Location, *, copy_limit: int = COPY_LIMIT,
                 copy_part: int = COPY_PART, write_part: int = WRITE_PART) -> None:
        self.location = location
        self.bucket = location.bucket
        self.prefix = location.prefix
        self._copy_limit = copy_limit
        self._copy_part = copy_part
        self._write_part = write_part
        self._lock = threading.Lock()
        self._client: Any = None
        self._client_pid = 0

    @property
    def name(self) -> str:
        return self.bucket

    @property
    def s3(self) -> Any:
        with self._lock:
            if self._client is None or self._client_pid != os.getpid():
                self._client = make_client(self.location)
                self._client_pid = os.getpid()
            return self._client

    def check(self) -> None:
        """Raises unless the bucket can be listed with these credentials (at start)."""
        with calling(f"listing {self.location}"):
            self.s3.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)

    # -- keys ----------------------------------------------------------------------------

    def _clean(self, path: str) -> str:
        clean = clean_path(path)
        if clean.split("/", 1)[0] == RESERVED:
            raise NotFound(f"no such file or folder: {clean}")
        return clean

    def key(self, clean: str) -> str:
        return self.prefix + clean

    def state_key(self, name: str) -> str:
        """A key of the server's own state, under the reserved folder no storage path names."""
        return f"{self.prefix}{RESERVED}/{name}"

    def _folder_key(self, clean: str) -> str:
        return self.key(clean) + "/" if clean else self.prefix

    def _listed_path(self, key: str) -> str | None:
        """The storage path of a listed key, or None when no clean path names it."""
        relative = key[len(self.prefix):]
        try:
            clean = clean_path(relative)
        except InvalidRequest:
            return None
        if clean != relative or not clean or clean.split("/", 1)[0] == RESERVED:
            return None
        return clean

    def _pages(self, prefix: str, delimiter: bool) -> Iterator[dict]:
        paginator = self.s3.get_paginator("list_objects_v2")
        extra = {"Delimiter": "/"} if delimiter else {}
        with calling(f"listing {prefix or '/'}"):
            yield from paginator.paginate(Bucket=self.bucket, Prefix=prefix, **extra)

    def _has_under(self, clean: str) -> bool:
        with calling(f"listing {clean}"):
            found = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=self._folder_key(clean),
                                            MaxKeys=1)
        return bool(found.get("KeyCount", len(found.get("Contents", []))))

    # -- reading -------------------------------------------------------------------------

    def _head(self, clean: str) -> dict | None:
        try:
            with calling(clean):
                return self.s3.head_object(Bucket=self.bucket, Key=self.key(clean))
        except NotFound:
            return None

    def entry(self, path: str) -> Entry:
        clean = self._clean(path)
        if not clean:
            return Entry("", True, None, None)
        head = self._head(clean)
        if head is not None:
            return Entry(clean, False, int(head["ContentLength"]), head.get("LastModified"),
                         head.get("ETag"))
        if self._has_under(clean):
            return Entry(clean, True, None, None)
        raise NotFound(f"no such file or folder: {clean}")

    def children(self, path: str) -> list[Entry]:
        clean = self._clean(path)
        base = self._folder_key(clean)
        entries: list[Entry] = []
        for page in self._pages(base, delimiter=True):
            for common in page.get("CommonPrefixes", []):
                child = self._listed_path(common["Prefix"].rstrip("/"))
                if child is not None and common["Prefix"] == self.key(child) + "/":
                    entries.append(Entry(child, True, None, None))
            for obj in page.get("Contents", []):
                child = self._listed_path(obj["Key"])
                if child is not None and obj["Key"] != base:  # not the folder's own marker
                    entries.append(Entry(child, False, int(obj["Size"]), obj.get("LastModified"),
                                         obj.get("ETag")))
        if not entries and clean:
            entry = self.entry(clean)  # NotFound when nothing is there
            if not entry.is_directory:
                raise Conflict(f"not a folder: {clean}")
        return sorted(entries, key=lambda e: e.path)

    def iter_files(self, path: str) -> Iterator[Entry]:
        entry = self.entry(path)
        if not entry.is_directory:
            yield entry
            return
        for page in self._pages(self._folder_key(entry.path), delimiter=False):
            for obj in page.get("Contents", []):
                child = self._listed_path(obj["Key"])
                if child is not None and not obj["Key"].endswith("/"):
                    yield Entry(child, False, int(obj["Size"]), obj.get("LastModified"),
                                obj.get("ETag"))

    def folder_totals(self, path: str) -> tuple[int, dt.datetime | None]:
        total, newest = 0, None
        for entry in self.iter_files(path):
            total += entry.size or 0
            if entry.mtime and (newest is None or entry.mtime > newest):
                newest = entry.mtime
        return total, newest

    def total_size(self) -> int:
        return sum(entry.size or 0 for entry in self.iter_files(""))

    def open_read(self, path: str) -> tuple[Entry, BinaryIO]:
        entry = self.entry(path)
        if entry.is_directory:
            raise InvalidRequest(f"is a folder, not a file: {entry.path}")
        return entry, self.open_entry(entry)

    def open_entry(self, entry: Entry) -> BinaryIO:
        """The bytes of this version of the file: a read after it was replaced fails (412)."""
        key = self.key(entry.path)
        condition = {"IfMatch": entry.version} if entry.version else {}

        def fetch(start: int, end: int) -> bytes:
            with calling(entry.path):
                answer = self.s3.get_object(Bucket=self.bucket, Key=key,
                                            Range=f"bytes={start}-{end - 1}", **condition)
                data = answer["Body"].read()
            if len(data) != end - start:
                raise TransferError(f"the store sent {len(data)} bytes of {entry.path} for "
                                    f"{end - start} asked")
            return data

        return RangedFile(fetch, entry.size or 0)  # type: ignore[return-value]

    def local_path(self, entry: Entry) -> Path | None:
        return None

    def presign(self, path: str, operation: str, ttl_s: int) -> str | None:
        method = "put_object" if operation == OPERATION_UPLOAD else "get_object"
        with calling(f"signing {path}"):
            return self.s3.generate_presigned_url(
                method, Params={"Bucket": self.bucket, "Key": self.key(self._clean(path))},
                ExpiresIn=min(ttl_s, MAX_PRESIGN_S))

    # -- writing -------------------------------------------------------------------------

    def check_path(self, path: str) -> str:
        return self._clean(path)

    def check_writable(self, path: str) -> str:
        clean = self._clean(path)
        if not clean:
            raise InvalidRequest("cannot write to the storage root")
        if self._has_under(clean):
            raise Conflict(f"a folder already exists at {clean}")
        return clean

    def write(self, path: str, chunks: Iterable[bytes]) -> int:
        """One PUT when it all fits a part, else a multipart upload (aborted on failure, so
        the old object stays whole)."""
        clean = self.check_writable(path)
        key = self.key(clean)
        buffer = bytearray()
        upload: MultipartUpload | None = None
        written = 0
        try:
            for chunk in chunks:
                buffer += chunk
                written += len(chunk)
                if len(buffer) >= self._write_part:
                    upload = upload or MultipartUpload(self, key)
                    upload.send(bytes(buffer))
                    buffer.clear()
            if upload is None:
                with calling(f"writing {clean}"):
                    self.s3.put_object(Bucket=self.bucket, Key=key, Body=bytes(buffer))
                return written
            if buffer:
                upload.send(bytes(buffer))
            upload.complete()
            return written
        except BaseException:
            if upload is not None:
                upload.abort()
            raise

    def remove(self, path: str) -> int:
        clean = self._clean(path)
        if not clean:
            raise InvalidRequest("refusing to delete the storage root")
        entry = self.entry(clean)
        if not entry.is_directory:
            with calling(f"deleting {clean}"):
                self.s3.delete_object(Bucket=self.bucket, Key=self.key(clean))
            return 1
        keys = [obj["Key"] for page in self._pages(self._folder_key(clean), delimiter=False)
                for obj in page.get("Contents", [])]
        for start in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": key} for key in keys[start:start + DELETE_BATCH]]
            with calling(f"deleting {clean}"):
                answer = self.s3.delete_objects(Bucket=self.bucket,
                                                Delete={"Objects": batch, "Quiet": True})
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise TransferError(f"the store kept {len(answer['Errors'])} objects of {clean}: "
                                    f"{first.get('Key')}: {first.get('Code')}")
        return sum(1 for key in keys if not key.endswith("/"))

    def copy_file(self, source: str, target: str) -> int:
        """Server-side: the bytes stay in the store."""
        src, dst = self._clean(source), self._clean(target)
        entry = self.entry(src)
        if entry.is_directory:
            raise InvalidRequest(f"is a folder, not a file: {src}")
        size = entry.size or 0
        copy_source = {"Bucket": self.bucket, "Key": self.key(src)}
        if size <= self._copy_limit:
            with calling(f"copying {src} to {dst}"):
                self.s3.copy_object(Bucket=self.bucket, Key=self.key(dst), CopySource=copy_source,
                                    **({"CopySourceIfMatch": entry.version}
                                       if entry.version else {}))
            return size
        part = max(self._copy_part, -(-size // MAX_PARTS))
        try:
            self._multipart(dst, size, part,
                            lambda up, a, b: up.copy(copy_source, a, b - 1, entry.version))
        except CopyUnsupported as exc:  # the bytes come through here, part by part
            log.warning("%s; copying %s through the server", exc, src)
            with self.open_entry(entry) as handle:
                self._multipart(dst, size, part, lambda up, a, b: up.send(handle.read(b - a)))
        return size

    def _multipart(self, dst: str, size: int, part: int,
                   each: Callable[["MultipartUpload", int, int], None]) -> None:
        """A multipart upload to ``dst`` whose parts ``each(upload, start, end)`` adds."""
        upload = MultipartUpload(self, self.key(dst))
        try:
            for start in range(0, size, part):
                each(upload, start, min(size, start + part))
            upload.complete()
        except BaseException:
            upload.abort()
            raise


class CopyUnsupported(StorageError):
    """The store took an UploadPartCopy without copying (some S3 servers answer it as an empty
    part upload)."""


class MultipartUpload:
    """One multipart upload to ``key``: parts sent or copied in order, then completed."""

    def __init__(self, store: S3Store, key: str) -> None:
        self._store = store
        self._key = key
        self._parts: list[dict] = []
        with calling(f"starting an upload to {key}"):
            answer = store.s3.create_multipart_upload(Bucket=store.bucket, Key=key)
        self._id = answer["UploadId"]

    def send(self, data: bytes) -> None:
        number = len(self._parts) + 1
        with calling(f"uploading part {number} of {self._key}"):
            answer = self._store.s3.upload_part(Bucket=self._store.bucket, Key=self._key,
                                                UploadId=self._id, PartNumber=number, Body=data)
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def copy(self, source: dict, first: int, last: int, version: str | None) -> None:
        number = len(self._parts) + 1
        condition = {"CopySourceIfMatch": version} if version else {}
        with calling(f"copying part {number} into {self._key}"):
            answer = self._store.s3.upload_part_copy(
                Bucket=self._store.bucket, Key=self._key, UploadId=self._id, PartNumber=number,
                CopySource=source, CopySourceRange=f"bytes={first}-{last}", **condition)
        etag = answer.get("CopyPartResult", {}).get("ETag")
        if not etag:
            raise CopyUnsupported("the store does not copy parts server-side (UploadPartCopy)")
        self._parts.append({"PartNumber": number, "ETag": etag})

    def complete(self) -> None:
        with calling(f"completing the upload to {self._key}"):
            self._store.s3.complete_multipart_upload(
                Bucket=self._store.bucket, Key=self._key, UploadId=self._id,
                MultipartUpload={"Parts": self._parts})

    def abort(self) -> None:
        try:
            with calling(f"aborting the upload to {self._key}"):
                self._store.s3.abort_multipart_upload(Bucket=self._store.bucket, Key=self._key,
                                                      UploadId=self._id)
        except StorageError:
            pass  # the bucket's lifecycle rule for incomplete uploads cleans up the rest


class BucketRecords:
    """Operation records as objects under the reserved folder (``operations.Records``), so
    every replica on the bucket answers a poll."""

    def __init__(self, store: S3Store, folder: str = "operations") -> None:
        self._store = store
        self._folder = store.state_key(folder) + "/"

    def put(self, op_id: str, text: str) -> None:
        with calling("recording an operation"):
            self._store.s3.put_object(Bucket=self._store.bucket, Key=self._folder + op_id,
                                      Body=text.encode())

    def get(self, op_id: str) -> str | None:
        try:
            with calling("reading an operation"):
                answer = self._store.s3.get_object(Bucket=self._store.bucket,
                                                   Key=self._folder + op_id)
                return answer["Body"].read().decode()
        except NotFound:
            return None

    def delete(self, op_id: str) -> None:
        with calling("removing an operation"):
            self._store.s3.delete_object(Bucket=self._store.bucket, Key=self._folder + op_id)

    def recent(self, limit: int) -> list[str]:
        listed = [obj for page in self._store._pages(self._folder, delimiter=False)
                  for obj in page.get("Contents", [])]
        listed.sort(key=lambda obj: obj["LastModified"], reverse=True)
        texts = (self.get(obj["Key"][len(self._folder):]) for obj in listed[:limit])
        return [text for text in texts if text is not None]
