"""The mount's tree and caches over an in-memory storage (no server, no FUSE)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import threading
import sys
import time
import tracemalloc
import zipfile

import pytest

from storagefs import protocol
from storagefs.errors import (CorruptArchive, InvalidRequest, IsADirectory, NotADirectory,
                              NotFound, PermissionDenied, ServerError)
from storagefs.mount import vfs as vfs_module
from storagefs.mount.archivelisting import (LAZY_MEMBERS, MIN_MEMBER_BYTES, FolderCache,
                                            RecentFolders, needs_census, path_inode,
                                            read_census, split_subtree)
from storagefs.mount.backend import CachedBackend, MetadataCache, SignedUrlCache, url_expiry
from storagefs.mount.read import ReadContext
from storagefs.mount.read.blockcache import BlockCache
from storagefs.mount.vfs import (ARCHIVE, FILE, FOLDER, MEMBER, MEMBER_DIR, VFS, ArchiveFolder,
                                 ArchiveTree, safe_parts)

from archives import build_pyzip, build_stream_zip, mixed_bytes, sample_files, zip_bytes
from bigarchive import FIELDS, member_names, write_task_archive
from fakes import WHEN, FakeStorage


@pytest.fixture(scope="module")
def storage_files(tmp_path_factory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("vfs")
    output, _ = build_pyzip(tmp, sample_files(), "deflate", dir_entries=False, name="out.zip")
    stream, _ = build_stream_zip(tmp, {"logs/run.log": mixed_bytes(5, 300_000)}, name="s.zip")
    return {
        "task1/output.zip": output.read_bytes(),
        "task1/notes.txt": b"some notes\n",
        "task2/output.zip": stream.read_bytes(),
        "task2/deep/er/data.csv": b"a,b\n1,2\n",
        "top.ZIP": output.read_bytes(),
    }


def make_vfs(files, **kwargs) -> tuple[VFS, FakeStorage]:
    storage = FakeStorage(files, with_crc=kwargs.pop("with_crc", True))
    return VFS(CachedBackend(storage), **kwargs), storage


def read_whole(vfs: VFS, path: str) -> bytes:
    reader = vfs.open(path)
    out = bytearray()
    while True:
        chunk = reader.read(len(out), 128 * 1024)
        if not chunk:
            break
        out += chunk
    reader.close()
    return bytes(out)


# -- the tree ----------------------------------------------------------------------------------


def test_folders_files_and_archives(storage_files):
    vfs, _ = make_vfs(storage_files)
    assert [e.name for e in vfs.list("/")] == ["task1", "task2", "top.ZIP"]
    assert vfs.lookup("/task1").kind == FOLDER
    notes = vfs.lookup("/task1/notes.txt")
    assert (notes.kind, notes.size, notes.mtime) == (FILE, 11, WHEN.timestamp())
    archive = vfs.lookup("/task1/output.zip")
    assert archive.kind == ARCHIVE and archive.is_dir
    assert vfs.lookup("/top.ZIP").kind == ARCHIVE  # any case
    assert [e.name for e in vfs.list("/task1/output.zip")] == ["artifacts"]
    names = sorted(e.name for e in vfs.list("/task1/output.zip/artifacts"))
    assert names == sorted(["stdout.txt", "stderr.txt", "sub", "résumé ü.txt", "empty.txt"])
    member = vfs.lookup("/task1/output.zip/artifacts/stdout.txt")
    assert member.kind == MEMBER and member.size == 40_000 and 0 < member.stored < 40_000
    assert vfs.lookup("/task1/output.zip/artifacts/sub").kind == MEMBER_DIR  # implied
    assert vfs.lookup("/task2/deep/er/data.csv").size == 8


def test_missing_paths_and_wrong_kinds(storage_files):
    vfs, _ = make_vfs(storage_files)
    for path in ("/nope", "/task1/nope.txt", "/task1/output.zip/nope",
                 "/task1/output.zip/artifacts/x"):
        with pytest.raises(NotFound):
            vfs.lookup(path)
    with pytest.raises(NotADirectory):
        vfs.lookup("/task1/notes.txt/inside")
    with pytest.raises(NotADirectory):
        vfs.list("/task1/notes.txt")
    with pytest.raises(IsADirectory):
        vfs.open("/task1/output.zip")


def test_paths_inside_an_archive(storage_files):
    """One lookup in the archive's tree, whatever the depth; entries made once per version."""
    vfs, storage = make_vfs(storage_files)
    member = vfs.lookup("/task1/output.zip/artifacts/stdout.txt")
    assert vfs.lookup("/task1/output.zip/artifacts/stdout.txt") is member
    assert vfs.lookup("//task1/output.zip//artifacts/stdout.txt/") is member  # as FUSE never sends
    assert member in vfs.list("/task1/output.zip/artifacts")
    with pytest.raises(NotADirectory):
        vfs.lookup("/task1/output.zip/artifacts/stdout.txt/x")
    with pytest.raises(NotADirectory):
        vfs.lookup("/task1/output.zip/artifacts/stdout.txt/x/y")
    with pytest.raises(NotADirectory):
        vfs.list("/task1/output.zip/artifacts/stdout.txt")
    with pytest.raises(NotFound):
        vfs.lookup("/task1/output.zip/nope/stdout.txt")
    sub = vfs.lookup("/task1/output.zip/artifacts/sub")
    assert sub.kind == MEMBER_DIR and sub.mtime is not None and sub.inner == "artifacts/sub"
    assert storage.count("zip") == 1


