"""The reference server over real HTTP: every endpoint, ranges, auth, traversal, atomic uploads."""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import requests

from serverharness import KEY, put_tree, signed


def names(response) -> list[str]:
    return [e["name"] for e in response.json()["contents"]]


# -- authentication --------------------------------------------------------------------------

API_ROUTES = [
    ("GET", "/storage/contents?path=/"), ("GET", "/storage/contents/paginated"),
    ("GET", "/storage/zip-contents?path=a.zip"),
    ("GET", "/storage/zip-file-range?path=a.zip&filename=x"),
    ("GET", "/storage/signed-urls?operation=download&paths=a"), ("GET", "/storage/size"),
    ("GET", "/storage/cost"), ("DELETE", "/storage/?path=a"),
    ("POST", "/storage/copy?source=a&target=b"),
    ("POST", "/storage/input_remote?url=http://x/y&path=a"), ("POST", "/storage/export_multipart"),
    ("GET", "/storage/operations"), ("GET", "/storage/operations/x"),
    ("POST", "/storage/update_operation_status"), ("GET", "/storage/default_bucket"),
    ("GET", "/storage/list_buckets"), ("GET", "/users/info"), ("GET", "/users/quotas"),
]


@pytest.mark.parametrize("method,route", API_ROUTES)
@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong-key"}, {"X-API-Key": ""}])
def test_every_api_route_refuses_missing_or_wrong_key(server, method, route, headers):
    r = requests.request(method, server.url + route, headers=headers, timeout=10)
    assert r.status_code == 401
    assert "API key" in r.json()["detail"]


def test_version_check_needs_no_key(server):
    r = requests.get(server.url + "/version-check", params={"client_version": "0.18.12"},
                     timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["is_valid"] is True and body["client_version"] == "0.18.12"
    assert isinstance(body["server_version"], str)


def test_several_keys_are_accepted(make_server):
    srv = make_server("--api-key", "second.key")
    assert requests.get(srv.url + "/storage/size", headers={"X-API-Key": "second.key"}).ok
    assert requests.get(srv.url + "/storage/size", headers=KEY).ok


def test_generated_key_is_printed(tmp_path):
    import subprocess
    import sys

    from serverharness import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "storagefs", "serve", str(tmp_path / "r"),
                             "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "generated API key" in line
        key = line.rsplit(" ", 1)[1].strip()
        for _ in range(100):
            try:
                r = requests.get(f"http://127.0.0.1:{port}/storage/size",
                                 headers={"X-API-Key": key})
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)


# -- listings --------------------------------------------------------------------------------

@pytest.fixture
def tree(server, unique) -> str:
    put_tree(server.root / unique, {
        "a.txt": b"a" * 10, "b.bin": b"b" * 300, "sub/c.txt": b"c" * 5,
        "sub/deeper/d.txt": b"d" * 7, "with space #1.txt": b"s",
    })
    os.utime(server.root / unique / "a.txt", (1_700_000_000, 1_700_000_000))
    (server.root / f"{unique}2").mkdir(exist_ok=True)
    (server.root / f"{unique}2" / "other.txt").write_bytes(b"x")
    return unique


def test_listing_direct_children_with_folder_slash(server, tree):
    r = server.get("/storage/contents",
                   params={"path": tree + "/", "sort_by": "name", "order": "asc"})
    assert r.status_code == 200
    body = r.json()
    assert names(r) == ["a.txt", "b.bin", "sub/", "with space #1.txt"]
    assert body["total_files"] == 4 and body["available_regions"] == ["local"]
    sub = body["contents"][2]
    assert sub["is_directory"] is True
    assert sub["size_bytes"] is None and sub["creation_time"] is None
    first = body["contents"][0]
    assert first["size_bytes"] == 10
    assert first["provider_id"] == "LOCAL" and first["region"] == "local"
    assert first["creation_time"].startswith("2023-11-14T22:13:20")


