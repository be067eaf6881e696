"""The server's ZIP index against real producers, hand-made layouts, hostile and fuzzed input."""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import struct
import tempfile
import threading
import time
import zipfile
import zlib
from pathlib import Path

import pytest
import zipfile_deflate64  # noqa: F401  (teaches zipfile method 9, for the cross-checks)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storagefs.errors import CorruptArchive, InvalidRequest, NotFound, StorageError, TooLarge
from storagefs.server.indexcache import IndexCache
from storagefs.server import zipindex
from storagefs.server.zipindex import Member, ZipIndex, data_offset, read_index

import archives as A  # tests/ is on sys.path (pytest's rootdir-relative import)

LIMITS = {"max_entries": 1_000_000, "max_cd_bytes": 256 << 20}


def index_of(path: Path, **limits) -> ZipIndex:
    with path.open("rb") as f:
        return read_index(f, path.stat().st_size, **{**LIMITS, **limits})


def index_of_bytes(data: bytes, **limits) -> ZipIndex:
    return read_index(io.BytesIO(data), len(data), **{**LIMITS, **limits})


class CountingReader(io.RawIOBase):
    """A read-only file that counts the bytes handed out, to prove what the index reads."""

    def __init__(self, f) -> None:
        self._f = f
        self.bytes_read = 0
        self.reads = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self.bytes_read += len(data)
        self.reads += 1
        return data


# ------------------------------------------------------------------------------ producers

