"""Listings and archive contents answered from stored JSON: any change shows at once, the key is
still checked, and each distinct request has its own answer."""

from __future__ import annotations

import os

import requests

from archives import zip_bytes
from serverharness import KEY, put_tree


def listing(server, path: str, **params) -> dict:
    r = requests.get(server.url + "/storage/contents", params={"path": path, **params},
                     headers=KEY, timeout=10)
    assert r.status_code == 200, r.text
    return {e["name"]: e["size_bytes"] for e in r.json()["contents"]}


def test_a_folder_listing_shows_every_change_at_once(server, unique):
    folder = server.root / unique
    put_tree(folder, {"a.txt": b"1", "b.txt": b"22"})
    for _ in range(3):
        assert listing(server, unique) == {"a.txt": 1, "b.txt": 2}
    (folder / "c.txt").write_bytes(b"333")
    assert listing(server, unique) == {"a.txt": 1, "b.txt": 2, "c.txt": 3}
    with open(folder / "a.txt", "r+b") as f:  # rewritten in place: the folder's time stays
        f.write(b"xyzw")
    assert listing(server, unique)["a.txt"] == 4
    os.unlink(folder / "b.txt")
    assert listing(server, unique) == {"a.txt": 4, "c.txt": 3}
    (folder / "sub").mkdir()
    assert listing(server, unique) == {"a.txt": 4, "c.txt": 3, "sub/": None}


def test_each_request_has_its_own_answer_and_the_key_is_checked(server, unique):
    put_tree(server.root / unique, {f"f{i}.txt": b"x" * i for i in range(1, 6)})
    assert list(listing(server, unique, sort_by="size", order="asc")) == \
        [f"f{i}.txt" for i in range(1, 6)]
    assert list(listing(server, unique, sort_by="size", order="desc")) == \
        [f"f{i}.txt" for i in range(5, 0, -1)]
    assert len(listing(server, unique, per_page=2)) == 2
    url = server.url + "/storage/contents"
    assert requests.get(url, params={"path": unique}, timeout=10).status_code == 401
    r = requests.get(url, params={"path": unique}, headers={"X-API-Key": "wrong"}, timeout=10)
    assert r.status_code == 401


def test_archive_contents_follow_a_replaced_archive(server, unique):
    folder = server.root / unique
    folder.mkdir()
    url = server.url + "/storage/zip-contents"

    def names() -> list[str]:
        r = requests.get(url, params={"path": f"{unique}/a.zip"}, headers=KEY, timeout=10)
        assert r.status_code == 200, r.text
        return [e["name"] for e in r.json()["contents"]]

    (folder / "a.zip").write_bytes(zip_bytes({"one.txt": b"1"}))
    assert names() == names() == ["one.txt"]
    staged = folder / "staged"
    staged.write_bytes(zip_bytes({"two.txt": b"2"}))
    os.replace(staged, folder / "a.zip")
    assert names() == ["two.txt"]
    os.unlink(folder / "a.zip")
    r = requests.get(url, params={"path": f"{unique}/a.zip"}, headers=KEY, timeout=10)
    assert r.status_code == 404


def test_answers_from_storage_are_counted(make_server):
    srv = make_server()
    put_tree(srv.root, {"d/f.txt": b"x"})
    for _ in range(3):
        requests.get(srv.url + "/storage/contents", params={"path": "d"}, headers=KEY, timeout=9)
    counted = 'storagefs_requests_total{endpoint="/storage/contents",method="GET",status="200"}'
    assert srv.metrics()[counted] == 3