def test_listing_without_trailing_slash_and_with_leading_slash(server, tree):
    a = server.get("/storage/contents", params={"path": tree}).json()
    b = server.get("/storage/contents", params={"path": "/" + tree + "/"}).json()
    assert a == b


def test_recursive_listing_gives_folder_totals(server, tree):
    r = server.get("/storage/contents",
                   params={"path": tree, "recursive": "TRUE", "sort_by": "name"})
    sub = [e for e in r.json()["contents"] if e["name"] == "sub/"][0]
    assert sub["size_bytes"] == 12 and sub["creation_time"] is not None


def test_an_empty_folder_has_its_own_time_in_recursive_listings(server, unique):
    (server.root / unique / "empty").mkdir(parents=True)
    r = server.get("/storage/contents", params={"path": unique, "recursive": "true"})
    [empty] = r.json()["contents"]
    assert empty["name"] == "empty/" and empty["creation_time"] is not None


def test_listing_sorts_by_size_and_pages(server, tree):
    r = server.get("/storage/contents", params={"path": tree, "sort_by": "size", "order": "desc",
                                                "per_page": 2, "page": 1})
    assert names(r) == ["b.bin", "a.txt"]
    r = server.get("/storage/contents", params={"path": tree, "sort_by": "size", "order": "desc",
                                                "per_page": 2, "page": 2})
    assert names(r) == ["with space #1.txt", "sub/"]  # folders (no size) last
    assert r.json()["total_files"] == 4
    r = server.get("/storage/contents", params={"path": tree, "per_page": 2, "page": 3})
    assert names(r) == []


def test_listing_a_file_returns_its_entry(server, tree):
    r = server.get("/storage/contents", params={"path": f"{tree}/sub/c.txt"})
    assert names(r) == ["c.txt"] and r.json()["contents"][0]["size_bytes"] == 5


def test_listing_missing_path_is_404_with_detail(server, tree):
    r = server.get("/storage/contents", params={"path": f"{tree}/nope/"})
    assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_listing_root_hides_server_state(server, tree):
    root = server.get("/storage/contents", params={"path": "/", "per_page": 1000})
    assert ".storagefs/" not in names(root)
    r = server.get("/storage/contents", params={"path": ".storagefs/tmp"})
    assert r.status_code == 404


def test_listing_empty_root(make_server):
    srv = make_server()
    r = srv.get("/storage/contents", params={"path": "/"})
    assert r.status_code == 200 and r.json()["contents"] == []


def test_listing_regions(server, tree):
    assert server.get("/storage/contents", params={"path": tree, "region": "all"}).ok
    assert server.get("/storage/contents", params={"path": tree, "region": "local"}).ok
    r = server.get("/storage/contents", params={"path": tree, "region": "mars-1"})
    assert r.status_code == 404 and "mars-1" in r.json()["detail"]


@pytest.mark.parametrize("params", [{"per_page": 0}, {"page": 0}, {"sort_by": "colour"},
                                    {"order": "sideways"}, {"per_page": "ten"}])
def test_bad_listing_parameters_are_422_in_fastapi_shape(server, params):
    r = server.get("/storage/contents", params={"path": "/", **params})
    assert r.status_code == 422
    assert isinstance(r.json()["detail"], list) and "loc" in r.json()["detail"][0]


def test_paginated_listing_is_keyed_by_name(server, tree):
    r = server.get("/storage/contents/paginated", params={"path": tree})
    contents = r.json()["contents"]
    assert set(contents) == {"a.txt", "b.bin", "with space #1.txt", "sub/"}
    assert contents["a.txt"]["size_bytes"] == 10


def test_double_slashes_in_route_are_collapsed(server, tree):
    r = requests.get(server.url + "//storage/contents", params={"path": tree}, headers=KEY)
    assert r.status_code == 200


# -- size, cost, buckets, users ------------------------------------------------------------