PRODUCERS = {
    "zip-deflate": lambda d: A.build_zip_cli(d, method="deflate", name="zip-deflate.zip"),
    "zip-store": lambda d: A.build_zip_cli(d, method="store", name="zip-store.zip"),
    "7zz-Deflate": lambda d: A.build_7zz(d, method="Deflate"),
    "7zz-Deflate64": lambda d: A.build_7zz(d, method="Deflate64"),
    "7zz-Copy": lambda d: A.build_7zz(d, method="Copy"),
    "7zz-Deflate-streamed": lambda d: A.build_7zz(d, method="Deflate", streamed=True),
    "7zz-Deflate64-streamed": lambda d: A.build_7zz(d, method="Deflate64", streamed=True),
    "stream-zip": lambda d: A.build_stream_zip(d),
    "py-store": lambda d: A.build_pyzip(d, method="store"),
    "py-deflate": lambda d: A.build_pyzip(d, method="deflate"),
    "py-bzip2": lambda d: A.build_pyzip(d, method="bzip2"),
    "py-lzma": lambda d: A.build_pyzip(d, method="lzma"),
    "py-deflate-no-dirs": lambda d: A.build_pyzip(d, method="deflate", dir_entries=False,
                                                  name="py-no-dirs.zip"),
    "sfx-unadjusted": lambda d: A.build_prepended(d),
    "sfx-adjusted": lambda d: A.build_prepended(d, adjusted=True),
    "commented": lambda d: A.build_commented(d),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("zipindex")


@pytest.fixture(scope="module", params=list(PRODUCERS))
def built(request, workdir) -> tuple[str, Path, A.Files]:
    path, files = PRODUCERS[request.param](workdir / request.param)
    return request.param, path, files


def test_members_match_originals(built):
    """Every member's range decodes to the original, and agrees with zipfile's view."""
    label, path, files = built
    index = index_of(path)
    assert index.size == path.stat().st_size
    file_members = {m.name: m for m in index.members if not m.is_dir}
    assert set(file_members) == set(files)
    reference = {info.filename: info for info in zipfile.ZipFile(path).infolist()}
    with path.open("rb") as f:
        for name, member in file_members.items():
            start = data_offset(f, member, index.size)
            assert start == A.read_local_data_offset(f, member.header_offset)
            f.seek(start)
            raw = f.read(member.compressed_size)
            assert A.decompress(member.compress_type, raw, member.size) == files[name], name
            assert (member.size, member.crc) == (len(files[name]), zlib.crc32(files[name]))
            info = reference.get(name)
            if info is not None:  # zipfile decodes unflagged UTF-8 names as cp437
                assert member.header_offset == info.header_offset
                assert member.compressed_size == info.compress_size
                assert member.compress_type == info.compress_type
                assert member.date_time == info.date_time


def test_producers_exercise_what_they_should(workdir):
    """Guards against a tool upgrade silently removing what the suite relies on."""
    index = index_of(PRODUCERS["7zz-Deflate-streamed"](workdir / "guard7")[0])
    assert all(m.flags & 0x8 for m in index.members if not m.is_dir)  # data descriptors
    stream_path, _ = PRODUCERS["stream-zip"](workdir / "guard-stream")
    info = zipfile.ZipFile(stream_path).infolist()[-1]
    assert info.flag_bits & 0x8 and info.extra[:2] == b"\x01\x00"  # zip64 extra in the CD
    assert index_of(stream_path).list("", False)[0][1] is not None  # explicit dir entries
    assert index_of(PRODUCERS["7zz-Deflate64"](workdir / "guard64")[0]).member(
        "artifacts/stdout.txt").compress_type == 9


# ------------------------------------------------------------------------------ listing

SAMPLE_CHILDREN = {"stdout.txt", "stderr.txt", "sub/", "résumé ü.txt", "empty.txt"}


def test_listing_semantics(built):
    label, path, _ = built
    index = index_of(path)
    root = index.list("", False)
    assert [name for name, _ in root] == ["artifacts/"]
    forms = [index.list(p, False) for p in ("artifacts", "artifacts/", "/artifacts", "/artifacts/")]
    assert all(form == forms[0] for form in forms)
    names = [name for name, _ in forms[0]]
    assert sorted(names) == sorted(SAMPLE_CHILDREN)  # once each, dir itself excluded
    assert [n for n, _ in index.list("artifacts/sub", False)] == ["data.bin"]
    recursive = {name for name, _ in index.list("artifacts", True)}
    assert recursive == SAMPLE_CHILDREN | {"sub/data.bin"}
    everything = [name for name, _ in index.list("", True)]
    assert len(everything) == len(set(everything)) == 7
    assert index.list("nope", False) == [] and index.list("artifacts/stdout.txt", True) == []
    for prefix in ("", "artifacts/", "artifacts/sub/"):
        for name, member in index.list(prefix, True):
            if member is not None:
                assert index.member(prefix + name) == member


def test_implied_and_explicit_directories(workdir):
    implied = index_of(PRODUCERS["py-deflate-no-dirs"](workdir / "implied")[0])
    explicit = index_of(PRODUCERS["py-deflate"](workdir / "explicit")[0])
    assert dict(implied.list("artifacts", False))["sub/"] is None
    assert implied.list("", False) == [("artifacts/", None)]
    assert dict(explicit.list("artifacts", False))["sub/"].name == "artifacts/sub/"
    with pytest.raises(NotFound, match="directory"):
        implied.member("artifacts/sub/")
    assert explicit.member("artifacts/sub/").is_dir


def test_listing_order_is_archive_order(workdir):
    index = index_of(PRODUCERS["py-deflate-no-dirs"](workdir / "order")[0])
    assert [n for n, _ in index.list("", True)] == [
        "artifacts/", "artifacts/stdout.txt", "artifacts/stderr.txt", "artifacts/sub/",
        "artifacts/sub/data.bin", "artifacts/résumé ü.txt", "artifacts/empty.txt"]
    assert [n for n, _ in index.list("artifacts", False)] == [
        "stdout.txt", "stderr.txt", "sub/", "résumé ü.txt", "empty.txt"]


def test_member_lookup(workdir):
    index = index_of(PRODUCERS["py-deflate"](workdir / "lookup")[0])
    member = index.member("artifacts/stdout.txt")
    assert member.name == "artifacts/stdout.txt" and not member.is_dir
    assert index.member("/artifacts//stdout.txt") == member
    with pytest.raises(NotFound, match="artifacts/missing.txt"):
        index.member("artifacts/missing.txt")
    with pytest.raises(InvalidRequest):
        index.list("../x", False)


def raw_index(tmp_path: Path, entries: list[A.RawEntry], **kwargs) -> tuple[ZipIndex, Path]:
    path = tmp_path / "raw.zip"
    A.write_raw_zip(path, entries, **kwargs)
    return index_of(path), path


def test_duplicates_later_entry_wins(tmp_path):
    index, _ = raw_index(tmp_path, [A.RawEntry(b"a.txt", b"first"), A.RawEntry(b"b.txt", b"b"),
                                    A.RawEntry(b"a.txt", b"second")])
    assert [n for n, _ in index.list("", False)] == ["a.txt", "b.txt"]
    assert index.member("a.txt").size == len("second")
    assert dict(index.list("", False))["a.txt"] == index.member("a.txt")


def test_file_and_directory_with_one_name(tmp_path):
    index, _ = raw_index(tmp_path, [A.RawEntry(b"x", b"file"), A.RawEntry(b"x/"),
                                    A.RawEntry(b"x/y", b"y")])
    assert [n for n, _ in index.list("", False)] == ["x", "x/"]
    assert index.member("x").size == 4 and index.member("x/").is_dir
    assert index.list("x", False)[0][0] == "y"


def test_hostile_names_are_kept_but_listed_safely(tmp_path):
    raw = [b"../evil.txt", b"/abs/x.txt", b"a/./b.txt", b"a//c.txt", b"nul\x00ignored.txt", b"/",
           b"./", b"dir/../../up.txt", b"back\\slash.txt", b"./dot.txt"]
    index, _ = raw_index(tmp_path, [A.RawEntry(name, name) for name in raw])
    listed = [n for n, _ in index.list("", True)]
    assert listed == ["abs/", "abs/x.txt", "a/", "a/b.txt", "a/c.txt", "nul", "back\\slash.txt",
                      "dot.txt"]
    for name in listed:
        assert all(part not in ("", ".", "..") for part in name.rstrip("/").split("/"))
    assert index.member("abs/x.txt").name == "/abs/x.txt"  # kept as written
    assert index.member("../evil.txt").name == "../evil.txt"  # reachable, never listed
    assert index.member("nul").name == "nul"
    assert index.member("dir/../../up.txt").size == len(b"dir/../../up.txt")


def test_names_legacy_encodings(tmp_path):
    path, expected = A.build_legacy_names(tmp_path)
    index = index_of(path)
    assert [m.name for m in index.members] == list(expected)
    with path.open("rb") as f:
        for member in index.members:
            f.seek(data_offset(f, member, index.size))
            assert f.read(member.compressed_size).decode() == member.name


def test_invalid_utf8_under_flag_falls_back_to_cp437(tmp_path):
    index, _ = raw_index(tmp_path, [A.RawEntry(b"bad\xff.txt", flags=0x800)])
    assert index.members[0].name == "bad\u00a0.txt"  # 0xFF is NBSP in cp437


def test_empty_archive_and_trailing_junk():
    buffer = io.BytesIO()
    zipfile.ZipFile(buffer, "w").close()
    assert index_of_bytes(buffer.getvalue()).list("", True) == []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("a.txt", b"a")
    index = index_of_bytes(buffer.getvalue() + b"junk appended by a careless upload")
    assert index.member("a.txt").size == 1


def test_modified_time():
    member = Member("a", 0, 0, 0, 0, 0, 0, (2025, 1, 2, 3, 4, 6))
    assert member.modified.isoformat() == "2025-01-02T03:04:06+00:00"
    assert dataclasses.replace(member, date_time=(1980, 0, 0, 0, 0, 0)).modified is None


# ------------------------------------------------------------------------------ ZIP64 and size


def test_zip64_above_4gib_reads_only_the_end(tmp_path):
    """Members past 4 GiB (a sparse hole before them), with zip64 extras and end records."""
    path = tmp_path / "big.zip"
    entries = [A.RawEntry(b"far/a.bin", b"A" * 1000),
               A.RawEntry(b"far/b.txt", zlib.compress(b"bee" * 1000)[2:-4], method=8,
                          size=3000, crc=zlib.crc32(b"bee" * 1000), descriptor=True)]
    layout = A.write_raw_zip(path, entries, zip64=True, gap=5 << 30)
    if path.stat().st_blocks * 512 > 64 << 20:
        pytest.skip("this filesystem does not keep sparse files sparse")
    with path.open("rb") as raw:
        f = CountingReader(raw)
        index = read_index(f, layout.size, **LIMITS)
        assert f.bytes_read <= 65_557 + 20 + 56 + layout.cd_size + 4
        members = index.members
        assert [m.header_offset for m in members] == layout.header_offsets
        assert members[0].header_offset > 1 << 32 and members[1].size == 3000
        before = f.bytes_read
        assert [data_offset(f, m, index.size) for m in members] == layout.data_offsets
        assert f.bytes_read - before == 60


def test_zip64_with_prepended_stub(tmp_path):
    index, path = raw_index(tmp_path, [A.RawEntry(b"x.txt", b"hello")], zip64=True,
                            prepend=b"MZ stub" * 100)
    member = index.member("x.txt")
    with path.open("rb") as f:
        f.seek(data_offset(f, member, index.size))
        assert f.read(5) == b"hello"


def test_more_than_65535_entries(workdir):
    path, files = A.build_many_entries(workdir / "many")
    started = time.monotonic()
    index = index_of(path)
    assert time.monotonic() - started < 5
    assert len([m for _, m in index.list("", True) if m is not None]) == len(files)
    assert len(index.list("", False)) == 70
    assert index.member("d069/f069999").size == 0


def test_entry_count_wrapped_at_65536_without_zip64(tmp_path):
    """Writers without zip64 store the count modulo 65536; Info-ZIP accepts that, so do we."""
    entries = [A.RawEntry(b"f%05d" % i) for i in range(65_537)]
    index, _ = raw_index(tmp_path, entries)
    assert len(index.members) == 65_537
    with pytest.raises(TooLarge):
        index_of(tmp_path / "raw.zip", max_entries=65_536)


def test_reads_only_end_and_central_directory(tmp_path):
    import random

    payload = random.Random(3).randbytes(8 << 20)
    path, _ = A.build_pyzip(tmp_path, {"big.bin": payload, "small.txt": b"s"}, "store")
    with path.open("rb") as raw:
        f = CountingReader(raw)
        index = read_index(f, path.stat().st_size, **LIMITS)
        assert f.bytes_read < 70_000 and f.reads <= 4
        assert index.member("big.bin").size == len(payload)


# ------------------------------------------------------------------------------ hostile input

@pytest.fixture(scope="module")
def hostile(workdir) -> dict[str, Path]:
    return A.hostile_archives(workdir / "hostile")


@pytest.mark.parametrize("label", A.HOSTILE_LABELS)
def test_hostile_archives_are_refused_promptly(hostile, label):
    path = hostile[label]
    started = time.monotonic()
    with pytest.raises((CorruptArchive, TooLarge)) as caught:
        index = index_of(path)
        with path.open("rb") as f:
            for member in index.members:
                data_offset(f, member, index.size)
    assert time.monotonic() - started < 1
    message = str(caught.value)
    assert message and "\n" not in message


def test_limits(workdir):
    path, _ = PRODUCERS["py-deflate"](workdir / "limits")
    with pytest.raises(TooLarge, match="limit of 3"):
        index_of(path, max_entries=3)
    with pytest.raises(TooLarge, match="central directory"):
        index_of(path, max_cd_bytes=100)


def test_data_offset_checks_the_local_header(workdir):
    path, _ = PRODUCERS["py-store"](workdir / "local")
    index = index_of(path)
    member = index.member("artifacts/stdout.txt")
    with path.open("rb") as f:
        with pytest.raises(CorruptArchive, match="no local header"):
            data_offset(f, dataclasses.replace(member, header_offset=member.header_offset + 1),
                        index.size)
        with pytest.raises(CorruptArchive, match="past the end"):
            data_offset(f, dataclasses.replace(member, compressed_size=index.size), index.size)
        with pytest.raises(CorruptArchive, match="past the end"):
            data_offset(f, dataclasses.replace(member, header_offset=index.size - 10), index.size)


# ------------------------------------------------------------------------------ fuzzing


@functools.cache
def fuzz_bases() -> tuple[tuple[bytes, int], ...]:
    """Small valid archives and the offset where their central directory starts."""
    bases = []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("d/", b"")
        zf.writestr("d/a.txt", b"alpha " * 50)
        zf.writestr("b.bin", bytes(range(256)))
        zf.comment = b"comment"
    bases.append(buffer.getvalue())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "z64.zip")
        A.write_raw_zip(path, [A.RawEntry(b"x/y.txt", b"data", descriptor=True),
                               A.RawEntry("ü.txt".encode(), b"u", flags=0x800)], zip64=True)
        bases.append(path.read_bytes())
    return tuple((data, data.find(b"PK\x01\x02")) for data in bases)


