"""The server on a bucket (``serve --store s3://...``), against moto's S3 and ``rclone serve s3``
on 127.0.0.1: listings from prefixes, the store's own presigned URLs, archives read by ranged
GETs of their end only, server-side copies, batched deletes, multipart writes, export, size,
and no key outside the prefix reachable through any parameter."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from urllib.parse import urlsplit

import pytest
import requests

from storagefs.errors import InvalidRequest, NotFound
from storagefs.server import s3store
from storagefs.server.remote import export_multipart
from storagefs.server.s3store import S3Location, S3Store
from storagefs.server.zipindex import read_index

from s3harness import KINDS, credentials_env, start_s3_server
from serverharness import KEY

MiB = 1024 * 1024


@pytest.fixture(scope="module", params=KINDS)
def s3(request, s3_services):
    return s3_services(request.param)


@pytest.fixture(scope="module")
def srv(s3, tmp_path_factory):
    """A server on a prefix of the store's bucket, allowed to fetch from 127.0.0.1."""
    base = tmp_path_factory.mktemp("s3srv")
    handle = start_s3_server(s3, base / "root", base, "--allow-private-urls")
    yield handle
    handle.stop()


@pytest.fixture
def store(s3, monkeypatch) -> S3Store:
    """The store as the server sees it, in this process, on a prefix of its own."""
    for name, value in credentials_env().items():
        monkeypatch.setenv(name, value)
    return S3Store(S3Location.parse(f"s3://{s3.bucket}/{os.urandom(4).hex()}", s3.endpoint))


def put(server, files: dict[str, bytes]) -> None:
    query = {"operation": "upload", "paths": list(files)}
    urls = server.get("/storage/signed-urls", params=query).json()
    for url, data in zip(urls, files.values()):
        assert requests.put(url, data=data, headers={"Content-Length": str(len(data))},
                            timeout=30).status_code == 200


def names(server, path: str, **params) -> list[str]:
    r = server.get("/storage/contents", params={"path": path, **params})
    assert r.status_code == 200, r.text
    return [e["name"] for e in r.json()["contents"]]


def test_listings_sorting_paging_and_folder_sizes(srv, unique):
    put(srv, {f"{unique}/b.txt": b"bb", f"{unique}/a.txt": b"a", f"{unique}/sub/x": b"xxxx",
              f"{unique}/sub/deeper/y": b"yyyyy"})
    assert names(srv, unique, sort_by="name", order="asc") == ["a.txt", "b.txt", "sub/"]
    assert names(srv, unique, sort_by="name", order="asc", per_page=1, page=2) == ["b.txt"]
    listed = srv.get("/storage/contents", params={"path": unique, "recursive": "true"}).json()
    sizes = {e["name"]: e["size_bytes"] for e in listed["contents"]}
    assert sizes == {"a.txt": 1, "b.txt": 2, "sub/": 9} and listed["total_files"] == 3
    assert srv.get("/storage/contents", params={"path": f"{unique}/nothing"}).status_code == 404
    assert srv.get("/storage/contents", params={"path": f"{unique}/a.txt/"}).json()[
        "contents"][0]["name"] == "a.txt"