def test_size_cost_and_buckets(make_server):
    srv = make_server()
    put_tree(srv.root, {"x/a": b"1" * 100, "y/b": b"2" * 23})
    assert srv.get("/storage/size").json() == 123
    cost = srv.get("/storage/cost").json()
    assert cost == {"estimated_monthly_cost": 0.0, "currency": "USD"}
    bucket = srv.get("/storage/default_bucket").json()
    assert srv.get("/storage/list_buckets").json() == [bucket]
    assert set(bucket) == {"provider_id", "name", "region", "is_internal"}
    assert srv.get("/users/info").json()["terms_and_conditions_decision"] == "accepted"
    assert srv.get("/users/quotas").json() == {}


# -- signed URLs ---------------------------------------------------------------------------

def test_download_urls_expand_folders_but_not_siblings_with_the_same_prefix(server, tree):
    urls = signed(server, "download", tree)
    paths = sorted(requests.utils.unquote(urlsplit(u).path) for u in urls)
    assert paths == sorted(f"/-/{tree}/{n}" for n in
                           ["a.txt", "b.bin", "sub/c.txt", "sub/deeper/d.txt", "with space #1.txt"])
    assert all(f"{tree}2" not in p for p in paths)
    spaced = [u for u in urls if "space" in u][0]
    assert "%20" in spaced and "%23" in spaced


def test_download_urls_for_several_paths_concatenate(server, tree):
    urls = signed(server, "download", f"{tree}/a.txt", f"{tree}/sub/")
    assert len(urls) == 3


def test_download_urls_for_missing_path_is_404(server, tree):
    r = server.get("/storage/signed-urls", params={"operation": "download", "paths": f"{tree}/zzz"})
    assert r.status_code == 404