def check_never_crashes(data: bytes) -> None:
    """read_index, list and data_offset either work or raise a StorageError, never another."""
    try:
        index = index_of_bytes(data, max_entries=1000, max_cd_bytes=1 << 20)
    except (CorruptArchive, TooLarge):
        return
    for name, _ in index.list("", True):
        assert all(part not in ("", ".", "..") for part in name.rstrip("/").split("/"))
    f = io.BytesIO(data)
    for member in index.members:
        try:
            start = data_offset(f, member, len(data))
            assert start + member.compressed_size <= len(data)
        except CorruptArchive:
            pass


@st.composite
def mutated(draw) -> bytes:
    data, cd_start = draw(st.sampled_from(fuzz_bases()))
    out = bytearray(data)
    position = st.one_of(st.integers(0, len(out) - 1), st.integers(cd_start, len(out) - 1),
                         st.integers(len(out) - 22, len(out) - 1))
    for pos, value in draw(st.lists(st.tuples(position, st.integers(0, 255)), max_size=8)):
        out[pos] = value
    if draw(st.integers(0, 7)) == 0:  # rarely: truncation mostly just loses the end record
        out = out[:draw(st.integers(0, len(out)))]
    return bytes(out)


@settings(max_examples=300, deadline=400, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fuzz_mutations_raise_only_storage_errors(data):
    check_never_crashes(data)


names = st.lists(st.text(alphabet="ab./\\\x00é", min_size=0, max_size=12), min_size=1, max_size=12)


@settings(max_examples=100, deadline=400, database=None)
@given(names)
def test_fuzz_names_listing_invariants(member_names):
    """Whatever the names, listings hold clean components and lead back to members."""
    entries = [A.RawEntry(n.encode(), n.encode(), flags=0x800) for n in member_names]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "n.zip")
        A.write_raw_zip(path, entries)
        index = index_of(path)
    for prefix in [""] + [n for n, _ in index.list("", True) if n.endswith("/")]:
        listed = index.list(prefix, False)
        assert len({n for n, _ in listed}) == len(listed)
        for name, member in listed:
            assert name and "/" not in name.rstrip("/")
            assert name.rstrip("/") not in (".", "..")
            if member is not None:
                assert index.member(prefix + name) == member