def test_listings_are_per_folder_and_cached(storage_files):
    vfs, storage = make_vfs(storage_files)
    vfs.list("/")
    assert storage.calls == [("list", "")]
    vfs.lookup("/task2/deep/er/data.csv")
    assert [c for c in storage.calls if c[0] == "list"] == [
        ("list", ""), ("list", "task2"), ("list", "task2/deep"), ("list", "task2/deep/er")]
    for _ in range(3):
        vfs.list("/task1")
        vfs.lookup("/task1/output.zip/artifacts/sub/data.bin")
    assert storage.count("list") == 5 and storage.count("zip") == 1
    assert storage.count("read") == 0 and storage.count("url") == 0  # no data for metadata


def test_missing_names_are_trusted_briefly(storage_files):
    clock = [0.0]
    storage = FakeStorage(storage_files)
    vfs = VFS(CachedBackend(storage, ttl=60, negative_ttl=5, clock=lambda: clock[0]),
              negative_ttl=5)
    with pytest.raises(NotFound):
        vfs.lookup("/task1/new.txt")
    storage.files["task1/new.txt"] = b"new"
    clock[0] = 3
    with pytest.raises(NotFound):
        vfs.lookup("/task1/new.txt")  # the listing is recent: trusted
    assert storage.count("list") == 2
    clock[0] = 9
    assert vfs.lookup("/task1/new.txt").size == 3  # older than 5 s: asked again
    assert storage.count("list") == 3
    assert "new.txt" in [e.name for e in vfs.list("/task1")]
    vfs.lookup("/task1/notes.txt")  # names that are there never cause a new listing
    assert storage.count("list") == 3


def test_zip_as_file(storage_files):
    vfs, storage = make_vfs(storage_files, zip_as_dir=False)
    entry = vfs.lookup("/task1/output.zip")
    assert entry.kind == FILE and entry.size == len(storage_files["task1/output.zip"])
    assert read_whole(vfs, "/task1/output.zip") == storage_files["task1/output.zip"]
    assert storage.count("zip") == 0


def test_inode_numbers_are_stable(storage_files):
    clock = [0.0]
    storage = FakeStorage(storage_files)
    vfs = VFS(CachedBackend(storage, ttl=10, clock=lambda: clock[0]))
    paths = ["/task1", "/task1/notes.txt", "/task1/output.zip",
             "/task1/output.zip/artifacts/stdout.txt"]
    first = [vfs.lookup(p).ino for p in paths]
    clock[0] += 100  # listings expire and are fetched again
    second = [vfs.lookup(p).ino for p in paths]
    assert first == second and len(set(first)) == len(first)
    assert vfs.lookup("/").ino == 1
    assert storage.count("list") == 4  # twice "" and "task1"


