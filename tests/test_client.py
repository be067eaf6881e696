"""StorageClient against the real reference server, plus tiny scripted servers for the failure
modes a healthy server never shows (5xx bursts, stalls, ignored Range, cut bodies)."""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import re
import threading
import time
import zipfile

import pytest
import requests

from storagefs import protocol
from storagefs.client import StorageClient, encode_query, make_session
from storagefs.config import ClientConfig
from storagefs.errors import (AuthenticationError, InvalidRequest, NotFound, PermissionDenied,
                              RangeNotSatisfiable, ServerError, StorageError, Timeout,
                              TransferError)


def client_for(server, **overrides) -> StorageClient:
    values = dict(api_url=server.url, api_key=server.api_key, retries=2, backoff_factor=0.01)
    values.update(overrides)
    return StorageClient(ClientConfig(**values))


@pytest.fixture
def client(server):
    with client_for(server) as c:
        yield c


def put(client: StorageClient, files: dict[str, bytes]) -> None:
    urls = client.signed_urls(list(files), "upload")
    for url, data in zip(urls, files.values()):
        client.put_file(url, io.BytesIO(data), len(data))


# -- query strings -----------------------------------------------------------------------------

def test_encode_query_matches_the_official_client():
    query = encode_query([("path", "my data/a+b&c#d:é"), ("recursive", False), ("page", 2),
                          ("region", None), ("zip_relative_path", ""), ("paths", ["a", "b/c"])])
    assert query == ("path=my%20data/a%2Bb%26c%23d%3A%C3%A9&recursive=false&page=2"
                     "&zip_relative_path=&paths=a&paths=b/c")


# -- listings, signed URLs and objects on the real server ---------------------------------------

def test_upload_list_and_read_ranges(client, unique):
    data = bytes(range(256)) * 40
    put(client, {f"{unique}/a.bin": data, f"{unique}/sub dir/b#1.txt": b"hello"})
    listing = client.contents(unique + "/", sort_by="name", order="asc")
    assert [(e.name, e.is_directory) for e in listing.contents] == [
        ("a.bin", False), ("sub dir/", True)]
    assert listing.contents[0].size_bytes == len(data)
    sized = client.contents(unique, recursive=True, sort_by="name", order="asc")
    assert sized.contents[1].size_bytes == 5

    urls = client.signed_urls([unique], "download")
    assert len(urls) == 2
    url = next(u for u in urls if u.split("?")[0].endswith("a.bin"))
    assert client.object_size(url) == len(data)
    assert client.read_range(url, 10, 19) == data[10:20]
    assert client.read_range(url, 0, 10**9) == data  # the server clamps the end
    assert client.read_range(url, 5, 4) == b""
    with client.stream(url, 100) as chunks:
        assert b"".join(chunks) == data[100:]
    with client.stream(url) as chunks:
        assert b"".join(chunks) == data
    with pytest.raises(RangeNotSatisfiable):
        client.read_range(url, len(data), len(data) + 5)


def test_iter_contents_pages(client, unique):
    put(client, {f"{unique}/f{i:02d}": b"x" * i for i in range(7)})
    names = [e.name for e in client.iter_contents(unique, sort_by="name", order="asc",
                                                  per_page=3)]
    assert names == [f"f{i:02d}" for i in range(7)]
    assert len(list(client.iter_contents(unique, per_page=3, limit=4))) == 4


def test_zip_listing_and_range(client, unique):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("artifacts/stdout.txt", b"line\n" * 1000)
        zf.writestr("artifacts/sub/x.bin", b"x" * 10)
    put(client, {f"{unique}/output.zip": buf.getvalue()})
    listing = client.zip_contents(f"{unique}/output.zip", "artifacts", recursive=False)
    assert listing.size == len(buf.getvalue())
    assert sorted(e.name for e in listing.contents) == ["stdout.txt", "sub/"]
    rng = client.zip_file_range(f"{unique}/output.zip", "stdout.txt", "artifacts")
    entry = next(e for e in listing.contents if e.name == "stdout.txt")
    assert rng.range_start == entry.range_start
    assert rng.range_end - rng.range_start + 1 == entry.compressed_size
    assert rng.compress_type == protocol.DEFLATED
    with pytest.raises(NotFound):
        client.zip_file_range(f"{unique}/output.zip", "nope.txt", "artifacts")


def test_account_copy_remove_and_operations(client, unique):
    put(client, {f"{unique}/src/a.txt": b"abc"})
    assert client.space_used() >= 3
    assert client.cost()["currency"] == "USD"
    answer = client.copy(f"{unique}/src", f"{unique}/dst")
    op = client.operation(answer["id"])
    assert op.name == "copy" and op.status in ("RUNNING", "OK")
    assert any(o.id == op.id for o in client.operations(1, 50))
    client.remove(f"{unique}/src/")
    with pytest.raises(NotFound, match="HTTP 404"):
        client.contents(f"{unique}/src/")
    deadline = time.monotonic() + 10
    while client.operation(op.id).status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [e.name for e in client.contents(f"{unique}/dst").contents] == ["a.txt"]