def test_fuzz_error_type_is_storage_error():
    """The tuple the fuzz test accepts are StorageErrors (hence OSErrors with an errno)."""
    assert issubclass(CorruptArchive, StorageError) and issubclass(TooLarge, StorageError)


# ------------------------------------------------------------------------------ cache


def test_cache_reuses_and_rereads_when_replaced(tmp_path):
    cache = IndexCache(4, 1000, 1 << 20)
    path, _ = A.build_pyzip(tmp_path, {"a.txt": b"a"}, "store", name="c.zip")
    first = cache.get(path)
    assert cache.get(path) is first
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = cache.get(path)
    assert second is not first and cache.get(path) is second
    A.build_pyzip(tmp_path, {"a.txt": b"a", "b.txt": b"bb"}, "store", name="c.zip")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    assert [m.name for m in cache.get(path).members] == ["a.txt", "b.txt"]


def test_cache_evicts_least_recently_used(tmp_path):
    cache = IndexCache(2, 1000, 1 << 20)
    paths = [A.build_pyzip(tmp_path, {"a": b"a"}, "store", name=f"{i}.zip")[0] for i in range(3)]
    first = cache.get(paths[0])
    cache.get(paths[1])
    assert cache.get(paths[0]) is first  # refreshed, so paths[1] is the oldest
    cache.get(paths[2])
    assert cache.get(paths[0]) is first
    second = cache.get(paths[1])
    assert cache.get(paths[1]) is second


