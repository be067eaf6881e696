"""Archive endpoints over real HTTP, on archives made by the real producers and hostile ones.

For every member: the listing's sizes and CRC, the range from ``/storage/zip-file-range``, one
ranged GET on the archive's signed URL and an independent decoder give back the original bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zlib
from pathlib import Path

import pytest
import requests

import archives

PRODUCERS = {
    "zip-deflate": lambda d: archives.build_zip_cli(d, method="deflate"),
    "zip-store": lambda d: archives.build_zip_cli(d, method="store", name="cli-store.zip"),
    "7zz-deflate": lambda d: archives.build_7zz(d, method="Deflate"),
    "7zz-deflate64": lambda d: archives.build_7zz(d, method="Deflate64"),
    "7zz-copy": lambda d: archives.build_7zz(d, method="Copy"),
    "7zz-deflate-streamed": lambda d: archives.build_7zz(d, method="Deflate", streamed=True),
    "7zz-deflate64-streamed": lambda d: archives.build_7zz(d, method="Deflate64", streamed=True),
    "stream-zip": lambda d: archives.build_stream_zip(d),
    "py-store": lambda d: archives.build_pyzip(d, method="store"),
    "py-deflate-no-dirs": lambda d: archives.build_pyzip(d, method="deflate", dir_entries=False),
    "py-bzip2": lambda d: archives.build_pyzip(d, method="bzip2"),
    "py-lzma": lambda d: archives.build_pyzip(d, method="lzma"),
    "sfx-raw": lambda d: archives.build_prepended(d),
    "sfx-adjusted": lambda d: archives.build_prepended(d, adjusted=True),
    "commented": lambda d: archives.build_commented(d),
}


def place(server, unique: str, archive: Path, name: str = "output.zip") -> str:
    target = server.root / unique / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(archive, target)
    return f"{unique}/{name}"


def signed_url(server, path: str) -> str:
    r = server.get("/storage/signed-urls", params={"operation": "download", "paths": path})
    return r.json()[0]


@pytest.mark.parametrize("producer", sorted(PRODUCERS))
def test_every_member_round_trips(server, unique, tmp_path, producer):
    archive, files = PRODUCERS[producer](tmp_path)
    path = place(server, unique, archive)
    r = server.get("/storage/zip-contents", params={"path": path, "recursive": "true"})
    assert r.status_code == 200, r.text
    listing = r.json()
    assert listing["size"] == archive.stat().st_size
    entries = {e["name"]: e for e in listing["contents"]}
    assert set(entries) == set(files) | set(archives.directories_of(list(files)))
    url = signed_url(server, path)
    with requests.Session() as session:
        for member, data in files.items():
            entry = entries[member]
            assert entry["size"] == len(data) and entry["crc32"] == zlib.crc32(data)
            directory, _, name = member.rpartition("/")
            rng = server.get("/storage/zip-file-range", params={
                "path": path, "zip_relative_path": directory, "filename": name}).json()
            assert rng["range_start"] == entry["range_start"]
            assert rng["range_end"] - rng["range_start"] + 1 == entry["compressed_size"]
            assert rng["compress_type"] == entry["compress_type"]
            if entry["compressed_size"] == 0:
                assert data == b""
                continue
            wanted = f"bytes={rng['range_start']}-{rng['range_end']}"
            raw = session.get(url, headers={"Range": wanted})
            assert raw.status_code == 206
            assert archives.decompress(rng["compress_type"], raw.content, len(data)) == data, member


def test_deflate64_and_streamed_archives_use_the_expected_layout(server, unique, tmp_path):
    archive, _ = archives.build_7zz(tmp_path, method="Deflate64", streamed=True)
    path = place(server, unique, archive)
    entries = server.get("/storage/zip-contents", params={"path": path, "recursive": "true"}).json()
    methods = {e["compress_type"] for e in entries["contents"] if not e["name"].endswith("/")}
    assert 9 in methods  # Deflate64 really used
    assert archive.read_bytes().count(b"PK\x07\x08") > 0  # data descriptors present


def test_legacy_and_unicode_names(server, unique, tmp_path):
    archive, expected = archives.build_legacy_names(tmp_path)
    path = place(server, unique, archive, "legacy.zip")
    r = server.get("/storage/zip-contents", params={"path": path, "zip_relative_path": "legacy"})
    assert sorted(e["name"] for e in r.json()["contents"]) == sorted(
        n.split("/", 1)[1] for n in expected)
    r = server.get("/storage/zip-file-range", params={"path": path, "zip_relative_path": "legacy",
                                                      "filename": "naïve π.txt"})
    assert r.status_code == 200


def test_implied_directories_listed_once(server, unique, tmp_path):
    archive, files = archives.build_7zz(tmp_path, method="Deflate", streamed=True)
    path = place(server, unique, archive)
    r = server.get("/storage/zip-contents", params={"path": path, "zip_relative_path": "artifacts",
                                                    "recursive": "false"})
    names = [e["name"] for e in r.json()["contents"]]
    assert names.count("sub/") == 1 and "data.bin" not in names
    sub = [e for e in r.json()["contents"] if e["name"] == "sub/"][0]
    assert (sub["size"], sub["compressed_size"], sub["compress_type"]) == (0, 0, 0)


def test_replaced_archive_is_read_again(server, unique, tmp_path):
    first, _ = archives.build_pyzip(tmp_path, {"a.txt": b"a"}, name="one.zip")
    second, _ = archives.build_pyzip(tmp_path, {"b.txt": b"bb", "c.txt": b"c"}, name="two.zip")
    path = place(server, unique, first)

    def names() -> list[str]:
        r = server.get("/storage/zip-contents", params={"path": path})
        return sorted(e["name"] for e in r.json()["contents"])

    assert names() == ["a.txt"]
    time.sleep(0.01)
    place(server, unique, second)
    assert names() == ["b.txt", "c.txt"]


def test_many_entries_are_listed_in_bounded_time(server, unique, tmp_path):
    archive, files = archives.build_many_entries(tmp_path, 70_000)
    path = place(server, unique, archive, "many.zip")
    started = time.monotonic()
    r = server.get("/storage/zip-contents", params={"path": path, "zip_relative_path": "d001",
                                                    "recursive": "false"})
    assert r.status_code == 200 and len(r.json()["contents"]) == 1000
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("label", archives.HOSTILE_LABELS)
def test_hostile_archives_get_a_clear_4xx_promptly(server, unique, tmp_path, label):
    path = place(server, unique, archives.hostile_archives(tmp_path)[label], f"{label}.zip")
    started = time.monotonic()
    r = server.get("/storage/zip-contents", params={"path": path, "recursive": "true"})
    elapsed = time.monotonic() - started
    assert elapsed < 5
    if r.status_code == 200:
        # a damaged member may survive listing; asking for its range must still answer clearly
        for entry in r.json()["contents"]:
            if not entry["name"].endswith("/"):
                rr = server.get("/storage/zip-file-range",
                                params={"path": path, "filename": entry["name"]})
                assert rr.status_code in (200, 404, 413, 422), rr.text
        return
    assert r.status_code in (413, 422), r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "Traceback" not in detail


def test_entry_limit_is_enforced(make_server, tmp_path):
    import subprocess
    import sys

    # start a server with a small entry limit through the public API of the app
    archive, _ = archives.build_many_entries(tmp_path, 2_000, name="two-thousand.zip")
    srv = make_server()
    path = place(srv, "lim", archive, "a.zip")
    assert srv.get("/storage/zip-contents", params={"path": path}).status_code == 200
    code = (
        "from storagefs.server.zipindex import read_index\n"
        "from storagefs.errors import TooLarge\n"
        f"f = open({str(archive)!r}, 'rb'); import os\n"
        f"try:\n    read_index(f, os.path.getsize({str(archive)!r}), max_entries=1000,"
        " max_cd_bytes=1<<20)\n"
        "except TooLarge as e:\n    print('refused:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("refused:")


def test_a_long_listing_streams_and_is_cut_off_at_a_damaged_header(server, unique, tmp_path):
    """Past 100,000 entries the answer streams; a bad local header found after the answer has
    started cuts the connection (never a complete-looking answer) and the log says why."""
    import zipfile

    archive, files = archives.build_many_entries(tmp_path, 120_000, name="long.zip")
    path = place(server, unique, archive, "long.zip")
    r = server.get("/storage/zip-contents", params={"path": path, "recursive": "true"},
                   stream=True)
    assert r.status_code == 200 and "content-length" not in r.headers
    listing = json.loads(r.content)
    assert len([e for e in listing["contents"] if not e["name"].endswith("/")]) == len(files)
    last = zipfile.ZipFile(archive).infolist()[-1]
    damaged = server.root / path
    with damaged.open("r+b") as f:
        f.seek(last.header_offset)
        f.write(b"XXXX")
    os.utime(damaged, ns=(time.time_ns(), time.time_ns() + 2_000_000_000))
    r = server.get("/storage/zip-contents", params={"path": path, "recursive": "true"},
                   stream=True)
    assert r.status_code == 200  # the first entries were fine
    with pytest.raises(requests.exceptions.RequestException):
        r.content
    assert "archive listing cut off" in server.log.read_text()
    folder, _, name = last.filename.rpartition("/")
    r = server.get("/storage/zip-contents", params={"path": path, "zip_relative_path": folder,
                                                    "recursive": "false"})
    assert r.status_code == 422 and "local header" in r.json()["detail"]


@pytest.mark.parametrize("producer", ["zip-deflate", "7zz-deflate-streamed", "py-store"])
def test_a_streamed_listing_is_the_same_json(tmp_path, monkeypatch, producer):
    from storagefs.server import ziplisting, zipindex
    from storagefs.server.zipindex import read_index

    archive, _ = PRODUCERS[producer](tmp_path)
    with archive.open("rb") as f:
        index = read_index(f, archive.stat().st_size, max_entries=1000, max_cd_bytes=1 << 20)
    opener = archive.open.__get__(archive)  # a bound method: opener() opens the archive
    for folder, recursive in (("", True), ("artifacts", False), ("artifacts/sub", True),
                              ("nope", True)):
        whole = ziplisting.zip_listing(index, lambda: opener("rb"), folder, recursive)
        assert isinstance(whole, dict)
        with monkeypatch.context() as patch:
            patch.setattr(ziplisting, "STREAM_MIN_ENTRIES", -1)
            patch.setattr(ziplisting, "BATCH", 2)
            # no header alone in its window: no estimates (those are checked in test_zipindex)
            patch.setattr(zipindex, "HEADER_GAP", 1 << 40)
            streamed = ziplisting.zip_listing(index, lambda: opener("rb"), folder, recursive)
            assert not isinstance(streamed, dict)
            assert json.loads(b"".join(streamed)) == whole