def test_urls_are_the_stores_own_and_bytes_skip_the_server(srv, s3, unique):
    data = os.urandom(300_000)
    put(srv, {f"{unique}/blob.bin": data})
    url = srv.get("/storage/signed-urls", params={"operation": "download",
                                                  "paths": f"{unique}/blob.bin"}).json()[0]
    assert urlsplit(url).netloc == urlsplit(s3.endpoint).netloc
    assert "X-Amz-Signature=" in url and f"/{unique}/blob.bin" in url
    assert requests.get(url, timeout=30).content == data
    part = requests.get(url, headers={"Range": "bytes=1000-1999"}, timeout=30)
    assert part.status_code in (200, 206) and part.content == data[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    assert not any(k.startswith("storagefs_object_reads_total") and v
                   for k, v in srv.metrics().items())


def test_zip_contents_and_ranges_from_the_archives_end(srv, unique, tmp_path):
    payload = os.urandom(3 * MiB)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("artifacts/big.bin", payload, zipfile.ZIP_STORED)
        zf.writestr("artifacts/log.txt", b"line\n" * 1000, zipfile.ZIP_DEFLATED)
    archive = buffer.getvalue()
    put(srv, {f"{unique}/output.zip": archive})
    listing = srv.get("/storage/zip-contents", params={"path": f"{unique}/output.zip",
                                                       "zip_relative_path": "artifacts"}).json()
    assert listing["size"] == len(archive)
    starts = {e["name"]: e["range_start"] for e in listing["contents"]}
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        for name, start in starts.items():
            info = zf.getinfo("artifacts/" + name)
            assert start == info.header_offset + 30 + len(info.filename.encode())  # local
    query = {"path": f"{unique}/output.zip", "zip_relative_path": "artifacts",
             "filename": "big.bin"}
    r = srv.get("/storage/zip-file-range", params=query).json()
    assert archive[r["range_start"]:r["range_end"] + 1] == payload
    assert srv.get("/storage/zip-contents",
                   params={"path": f"{unique}/big-missing.zip"}).status_code == 404


def test_index_is_read_from_the_end_only(store):
    """A 20 MiB archive: its index costs a few small GETs, not the archive's body."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for i in range(4):
            zf.writestr(f"m{i}.bin", os.urandom(5 * MiB), zipfile.ZIP_STORED)
    store.write("a.zip", [buffer.getvalue()])
    entry, handle = store.open_read("a.zip")
    fetched = []
    inner = handle._fetch  # type: ignore[attr-defined]
    handle._fetch = lambda a, b: fetched.append(b - a) or inner(a, b)  # type: ignore

    with handle:
        index = read_index(handle, entry.size or 0, max_entries=100, max_cd_bytes=MiB)
    assert len(index) == 4
    assert len(fetched) <= 3 and sum(fetched) < 200_000, fetched


def test_local_headers_of_neighbours_come_in_few_gets(store):
    """The data offsets of 300 small members (what a listing asks for) take a few GETs."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for i in range(300):
            zf.writestr(f"out/f{i:03d}.txt", os.urandom(3000), zipfile.ZIP_STORED)
    store.write("many.zip", [buffer.getvalue()])
    entry, handle = store.open_read("many.zip")
    with handle:
        index = read_index(handle, entry.size or 0, max_entries=1000, max_cd_bytes=MiB)
        before = handle.requests  # type: ignore[attr-defined]
        starts = index.data_starts(handle, range(index.count))
        gets = handle.requests - before  # type: ignore[attr-defined]
    with zipfile.ZipFile(buffer) as zf:
        assert starts == [i.header_offset + 30 + len(i.filename) for i in zf.infolist()]
    assert gets <= 6, gets


def test_hostile_paths_reach_nothing_outside_the_prefix(srv, s3, unique):
    client = s3.client()
    client.put_object(Bucket=s3.bucket, Key="outside.txt", Body=b"secret")
    client.put_object(Bucket=s3.bucket, Key=f"{srv.prefix}-sibling/secret.txt", Body=b"secret")
    put(srv, {f"{unique}/ok.txt": b"ok"})
    hostile = ["../outside.txt", f"{unique}/../../outside.txt", "/../outside.txt",
               f"../{srv.prefix}-sibling/secret.txt", ".storagefs/operations",
               ".storagefs", "a\x00b"]
    for path in hostile:
        for route, params in [
                ("/storage/contents", {"path": path}),
                ("/storage/signed-urls", {"operation": "download", "paths": path}),
                ("/storage/signed-urls", {"operation": "upload", "paths": path}),
                ("/storage/zip-contents", {"path": path}),
                ("/storage/zip-file-range", {"path": path, "filename": "x"})]:
            r = srv.get(route, params=params)
            assert r.status_code in (400, 403, 404), (route, path, r.status_code, r.text)
        r = requests.delete(srv.url + "/storage/", params={"path": path}, headers=KEY,
                            timeout=30)
        assert r.status_code in (400, 403, 404), (path, r.text)
        r = requests.post(srv.url + "/storage/copy", headers=KEY, timeout=30,
                          params={"source": f"{unique}/ok.txt", "target": path})
        assert r.status_code in (400, 403, 404) or r.json()["status"] == "FAILED", (path, r.text)
        r = requests.post(srv.url + "/storage/copy", headers=KEY, timeout=30,
                          params={"source": path, "target": f"{unique}/stolen"})
        assert r.status_code in (400, 403, 404), (path, r.text)
    # names that only look like escapes are names inside the prefix
    for path in ("%2e%2e/outside.txt", "..\\outside.txt", "...", ".."+"."+"/x"):
        url = srv.get("/storage/signed-urls", params={"operation": "upload",
                                                      "paths": path}).json()[0]
        assert urlsplit(url).path.startswith(f"/{s3.bucket}/{srv.prefix}/"), url
    assert names(srv, unique) == ["ok.txt"]
    root = names(srv, "")
    assert ".storagefs/" not in root and "outside.txt" not in root
    assert client.get_object(Bucket=s3.bucket, Key="outside.txt")["Body"].read() == b"secret"
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3.bucket)["Contents"]]
    assert not any(k.startswith(f"{srv.prefix}-sibling/") and k.endswith("/") for k in keys)
    assert f"{srv.prefix}-sibling/secret.txt" in keys