def test_cache_errors(tmp_path):
    cache = IndexCache(2, 1000, 1 << 20)
    with pytest.raises(NotFound):
        cache.get(tmp_path / "missing.zip")
    with pytest.raises(InvalidRequest):
        cache.get(tmp_path)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip at all, just some text" * 3)
    with pytest.raises(CorruptArchive):
        cache.get(bad)
    path, _ = A.build_pyzip(tmp_path, {"a": b"a"}, "store", name="limit.zip")
    with pytest.raises(TooLarge):
        IndexCache(2, 0, 1 << 20).get(path)


def test_cache_is_thread_safe(tmp_path):
    cache = IndexCache(2, 1000, 1 << 20)
    paths = [A.build_pyzip(tmp_path, {f"{i}.txt": b"x" * i}, "store", name=f"t{i}.zip")[0]
             for i in range(4)]
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for i in range(200):
                path = paths[(i + offset) % len(paths)]
                index = cache.get(path)
                assert index.members[0].name == f"{path.stem[1:]}.txt"
        except BaseException as exc:  # noqa: BLE001 - collected for the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


# ------------------------------------------------------------------------------ compact index


def index_exactly(path: Path, monkeypatch) -> ZipIndex:
    """The index as the entry-by-entry parser alone builds it (the reference for the fast
    scan, which must agree with it on every archive)."""
    with monkeypatch.context() as patch:
        patch.setattr(zipindex, "_scan_fast", lambda *args: None)
        return index_of(path)


