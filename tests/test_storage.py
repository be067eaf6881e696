"""storagefs.storage, the SDK-compatible functions, against the real reference server."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import http.server
import inspect
import io
import os
import subprocess
import threading
import zipfile
import zlib
from pathlib import Path

import pytest
import requests

import archives
from officialsdk import installed_sdk_file, official_client_python
from storagefs import storage
from storagefs.storage.defaults import _defaults
from storagefs.storage.extraction import extract_zip
from storagefs.storage.localpaths import local_segments, safe_segments
from storagefs.storage.members import decode_member
from storagefs.storage.progress import NoBar
from storagefs.zipfmt import codecs
from storagefs.client import StorageClient
from storagefs.config import ClientConfig
from storagefs.errors import (CorruptArchive, InvalidRequest, NotFound, StorageError,
                              TransferError, UnsupportedMethod)


@pytest.fixture
def client(server):
    """The module functions pointed at the shared server, without progress bars."""
    c = StorageClient(ClientConfig(api_url=server.url, api_key=server.api_key))
    with storage.using(c, progress=False):
        yield c
    c.close()


def put(client: StorageClient, files: dict[str, bytes]) -> None:
    urls = client.signed_urls(list(files), "upload")
    for url, data in zip(urls, files.values()):
        client.put_file(url, io.BytesIO(data), len(data))


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


# -- the SDK's surface --------------------------------------------------------------------------

SDK_NAMES = ["listdir", "download", "upload", "upload_from_url", "remove", "copy",
             "get_zip_contents", "get_file_range", "get_signed_urls", "get_space_used", "export",
             "export_to_aws_s3", "multipart_upload"]


def official_sdk_storage() -> Path:
    """The SDK's storage module, from the client the compatibility test installs (installed
    here when missing). Only outside CI may a failed install skip the test."""
    source = installed_sdk_file("storage/storage.py")
    if source is None:
        try:
            official_client_python()
        except (OSError, subprocess.SubprocessError) as exc:
            if os.environ.get("STORAGEFS_REQUIRE_FUSE") == "1" or os.environ.get("CI") == "true":
                raise
            pytest.skip(f"the official SDK could not be installed for reference: {exc}")
        source = installed_sdk_file("storage/storage.py")
    assert source is not None, "the official SDK is installed without inductiva/storage"
    return source


def test_same_names_signatures_and_defaults_as_the_sdk():
    module = ast.parse(official_sdk_storage().read_text())
    functions = {n.name: n for n in module.body if isinstance(n, ast.FunctionDef)}
    for name in SDK_NAMES:
        theirs = functions[name].args
        names = [a.arg for a in theirs.args]
        defaults = [ast.literal_eval(d) for d in theirs.defaults]
        ours = inspect.signature(getattr(storage, name)).parameters
        assert list(ours) == names, name
        our_defaults = [p.default for p in ours.values()
                        if p.default is not inspect.Parameter.empty]
        assert our_defaults == defaults, name
    classes = {n.name: n for n in module.body if isinstance(n, ast.ClassDef)}
    for name in ("StorageOperation", "ExportDestination", "ZipArchiveInfo", "ZipFileInfo",
                 "ZipFileRange"):
        assert name in classes and hasattr(storage, name)
    assert list(inspect.signature(storage.StorageOperation.wait).parameters) == ["self", "poll_s"]
    assert inspect.signature(storage.StorageOperation.wait).parameters["poll_s"].default == 2
    assert [f.name for f in dataclasses.fields(storage.ZipFileInfo)] == [
        "name", "size", "compressed_size", "range_start", "creation_time", "compress_type"]
    assert str(storage.ExportDestination.AWS_S3) == "aws-s3"


def test_default_client_comes_from_the_environment(monkeypatch, server, tmp_path):
    monkeypatch.setenv("INDUCTIVA_API_URL", server.url + "/")
    monkeypatch.setenv("INDUCTIVA_API_KEY", server.api_key)
    monkeypatch.setenv("STORAGEFS_CONFIG", str(tmp_path / "none.ini"))
    storage.set_client(None)
    try:
        assert storage.get_client().config.api_url == server.url
        assert storage.get_space_used() >= 0
        configured = storage.configure(api_key="other.key", progress=False)
        assert storage.get_client() is configured and configured.config.api_key == "other.key"
        assert configured.config.api_url == server.url
    finally:
        storage.set_client(None)
        _defaults.progress = True


# -- listdir, size ------------------------------------------------------------------------------

def test_listdir_returns_dicts_and_prints_the_sdk_table(client, unique, capsys):
    put(client, {f"{unique}/big.bin": b"x" * 123_456, f"{unique}/sub/a.txt": b"a",
                 f"{unique}/empty.txt": b""})
    entries = storage.listdir(unique, order_by="size", sort_order="desc")
    # Folders carry the size and the newest time of what they hold, and sort by them.
    assert [e["name"] for e in entries] == ["big.bin", "sub/", "empty.txt"]
    assert entries[0]["size"] == 123456.0 and entries[2]["size"] is None
    assert entries[1]["size"] == 1.0 and entries[1]["creation_time"] is not None
    assert set(entries[0]) == {"name", "size", "creation_time", "provider", "region"}
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1] == " NAME        SIZE        CREATION TIME     PROVIDER     REGION"
    when = entries[0]["creation_time"].strftime("%d/%m, %H:%M:%S")
    assert lines[2] == f" big.bin     123.46 KB   {when}   LOCAL        local"
    sub_when = entries[1]["creation_time"].strftime("%d/%m, %H:%M:%S")
    assert lines[3] == f" sub/        1 B         {sub_when}   LOCAL        local"
    assert "Listed 3 folder(s). Ordered by size." in out
    assert "Current region(s): local" in out
    assert "You have storage in the following regions: local" in out
    assert "Total storage size used across all regions:" in out and "\tCost: 0 US$/month" in out

    assert len(storage.listdir(unique, max_results=2, print_results=False)) == 2
    assert len(storage.listdir(unique, max_results=None, print_results=False)) == 3
    sized = storage.listdir(unique, recursive=True, order_by="size", print_results=False)
    assert {e["name"]: e["size"] for e in sized}["sub/"] == 1.0
    assert capsys.readouterr().out == ""


def test_get_space_used_prints_and_returns_gb(client, capsys):
    used = storage.get_space_used()
    assert isinstance(used, float)
    assert "\tVolume: " in capsys.readouterr().out


# -- upload and download ------------------------------------------------------------------------

def test_upload_folder_then_download_it_in_the_sdk_layout(client, unique, tmp_path):
    src = archives.write_tree(tmp_path / "data", {
        "a.txt": b"alpha", "deep/er/b.bin": os.urandom(300_000), "with space #1.txt": b"s",
        "empty.txt": b""})
    storage.upload(str(src), f"{unique}/data/")  # a trailing slash works (SDK quirk fixed)
    listed = {e["name"] for e in storage.listdir(f"{unique}/data", print_results=False)}
    assert listed == {"a.txt", "deep/", "with space #1.txt", "empty.txt"}

    dest = tmp_path / "dl"
    result = storage.download(f"{unique}/data", str(dest))
    assert result == os.path.join(str(dest), unique, "data")
    assert tree(dest / unique / "data") == tree(src)
    assert not [p for p in leftovers(dest) if ".part" in p]

    single = storage.download(f"/{unique}/data/deep/er/b.bin", str(tmp_path / "one"))
    assert Path(single).read_bytes() == (src / "deep/er/b.bin").read_bytes()
    assert Path(single) == tmp_path / "one" / unique / "data/deep/er/b.bin"


def test_upload_a_single_file_and_refusals(client, unique, tmp_path):
    path = tmp_path / "r.csv"
    path.write_bytes(b"1,2\n")
    storage.upload(str(path), unique)
    assert [e["name"] for e in storage.listdir(unique, print_results=False)] == ["r.csv"]
    with pytest.raises(ValueError, match="does not exist"):
        storage.upload(str(tmp_path / "missing"), unique)


def test_download_of_a_missing_path_is_not_found(client, unique, tmp_path):
    with pytest.raises(NotFound):
        storage.download(f"{unique}/nothing", str(tmp_path))
    assert leftovers(tmp_path) == []


def test_local_names_are_kept_and_escapes_refused(client, unique, tmp_path):
    put(client, {f"{unique}/we:ird?.txt": b"w"})
    storage.download(f"{unique}/we:ird?.txt", str(tmp_path / "a"))
    assert (tmp_path / "a" / unique / "we:ird?.txt").read_bytes() == b"w"  # POSIX allows them

    # A symlink inside local_dir that points elsewhere is not followed out.
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / unique).symlink_to(outside)
    with pytest.raises(InvalidRequest, match="outside"):
        storage.download(f"{unique}/we:ird?.txt", str(tmp_path / "b"))
    assert list(outside.iterdir()) == []

    # A signed URL whose path climbs out is refused before anything is written.
    with pytest.raises(InvalidRequest, match="outside"):
        safe_segments(local_segments("http://h/-/x/..%2F..%2Fetc/passwd?sig=1", "x"), "x")
    assert local_segments("http://h/b/mydata/mydata/f?s", "mydata") == [
        "mydata", "mydata", "f"]
    assert local_segments("http://h/mydata/mydata/f?s", "mydata") == ["mydata", "f"]


# -- files inside zips --------------------------------------------------------------------------

def _zstd_archive(directory: Path) -> archives.Built:
    zstandard = pytest.importorskip("zstandard")
    files = {"artifacts/stdout.txt": archives.text_bytes(5, 30_000),
             "artifacts/sub/data.bin": archives.mixed_bytes(6, 50_000)}
    entries = [archives.RawEntry(name=b"artifacts/", data=b"")]
    for name, data in files.items():
        entries.append(archives.RawEntry(name=name.encode(), method=93, size=len(data),
                                         crc=zlib.crc32(data),
                                         data=zstandard.ZstdCompressor().compress(data)))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "zstd.zip"
    archives.write_raw_zip(path, entries)
    return path, files


PRODUCERS = {
    "zip-deflate": lambda d: archives.build_zip_cli(d, method="deflate"),
    "zip-store": lambda d: archives.build_zip_cli(d, method="store"),
    "7zz-deflate": lambda d: archives.build_7zz(d, method="Deflate"),
    "7zz-deflate-stream": lambda d: archives.build_7zz(d, method="Deflate", streamed=True),
    "7zz-deflate64": lambda d: archives.build_7zz(d, method="Deflate64"),
    "7zz-deflate64-stream": lambda d: archives.build_7zz(d, method="Deflate64", streamed=True),
    "7zz-bzip2": lambda d: archives.build_7zz(d, method="BZip2"),
    "7zz-lzma": lambda d: archives.build_7zz(d, method="LZMA"),
    "stream-zip": lambda d: archives.build_stream_zip(d),
    "py-store": lambda d: archives.build_pyzip(d, method="store"),
    "py-deflate": lambda d: archives.build_pyzip(d, method="deflate"),
    "py-bzip2": lambda d: archives.build_pyzip(d, method="bzip2"),
    "py-lzma": lambda d: archives.build_pyzip(d, method="lzma"),
    "raw-zstd": _zstd_archive,
}


def build(producer: str, directory: Path) -> archives.Built:
    try:
        return PRODUCERS[producer](directory)
    except archives.MissingTool as exc:
        pytest.skip(str(exc))


API = {"reference": "server", "service": "service", "service-offsets-off": "service_wrong_offsets"}


@pytest.mark.parametrize("api", list(API))
@pytest.mark.parametrize("producer", list(PRODUCERS))
def test_members_download_byte_identical(request, server, unique, tmp_path, producer, api):
    """Through the reference server (crc32 listed) and through the stand-in for the service
    (no crc32, central-directory offsets, GCS ranges; with every offset off by 1 to 8 bytes
    too): every member byte for byte, or an error, never wrong bytes."""
    path, files = build(producer, tmp_path / "build")
    endpoint = request.getfixturevalue(API[api])
    stack = contextlib.ExitStack()
    request.addfinalizer(stack.close)
    client = stack.enter_context(StorageClient(ClientConfig(
        api_url=endpoint.url, api_key=server.api_key, retries=2, backoff_factor=0.01)))
    stack.enter_context(storage.using(client, progress=False))
    put(client, {f"{unique}/output.zip": path.read_bytes()})
    with zipfile.ZipFile(path) as zf:
        methods = {i.filename: i.compress_type for i in zf.infolist()}
    dest = tmp_path / "dl"
    for name, data in files.items():
        short = name.removeprefix("artifacts/")
        got = storage.download(f"{unique}/output.zip/{short}", str(dest))
        assert Path(got) == dest / unique / "output" / short
        assert Path(got).read_bytes() == data, (name, methods[name])
    # The exact member path works as well, and lands under its own name.
    got = storage.download(f"{unique}/output.zip/artifacts/sub/data.bin", str(dest))
    assert Path(got).read_bytes() == files["artifacts/sub/data.bin"]
    assert not [p for p in leftovers(dest) if ".part" in p]


def test_members_of_plain_zips_and_input_zips(client, unique, tmp_path):
    files = {"dir/x.txt": b"x" * 5000, "top.txt": b"top"}
    path, _ = archives.build_pyzip(tmp_path, files, name="data.zip")
    inputs, _ = archives.build_pyzip(tmp_path, {"sim_dir/in.txt": b"input"}, name="input.zip")
    put(client, {f"{unique}/data.zip": path.read_bytes(),
                 f"{unique}/task/input.zip": inputs.read_bytes()})
    dest = tmp_path / "dl"
    assert Path(storage.download(f"{unique}/data.zip/dir/x.txt", str(dest))).read_bytes() == \
        files["dir/x.txt"]
    assert Path(storage.download(f"{unique}/task/input.zip/in.txt", str(dest))).read_bytes() == \
        b"input"
    with pytest.raises(NotFound, match="not found") as info:
        storage.download(f"{unique}/data.zip/dir/nope.txt", str(dest))
    assert isinstance(info.value, ValueError)  # the SDK raised ValueError here
    folder = storage.download(f"{unique}/data.zip/dir", str(tmp_path / "folder"))
    assert Path(folder, "x.txt").read_bytes() == files["dir/x.txt"]


def test_corrupt_member_is_refused_and_leaves_nothing(client, unique, tmp_path):
    data = archives.text_bytes(3, 20_000)
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    raw = comp.compress(data) + comp.flush()
    archives.write_raw_zip(tmp_path / "bad.zip", [
        archives.RawEntry(name=b"bad.txt", data=raw, method=8, size=len(data),
                          crc=zlib.crc32(data) ^ 1),
        archives.RawEntry(name=b"odd.bin", data=b"??", method=99, size=2)])
    put(client, {f"{unique}/bad.zip": (tmp_path / "bad.zip").read_bytes()})
    dest = tmp_path / "dl"
    with pytest.raises(CorruptArchive, match="CRC-32"):
        storage.download(f"{unique}/bad.zip/bad.txt", str(dest))
    with pytest.raises(UnsupportedMethod, match="99"):
        storage.download(f"{unique}/bad.zip/odd.bin", str(dest))
    assert not dest.exists() or leftovers(dest) == []


def test_decode_member_finds_crc_in_local_header_or_descriptor(tmp_path):
    """The window logic alone: local header before the data, descriptor after it."""
    data = archives.mixed_bytes(9, 40_000)
    comp = zlib.compressobj(1, zlib.DEFLATED, -15)
    raw = comp.compress(data) + comp.flush()
    for descriptor in (False, True):
        for crc in (zlib.crc32(data), zlib.crc32(data) ^ 4):
            layout = archives.write_raw_zip(tmp_path / "w.zip", [
                archives.RawEntry(name=b"pad", data=b"PK\x03\x04" * 100),
                archives.RawEntry(name=b"m.bin", data=raw, method=8, size=len(data), crc=crc,
                                  descriptor=descriptor)])
            blob = (tmp_path / "w.zip").read_bytes()
            start = layout.data_offsets[1]
            window = blob[max(0, start - 700):start + len(raw) + 24]
            out = io.BytesIO()
            chunks = [window[i:i + 333] for i in range(0, len(window), 333)]

            def run() -> None:
                decode_member(iter(chunks), min(start, 700), len(raw), 8, len(data), out,
                              NoBar(), "m.bin")

            if crc == zlib.crc32(data):
                run()
                assert out.getvalue() == data
            else:
                with pytest.raises(CorruptArchive, match="CRC-32"):
                    run()


# -- decompress=True ----------------------------------------------------------------------------

def test_decompress_extracts_every_zip_of_a_folder(client, unique, tmp_path):
    out_zip, out_files = archives.build_7zz(tmp_path / "b", streamed=True, method="Deflate64",
                                            name="output.zip")
    plain, plain_files = archives.build_pyzip(tmp_path / "b", {"p/q.txt": b"q" * 100},
                                              method="bzip2", name="a.zip")
    put(client, {f"{unique}/task/output.zip": out_zip.read_bytes(),
                 f"{unique}/a.zip": plain.read_bytes(), f"{unique}/b.txt": b"between",
                 f"{unique}/z.zip": plain.read_bytes()})
    dest = tmp_path / "dl"
    storage.download(unique, str(dest))
    got = tree(dest / unique)
    assert got["b.txt"] == b"between"
    assert got["a/p/q.txt"] == got["z/p/q.txt"] == b"q" * 100
    for name, data in out_files.items():
        assert got["task/output/" + name.removeprefix("artifacts/")] == data
    assert not any(p.endswith(".zip") for p in got)

    kept = tmp_path / "kept"
    assert storage.download(f"{unique}/a.zip", str(kept), decompress=False).endswith("a.zip")
    assert storage.download(f"{unique}/a.zip", str(kept)) == str(kept / unique / "a")
    assert (kept / unique / "a" / "p" / "q.txt").exists()


def test_extraction_refuses_members_that_climb_out(tmp_path):
    archives.write_raw_zip(tmp_path / "evil.zip", [
        archives.RawEntry(name=b"../../escaped.txt", data=b"x")])
    with pytest.raises(InvalidRequest, match="outside"):
        extract_zip(str(tmp_path / "evil.zip"), str(tmp_path / "out"))
    assert not (tmp_path.parent / "escaped.txt").exists()
    (tmp_path / "notzip.zip").write_bytes(b"hello")
    assert extract_zip(str(tmp_path / "notzip.zip"), str(tmp_path / "o2")) is False


# -- interrupted downloads ----------------------------------------------------------------------

@contextlib.contextmanager
def cutting_proxy(upstream: str):
    """A proxy to ``upstream`` that cuts object bodies (signed-URL GETs) in half."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("connection", "content-length")}
            answer = requests.request(self.command, upstream + self.path, headers=headers,
                                      data=body, allow_redirects=False, timeout=30)
            payload = answer.content
            cut = self.command == "GET" and self.path.startswith("/-/") and len(payload) > 1
            self.send_response(answer.status_code)
            for key, value in answer.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            if cut:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload[:len(payload) // 2] if cut else payload)
            if cut:
                self.close_connection = True

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_interrupted_download_leaves_nothing_behind(server, client, unique, tmp_path):
    zpath, files = archives.build_7zz(tmp_path / "b", method="Deflate", name="output.zip")
    put(client, {f"{unique}/f{i}.bin": os.urandom(200_000) for i in range(4)})
    put(client, {f"{unique}/t/output.zip": zpath.read_bytes()})
    with cutting_proxy(server.url) as proxy_url:
        proxied = StorageClient(ClientConfig(api_url=proxy_url, api_key=server.api_key,
                                             retries=1, backoff_factor=0.01))
        with storage.using(proxied, progress=False):
            dest = tmp_path / "dl"
            dest.mkdir()
            with pytest.raises(TransferError):
                storage.download(unique, str(dest))
            assert leftovers(dest) == []
            with pytest.raises(TransferError):
                storage.download(f"{unique}/t/output.zip/sub/data.bin", str(dest))
            assert leftovers(dest) == []
        proxied.close()


def test_keyboard_interrupt_mid_download_leaves_nothing(client, unique, tmp_path, monkeypatch):
    put(client, {f"{unique}/big.bin": os.urandom(1_500_000)})
    dest = tmp_path / "dl"
    original = client.stream

    @contextlib.contextmanager
    def stream(url, *args, **kwargs):
        with original(url, *args, chunk_size=64 * 1024) as chunks:
            def interrupted():
                for i, chunk in enumerate(chunks):
                    if i == 3:
                        raise KeyboardInterrupt
                    yield chunk
            yield interrupted()

    monkeypatch.setattr(client, "stream", stream)
    with pytest.raises(KeyboardInterrupt):
        storage.download(f"{unique}/big.bin", str(dest))
    assert not dest.exists() or leftovers(dest) == []


# -- the rest of the SDK functions --------------------------------------------------------------

def test_zip_contents_file_range_and_signed_urls(client, unique, tmp_path):
    path, files = archives.build_stream_zip(tmp_path)
    put(client, {f"{unique}/output.zip": path.read_bytes()})
    info = storage.get_zip_contents(f"{unique}/output.zip", "artifacts")
    assert isinstance(info, storage.ZipArchiveInfo) and info.size == path.stat().st_size
    names = {f.name for f in info.files}
    assert {"stdout.txt", "sub/"} <= names
    deep = storage.get_zip_contents(f"{unique}/output.zip", "artifacts/", recursive=True)
    assert "sub/data.bin" in {f.name for f in deep.files}
    rng = storage.get_file_range(f"{unique}/output.zip", "artifacts/sub", "data.bin")
    url = storage.get_signed_urls([f"{unique}/output.zip"], "download")[0]
    raw = client.read_range(url, rng.range_start, rng.range_end)
    assert codecs.decompress_bytes(rng.compress_type, raw) == files["artifacts/sub/data.bin"]


def test_copy_remove_and_operations(client, unique):
    put(client, {f"{unique}/src/a.txt": b"a", f"{unique}/src/b/c.txt": b"c"})
    op = storage.copy(f"{unique}/src", f"{unique}/dst")
    assert isinstance(op, storage.StorageOperation) and op.wait(poll_s=0.05) == "OK"
    assert {e["name"] for e in storage.listdir(f"{unique}/dst", print_results=False)} == {
        "a.txt", "b/"}
    storage.remove(f"{unique}/dst/b/c.txt")
    storage.remove(f"{unique}/src")
    with pytest.raises(NotFound):
        storage.listdir(f"{unique}/src", print_results=False)
    again = storage.StorageOperation.from_api_response(client, {
        "id": op.id, "name": "copy", "status": "RUNNING", "attributes": {},
        "start_time": "2025-01-01T00:00:00Z"})
    assert again.wait(poll_s=0.01) == "OK" and again.end_time is not None
    with pytest.raises(NotFound):
        storage.remove(f"{unique}/never")


def test_upload_from_url(make_server):
    server = make_server("--allow-private-urls")
    with StorageClient(ClientConfig(api_url=server.url, api_key=server.api_key)) as c, \
            storage.using(c, progress=False):
        put(c, {"src/data%20set.csv": b"1,2,3"})
        url = c.signed_urls(["src/data%20set.csv"], "download")[0]
        op = storage.upload_from_url(url, "fetched")
        assert op.wait(poll_s=0.05) == "OK", op.error_message
        assert [e["name"] for e in storage.listdir("fetched", print_results=False)] == [
            "data%20set.csv"]
        op = storage.upload_from_url(url, "fetched", file_name="named.csv")
        assert op.wait(poll_s=0.05) == "OK"


def test_errors_are_storage_errors_in_one_line(server, tmp_path):
    bad = StorageClient(ClientConfig(api_url=server.url, api_key="wrong.key"))
    with storage.using(bad, progress=False):
        with pytest.raises(StorageError) as info:
            storage.listdir()
    assert "API key" in str(info.value) and "\n" not in str(info.value)
