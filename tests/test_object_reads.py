"""Signed-URL reads on the lean path: a kept descriptor never outlives the file version it was
opened for, never reaches out of the root, and answers as the framework's route did."""

from __future__ import annotations

import os
import shutil
import time

import pytest
import requests

from storagefs.server.objectreads import single_range
from serverharness import put_tree, signed


def test_a_file_replaced_under_a_kept_descriptor_is_served_new_at_once(server, unique):
    put_tree(server.root / unique, {"f.bin": b"a" * 8192})
    url = signed(server, "download", f"{unique}/f.bin")[0]
    with requests.Session() as session:
        for round_ in range(20):
            fill = bytes([ord("b") + round_ % 20])
            assert session.get(url, headers={"Range": "bytes=0-4095"}).status_code == 206
            staged = server.root / unique / "staged"
            staged.write_bytes(fill * 8192)  # same size; the mtime may even be equal
            os.replace(staged, server.root / unique / "f.bin")
            r = session.get(url, headers={"Range": "bytes=4096-8191"})
            assert r.status_code == 206 and r.content == fill * 4096, round_


def test_a_file_rewritten_in_place_shorter_is_served_new(server, unique):
    put_tree(server.root / unique, {"f.bin": b"x" * 5000})
    url = signed(server, "download", f"{unique}/f.bin")[0]
    assert requests.get(url, headers={"Range": "bytes=0-99"}).content == b"x" * 100
    (server.root / unique / "f.bin").write_bytes(b"y" * 50)
    r = requests.get(url, headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and r.content == b"y" * 50
    assert r.headers["Content-Range"] == "bytes 0-49/50"


def test_a_folder_swapped_for_a_symlink_out_of_the_root_is_refused(server, unique, tmp_path):
    put_tree(server.root / unique, {"d/f.bin": b"inside"})
    put_tree(tmp_path / "outside", {"f.bin": b"SECRET"})
    url = signed(server, "download", f"{unique}/d/f.bin")[0]
    assert requests.get(url).content == b"inside"
    shutil.rmtree(server.root / unique / "d")
    os.symlink(tmp_path / "outside", server.root / unique / "d")
    r = requests.get(url, headers={"Range": "bytes=0-3"})
    assert r.status_code == 403 and b"SECRET" not in r.content


def test_a_deleted_file_is_404_and_a_wrong_method_or_signature_refused(server, unique):
    put_tree(server.root / unique, {"f.bin": b"z" * 100})
    url = signed(server, "download", f"{unique}/f.bin")[0]
    assert requests.get(url).content == b"z" * 100
    assert requests.get(url.replace("sig=", "sig=0")).status_code == 403
    assert requests.put(url, data=b"no").status_code == 403
    os.unlink(server.root / unique / "f.bin")
    assert requests.get(url, headers={"Range": "bytes=0-9"}).status_code == 404


def test_headers_match_the_framework_route(server, unique):
    put_tree(server.root / unique, {"f.bin": b"q" * 3000})
    url = signed(server, "download", f"{unique}/f.bin")[0]
    lean = requests.get(url, headers={"Range": "bytes=5-9"})
    routed = requests.get(url, headers={"Range": "bytes=5-9", "If-Range": lean.headers["ETag"]})
    for name in ("ETag", "Last-Modified", "Content-Range", "Content-Length", "Content-Type",
                 "Accept-Ranges", "x-content-length"):
        assert lean.headers[name] == routed.headers[name], name
    assert lean.content == routed.content == b"q" * 5


def test_a_large_body_streams_whole(server, unique):
    data = os.urandom(3 * 1024 * 1024 + 17)
    put_tree(server.root / unique, {"big.bin": data})
    url = signed(server, "download", f"{unique}/big.bin")[0]
    assert requests.get(url).content == data
    r = requests.get(url, headers={"Range": "bytes=1000-"})
    assert r.status_code == 206 and r.content == data[1000:]


@pytest.mark.parametrize("header,size,expected", [
    ("bytes=0-9", 100, (0, 10)), ("bytes=90-", 100, (90, 100)), ("bytes=-5", 100, (95, 100)),
    ("bytes=10-500", 100, (10, 100)), ("bytes=100-", 100, None), ("bytes=0-0", 0, None),
    ("bytes=5-2", 100, None), ("bytes=0-1,5-6", 100, None), ("items=0-1", 100, None),
    ("bytes=-", 100, None),
])
def test_single_range(header, size, expected):
    assert single_range(header, size) == expected


def test_symlinks_inside_the_root_are_followed_and_out_of_it_refused(server, unique, tmp_path):
    put_tree(server.root / unique, {"real/f.bin": b"inside"})
    put_tree(tmp_path / "out", {"f.bin": b"SECRET"})
    os.symlink(server.root / unique / "real", server.root / unique / "link")
    url = signed(server, "download", f"{unique}/link/f.bin")[0]
    assert requests.get(url, headers={"Range": "bytes=0-5"}).content == b"inside"
    (server.root / unique / "ok.bin").write_bytes(b"fine")
    leak = signed(server, "download", f"{unique}/ok.bin")[0]
    assert requests.get(leak).content == b"fine"
    os.unlink(server.root / unique / "ok.bin")
    os.symlink(tmp_path / "out" / "f.bin", server.root / unique / "ok.bin")
    r = requests.get(leak, headers={"Range": "bytes=0-5"})
    assert r.status_code == 403 and b"SECRET" not in r.content


def test_an_idle_server_lets_go_of_a_deleted_file(make_server):
    srv = make_server()
    put_tree(srv.root, {"gone.bin": b"g" * 4096})
    url = signed(srv, "download", "gone.bin")[0]
    assert requests.get(url, headers={"Range": "bytes=0-9"}).status_code == 206
    os.unlink(srv.root / "gone.bin")

    def held() -> list[str]:
        fds = f"/proc/{srv.process.pid}/fd"
        return [t for t in (os.readlink(f"{fds}/{n}") for n in os.listdir(fds))
                if "gone.bin" in t]

    assert held(), "the read keeps its descriptor for a moment"
    deadline = time.monotonic() + 10
    while held() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not held()


def test_a_range_past_any_number_is_no_server_error(server, unique):
    """A Range with more digits than any file has bytes (and than int() takes) is not ours to
    answer: it goes the framework's way, never a 500."""
    (server.root / unique).mkdir(parents=True, exist_ok=True)
    (server.root / unique / "f.bin").write_bytes(b"0123456789")
    url = server.get("/storage/signed-urls", params={"paths": f"{unique}/f.bin",
                                                     "operation": "download"}).json()[0]
    for header in ("bytes=0-" + "9" * 5000, "bytes=-" + "9" * 5000):
        answer = requests.get(url, headers={"Range": header}, timeout=30)
        assert answer.status_code < 500, (header[:20], answer.status_code)