def same_index(fast: ZipIndex, exact: ZipIndex) -> None:
    assert fast.members == exact.members
    assert fast.list("", True) == exact.list("", True)
    folders = [""] + [name for name, _ in exact.list("", True) if name.endswith("/")]
    for folder in folders:
        assert fast.list(folder, False) == exact.list(folder, False), folder


def test_fast_scan_agrees_with_the_exact_parse(built, monkeypatch):
    label, path, _ = built
    monkeypatch.setattr(zipindex, "CD_CHUNK", 300)  # entries cut across chunks too
    same_index(index_of(path), index_exactly(path, monkeypatch))


def test_fast_scan_takes_the_entries_it_cannot_do_in_bulk_one_by_one(tmp_path, monkeypatch):
    """A header signature inside a name and inside an extra field, cp437 and Unicode Path
    names, zip64 values, duplicates, folder entries and names to normalize, among plain ones."""
    unicode_path = struct.pack("<HHB", 0x7075, 5 + 4, 1) + struct.pack(
        "<L", zlib.crc32(b"caf\x82.txt")) + "café.txt".encode()
    entries = [A.RawEntry(b"plain/%03d.txt" % i, b"x" * (i % 7)) for i in range(300)]
    entries[10] = A.RawEntry(b"plain/PK\x01\x02sig.txt", b"sig")
    entries[20] = A.RawEntry(b"plain/extra.txt", b"e", extra=b"\xfe\xca\x04\x00PK\x01\x02")
    entries[30] = A.RawEntry(b"plain/na\x8bve.txt", b"cp437", made_by=20)
    entries[40] = A.RawEntry(b"plain/caf\x82.txt", b"u", made_by=20, extra=unicode_path)
    entries[50] = A.RawEntry(b"plain/./dot.txt", b"d")
    entries[60] = A.RawEntry(b"plain/005.txt", b"duplicate")
    entries[70] = A.RawEntry(b"plain/sub/", b"")
    entries[80] = A.RawEntry(b"../up.txt", b"u")
    entries[90] = A.RawEntry("plain/ü.txt".encode(), b"flagged", flags=0x800)
    path = tmp_path / "mixed.zip"
    A.write_raw_zip(path, entries + [A.RawEntry(b"plain/sub/deep.txt", b"deep")], zip64=True)
    monkeypatch.setattr(zipindex, "CD_CHUNK", 2048)
    index = index_of(path)
    same_index(index, index_exactly(path, monkeypatch))
    names = {name for name, _ in index.list("plain", False)}
    assert {"PK\x01\x02sig.txt", "extra.txt", "naïve.txt", "café.txt", "dot.txt", "ü.txt",
            "sub/"} <= names
    assert index.member("plain/005.txt").size == len(b"duplicate")
    assert index.member("../up.txt").size == 1


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.text(alphabet="ab/.é\x00", max_size=8),
                          st.sampled_from([b"", b"PK\x01\x02", b"\x01\x00\x00\x00", b"up"])),
                min_size=1, max_size=40), st.integers(60, 400))