def test_member_names_never_leave_their_archive():
    names = ["../../etc/passwd", "/abs/x.txt", "a/../../b.txt", "nul\x00.txt", "./c.txt", "..",
             "/", "d\\e.txt", "dup.txt", "dup.txt", "x", "x/y.txt", "z/", "z", "\udcff.bin"]
    entries = [protocol.ZipEntry(n, i, i, 100 + i, WHEN, 0, 0) for i, n in enumerate(names)]
    storage = FakeStorage({"h/evil.zip": b"PK"})
    storage.listings["h/evil.zip"] = protocol.ZipListing(2, entries)
    vfs = VFS(CachedBackend(storage))
    seen = []

    def walk(path: str) -> None:
        for entry in vfs.list(path):
            assert entry.name not in ("", ".", "..") and "/" not in entry.name
            assert "\x00" not in entry.name
            entry.name.encode("utf-8")  # a valid file name
            assert entry.path.startswith("/h/evil.zip/")
            seen.append(entry.path[len("/h/evil.zip/"):] + ("/" if entry.is_dir else ""))
            if entry.is_dir:
                walk(entry.path)

    walk("/h/evil.zip")
    assert sorted(seen) == sorted(["etc/", "etc/passwd", "abs/", "abs/x.txt", "a/", "a/b.txt",
                                   "nul", "c.txt", "d\\e.txt", "dup.txt", "x/", "x/y.txt",
                                   "z/", "\ufffd.bin"])
    assert vfs.lookup("/h/evil.zip/dup.txt").size == 9  # the later duplicate wins
    assert vfs.lookup("/h/evil.zip/x").kind == MEMBER_DIR  # a folder wins over a file
    assert vfs.lookup("/h/evil.zip/z").kind == MEMBER_DIR


def test_safe_parts():
    assert safe_parts("/../a//./b/") == ["a", "b"]
    assert safe_parts("a\x00/../../etc") == ["a"]
    assert safe_parts("..") == []


# -- reading -----------------------------------------------------------------------------------


@pytest.mark.parametrize("with_crc", [True, False])
def test_read_every_member_and_file(storage_files, with_crc):
    vfs, storage = make_vfs(storage_files, with_crc=with_crc)
    for name, data in sample_files().items():
        assert read_whole(vfs, "/task1/output.zip/" + name) == data
    assert read_whole(vfs, "/task1/notes.txt") == b"some notes\n"
    assert read_whole(vfs, "/task2/output.zip/logs/run.log") == mixed_bytes(5, 300_000)
    assert storage.count("url") == 3  # one signed URL per object, reused
    assert storage.count("range") == 0  # the listing has each member's data offset


def test_member_range_falls_back_to_the_listing(storage_files):
    """The listing's data offsets are read without asking ``zip-file-range`` (which refuses
    names with '..', say); a listing without them falls back to asking it, once per member."""
    vfs, storage = make_vfs(storage_files)
    storage.broken_ranges = True
    data = sample_files()["artifacts/stdout.txt"]
    assert read_whole(vfs, "/task1/output.zip/artifacts/stdout.txt") == data
    assert storage.count("range") == 0

    listing = storage.zip_listing("task1/output.zip")
    storage.listings["task1/output.zip"] = protocol.ZipListing(listing.size, [
        dataclasses.replace(entry, range_start=None) for entry in listing.contents])
    vfs, storage.broken_ranges = VFS(CachedBackend(storage)), False
    for _ in range(2):
        assert read_whole(vfs, "/task1/output.zip/artifacts/stdout.txt") == data
    assert storage.calls.count(("range", "task1/output.zip", "artifacts/stdout.txt")) == 1
    storage.broken_ranges = True  # no offsets anywhere: an error, never a guess
    with pytest.raises(InvalidRequest):
        VFS(CachedBackend(storage)).open("/task1/output.zip/artifacts/stdout.txt")