def test_copy_remove_size_and_upload_from_url(srv, unique):
    put(srv, {f"{unique}/src/a.bin": b"a" * 1000, f"{unique}/src/d/b.bin": b"b" * 10})
    r = requests.post(srv.url + "/storage/copy", headers=KEY, timeout=60,
                      params={"source": f"{unique}/src", "target": f"{unique}/dst"}).json()
    assert r["status"] == "OK", r
    assert names(srv, f"{unique}/dst", sort_by="name", order="asc") == ["a.bin", "d/"]
    size = srv.get("/storage/size").json()
    assert isinstance(size, int) and size >= 2020
    url = srv.get("/storage/signed-urls", params={"operation": "download",
                                                  "paths": f"{unique}/src/a.bin"}).json()[0]
    op = requests.post(srv.url + "/storage/input_remote", headers=KEY, timeout=30,
                       params={"url": url, "path": f"{unique}/fetched.bin"}).json()
    for _ in range(100):
        op = srv.get(f"/storage/operations/{op['id']}").json()
        if op["status"] != "RUNNING":
            break
    assert op["status"] == "OK", op
    r = requests.delete(srv.url + "/storage/", params={"path": f"{unique}/src"},
                        headers=KEY, timeout=30)
    assert r.json()["deleted_files"] == 2
    assert srv.get("/storage/contents", params={"path": f"{unique}/src"}).status_code == 404
    assert names(srv, unique, sort_by="name", order="asc") == ["dst/", "fetched.bin"]


def test_multipart_copy_write_and_batched_delete(store, monkeypatch):
    small = S3Store(store.location, copy_limit=6 * MiB, copy_part=5 * MiB, write_part=5 * MiB)
    data = os.urandom(12 * MiB + 17)
    assert small.write("big.bin", (data[i:i + MiB] for i in range(0, len(data), MiB))) \
        == len(data)
    assert small.copy_file("big.bin", "copy/big.bin") == len(data)
    entry, handle = small.open_read("copy/big.bin")
    with handle:
        assert handle.read() == data
    # a write that fails half way leaves the object it was replacing whole
    with pytest.raises(RuntimeError):
        small.write("big.bin", (b"x" * MiB if i < 7 else _fail() for i in range(8)))
    assert small.open_read("big.bin")[0].size == len(data)
    monkeypatch.setattr(s3store, "DELETE_BATCH", 3)
    for i in range(8):
        small.write(f"many/{i}", [b"."])
    assert small.remove("many") == 8
    with pytest.raises(NotFound):
        small.entry("many")
    with pytest.raises(InvalidRequest):
        small.remove("")


def _fail() -> bytes:
    raise RuntimeError("the source broke off")


def test_export_reads_the_object_by_ranges(store, s3):
    data = os.urandom(11 * MiB)
    store.write("exp.bin", [data])
    target = s3.new_bucket()
    client = s3.client()
    upload = client.create_multipart_upload(Bucket=target, Key="out.bin")["UploadId"]
    part_size = 5 * MiB
    parts = [(n, client.generate_presigned_url(
        "upload_part", Params={"Bucket": target, "Key": "out.bin", "UploadId": upload,
                               "PartNumber": n})) for n in (1, 2, 3)]
    complete = client.generate_presigned_url(
        "complete_multipart_upload", Params={"Bucket": target, "Key": "out.bin",
                                             "UploadId": upload})
    result = export_multipart(store, "exp.bin", part_size, parts, complete, allow_private=True,
                              timeout_s=60, report=lambda _: None)
    assert result == {"parts": 3, "bytes": len(data)}
    assert client.get_object(Bucket=target, Key="out.bin")["Body"].read() == data


def test_rclone_differs_as_real_stores_do(s3_services):
    """What the clients must take: 200 with Content-Range for a range, HEAD refused on a URL
    presigned for GET (the mount tests read through both stores)."""
    rclone = s3_services("rclone")
    client = rclone.client()
    client.put_object(Bucket=rclone.bucket, Key="probe.bin", Body=b"0123456789")
    url = client.generate_presigned_url("get_object", Params={"Bucket": rclone.bucket,
                                                              "Key": "probe.bin"})
    ranged = requests.get(url, headers={"Range": "bytes=2-4"}, timeout=10)
    assert ranged.content == b"234" and ranged.headers["Content-Range"] == "bytes 2-4/10"
    assert ranged.status_code == 200
    assert requests.head(url, timeout=10).status_code == 403


def test_serve_refusals_are_one_line(s3_services):
    s3 = s3_services("moto")

    def serve(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "storagefs", "serve", *args, "--port", "0"],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, **credentials_env()})

    both = serve("somewhere", "--store", f"s3://{s3.bucket}")
    assert both.returncode == 2 and "not both" in both.stderr
    missing = serve("--store", "s3://no-such-bucket-here", "--s3-endpoint-url", s3.endpoint)
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
    assert "no-such-bucket-here" in missing.stderr
    bad = serve("--store", "bucket-without-scheme")
    assert bad.returncode == 2 and "s3://BUCKET" in bad.stderr