def test_fuzz_fast_scan_agrees_with_the_exact_parse(monkeypatch, spec, chunk):
    entries = [A.RawEntry(name.encode(), name.encode(), flags=0x800,
                          extra=(struct.pack("<HH", 0xCAFE, len(extra)) + extra) if extra else b"")
               for name, extra in spec]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "f.zip")
        A.write_raw_zip(path, entries)
        monkeypatch.setattr(zipindex, "CD_CHUNK", chunk)
        same_index(index_of(path), index_exactly(path, monkeypatch))


def test_a_folder_listing_reads_its_local_headers_in_one_window(workdir):
    path, _ = A.build_many_entries(workdir / "window")
    index = index_of(path)
    folder = [i for _, i in index.entries("d007", False)]
    assert len(folder) == 1000
    with path.open("rb") as raw:
        f = CountingReader(raw)
        starts = index.data_starts(f, folder)
        assert f.reads == 1  # 1,000 neighbouring headers, one read
        expected = [data_offset(raw, index.member_at(i), index.size) for i in folder]
    assert starts == expected


def test_isolated_headers_are_estimated_only_when_asked(tmp_path):
    big = random_bytes(zipindex.HEADER_GAP * 2)
    files = {"a.bin": big, "b.bin": big, "c.txt": b"c", "d.txt": b"d"}
    path, _ = A.build_pyzip(tmp_path, files, "store", dir_entries=False)
    index = index_of(path)
    entries = [i for _, i in index.entries("", True) if i >= 0]
    assert len(entries) == 4
    with path.open("rb") as raw:
        f = CountingReader(raw)
        exact = index.data_starts(f, entries)
        assert f.reads == 3  # a.bin, b.bin, then c.txt and d.txt together
        f.reads = 0
        estimated = index.data_starts(f, entries, estimate_isolated=True)
        assert f.reads == 1 and estimated == exact  # zipfile writes the same extra fields


def random_bytes(n: int) -> bytes:
    import random
    return random.Random(n).randbytes(n)


def test_the_index_is_compact(workdir):
    path, files = A.build_many_entries(workdir / "compact")
    index = index_of(path)
    names = sum(len(name) + 1 for name in files)
    assert index.nbytes < 60 * len(files) + names + 64 * 1024


# ------------------------------------------------------------------------------ get_from