def test_refused_url_is_renewed_once(storage_files):
    vfs, storage = make_vfs(storage_files)
    reader = vfs.open("/task1/notes.txt")
    storage.refuse_reads = 1
    assert reader.read(0, 100) == b"some notes\n"
    assert storage.count("url") == 2  # the cached URL was dropped and a new one asked for
    storage.refuse_reads = 2
    with pytest.raises(PermissionDenied):  # a fresh mount: nothing cached yet
        VFS(CachedBackend(storage)).open("/task1/notes.txt").read(0, 100)


@pytest.mark.parametrize("with_crc", [True, False])
def test_corrupt_member_is_an_error_not_wrong_bytes(storage_files, with_crc):
    files = dict(storage_files)
    archive = bytearray(files["task1/output.zip"])
    vfs, storage = make_vfs(files, with_crc=with_crc)
    entry = vfs.lookup("/task1/output.zip/artifacts/stderr.txt")  # stored: 11 bytes
    start = entry.member.data_start
    archive[start] ^= 0x01
    storage.files["task1/output.zip"] = bytes(archive)
    with pytest.raises(CorruptArchive):
        vfs.open("/task1/output.zip/artifacts/stderr.txt").read(0, 4096)


# -- caches ------------------------------------------------------------------------------------


def test_metadata_cache_ttl_negative_ttl_and_single_flight():
    clock = [0.0]
    cache = MetadataCache(ttl=10, negative_ttl=2, clock=lambda: clock[0])
    assert cache.get("a", lambda: 1) == 1
    assert cache.get("a", lambda: 2) == 1
    clock[0] = 11
    assert cache.get("a", lambda: 3) == 3

    def missing():
        raise NotFound("gone")

    with pytest.raises(NotFound):
        cache.get("b", missing)
    with pytest.raises(NotFound):
        cache.get("b", lambda: "never asked")  # remembered
    clock[0] = 14
    assert cache.get("b", lambda: "back") == "back"

    def failing():
        raise RuntimeError("transient")

    with pytest.raises(RuntimeError):
        cache.get("c", failing)
    assert cache.get("c", lambda: "ok") == "ok"  # other errors are not remembered

    gate = threading.Event()
    loads = []

    def slow():
        loads.append(1)
        gate.wait(5)
        return "slow"

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("d", slow)))
               for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    gate.set()
    for t in threads:
        t.join()
    assert results == ["slow"] * 8 and len(loads) == 1


def test_url_expiry_formats():
    assert url_expiry("http://h/-/a?op=download&expires=1700000000&sig=ab", 0) == 1700000000
    gcs = ("https://storage.googleapis.com/b/p?X-Goog-Algorithm=GOOG4-RSA-SHA256"
           "&X-Goog-Date=20250101T000000Z&X-Goog-Expires=3600&X-Goog-Signature=x")
    assert url_expiry(gcs, 0) == dt.datetime(2025, 1, 1, 1, tzinfo=dt.timezone.utc).timestamp()
    aws = "https://b.s3.amazonaws.com/k?X-Amz-Date=20250101T000000Z&X-Amz-Expires=60"
    assert url_expiry(aws, 0) == dt.datetime(2025, 1, 1, 0, 1, tzinfo=dt.timezone.utc).timestamp()
    assert url_expiry("https://h/x?Expires=123", 0) == 123
    assert url_expiry("https://h/x", 0) is None


def test_signed_urls_are_reused_until_shortly_before_expiry():
    now = [1000.0]
    cache = SignedUrlCache(default_ttl=50, clock=lambda: now[0])
    issued = []

    def load():
        issued.append(now[0])
        return f"http://h/x?expires={int(now[0]) + 1000}"

    cache.get("x", load)
    now[0] += 850
    cache.get("x", load)
    assert len(issued) == 1
    now[0] += 60  # within the last tenth of the lifetime: renewed
    cache.get("x", load)
    assert len(issued) == 2
    cache.invalidate("x")
    cache.get("x", load)
    assert len(issued) == 3
    cache.get("y", lambda: "http://h/y")  # no expiry in the URL: default_ttl
    now[0] += 51
    assert cache.get("y", lambda: "http://h/y2") == "http://h/y2"


