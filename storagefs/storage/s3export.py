"""``export``: a stored file copied to AWS S3 by the server, in a multipart upload presigned
here with the local AWS credentials (boto3), so the bytes never pass through this machine."""

from __future__ import annotations

import contextlib
import logging
import math
import pathlib
from typing import Optional, Tuple

from .. import protocol
from ..client import StorageClient
from ..errors import (AuthenticationError, InvalidRequest, NotFound, PermissionDenied,
                      ServerError, StorageError, TransferError)
from .defaults import get_client
from .operations import StorageOperation, operation_or_none
from .sdktypes import ExportDestination

MB = 1024 * 1024


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
    return operation_or_none(client, answer)


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
