"""Two ``storagefs serve`` processes on one bucket answer as one storage: a client alternating
between them lists on one, reads through a URL signed by the other, and polls on one an
operation started on the other (its record is in the bucket)."""

from __future__ import annotations

import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from s3harness import KINDS, start_s3_server
from serverharness import KEY


@pytest.fixture(scope="module", params=KINDS)
def replicas(request, s3_services, tmp_path_factory):
    """Replicas A and B on one prefix, with one signing key (for the URLs they sign
    themselves: uploads through the server)."""
    s3 = s3_services(request.param)
    base = tmp_path_factory.mktemp("replicas")
    key_file = base / "signing.key"
    key_file.write_bytes(os.urandom(32).hex().encode())
    prefix = f"shared-{os.urandom(4).hex()}"
    shared = ("--signing-key-file", str(key_file), "--allow-private-urls")
    a = start_s3_server(s3, base / "a", base, *shared, prefix=prefix)
    b = start_s3_server(s3, base / "b", base, *shared, "--uploads-through-server",
                        prefix=prefix)
    yield a, b
    a.stop()
    b.stop()


class _Gate:
    """A local HTTP source that sends part of its body, then waits for ``release``."""

    def __init__(self, body: bytes) -> None:
        self.release = threading.Event()
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:1000])
                self.wfile.flush()
                gate.release.wait(30)
                self.wfile.write(body[1000:])

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/source.bin"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _signed(server, operation: str, path: str) -> str:
    r = server.get("/storage/signed-urls", params={"operation": operation, "paths": path})
    assert r.status_code == 200, r.text
    return r.json()[0]


def test_one_storage_through_either_replica(replicas, unique):
    a, b = replicas
    data = os.urandom(200_000)
    url = _signed(a, "upload", f"{unique}/data.bin")
    assert requests.put(url, data=data, timeout=30).status_code == 200
    listed = b.get("/storage/contents", params={"path": unique}).json()["contents"]
    assert [(e["name"], e["size_bytes"]) for e in listed] == [("data.bin", len(data))]
    read = _signed(b, "download", f"{unique}/data.bin")
    assert requests.get(read, timeout=30).content == data
    assert requests.get(read, headers={"Range": "bytes=10-19"}, timeout=30).content == data[10:20]


def test_upload_url_signed_by_one_replica_is_taken_by_the_other(replicas, unique):
    """Behind a load balancer the PUT may reach either replica: the signing key is shared."""
    a, b = replicas
    url = urlsplit(_signed(b, "upload", f"{unique}/relayed.bin"))
    assert url.netloc == urlsplit(b.url).netloc  # B takes uploads through itself
    to_a = urlunsplit(url._replace(netloc=urlsplit(a.url).netloc))
    assert requests.put(to_a, data=b"relayed", timeout=30).status_code == 200
    assert requests.get(_signed(b, "download", f"{unique}/relayed.bin"),
                        timeout=30).content == b"relayed"


def test_operation_started_on_one_is_polled_on_the_other(replicas, unique):
    a, b = replicas
    body = os.urandom(50_000)
    source = _Gate(body)
    try:
        op = requests.post(a.url + "/storage/input_remote", headers=KEY, timeout=30,
                           params={"url": source.url, "path": f"{unique}/fetched.bin"}).json()
        seen = b.get(f"/storage/operations/{op['id']}")
        assert seen.status_code == 200, seen.text
        assert seen.json()["status"] == "RUNNING"
        assert op["id"] in [o["id"] for o in b.get("/storage/operations").json()]
        source.release.set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seen = b.get(f"/storage/operations/{op['id']}").json()
            if seen["status"] != "RUNNING":
                break
            time.sleep(0.1)
        assert seen["status"] == "OK", seen
    finally:
        source.close()
    assert requests.get(_signed(b, "download", f"{unique}/fetched.bin"),
                        timeout=30).content == body
    assert b.get("/storage/operations/0123abcd").status_code == 404