def test_archive_trees_are_kept_by_version(storage_files):
    clock = [0.0]
    storage = FakeStorage(storage_files)
    vfs = VFS(CachedBackend(storage, ttl=10, clock=lambda: clock[0]))
    vfs.lookup("/task1/output.zip/artifacts/stdout.txt")
    clock[0] += 100
    vfs.lookup("/task1/output.zip/artifacts/stdout.txt")  # archives outlive the metadata TTL
    assert storage.count("zip") == 1 and storage.count("list") == 4
    storage.files["task1/output.zip"] = storage_files["task2/output.zip"]
    clock[0] += 100
    assert vfs.lookup("/task1/output.zip/logs/run.log").size == 300_000  # replaced: a new tree
    assert storage.count("zip") == 2


def test_concurrent_lookups_list_a_new_archive_once(storage_files):
    storage = FakeStorage(storage_files)
    listed = storage.zip_listing

    def slow_listing(path: str, version=None) -> protocol.ZipListing:
        time.sleep(0.2)
        return listed(path, version)

    storage.zip_listing = slow_listing  # type: ignore[method-assign]
    vfs = VFS(CachedBackend(storage))
    vfs.lookup("/task1/output.zip")
    threads = [threading.Thread(target=vfs.lookup, args=(f"/task1/output.zip/{name}",))
               for name in sample_files()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert storage.count("zip") == 1


def test_space_used(storage_files):
    vfs, _ = make_vfs(storage_files)
    assert vfs.space_used() == sum(len(d) for d in storage_files.values())


def test_space_used_unknown_is_zero(storage_files, monkeypatch):
    vfs, storage = make_vfs(storage_files)

    def unavailable() -> int:
        raise ServerError("503 Service Unavailable")

    monkeypatch.setattr(storage, "space_used", unavailable)
    assert vfs.space_used() == 0  # df answers; the mount's log says why


def test_a_zip_that_is_no_archive_becomes_the_file_it_is(storage_files, caplog):
    """Shown as a folder until its listing is asked for (stat stays free), then as a file."""
    data = b"this is not an archive\n" * 10
    vfs, storage = make_vfs({**storage_files, "task3/broken.zip": data})
    real = storage.zip_listing

    def refuse(path: str, version=None):
        if path == "task3/broken.zip":
            storage.calls.append(("zip", path))
            raise InvalidRequest("not a ZIP archive: no end of central directory record")
        return real(path, version)

    storage.zip_listing = refuse  # type: ignore[method-assign]
    assert vfs.lookup("/task3/broken.zip").kind == ARCHIVE
    assert storage.count("zip") == 0  # stat asked nothing
    with caplog.at_level("WARNING", logger="storagefs.mount.vfs"):
        entry = vfs.directory("/task3/broken.zip")
        assert entry.kind == FILE and entry.size == len(data)
        with pytest.raises(NotADirectory):
            vfs.list("/task3/broken.zip")
        with pytest.raises(NotADirectory):
            vfs.lookup("/task3/broken.zip/member.txt")
    lines = [r.getMessage() for r in caplog.records if "broken.zip" in r.getMessage()]
    assert len(lines) == 1 and "end of central directory" in lines[0], lines
    assert vfs.lookup("/task3/broken.zip").kind == FILE
    assert [e.kind for e in vfs.list("/task3")] == [FILE]
    assert read_whole(vfs, "/task3/broken.zip") == data
    assert storage.count("zip") == 1  # asked once per archive version
    assert vfs.directory("/task1/output.zip").kind == ARCHIVE


# -- archives listed folder by folder (archivelisting) ---------------------------------------


def file_fetch(path) -> tuple[list[tuple[int, int]], object]:
    """A ``Fetch`` over a local file, and the ranges it was asked for."""
    asked: list[tuple[int, int]] = []

    def fetch(start: int, end: int) -> bytes:
        asked.append((start, end))
        with open(path, "rb") as f:
            f.seek(start)
            return f.read(end - start)
    return asked, fetch


def test_census_reads_the_end_records_in_one_small_get(tmp_path):
    big = write_task_archive(tmp_path / "task.zip", 70_000)  # zip64: the plain record says 0xFFFF
    asked, fetch = file_fetch(big)
    size = big.stat().st_size
    census = read_census(fetch, size)
    assert census.members == 70_000 and asked == [(size - 1024, size)]
    with zipfile.ZipFile(big) as zf:
        assert census.directory_size == sum(46 + len(i.filename.encode()) for i in zf.infolist())
    commented = tmp_path / "commented.zip"
    with zipfile.ZipFile(commented, "w") as zf:
        for i in range(5):
            zf.writestr(f"d/{i}.txt", b"x")
        zf.comment = b"c" * 5000  # the records are beyond the first GET
    asked, fetch = file_fetch(commented)
    assert read_census(fetch, commented.stat().st_size).members == 5 and len(asked) == 2
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"not an archive" * 1000)
    with pytest.raises(CorruptArchive):
        read_census(file_fetch(plain)[1], plain.stat().st_size)


