"""Export to S3, end to end: presigned multipart URLs made here with boto3, parts PUT and the
upload completed by the reference server, against moto's S3 on 127.0.0.1."""

from __future__ import annotations

import io
import os

import pytest

from storagefs import cli, storage
from storagefs.client import StorageClient
from storagefs.config import ClientConfig
from storagefs.errors import AuthenticationError, InvalidRequest, NotFound
from storagefs.storage.s3export import _get_multipart_parts

from serverharness import start_server

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3_endpoint():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(s3_endpoint, monkeypatch, tmp_path):
    """Credentials, region and endpoint for boto3, isolated from any real AWS setup."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    s3 = boto3.client("s3")
    return s3


@pytest.fixture(scope="module")
def export_server(tmp_path_factory):
    """A server allowed to reach 127.0.0.1 (where moto listens)."""
    base = tmp_path_factory.mktemp("export-server")
    handle = start_server(base / "root", base, "--allow-private-urls")
    yield handle
    handle.stop()


@pytest.fixture
def client(export_server):
    c = StorageClient(ClientConfig(api_url=export_server.url, api_key=export_server.api_key))
    with storage.using(c, progress=False):
        yield c
    c.close()


def put(client, path: str, data: bytes) -> None:
    url = client.signed_urls([path], "upload")[0]
    client.put_file(url, io.BytesIO(data), len(data))


def test_part_plan():
    assert _get_multipart_parts(10, 128 * MiB) == (10, 1)
    assert _get_multipart_parts(12 * MiB, 1 * MiB) == (5 * MiB, 3)  # 5 MiB minimum
    size = 2 * 1024 ** 4  # 2 TiB: the part grows so that there are at most 10 000 parts
    part, count = _get_multipart_parts(size, 128 * MiB)
    assert count <= 10_000 and part * count >= size and part * (count - 1) < size


def test_export_to_s3_end_to_end(aws, client, unique, capsys):
    data = os.urandom(12 * MiB + 123)
    put(client, f"{unique}/result.bin", data)
    aws.create_bucket(Bucket="exports")
    op = storage.export(f"{unique}/result.bin", storage.ExportDestination.AWS_S3, "exports",
                        part_size=5)
    assert isinstance(op, storage.StorageOperation) and op.name == "export"
    assert op.wait(poll_s=0.1) == "OK", op.error_message
    assert op.attributes["parts"] == 3
    got = aws.get_object(Bucket="exports", Key="result.bin")["Body"].read()
    assert got == data
    out = capsys.readouterr().out
    assert f"Exporting {unique}/result.bin to exports..." in out
    assert "Export is being done by inductiva server" in out


def test_export_from_the_cli(aws, export_server, unique, capsys, monkeypatch):
    with StorageClient(ClientConfig(api_url=export_server.url,
                                    api_key=export_server.api_key)) as c:
        put(c, f"{unique}/small.txt", b"small export")
    aws.create_bucket(Bucket="cli-exports")
    monkeypatch.setenv("INDUCTIVA_API_URL", export_server.url)
    monkeypatch.setenv("INDUCTIVA_API_KEY", export_server.api_key)
    code = cli.main(["export", f"{unique}/small.txt", "--bucket-name", "cli-exports",
                     "--file-name", "renamed.txt", "--wait"])
    out = capsys.readouterr().out
    assert code == 0 and "export" in out and ": OK" in out
    got = aws.get_object(Bucket="cli-exports", Key="renamed.txt")["Body"].read()
    assert got == b"small export"


def test_export_refusals(aws, client, unique, monkeypatch):
    put(client, f"{unique}/dir/a.txt", b"a")
    aws.create_bucket(Bucket="refusals")
    with pytest.raises(NotFound, match="bucket"):
        storage.export(f"{unique}/dir/a.txt", "aws-s3", "no-such-bucket")
    with pytest.raises(InvalidRequest, match="single file"):
        storage.export(f"{unique}/dir", "aws-s3", "refusals")
    with pytest.raises(NotFound):
        storage.export(f"{unique}/missing.txt", "aws-s3", "refusals")
    with pytest.raises(InvalidRequest, match="Unsupported export destination"):
        storage.export(f"{unique}/dir/a.txt", "gcs", "refusals")
    # Nothing was left half-started in the bucket.
    assert aws.list_multipart_uploads(Bucket="refusals").get("Uploads", []) == []

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(AuthenticationError, match="AWS credentials"):
        storage.export(f"{unique}/dir/a.txt", "aws-s3", "refusals")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(InvalidRequest, match="AWS region"):
        storage.export(f"{unique}/dir/a.txt", "aws-s3", "refusals")