def test_head_and_get_and_ranges(server, tree):
    url = signed(server, "download", f"{tree}/b.bin")[0]
    head = requests.head(url)
    assert head.status_code == 200 and head.headers["Content-Length"] == "300"
    assert requests.get(url).content == b"b" * 300
    r = requests.get(url, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == b"b" * 10
    assert r.headers["Content-Range"] == "bytes 10-19/300"
    r = requests.get(url, headers={"Range": "bytes=290-"})
    assert r.status_code == 206 and len(r.content) == 10
    r = requests.get(url, headers={"Range": "bytes=-5"})
    assert r.status_code == 206 and len(r.content) == 5
    assert requests.get(url, headers={"Range": "bytes=300-400"}).status_code == 416


def test_many_small_ranges_of_one_file(server, unique):
    data = os.urandom(1 << 20)
    put_tree(server.root / unique, {"big.bin": data})
    url = signed(server, "download", f"{unique}/big.bin")[0]
    with requests.Session() as session:
        started = time.monotonic()
        for i in range(200):
            start = (i * 4099) % (len(data) - 100)
            r = session.get(url, headers={"Range": f"bytes={start}-{start + 99}"})
            assert r.content == data[start:start + 100]
        elapsed = time.monotonic() - started
    assert elapsed < 20  # generous: a ranged read must not cost a whole-file read


def test_upload_chunked_put_then_overwrite(server, unique):
    url = signed(server, "upload", f"{unique}/new/dir/file.bin")[0]

    def body(parts):
        yield from parts

    r = requests.put(url, data=body([b"hello ", b"world"]),
                     headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200 and r.headers["x-goog-stored-content-length"] == "11"
    assert (server.root / unique / "new/dir/file.bin").read_bytes() == b"hello world"
    url = signed(server, "upload", f"{unique}/new/dir/file.bin")[0]
    assert requests.put(url, data=body([b""])).status_code == 200
    assert (server.root / unique / "new/dir/file.bin").read_bytes() == b""


def test_upload_urls_keep_order_and_refuse_folders(server, unique):
    urls = signed(server, "upload", f"{unique}/z", f"{unique}/a", f"{unique}/m")
    assert [urlsplit(u).path for u in urls] == [f"/-/{unique}/{n}" for n in "zam"]
    r = server.get("/storage/signed-urls",
                   params={"operation": "upload", "paths": f"{unique}/dir/"})
    assert r.status_code == 400


def test_upload_where_a_file_blocks_the_folder_is_409(server, unique):
    put_tree(server.root / unique, {"f": b"x"})
    url = signed(server, "upload", f"{unique}/f/child")[0]
    r = requests.put(url, data=b"y")
    assert r.status_code == 409 and (server.root / unique / "f").read_bytes() == b"x"


def test_interrupted_upload_leaves_old_file_intact(server, unique):
    put_tree(server.root / unique, {"keep.bin": b"original"})
    url = urlsplit(signed(server, "upload", f"{unique}/keep.bin")[0])
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall((f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: x\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n").encode())
        sock.sendall(b"100000\r\n" + b"n" * 5000)  # promise 1 MiB, send 5000 bytes, hang up
    time.sleep(0.5)
    assert (server.root / unique / "keep.bin").read_bytes() == b"original"
    assert list((server.root / ".storagefs" / "tmp").iterdir()) == []


def _tamper(url: str, **changes) -> str:
    parts = urlsplit(url)
    query = dict(p.split("=", 1) for p in parts.query.split("&"))
    path = changes.pop("path", parts.path)
    query.update(changes)
    encoded = "&".join(f"{k}={v}" for k, v in query.items())
    return f"{parts.scheme}://{parts.netloc}{path}?{encoded}"


def test_signed_url_bound_to_path_method_and_expiry(server, tree):
    url = signed(server, "download", f"{tree}/a.txt")[0]
    assert requests.get(url).status_code == 200
    assert requests.get(_tamper(url, path=f"/-/{tree}/b.bin")).status_code == 403
    assert requests.get(_tamper(url, op="upload")).status_code == 403
    parts = dict(p.split("=", 1) for p in urlsplit(url).query.split("&"))
    assert requests.get(_tamper(url, expires=str(int(parts["expires"]) + 1000))).status_code == 403
    assert requests.get(_tamper(url, sig="0" * 64)).status_code == 403
    assert requests.put(url, data=b"x").status_code == 403  # a download URL cannot write
    up = signed(server, "upload", f"{tree}/a.txt")[0]
    assert requests.get(up).status_code == 403  # an upload URL cannot read
    plain = f"{server.url}/-/{tree}/a.txt"
    assert requests.get(plain).status_code == 403
    assert (server.root / tree / "a.txt").read_bytes() == b"a" * 10


def test_expired_signed_url_is_refused(make_server):
    srv = make_server("--url-ttl", "1")
    put_tree(srv.root, {"d/f": b"x"})
    url = signed(srv, "download", "d/f")[0]
    time.sleep(2.1)
    r = requests.get(url)
    assert r.status_code == 403 and "expired" in r.json()["detail"]


# -- path traversal ------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["../etc/passwd", "a/../../x", "..", "a/..", "x\x00y"])
@pytest.mark.parametrize("route,param", [
    ("/storage/contents", "path"), ("/storage/zip-contents", "path"),
    ("/storage/signed-urls", "paths"), ("/storage/zip-file-range", "path"),
])
def test_traversal_in_query_parameters_is_refused(server, route, param, path):
    params = {param: path, "operation": "download", "filename": "f"}
    r = server.get(route, params=params)
    assert r.status_code == 400 and "detail" in r.json()


@pytest.mark.parametrize("method,route", [
    ("DELETE", "/storage/?path=..%2F..%2Fetc"), ("POST", "/storage/copy?source=..%2Fx&target=y"),
    ("POST", "/storage/copy?source=x&target=..%2F..%2Fy"),
    ("POST", "/storage/input_remote?url=http%3A%2F%2Fexample.org%2Fa&path=..%2Fa"),
    ("GET", "/storage/contents?path=%2E%2E%2F%2E%2E"),
    ("GET", "/storage/signed-urls?operation=upload&paths=..%2Foutside"),
])
def test_encoded_traversal_is_refused(server, method, route):
    r = requests.request(method, server.url + route, headers=KEY)
    assert r.status_code in (400, 403), r.text


def test_absolute_paths_stay_inside_the_root(server):
    r = server.get("/storage/contents", params={"path": "/etc/passwd"})
    assert r.status_code == 404


def test_symlink_out_of_root_is_refused(server, unique, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (server.root / unique).mkdir()
    (server.root / unique / "link.txt").symlink_to(secret)
    (server.root / unique / "linkdir").symlink_to(tmp_path)
    for path in (f"{unique}/link.txt", f"{unique}/linkdir/secret.txt"):
        r = server.get("/storage/signed-urls", params={"operation": "download", "paths": path})
        assert r.status_code == 403, r.text
        r = server.get("/storage/contents", params={"path": path})
        assert r.status_code == 403
    listing = server.get("/storage/contents", params={"path": unique})
    assert listing.status_code == 200 and names(listing) == []


def test_traversal_in_object_urls_is_refused(server, unique):
    put_tree(server.root / unique, {"f": b"x"})
    url = urlsplit(signed(server, "download", f"{unique}/f")[0])
    for raw in (f"/-/{unique}/../../../etc/passwd", f"/-/{unique}/%2e%2e/%2e%2e/etc/passwd"):
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        conn.request("GET", f"{raw}?{url.query}")
        status = conn.getresponse().status
        conn.close()
        assert status in (400, 403, 404)


# -- delete and copy -----------------------------------------------------------------------

def test_delete_file_folder_root_and_missing(server, unique):
    put_tree(server.root / unique, {"a/b/c.txt": b"1", "a/d.txt": b"2", "e.txt": b"3"})
    r = requests.delete(server.url + "/storage/", params={"path": f"{unique}/a/b/c.txt"},
                        headers=KEY)
    assert r.status_code == 200
    assert not (server.root / unique / "a/b").exists()  # an emptied folder goes with its file
    r = requests.delete(server.url + "/storage/", params={"path": f"{unique}/a/"}, headers=KEY)
    assert r.json()["deleted_files"] == 1 and not (server.root / unique / "a").exists()
    r = requests.delete(server.url + "/storage/", params={"path": "/"}, headers=KEY)
    assert r.status_code == 400
    r = requests.delete(server.url + "/storage/", params={"path": f"{unique}/nope"}, headers=KEY)
    assert r.status_code == 404
    assert (server.root / unique / "e.txt").exists()


def test_copy_file_and_folder(server, unique):
    put_tree(server.root / unique, {"src/a.txt": b"a", "src/sub/b.txt": b"bb"})
    r = requests.post(server.url + "/storage/copy",
                      params={"source": f"{unique}/src/a.txt", "target": f"{unique}/one.txt"},
                      headers=KEY)
    assert r.status_code == 200 and r.json()["status"] == "OK"
    assert (server.root / unique / "one.txt").read_bytes() == b"a"
    r = requests.post(server.url + "/storage/copy",
                      params={"source": f"{unique}/src", "target": f"{unique}/dst"}, headers=KEY)
    op = r.json()
    assert op["status"] == "OK" and op["attributes"]["files"] == 2
    assert (server.root / unique / "dst/sub/b.txt").read_bytes() == b"bb"
    polled = server.get(f"/storage/operations/{op['id']}").json()
    assert polled["status"] == "OK" and polled["end_time"]


def test_copy_errors(server, unique):
    put_tree(server.root / unique, {"src/a.txt": b"a"})

    def post(source: str, target: str) -> requests.Response:
        return requests.post(server.url + "/storage/copy",
                             params={"source": source, "target": target}, headers=KEY)

    assert post(f"{unique}/missing", f"{unique}/x").status_code == 404
    assert post(f"{unique}/src", f"{unique}/src/inner").status_code == 400
    assert post("/", f"{unique}/x").status_code == 400


# -- upload from URL and operations --------------------------------------------------------

class _Origin(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/data.csv")
            self.end_headers()
            return
        body = b"a,b\n1,2\n" * 1000
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def origin():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _wait(server, op_id: str) -> dict:
    for _ in range(200):
        op = server.get(f"/storage/operations/{op_id}").json()
        if op["status"] != "RUNNING":
            return op
        time.sleep(0.05)
    raise AssertionError("operation did not finish")


def test_upload_from_url_refuses_loopback_by_default(server, origin, unique):
    r = requests.post(server.url + "/storage/input_remote",
                      params={"url": origin + "/data.csv", "path": f"{unique}/d.csv"}, headers=KEY)
    assert r.status_code == 403 and "allow-private-urls" in r.json()["detail"]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x", "gopher://x/",
                                 "http:///nohost"])
def test_upload_from_url_refuses_other_schemes(server, url, unique):
    r = requests.post(server.url + "/storage/input_remote",
                      params={"url": url, "path": f"{unique}/x"}, headers=KEY)
    assert r.status_code == 400


def test_upload_from_url_with_private_urls_allowed(make_server, origin):
    srv = make_server("--allow-private-urls")
    r = requests.post(srv.url + "/storage/input_remote",
                      params={"url": origin + "/redirect", "path": "in/data.csv"}, headers=KEY)
    assert r.status_code == 200
    op = _wait(srv, r.json()["id"])
    assert op["status"] == "OK" and op["name"] == "input_remote"
    assert (srv.root / "in/data.csv").read_bytes() == b"a,b\n1,2\n" * 1000
    r = requests.post(srv.url + "/storage/input_remote",
                      params={"url": origin.replace("127.0.0.1", "127.0.0.1:1") + "/x",
                              "path": "in/y"}, headers=KEY)
    if r.status_code == 200:
        op = _wait(srv, r.json()["id"])
        assert op["status"] == "FAILED" and op["error_message"]
    assert not (srv.root / "in/y").exists()
    ops = srv.get("/storage/operations", params={"per_page": 50}).json()
    assert {o["name"] for o in ops} == {"input_remote"}


def test_update_operation_status(make_server, origin):
    srv = make_server("--allow-private-urls")
    op = requests.post(srv.url + "/storage/input_remote",
                       params={"url": origin + "/data.csv", "path": "x.csv"}, headers=KEY).json()
    _wait(srv, op["id"])
    r = requests.post(srv.url + "/storage/update_operation_status", headers=KEY,
                      json={"operation_id": op["id"], "status": "FAILED", "error_message": "boom"})
    assert r.status_code == 200 and r.json()["error_message"] == "boom"
    r = requests.post(srv.url + "/storage/update_operation_status", headers=KEY,
                      json={"operation_id": "nope", "status": "OK"})
    assert r.status_code == 404
    assert srv.get("/storage/operations/nope").status_code == 404
    assert srv.get("/storage/operations", params={"per_page": 51}).status_code == 422


def test_export_refuses_private_targets_by_default(server, unique):
    put_tree(server.root / unique, {"f.bin": b"x"})
    body = {"path": f"{unique}/f.bin", "parts_size": 5 << 20,
            "upload_parts": [{"part_number": 1, "part_url": "http://127.0.0.1:9/b/k?partNumber=1"}],
            "complete_multipart_url": "http://127.0.0.1:9/b/k?uploadId=U"}
    r = requests.post(server.url + "/storage/export_multipart", json=body, headers=KEY)
    assert r.status_code == 403
    body["path"] = f"{unique}/missing"
    r = requests.post(server.url + "/storage/export_multipart", json=body, headers=KEY)
    assert r.status_code == 404
    body["upload_parts"] = []
    r = requests.post(server.url + "/storage/export_multipart", json=body, headers=KEY)
    assert r.status_code == 422


# -- metrics -------------------------------------------------------------------------------

def test_metrics_count_object_bytes_and_requests(make_server):
    srv = make_server()
    put_tree(srv.root, {"m/f.bin": b"z" * 1000})
    url = signed(srv, "download", "m/f.bin")[0]
    requests.get(url, headers={"Range": "bytes=0-99"})
    requests.get(url)
    requests.head(url)
    m = srv.metrics()
    assert m["storagefs_object_read_bytes_total"] == 1100
    assert m['storagefs_object_reads_total{kind="range"}'] == 1
    assert m['storagefs_object_reads_total{kind="whole"}'] == 1
    assert m['storagefs_requests_total'
             '{endpoint="/storage/signed-urls",method="GET",status="200"}'] == 1
    assert m['storagefs_requests_total{endpoint="object",method="HEAD",status="200"}'] == 1


# -- archives: the basics (producers and hostile input are in test_server_zip.py) ----------

def test_zip_contents_and_range_basics(server, unique):
    folder = server.root / unique
    folder.mkdir()
    files = {"artifacts/stdout.txt": b"hello\n" * 1000, "artifacts/stderr.txt": b"",
             "artifacts/sub/data.bin": os.urandom(3000)}
    with zipfile.ZipFile(folder / "output.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    path = f"{unique}/output.zip"
    for zrp in ("artifacts", "artifacts/", "/artifacts"):
        r = server.get("/storage/zip-contents", params={"path": path, "zip_relative_path": zrp,
                                                        "recursive": "false"})
        assert r.status_code == 200, r.text
        listed = sorted(e["name"] for e in r.json()["contents"])
        assert listed == ["stderr.txt", "stdout.txt", "sub/"]
        assert r.json()["size"] == (folder / "output.zip").stat().st_size
    r = server.get("/storage/zip-contents", params={"path": path, "zip_relative_path": ""})
    assert sorted(e["name"] for e in r.json()["contents"]) == [
        "artifacts/", "artifacts/stderr.txt", "artifacts/stdout.txt", "artifacts/sub/",
        "artifacts/sub/data.bin"]
    sub = [e for e in r.json()["contents"] if e["name"] == "artifacts/sub/"][0]
    assert sub["size"] == 0 and sub["compressed_size"] == 0 and sub["compress_type"] == 0
    url = signed(server, "download", path)[0]
    for member, data in files.items():
        directory, name = member.rsplit("/", 1)
        rng = server.get("/storage/zip-file-range", params={"path": path, "filename": name,
                                                            "zip_relative_path": directory}).json()
        wanted = f"bytes={rng['range_start']}-{rng['range_end']}"
        raw = requests.get(url, headers={"Range": wanted}).content
        assert len(raw) == rng["range_end"] - rng["range_start"] + 1 or not data
        import zlib
        assert (zlib.decompress(raw, -15) if raw else b"") == data
    # the official client's glued prefix for nested members (docs/protocol.md §4.3)
    r = server.get("/storage/zip-contents",
                   params={"path": path, "zip_relative_path": "artifactssub", "recursive": "false"})
    assert [e["name"] for e in r.json()["contents"]] == ["data.bin"]
    r = server.get("/storage/zip-file-range", params={"path": path, "filename": "data.bin",
                                                      "zip_relative_path": "artifactssub"})
    assert r.status_code == 200
    r = server.get("/storage/zip-file-range", params={"path": path, "filename": "nope.txt",
                                                      "zip_relative_path": "artifacts"})
    assert r.status_code == 404 and "nope.txt" in r.json()["detail"]
    r = server.get("/storage/zip-contents", params={"path": path, "zip_relative_path": "nothing/"})
    assert r.status_code == 200 and r.json()["contents"] == []


def test_zip_contents_of_non_zip_and_missing(server, unique):
    put_tree(server.root / unique, {"plain.txt": b"x", "fake.zip": b"not a zip at all"})
    r = server.get("/storage/zip-contents", params={"path": f"{unique}/plain.txt"})
    assert r.status_code == 400
    r = server.get("/storage/zip-contents", params={"path": f"{unique}/none.zip"})
    assert r.status_code == 404
    r = server.get("/storage/zip-contents", params={"path": f"{unique}/fake.zip"})
    assert r.status_code == 422 and r.json()["detail"]