def test_only_archives_that_could_be_big_are_probed():
    assert not needs_census(LAZY_MEMBERS * MIN_MEMBER_BYTES - 1)
    assert needs_census(LAZY_MEMBERS * MIN_MEMBER_BYTES)


def test_a_subtree_becomes_the_listings_of_its_folders():
    e = protocol.ZipEntry
    listing = protocol.ZipListing(99, [
        e("0.001/U", 3, 3, 10, None, 0), e("0.001/p", 4, 4, 20, None, 0),
        e("0.002/", 0, 0, None, dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc), 0),
        e("0.002/U", 5, 5, 30, None, 0), e("top.txt", 1, 1, 40, None, 0),
        e("deep/er/x", 1, 1, 50, None, 0)])
    parts = split_subtree(listing)
    names = {path: sorted(name for name, _ in part) for path, part in parts.items()}
    assert names == {"": ["0.001/", "0.002/", "deep/", "top.txt"], "0.001": ["U", "p"],
                     "0.002": ["U"], "deep": ["er/"], "deep/er": ["x"]}
    top = dict(parts[""])
    assert top["0.002/"].creation_time is not None and top["0.001/"].creation_time is None
    assert parts["0.001"][0][1].range_start == 10
    folder = ArchiveFolder(parts["0.001"], "artifacts/p3/0.001", "/t/a.zip")
    member = folder.children["U"]
    assert member is not None and member.name == "artifacts/p3/0.001/U" and member.size == 3


def test_folder_listings_live_in_the_memory_budget():
    budget = BlockCache(10_000)
    now = [0.0]
    folders = FolderCache(budget, ttl=60, clock=lambda: now[0])
    loads: list[str] = []

    def loader(name: str, cost: int):
        return lambda: (loads.append(name) or name, cost)

    assert folders.get("a", loader("a", 4_000)) == "a"
    assert folders.get("a", loader("a", 4_000)) == "a" and loads == ["a"]
    folders.get("b", loader("b", 4_000))
    folders.get("c", loader("c", 4_000))  # a goes: the budget holds two
    assert budget.used == 8_000
    folders.get("a", loader("a", 4_000))
    assert loads == ["a", "b", "c", "a"]
    now[0] = 61.0  # past the TTL: asked again
    folders.get("a", loader("a", 4_000))
    assert loads[-1] == "a" and len(loads) == 5
    assert folders.get("huge", loader("huge", 50_000)) == "huge"  # too large for the budget:
    assert ("listing", "huge") not in budget  # kept outside it, the last one only
    assert folders.get("huge", loader("huge", 50_000)) == "huge" and loads.count("huge") == 1
    folders.get("huge2", loader("huge2", 50_000))
    folders.get("huge", loader("huge", 50_000))
    assert loads[-3:] == ["huge", "huge2", "huge"]


