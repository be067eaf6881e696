"""A task archive of 1,024,000 members through the real server: folder listings from a cold
server, the whole listing streamed in bounded memory, and a client whose read timeout bounds
silence, not the length of an answer.

Time bounds here are loose (the machine is shared); scripts/bench_bigarchive.py measures the
figures against their targets.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

import bigarchive
from serverharness import ServerHandle, start_server
from storagefs.client import StorageClient
from storagefs.config import ClientConfig
from storagefs.errors import Timeout

ARCHIVE = "big/output.zip"
FOLDER = "artifacts/processor3/0.500"


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


@pytest.fixture(scope="module")
def big_server(tmp_path_factory) -> Iterator[tuple[ServerHandle, float]]:
    """A fresh server (one worker) over the full archive, and its RSS before any listing."""
    base = tmp_path_factory.mktemp("bigserver")
    target = base / "root" / ARCHIVE
    target.parent.mkdir(parents=True)
    bigarchive.write_task_archive(target, bigarchive.FULL_COUNT)
    handle = start_server(base / "root", base)
    yield handle, rss_mb(handle.process.pid)
    handle.stop()


def listing(server: ServerHandle, folder: str, recursive: bool, **kwargs):
    return server.get("/storage/zip-contents", params={
        "path": ARCHIVE, "zip_relative_path": folder, "recursive": str(recursive).lower()},
        **kwargs)


def test_a_folder_of_a_million_member_archive_from_a_cold_server(big_server):
    server, _ = big_server
    started = time.monotonic()
    r = listing(server, FOLDER, False)
    cold = time.monotonic() - started
    assert r.status_code == 200, r.text  # 1,024,000 members: over the old limit of 1,000,000
    contents = r.json()["contents"]
    assert [e["name"] for e in contents] == list(bigarchive.FIELDS)
    with (server.root / ARCHIVE).open("rb") as f:
        for entry in contents:
            f.seek(entry["range_start"])
            assert f.read(entry["compressed_size"]) == bigarchive.member_bytes(
                f"{FOLDER}/{entry['name']}")
    assert cold < 30, f"cold folder listing took {cold:.1f} s"
    timings = []
    for step in ("0.001", "0.999", "0.250"):
        started = time.monotonic()
        r = listing(server, f"artifacts/processor7/{step}", False)
        timings.append(time.monotonic() - started)
        assert len(r.json()["contents"]) == len(bigarchive.FIELDS)
    assert min(timings) < 0.5, timings
    top = listing(server, "artifacts", False).json()["contents"]
    assert [e["name"] for e in top] == [f"processor{p}/" for p in range(bigarchive.PROCESSORS)]


def test_the_whole_listing_streams_in_bounded_memory(big_server):
    server, rss_before = big_server
    listing(server, FOLDER, False)  # the index is built (if the test above did not run)
    started = time.monotonic()
    r = listing(server, "", True, stream=True)
    assert r.status_code == 200
    assert "content-length" not in r.headers and r.headers["transfer-encoding"] == "chunked"
    body = bytearray()
    first_byte = None
    for chunk in r.iter_content(1 << 20):
        if first_byte is None:
            first_byte = time.monotonic() - started
        body += chunk
    data = json.loads(bytes(body))
    del body
    names = [e["name"] for e in data["contents"]]
    folders = 1 + bigarchive.PROCESSORS + bigarchive.PROCESSORS * bigarchive.STEPS
    assert len(names) == bigarchive.FULL_COUNT + folders
    assert names[:3] == ["artifacts/", "artifacts/processor0/", "artifacts/processor0/0.001/"]
    assert names[-1] == f"artifacts/processor63/1.000/{bigarchive.FIELDS[-1]}"
    assert data["size"] == (server.root / ARCHIVE).stat().st_size
    sample = data["contents"][123_457]
    assert sample["range_start"] is not None and sample["crc32"] is not None
    growth = rss_mb(server.process.pid, "VmHWM") - rss_before
    assert growth < 300, f"the server grew by {growth:.0f} MB"
    assert first_byte is not None and first_byte < 10


def test_another_server_process_maps_the_saved_index(big_server, tmp_path):
    """A restarted server, or another worker, lists a folder without parsing again."""
    server, _ = big_server
    listing(server, FOLDER, False)  # indexed (and saved) by now
    saved = [p for p in (server.root / ".storagefs" / "zipindex").iterdir()
             if not p.name.endswith(".lock")]
    assert len(saved) == 1
    other = start_server(server.root, tmp_path)
    try:
        started = time.monotonic()
        r = listing(other, FOLDER, False)
        elapsed = time.monotonic() - started
        assert [e["name"] for e in r.json()["contents"]] == list(bigarchive.FIELDS)
        assert elapsed < 3, f"{elapsed:.1f} s: parsed again?"
        top = server.get("/storage/contents", params={"path": ""}).json()["contents"]
        assert [e["name"] for e in top] == ["big/"]  # the saved index is not storage
    finally:
        other.stop()


# ------------------------------------------------------------------------------ client timeout


class _Dribble(http.server.BaseHTTPRequestHandler):
    """Answers every listing with a JSON body sent in pieces, ``pause`` seconds apart."""

    pieces: list[bytes] = []
    pause = 0.0

    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        if self.path.startswith("/version-check"):
            body = b'{"is_valid": true}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(sum(map(len, self.pieces))))
        self.end_headers()
        try:
            for piece in self.pieces:
                self.wfile.write(piece)
                self.wfile.flush()
                time.sleep(self.pause)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up: what we test
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def dribbling() -> Iterator[type[_Dribble]]:
    handler = type("Handler", (_Dribble,), {})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{httpd.server_address[1]}"  # type: ignore[attr-defined]
    yield handler
    httpd.shutdown()
    httpd.server_close()


def dribbled_listing(entries: int) -> list[bytes]:
    rows = [{"name": f"f{i}", "size": 1, "compressed_size": 1, "range_start": 30 + i,
             "creation_time": None, "compress_type": 0, "crc32": 0} for i in range(entries)]
    body = json.dumps({"size": 1000, "contents": rows}).encode()
    step = len(body) // 8 + 1
    return [body[i:i + step] for i in range(0, len(body), step)]


def test_the_read_timeout_bounds_silence_not_the_whole_answer(dribbling):
    dribbling.pieces = dribbled_listing(50)
    dribbling.pause = 0.3  # 8 pieces: 2.4 s in all, never 1 s of silence
    config = ClientConfig(api_url=dribbling.url, api_key="k", read_timeout_s=1.0, retries=0)
    with StorageClient(config) as client:
        started = time.monotonic()
        result = client.zip_contents("a.zip", recursive=True)
        elapsed = time.monotonic() - started
    assert len(result.contents) == 50 and result.contents[7].range_start == 37
    assert elapsed > 2 * config.read_timeout_s  # the answer took longer than the timeout


def test_silence_past_the_read_timeout_fails_promptly(dribbling):
    dribbling.pieces = dribbled_listing(50)
    dribbling.pause = 3.0
    config = ClientConfig(api_url=dribbling.url, api_key="k", read_timeout_s=0.5, retries=0)
    with StorageClient(config) as client:
        started = time.monotonic()
        with pytest.raises(Timeout):
            client.zip_contents("a.zip", recursive=True)
    assert time.monotonic() - started < 2.5