def test_input_remote_fetches_a_url(make_server):
    server = make_server("--allow-private-urls")
    with client_for(server) as client:
        put(client, {"src/data.bin": b"remote bytes"})
        url = client.signed_urls(["src/data.bin"], "download")[0]
        op = protocol.Operation.from_json(client.input_remote(url, "dst/copy.bin"))
        deadline = time.monotonic() + 10
        while op.status == "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.05)
            op = client.operation(op.id)
        assert op.status == "OK", op.error_message
        got = client.read_range(client.signed_urls(["dst/copy.bin"], "download")[0], 0, 100)
        assert got == b"remote bytes"
        with pytest.raises(InvalidRequest):
            client.input_remote("", "dst/x")


def test_put_streams_from_a_file(client, unique, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x01" * (3 * 1024 * 1024 + 17))
    url = client.signed_urls([f"{unique}/big.bin"], "upload")[0]
    with big.open("rb") as handle:
        client.put_file(url, handle, big.stat().st_size)
    empty = client.signed_urls([f"{unique}/empty.bin"], "upload")[0]
    client.put_file(empty, io.BytesIO(b""), 0)
    sizes = {e.name: e.size_bytes for e in client.contents(unique).contents}
    assert sizes == {"big.bin": 3 * 1024 * 1024 + 17, "empty.bin": 0}


# -- errors ------------------------------------------------------------------------------------

def test_typed_errors_in_one_line(server, client, unique):
    with pytest.raises(NotFound) as info:
        client.contents(f"{unique}/missing/")
    assert "\n" not in str(info.value) and isinstance(info.value, FileNotFoundError)

    with client_for(server, api_key="wrong-key") as bad:
        with pytest.raises(AuthenticationError) as info:
            bad.contents("/")
    assert "INDUCTIVA_API_KEY" in str(info.value) and isinstance(info.value, PermissionError)

    with client_for(server, api_key=None) as none:
        with pytest.raises(AuthenticationError, match="no API key"):
            none.space_used()

    with pytest.raises(InvalidRequest):
        client.contents("/", per_page=0)
    with pytest.raises(InvalidRequest):
        client.signed_urls(["x"], "delete")


def test_tampered_and_expired_urls_are_permission_denied(client, unique):
    put(client, {f"{unique}/f.txt": b"data"})
    url = client.signed_urls([f"{unique}/f.txt"], "download")[0]
    with pytest.raises(PermissionDenied, match="signed URL"):
        client.read_range(url.replace("sig=", "sig=0"), 0, 1)
    moved_expiry = re.sub(r"expires=\d+", "expires=1", url)
    with pytest.raises(PermissionDenied, match="ask for a new one"):
        client.object_size(moved_expiry)


def test_unreachable_server_is_a_transfer_error():
    config = ClientConfig(api_url="http://127.0.0.1:9", api_key="k", retries=1,
                          backoff_factor=0.01)
    with StorageClient(config) as client:
        with pytest.raises(TransferError, match="connection refused") as info:
            client.space_used()
    assert isinstance(info.value, ConnectionError)


# -- scripted servers --------------------------------------------------------------------------

@contextlib.contextmanager
def scripted(handler_body, answer_version_check: bool = True):
    """An HTTP server on 127.0.0.1 whose every request is answered by ``handler_body(h)``;
    ``/version-check``, which a client asks once first, is answered here and not counted."""
    calls = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _any(self):
            if answer_version_check and self.path.startswith("/version-check"):
                reply(self, 200, b'{"is_valid": true, "client_version": "0.18.12", '
                                 b'"server_version": "1"}', {"Content-Type": "application/json"})
                return
            calls.append((self.command, self.path, dict(self.headers)))
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                handler_body(self, len(calls))

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _any

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", calls
    finally:
        httpd.shutdown()
        httpd.server_close()


def reply(h, status, body=b"", headers=None):
    h.send_response(status)
    for key, value in (headers or {}).items():
        h.send_header(key, value)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


def test_5xx_and_429_are_retried_with_backoff():
    def body(h, n):
        if n <= 2:
            reply(h, 503 if n == 1 else 429, b'{"detail": "busy"}', {"Retry-After": "0"})
        else:
            reply(h, 200, b"1234", {"Content-Type": "application/json"})

    with scripted(body) as (url, calls):
        with StorageClient(ClientConfig(api_url=url, api_key="k", retries=3,
                                        backoff_factor=0.01)) as client:
            assert client.space_used() == 1234
    assert len(calls) == 3 and all(c[2]["X-API-Key"] == "k" for c in calls)


def test_put_is_retried_with_its_body_rewound(tmp_path):
    bodies = []

    def body(h, n):
        bodies.append(h.rfile.read(int(h.headers["Content-Length"])))
        reply(h, 503 if n == 1 else 200)

    data = bytes(range(256)) * 1000
    (tmp_path / "f").write_bytes(data)
    with scripted(body) as (url, calls):
        with StorageClient(ClientConfig(api_url=url, api_key="k", retries=2,
                                        backoff_factor=0.01)) as client:
            with open(tmp_path / "f", "rb") as handle:
                client.put_file(url + "/-/obj?sig=1", handle, len(data))
    assert bodies == [data, data]
    assert "X-API-Key" not in calls[0][2]  # signed URLs carry their own authorisation


def test_persistent_5xx_becomes_server_error_and_post_is_not_resent_on_500():
    with scripted(lambda h, n: reply(h, 500, b'{"detail": "boom"}')) as (url, calls):
        with StorageClient(ClientConfig(api_url=url, api_key="k", retries=2,
                                        backoff_factor=0.01)) as client:
            with pytest.raises(ServerError, match="boom"):
                client.space_used()
            assert len(calls) == 3  # one try and two retries
            with pytest.raises(ServerError):
                client.copy("a", "b")
            assert len(calls) == 4  # a POST answered 500 may have done its work: no resend


def test_stalled_server_times_out():
    def body(h, n):
        time.sleep(0.8)
        reply(h, 200, b"1")

    with scripted(body) as (url, _):
        config = ClientConfig(api_url=url, api_key="k", retries=0, read_timeout_s=0.2)
        with StorageClient(config) as client:
            with pytest.raises(Timeout) as info:
                client.space_used()
    assert isinstance(info.value, TimeoutError)


def test_ignored_range_is_read_through_and_short_bodies_are_detected():
    """A store that ignores Range (200, whole body) gives the bytes asked for, not an error;
    one that answers 200 with a Content-Range is taken like a 206."""
    def body(h, n):
        if h.path.startswith("/norange"):
            reply(h, 200, b"0123456789")
        elif h.path.startswith("/ok200"):
            reply(h, 200, b"234", {"Content-Range": "bytes 2-4/10"})
        elif h.path.startswith("/badrange"):
            reply(h, 206, b"234", {"Content-Range": "bytes 1-3/10"})
        elif h.path.startswith("/short"):
            h.send_response(200)
            h.send_header("Content-Length", "100")
            h.end_headers()
            h.wfile.write(b"x" * 10)
            h.wfile.flush()
            h.close_connection = True
        else:
            reply(h, 200, b"not json", {"Content-Type": "text/plain"})

    with scripted(body) as (url, _):
        with StorageClient(ClientConfig(api_url=url, api_key="k", retries=0)) as client:
            assert client.read_range(url + "/norange", 2, 4) == b"234"
            assert client.read_range(url + "/norange", 8, 20) == b"89"
            with client.stream(url + "/norange", 3) as chunks:
                assert b"".join(chunks) == b"3456789"
            assert client.read_range(url + "/norange", 0, 9) == b"0123456789"
            assert client.read_range(url + "/ok200", 2, 4) == b"234"
            with pytest.raises(TransferError, match="asked for bytes 2-4"):
                client.read_range(url + "/badrange", 2, 4)
            with pytest.raises(TransferError):
                with client.stream(url + "/short") as chunks:
                    b"".join(chunks)
            with pytest.raises(ServerError, match="not JSON"):
                client.space_used()


def test_no_requests_exception_escapes():
    """Every failure mode above is a StorageError; a bad URL too."""
    with StorageClient(ClientConfig(api_url="nota url", api_key="k")) as client:
        with pytest.raises(StorageError):
            client.space_used()
        with pytest.raises(StorageError):
            client.read_range("ftp://x/y", 0, 1)
    assert not issubclass(StorageError, requests.RequestException)


def test_session_is_pooled_and_retrying():
    session = make_session(ClientConfig(retries=4, pool_size=7))
    adapter = session.get_adapter("http://x")
    assert adapter.max_retries.total == 4
    assert adapter._pool_maxsize == 7
    assert 503 in adapter.max_retries.status_forcelist
    assert json.dumps(dict(session.headers))  # plain headers, no key on the session
    assert protocol.API_KEY_HEADER not in session.headers


def test_version_check_once_per_process_and_a_refusal_is_one_line(caplog):
    """The service's /version-check is asked once, before the first call; 406 is an error that
    says what to do, any other failure of the check only a warning."""
    answers = {"status": 406}

    def body(h, n):
        if h.path.startswith("/version-check"):
            reply(h, answers["status"], b'{"detail": "client too old"}',
                  {"Content-Type": "application/json"})
        else:
            reply(h, 200, b"7", {"Content-Type": "application/json"})

    with scripted(body, answer_version_check=False) as (url, calls):
        with StorageClient(ClientConfig(api_url=url, api_key="k", retries=0)) as client:
            with pytest.raises(InvalidRequest, match="no longer supports this client.*upgrade"):
                client.space_used()
            assert calls[0][1] == "/version-check?client_version=0.18.12"
            assert "X-API-Key" not in calls[0][2]
            answers["status"] = 500
            with caplog.at_level("WARNING", logger="storagefs.client"):
                assert client.space_used() == 7
            assert "version check" in caplog.text
            assert client.space_used() == 7
    assert [c[1].split("?")[0] for c in calls] == [
        "/version-check", "/version-check", "/storage/size", "/storage/size"]


def test_size_as_a_float_and_null_signed_urls():
    def body(h, n):
        if h.path.startswith("/storage/size"):
            reply(h, 200, b"1234.0", {"Content-Type": "application/json"})
        else:
            reply(h, 200, b'["http://x/-/a", null]', {"Content-Type": "application/json"})

    with scripted(body) as (url, _):
        with StorageClient(ClientConfig(api_url=url, api_key="k", retries=0)) as client:
            assert client.space_used() == 1234
            assert client.signed_urls(["a"], "download") == ["http://x/-/a"]
            with pytest.raises(ServerError, match="no upload URL"):
                client.signed_urls(["a", "b"], "upload")


def test_redirects_are_followed_and_the_key_stays_on_its_host():
    def target(h, n):
        reply(h, 200, b"5", {"Content-Type": "application/json"})

    with scripted(target) as (other, other_calls):
        def body(h, n):
            if h.path.startswith("/storage/size"):
                reply(h, 307, b"", {"Location": other + "/storage/size"})
            else:
                reply(h, 200, b'["x"]', {"Content-Type": "application/json"})

        with scripted(body) as (url, _):
            with StorageClient(ClientConfig(api_url=url, api_key="k", retries=0)) as client:
                assert client.space_used() == 5
    assert "X-API-Key" not in other_calls[0][2]  # 127.0.0.1 on another port: another origin


def test_expired_gcs_url_and_a_size_without_head():
    """GCS answers an expired V4 URL 400 ExpiredToken; a URL signed for GET refuses HEAD."""
    expired = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ExpiredToken</Code>"
               b"<Message>The provided token has expired.</Message></Error>")

    def body(h, n):
        if h.command == "HEAD":
            reply(h, 403, b"")
        elif h.path.startswith("/expired"):
            reply(h, 400, expired, {"Content-Type": "application/xml"})
        elif h.path.startswith("/empty"):
            reply(h, 416, b"", {"Content-Range": "bytes */0"})
        else:
            reply(h, 206, b"0", {"Content-Range": "bytes 0-0/4321"})

    with scripted(body) as (url, _):
        with StorageClient(ClientConfig(api_url=url, api_key="k", retries=0)) as client:
            with pytest.raises(PermissionDenied, match="token has expired.*ask for a new one"):
                client.read_range(url + "/expired", 0, 9)
            assert client.object_size(url + "/object") == 4321
            assert client.object_size(url + "/empty") == 0