def test_folder_listings_keep_to_their_share_of_the_budget():
    """Beyond its share the least recently used folder goes, and data keeps the rest."""
    budget = BlockCache(20_000)
    folders = FolderCache(budget, ttl=60, limit=10_000)
    loads: list[str] = []

    def loader(name: str):
        return lambda: (loads.append(name) or name, 4_000)

    budget.put("data", b"x" * 8_000)
    folders.get("a", loader("a"))
    folders.get("b", loader("b"))
    folders.get("a", loader("a"))  # a is now the more recent one
    folders.get("c", loader("c"))  # three would pass the share: b goes, not a
    assert ("listing", "b") not in budget and ("listing", "a") in budget
    assert "data" in budget and budget.used == 16_000
    folders.get("a", loader("a"))
    assert loads == ["a", "b", "c"]
    folders.discard("a")
    folders.get("d", loader("d"))  # a's cost was given back: c and d fit
    assert ("listing", "c") in budget and ("listing", "d") in budget


def test_recent_folders_are_trusted_briefly_and_only_while_nothing_changed():
    now = [0.0]
    recent = RecentFolders(horizon=1.0, size=2, max_children=10, clock=lambda: now[0])
    recent.put("/a.zip/x", "x", children=3, changes=7)
    assert recent.get("/a.zip/x", 7) == "x"
    assert recent.get("/a.zip/x", 8) is None  # a storage listing changed since
    now[0] = 1.0
    assert recent.get("/a.zip/x", 7) is None  # past the horizon
    recent.put("/a.zip/big", "big", children=11, changes=7)
    assert recent.get("/a.zip/big", 7) is None  # too large to keep outside the budget
    for name in ("p", "q", "r"):
        recent.put(f"/a.zip/{name}", name, children=1, changes=7)
    assert [recent.get(f"/a.zip/{name}", 7) for name in "pqr"] == [None, "q", "r"]
    RecentFolders(horizon=0.0).put("/a.zip/s", "s", 1, 0)  # no metadata TTL: nothing kept


@pytest.fixture
def by_folder(monkeypatch):
    """Every archive is listed folder by folder, whatever its size."""
    monkeypatch.setattr(vfs_module, "LAZY_MEMBERS", 1)
    monkeypatch.setattr(vfs_module, "needs_census", lambda size: True)


def test_a_folder_walked_through_is_stale_once_a_storage_listing_changes(by_folder):
    """Within its second, a folder kept by ``RecentFolders`` stops answering as soon as a
    listing changes (here: refreshed by another ask, after the archive was replaced)."""
    vfs, storage = make_vfs({"x/big.zip": zip_bytes({"d/a": b"old", "d/b": b"old"})})
    for _ in range(2):  # the first walk met listings loaded on the way: it is not kept
        assert vfs.names("/x/big.zip/d") == ["a", "b"]
        assert vfs.lookup("/x/big.zip/d/a").size == 3
    storage.files["x/big.zip"] = zip_bytes({"d/z": b"replaced"})
    vfs.backend.list_folder("x", max_age=0)
    with pytest.raises(NotFound):
        vfs.lookup("/x/big.zip/d/a")
    assert vfs.lookup("/x/big.zip/d/z").size == 8


def test_folders_walked_through_go_with_an_archive_found_unreadable(by_folder):
    vfs, storage = make_vfs({"x/big.zip": zip_bytes({"d/a": b"1", "d/b": b"2", "e/c": b"3"})})
    for _ in range(2):  # the first walk met listings loaded on the way: it is not kept
        assert vfs.lookup("/x/big.zip/d/a").kind == MEMBER
    storage.refused_folders = {"e"}
    with pytest.raises(NotADirectory):
        vfs.names("/x/big.zip/e")
    assert vfs.lookup("/x/big.zip").kind == FILE
    with pytest.raises(NotADirectory):
        vfs.lookup("/x/big.zip/d/a")