def test_one_parse_serves_every_request_waiting_for_it(tmp_path):
    path, _ = A.build_many_entries(tmp_path, 20_000)
    cache = IndexCache(4, 100_000, 1 << 30)
    opened = []

    def open_file():
        opened.append(1)
        time.sleep(0.2)  # a slow store: the other requests arrive meanwhile
        return path.open("rb")

    results: list = []
    threads = [threading.Thread(target=lambda: results.append(
        cache.get_from("k", (1,), path.stat().st_size, open_file))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(opened) == 1 and len(results) == 6 and all(r is results[0] for r in results)
    assert cache.get_from("k", (1,), path.stat().st_size, open_file) is results[0]
    assert cache.get_from("k", (2,), path.stat().st_size, open_file) is not results[0]
    assert len(opened) == 2


def test_a_failed_parse_fails_every_waiting_request_and_is_tried_again(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not an archive" * 10)
    cache = IndexCache(4, 1000, 1 << 20)
    for _ in range(2):
        with pytest.raises(CorruptArchive):
            cache.get_from("bad", (1,), bad.stat().st_size, lambda: bad.open("rb"))


def test_cache_is_bounded_by_bytes(tmp_path):
    path, _ = A.build_many_entries(tmp_path, 20_000)
    size = path.stat().st_size
    one = index_of(path).nbytes
    cache = IndexCache(64, 100_000, 1 << 30, max_bytes=int(one * 2.5))
    first = cache.get_from("a", (1,), size, lambda: path.open("rb"))
    cache.get_from("b", (1,), size, lambda: path.open("rb"))
    assert cache.get_from("a", (1,), size, lambda: path.open("rb")) is first
    cache.get_from("c", (1,), size, lambda: path.open("rb"))  # over budget: "b" goes
    assert cache.get_from("a", (1,), size, lambda: path.open("rb")) is first
    assert cache.get_from("b", (1,), size, lambda: path.open("rb")) is not None
    assert cache.get_from("c", (1,), size, lambda: path.open("rb")) is not first


# ------------------------------------------------------------------------------ saved indexes


def test_a_saved_index_reads_back_the_same(built, tmp_path):
    from storagefs.server import indexfile

    label, path, _ = built
    index = index_of(path)
    indexfile.save(index, tmp_path / "saved")
    loaded = indexfile.load(tmp_path / "saved", index.size)
    assert loaded is not None
    same_index(loaded, index)
    with path.open("rb") as f:
        entries = [i for _, i in index.entries("", True) if i >= 0]
        assert loaded.data_starts(f, entries) == index.data_starts(f, entries)
    assert indexfile.load(tmp_path / "saved", index.size + 1) is None  # another archive
    (tmp_path / "cut").write_bytes((tmp_path / "saved").read_bytes()[:-9])
    assert indexfile.load(tmp_path / "cut", index.size) is None
    assert indexfile.load(tmp_path / "missing", index.size) is None


def test_a_big_index_is_saved_and_mapped_by_the_next_process(tmp_path, monkeypatch):
    from storagefs.server import indexcache

    monkeypatch.setattr(indexcache, "SAVE_MIN_ENTRIES", 1000)
    path, _ = A.build_many_entries(tmp_path, 5_000)
    folder = tmp_path / "indexes"
    first = IndexCache(4, 100_000, 1 << 30, folder=folder).get(path)
    assert len([p for p in folder.iterdir() if not p.name.endswith(".lock")]) == 1
    opened = []
    later = IndexCache(4, 100_000, 1 << 30, folder=folder)  # a restarted server

    def open_file():
        opened.append(1)
        return path.open("rb")

    stat = path.stat()
    again = later.get_from(str(path), (stat.st_size, stat.st_mtime_ns, stat.st_ino),
                           stat.st_size, open_file)
    assert opened == [] and again.list("d003", False) == first.list("d003", False)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    later.get(path)  # a new version: parsed, saved, the old file removed
    assert len([p for p in folder.iterdir() if not p.name.endswith(".lock")]) == 1
    small, _ = A.build_pyzip(tmp_path, {"a": b"a"}, "store", name="small.zip")
    later.get(small)  # not worth a file
    assert len([p for p in folder.iterdir() if not p.name.endswith(".lock")]) == 1


@pytest.mark.parametrize("offsets", [
    [i * 60_000 for i in range(200)],  # dense: split by the window's size only
    [0, 10, 10 + zipindex.HEADER_GAP + 1, 10 + zipindex.HEADER_GAP + 50, 1 << 30],
    [5], []])
def test_header_windows(offsets):
    windows = list(zipindex._windows(offsets))
    assert [p for p, _ in windows] == ([0] + [q for _, q in windows[:-1]] if offsets else [])
    assert (windows[-1][1] if windows else 0) == len(offsets)
    for p, q in windows:
        assert offsets[q - 1] + 30 - offsets[p] <= zipindex.HEADER_WINDOW or q == p + 1
        assert all(b - a <= zipindex.HEADER_GAP for a, b in zip(offsets[p:q], offsets[p + 1:q]))
        if q < len(offsets):  # the next header could not have joined
            assert (offsets[q] - offsets[q - 1] > zipindex.HEADER_GAP
                    or offsets[q] + 30 - offsets[p] > zipindex.HEADER_WINDOW)