def test_retry_after_is_capped_and_a_bare_416_is_an_empty_object():
    """A Retry-After of an hour must not hold a read for an hour; a store that answers an empty
    object's one-byte range with a bare 416 (no Content-Range) has an empty object."""
    from storagefs.client import RETRY_AFTER_MAX, _Retry
    assert _Retry(total=1).parse_retry_after("3600") == RETRY_AFTER_MAX <= 30

    def body(h, n):
        reply(h, 416, b"")

    with scripted(body) as (url, _):
        with StorageClient(ClientConfig(api_url=url, api_key="k", retries=0)) as client:
            assert client.object_size(url + "/empty") == 0


def test_concurrent_first_calls_wait_for_one_version_check():
    checks = []

    def body(h, n):
        if h.path.startswith("/version-check"):
            checks.append(time.monotonic())
            time.sleep(0.3)
            reply(h, 406, b'{"detail": "too old"}', {"Content-Type": "application/json"})
        else:
            reply(h, 200, b"1", {"Content-Type": "application/json"})

    with scripted(body, answer_version_check=False) as (url, calls):
        with StorageClient(ClientConfig(api_url=url, api_key="k", retries=0)) as client:
            errors: list[BaseException] = []

            def call() -> None:
                try:
                    client.space_used()
                except InvalidRequest as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=call) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
    assert len(errors) == 4  # every caller learns the service refuses this client
    assert not [c for c in calls if c[1].startswith("/storage/")]