def test_a_folder_larger_than_the_share_is_left_to_the_budget():
    budget = BlockCache(1_000)
    folders = FolderCache(budget, ttl=60, limit=200)
    loads: list[str] = []
    for sub in "abc":  # a walk needs the big top folder again for each sub-folder
        folders.get("top", lambda: (loads.append("top") or "top", 500))
        folders.get(sub, lambda sub=sub: (loads.append(sub) or sub, 50))
    assert loads == ["top", "a", "b", "c"]


def test_concurrent_misses_list_a_folder_once():
    folders = FolderCache(BlockCache(1 << 20), ttl=60)
    started = threading.Event()
    loads = []

    def slow():
        loads.append(1)
        started.set()
        time.sleep(0.2)
        return "x", 100

    threads = [threading.Thread(target=folders.get, args=("k", slow)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == [1]


@pytest.mark.parametrize("files", [True, False])
def test_a_folder_costs_no_more_than_its_estimate(files):
    """The estimate counted in the budget covers what a folder takes."""
    when = dt.datetime(2025, 1, 1, 12, tzinfo=dt.timezone.utc)
    if files:
        items = [protocol.ZipEntry(f"{FIELDS[i % 16]}{i // 16 or ''}", 38, 38, 1000 + i, when,
                                   0, 1234 + i) for i in range(1000)]
    else:
        items = [protocol.ZipEntry(f"{(i + 1) / 1000:.3f}/", 0, 0, None, None, 0)
                 for i in range(1000)]
    listing = protocol.ZipListing(1, items)
    inner, label = "artifacts/processor33" + ("/0.500" if files else ""), "/big/million.zip"
    gc.collect()
    tracemalloc.start()
    try:
        folder = ArchiveFolder(vfs_module.listed(listing), inner, label)
        taken = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    print(f"{len(folder.children)} children: {taken} bytes, estimated {folder.cost}")
    assert taken <= folder.cost <= 2 * taken, (taken, folder.cost)


def test_inode_numbers_from_paths():
    first = path_inode("/a/million.zip/artifacts/processor3/0.500/U")
    assert first == path_inode("/a/million.zip/artifacts/processor3/0.500/U")
    assert 1 << 62 <= first < 1 << 63
    numbers = {path_inode(f"/a/million.zip/{name}") for name in member_names(50_000)}
    assert len(numbers) == 50_000


def test_archive_trees_count_in_the_memory_budget(storage_files):
    context = ReadContext(16 << 20)
    vfs, storage = make_vfs(storage_files, context=context, max_archives=1)
    vfs.list("/task1/output.zip/artifacts")
    assert context.cache.used >= 5 * ArchiveTree.MEMBER_COST  # the tree, at its estimated cost
    vfs.list("/task1/output.zip/artifacts")
    assert storage.count("zip") == 1
    vfs.list("/task2/output.zip")  # max_archives=1: the other tree goes
    vfs.list("/task1/output.zip")
    assert storage.count("zip") == 3
    context.cache.clear()  # as when data has taken the budget
    vfs.list("/task1/output.zip")
    assert storage.count("zip") == 4


def test_a_tree_costs_no_more_than_its_estimate():
    when = dt.datetime(2025, 1, 1, 12, tzinfo=dt.timezone.utc)
    label = "/big/small.zip"
    gc.collect()
    tracemalloc.start()
    try:
        listing = protocol.ZipListing(1, [protocol.ZipEntry(name, 38, 38, 1000 + i, when, 0, i)
                                          for i, name in enumerate(member_names(3_000))])
        before = tracemalloc.get_traced_memory()[0] - sum(  # the names stay, the rest goes
            sys.getsizeof(item.name) for item in listing.contents)
        tree = ArchiveTree(listing, label)
        for rel, member in tree.files.items():
            tree.entries[rel] = vfs_module.Entry(f"{label}/{rel}", MEMBER, 38, 38, 1.0, 99,
                                                 "big/small.zip", (1, 1.0), rel, member)
        taken = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    cost = tree.cost(listing, len(label))
    assert taken <= cost <= 2 * taken, (taken, cost)
