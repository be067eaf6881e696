"""``storagefs mount`` for real: the reference server, a FUSE mount, and the usual tools.

The FUSE operations are first checked without a mount (errno mapping, stat shapes); then one
module-wide mount serves archives from every producer and method, and separate short mounts
cover signals, stale mount points, ``--zip-as file`` and the fstab helper. Every mount is
unmounted in ``finally``; the mount's log must hold no traceback.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import inspect
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import types
import zipfile
import zlib
from pathlib import Path

import pytest

from storagefs import protocol
from storagefs.errors import CorruptArchive
from storagefs.mount.archivelisting import needs_census
from storagefs.mount.backend import CachedBackend
from storagefs.mount.vfs import VFS

from archives import (MissingTool, RawEntry, build_7zz, build_legacy_names, build_pyzip,
                      build_stream_zip, build_zip_cli, mixed_bytes, sample_files, text_bytes,
                      write_raw_zip)
from fakes import FakeStorage
from s3harness import sync_store
from mountharness import (assert_clean_log, force_unmount, foreground_mount, mount_args,
                          object_reads, require_fuse, storagefs)

ROOT = "mnt-tests"  # this module's top-level folder in the shared server
MiB = 1 << 20


# -- the FUSE operations without a mount ----------------------------------------------------------


@pytest.fixture
def ops(tmp_path):
    pytest.importorskip("fuse", exc_type=OSError)
    from storagefs.mount.fuseops import StorageOperations

    archive, _ = build_pyzip(tmp_path, {"a/b.txt": b"hello\n", "c.txt": b"x" * 5000}, "deflate")
    storage = FakeStorage({"f/x.zip": archive.read_bytes(), "f/plain.txt": b"plain\n"})
    return StorageOperations(VFS(CachedBackend(storage)), uid=1234, gid=5678), storage


def file_info(flags: int = os.O_RDONLY):
    """libfuse's ``fuse_file_info`` as fusepy hands it over with ``raw_fi``."""
    from fuse import fuse_file_info

    return fuse_file_info(flags=flags)


def fuse_errno(call) -> int:
    from fuse import FuseOSError

    with pytest.raises(FuseOSError) as info:
        call()
    assert isinstance(info.value.errno, int) and info.value.errno > 0
    return info.value.errno


def test_operations_stat_and_listing(ops):
    operations, _ = ops
    root = operations("getattr", "/", None)
    assert root["st_ino"] == 1 and root["st_mode"] & 0o170000 == 0o040000
    member = operations("getattr", "/f/x.zip/c.txt", None)
    assert (member["st_size"], member["st_uid"], member["st_gid"]) == (5000, 1234, 5678)
    assert member["st_mode"] == 0o100444 and member["st_blocks"] == 1  # compressed: < 512 B
    assert operations("readdir", "/f/x.zip", 0) == [".", "..", "a", "c.txt"]
    assert operations("getattr", "/f/x.zip/a", None)["st_mode"] == 0o040555
    fi = file_info()
    assert operations("open", "/f/x.zip/a/b.txt", fi) == 0 and fi.fh > 0
    assert operations("read", "/f/x.zip/a/b.txt", 100, 0, fi) == b"hello\n"
    operations("release", "/f/x.zip/a/b.txt", fi)
    fs = operations("statfs", "/")
    assert fs["f_blocks"] - fs["f_bfree"] >= 1 and fs["f_bavail"] > 0  # used, and not full


def test_lean_getattr_fills_the_stat_as_fusepy_would(ops):
    import ctypes

    from fuse import FUSE, c_stat
    from storagefs.mount.fuseops import _FUSE

    operations, _ = ops
    for path in ("/", "/f", "/f/x.zip", "/f/x.zip/a", "/f/x.zip/c.txt", "/f/plain.txt"):
        filled = []
        for cls in (FUSE, _FUSE):
            binding = object.__new__(cls)  # no mount: only what getattr reads
            binding.operations, binding.encoding, binding.raw_fi, binding.use_ns = \
                operations, "utf-8", False, True
            buf = ctypes.pointer(c_stat())  # zeroed, as libfuse hands it over
            assert cls.getattr(binding, path.encode(), buf) == 0
            filled.append(bytes(buf.contents))
        assert filled[0] == filled[1], path
    # No xattr callbacks: libfuse answers ENOSYS and the kernel stops asking.
    assert operations.getxattr is None and operations.listxattr is None


def test_operations_have_fusepy_parameters():
    """mypy checks ``StorageOperations`` against ``FuseOperations`` (fusepy ships no types);
    here ``FuseOperations`` and every call answered are checked against fusepy's own."""
    fuse = pytest.importorskip("fuse", exc_type=OSError)
    from storagefs.mount.fuseops import FuseOperations, StorageOperations

    def parameters(function) -> list[tuple[str, object]]:
        return [(p.name, p.default) for p in inspect.signature(function).parameters.values()]

    answered = {name for name, value in vars(StorageOperations).items()
                if callable(value) and name in vars(fuse.Operations)}
    described = {name for name, value in vars(FuseOperations).items()
                 if callable(value) and name in vars(fuse.Operations)}
    assert answered == described
    raw_fi = {"flags": "fi", "fh": "fi"}  # fusepy's names for what raw_fi hands over instead
    for name in sorted(described):
        expected = parameters(getattr(fuse.Operations, name))
        if name in ("open", "read", "release"):
            expected = [(raw_fi.get(p, p), default) for p, default in expected]
        assert parameters(getattr(FuseOperations, name)) == expected, name
        ours = parameters(getattr(StorageOperations, name))
        if ours != [("self", inspect.Parameter.empty), ("args", inspect.Parameter.empty)]:
            assert ours == expected, name  # (the writes take any arguments: they refuse all)


def test_operations_errors_become_errno(ops, monkeypatch):
    operations, storage = ops
    assert fuse_errno(lambda: operations("getattr", "/nope", None)) == errno.ENOENT
    assert fuse_errno(lambda: operations("getattr", "/f/plain.txt/x", None)) == errno.ENOTDIR
    writing = file_info(os.O_WRONLY)
    assert fuse_errno(lambda: operations("open", "/f/plain.txt", writing)) == errno.EROFS
    assert fuse_errno(lambda: operations("mkdir", "/f/new", 0o755)) == errno.EROFS
    assert fuse_errno(lambda: operations("unlink", "/f/plain.txt")) == errno.EROFS
    assert fuse_errno(lambda: operations("create", "/f/new.txt", 0o644)) == errno.EROFS

    def boom(*args):
        raise FileNotFoundError("no errno here")  # fusepy 3.0.1 would end the mount on this

    monkeypatch.setattr(operations.vfs, "lookup", boom)
    assert fuse_errno(lambda: operations("getattr", "/f", None)) == errno.EIO
    monkeypatch.setattr(operations.vfs, "lookup", lambda p: 1 / 0)
    assert fuse_errno(lambda: operations("getattr", "/f", None)) == errno.EIO

    def corrupt(*args):
        raise CorruptArchive("x: CRC-32 mismatch")

    monkeypatch.undo()  # lookup works again: the open itself fails
    monkeypatch.setattr(operations.vfs, "open_entry", corrupt)
    assert fuse_errno(lambda: operations("open", "/f/x.zip/c.txt", file_info())) == errno.EIO


# -- the storage served for the real mount ------------------------------------------------------


def _zstd_archive(directory: Path, files: dict[str, bytes], name: str) -> Path:
    zstandard = pytest.importorskip("zstandard")
    entries = [RawEntry(member.encode(), zstandard.ZstdCompressor(level=3).compress(data),
                        method=protocol.ZSTD, size=len(data), crc=zlib.crc32(data),
                        descriptor=True)
               for member, data in files.items()]
    path = directory / name
    write_raw_zip(path, entries)
    return path


def _sqlite_bytes(directory: Path) -> bytes:
    path = directory / "results.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE results (step INTEGER PRIMARY KEY, residual REAL, label TEXT)")
        db.executemany("INSERT INTO results VALUES (?, ?, ?)",
                       ((i, 1.0 / (i + 1), f"step-{i:05d}") for i in range(20_000)))
        db.commit()
    return path.read_bytes()


def _task_files() -> dict[str, bytes]:
    """An output.zip as a task leaves it, with a result file larger than a decode window."""
    return {
        "artifacts/stdout.txt": text_bytes(21, 300_000) + b"NEEDLE-in-stdout\n",
        "artifacts/stderr.txt": b"",
        "artifacts/logs/solver.log": text_bytes(22, 120_000),
        "artifacts/results/table.csv": b"step,residual\n" + b"".join(
            f"{i},{1 / (i + 1):.6e}\n".encode() for i in range(5000)),
        "artifacts/results/field.dat": mixed_bytes(23, 10 * MiB + 777),
        "artifacts/nested/a/b/c/deep.txt": b"deep\n",
    }


class Served:
    """What this module put in the server: {archive storage path: {member: bytes}}, files."""

    def __init__(self) -> None:
        self.archives: dict[str, dict[str, bytes]] = {}
        self.plain: dict[str, bytes] = {}
        self.methods: dict[str, set[int]] = {}


@pytest.fixture(scope="module")
def served(server, tmp_path_factory) -> Served:
    build = tmp_path_factory.mktemp("mount-archives")
    base = server.root / ROOT
    base.mkdir(parents=True, exist_ok=True)
    result = Served()
    files = sample_files()
    builders = {
        "zip-deflate.zip": lambda: build_zip_cli(build, files, method="deflate", name="a.zip"),
        "zip-store.zip": lambda: build_zip_cli(build, files, method="store", name="b.zip"),
        "7zz-deflate.zip": lambda: build_7zz(build, files, method="Deflate"),
        "7zz-deflate-stream.zip": lambda: build_7zz(build, files, method="Deflate", streamed=True),
        "7zz-deflate64.zip": lambda: build_7zz(build, files, method="Deflate64"),
        "7zz-deflate64-stream.zip": lambda: build_7zz(build, files, method="Deflate64",
                                                      streamed=True),
        "7zz-bzip2.zip": lambda: build_7zz(build, files, method="BZip2"),
        "7zz-lzma.zip": lambda: build_7zz(build, files, method="LZMA"),
        "7zz-store.zip": lambda: build_7zz(build, files, method="Copy"),
        "stream-zip.zip": lambda: build_stream_zip(build, files, name="c.zip"),
        "py-store.zip": lambda: build_pyzip(build, files, "store", name="i.zip"),
        "py-deflate.zip": lambda: build_pyzip(build, files, "deflate", name="d.zip"),
        "py-bzip2.zip": lambda: build_pyzip(build, files, "bzip2", name="e.zip"),
        "py-lzma.zip": lambda: build_pyzip(build, files, "lzma", name="f.zip"),
        "zstd.zip": lambda: (_zstd_archive(build, files, "g.zip"), files),
    }
    for name, make in builders.items():
        try:
            path, members = make()
        except MissingTool as exc:
            if os.environ.get("STORAGEFS_REQUIRE_FUSE") == "1":
                raise
            print(f"skipping {name}: {exc}")
            continue
        (base / "producers").mkdir(exist_ok=True)
        shutil.copyfile(path, base / "producers" / name)
        result.archives[f"{ROOT}/producers/{name}"] = members
        with zipfile.ZipFile(path) as zf:
            result.methods[name] = {i.compress_type for i in zf.infolist() if not i.is_dir()}
    # A task, streamed by 7-Zip as the task runner does by default.
    task = _task_files()
    (base / "task-0001").mkdir(exist_ok=True)
    try:
        path, _ = build_7zz(build, task, method="Deflate", streamed=True, name="task.zip")
    except MissingTool:
        path, _ = build_stream_zip(build, task, name="task.zip")
    shutil.copyfile(path, base / "task-0001" / "output.zip")
    result.archives[f"{ROOT}/task-0001/output.zip"] = task
    # A SQLite database stored deflated inside a zip.
    db = {"db/results.db": _sqlite_bytes(build)}
    path, _ = build_pyzip(build, db, "deflate", name="db.zip")
    (base / "sim").mkdir(exist_ok=True)
    shutil.copyfile(path, base / "sim" / "db.zip")
    result.archives[f"{ROOT}/sim/db.zip"] = db
    # Legacy names (cp437, Unicode Path field, unflagged UTF-8).
    path, expected = build_legacy_names(build)
    shutil.copyfile(path, base / "sim" / "legacy.zip")
    result.archives[f"{ROOT}/sim/legacy.zip"] = {n: n.encode() for n in expected}
    # Plain files, read with ranged GETs too.
    (base / "plain" / "sub").mkdir(parents=True, exist_ok=True)
    result.plain = {f"{ROOT}/plain/big.bin": mixed_bytes(31, 3 * MiB + 5),
                    f"{ROOT}/plain/sub/small.txt": b"small file\n",
                    f"{ROOT}/plain/empty": b""}
    for storage_path, data in result.plain.items():
        (server.root / storage_path).write_bytes(data)
    # Bad archives, kept apart so walks of the good ones stay clean.
    bad = base / "bad"
    bad.mkdir(exist_ok=True)
    good, _ = build_pyzip(build, {"data.txt": text_bytes(41, 50_000)}, "store", name="h.zip")
    raw = bytearray(good.read_bytes())
    raw[raw.index(b"data.txt") + len(b"data.txt") + 100] ^= 0x55  # inside the stored data
    (bad / "corrupt.zip").write_bytes(bytes(raw))
    write_raw_zip(bad / "method99.zip", [RawEntry(b"aes.bin", b"\x01" * 64, method=99, size=64)])
    (bad / "not-a-zip.zip").write_bytes(b"this is not an archive\n" * 10)
    (bad / "cut.zip").write_bytes(raw[: len(raw) - 30])  # the central directory cut short
    write_raw_zip(bad / "hostile.zip", [RawEntry(b"../../escape.txt", b"out"),
                                        RawEntry(b"/abs/root.txt", b"abs"),
                                        RawEntry(b"ok/fine.txt", b"fine")])
    sync_store(server)  # a server on a bucket: what was written into its root goes up
    return result


@pytest.fixture(scope="module")
def mnt(server, served, tmp_path_factory):
    """The module's mount, in the background mode users get by default."""
    require_fuse()
    work = tmp_path_factory.mktemp("mount")
    mountpoint, log = work / "mnt", work / "mount.log"
    mountpoint.mkdir()
    result = storagefs(*mount_args(server, mountpoint, log))
    try:
        assert result.returncode == 0, result.stderr
        assert os.path.ismount(mountpoint), "the command returned before the mount was usable"
        yield mountpoint
    finally:
        force_unmount(mountpoint)
    assert not os.path.ismount(mountpoint)
    assert_clean_log(log)
    mnt.log = log  # type: ignore[attr-defined]


# The read tests run through the reference server and through the stand-in for the Inductiva
# service (no crc32, offsets from the central directory, GCS-style URLs), with every listed
# offset wrong by 1 to 8 bytes too: byte for byte, or EIO, never a wrong byte.
READ_VIA = {"reference": None, "service": "service",
            "service-offsets-off": "service_wrong_offsets"}


@pytest.fixture(scope="module", params=list(READ_VIA))
def read_mnt(request, server, served, tmp_path_factory):
    if READ_VIA[request.param] is None:
        yield request.getfixturevalue("mnt")
        return
    endpoint = request.getfixturevalue(READ_VIA[request.param])
    work = tmp_path_factory.mktemp(f"mount-{request.param}")
    mountpoint, log = work / "mnt", work / "mount.log"
    mountpoint.mkdir()
    via = types.SimpleNamespace(url=endpoint.url, api_key=server.api_key)
    result = storagefs(*mount_args(via, mountpoint, log))
    try:
        assert result.returncode == 0, result.stderr
        yield mountpoint
    finally:
        force_unmount(mountpoint)
    assert_clean_log(log)


def run(*cmd: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=120, **kwargs)


# -- the real mount -----------------------------------------------------------------------------


def test_producers_cover_every_method(served):
    methods = set().union(*served.methods.values())
    if not (shutil.which("7zz") and shutil.which("zip")):
        pytest.skip("7zz or zip missing: some producers were skipped")
    assert len(served.methods) == 15
    assert methods == {0, 8, 9, 12, 14, 93}  # stored, deflate, Deflate64, bzip2, LZMA, zstd


def test_walks_show_everything_and_read_no_data(server, served, mnt):
    before = object_reads(server)
    good = [str(mnt / ROOT / name) for name in ("producers", "task-0001", "sim", "plain")]
    listing = run("ls", "-lR", *good)
    assert listing.returncode == 0, listing.stderr
    assert "field.dat" in listing.stdout and "results.db" in listing.stdout
    found = run("find", *good, "-type", "f")
    assert found.returncode == 0, found.stderr
    expected = {f"{mnt}/{archive}/{member}" for archive, members in served.archives.items()
                for member in members}
    expected |= {f"{mnt}/{path}" for path in served.plain}
    assert set(found.stdout.splitlines()) == expected
    for archive, members in served.archives.items():
        for member, data in members.items():
            assert os.stat(mnt / archive / member).st_size == len(data)
    out = run("stat", "-c", "%s %F %h",
              str(mnt / ROOT / "task-0001/output.zip/artifacts/stdout.txt"))
    assert out.stdout.split()[:2] == [str(len(_task_files()["artifacts/stdout.txt"])), "regular"]
    archive = mnt / ROOT / "task-0001" / "output.zip"
    apparent = run("du", "-s", "-B1", "--apparent-size", str(archive)).stdout.split()[0]
    assert int(apparent) == sum(len(d) for d in _task_files().values())
    usage = int(run("du", "-s", "-B1", str(archive)).stdout.split()[0])
    compressed = os.path.getsize(server.root / ROOT / "task-0001" / "output.zip")
    assert 0 < usage <= compressed + 8 * 512  # du counts what the members take in storage
    # ... but for the end records of archives big enough to be listed folder by folder.
    probed = sum(1 for folder in ("producers", "task-0001", "sim", "plain")
                 for path in (server.root / ROOT / folder).rglob("*.[zZ][iI][pP]")
                 if path.is_file() and needs_census(path.stat().st_size))
    assert object_reads(server) == before + probed, "listing, stat, find and du read no data"


def test_every_member_compares_equal(served, read_mnt, tmp_path):
    originals = tmp_path / "orig"
    count = 0
    for archive, members in served.archives.items():
        for member, data in members.items():
            original = originals / archive / member
            original.parent.mkdir(parents=True, exist_ok=True)
            original.write_bytes(data)
            result = run("cmp", str(original), str(read_mnt / archive / member))
            assert result.returncode == 0, f"{archive}/{member}: {result.stdout}{result.stderr}"
            count += 1
    for path, data in served.plain.items():
        assert (read_mnt / path).read_bytes() == data
    assert count >= 60


def test_grep_and_cp_out_of_an_archive(served, read_mnt, tmp_path):
    archive = read_mnt / ROOT / "task-0001" / "output.zip"
    grep = run("grep", "-r", "-l", "NEEDLE-in-stdout", str(archive / "artifacts"))
    assert grep.stdout.splitlines() == [str(archive / "artifacts/stdout.txt")]
    target = tmp_path / "copied"
    result = run("cp", "-r", str(archive / "artifacts"), str(target))
    assert result.returncode == 0, result.stderr
    task = _task_files()
    copied = {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert copied == {name.removeprefix("artifacts/"): data for name, data in task.items()}
    assert (target / "nested/a/b/c").is_dir()


def test_sqlite_database_inside_a_zip(read_mnt):
    path = read_mnt / ROOT / "sim" / "db.zip" / "db" / "results.db"
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)) as db:
        count, total = db.execute("SELECT count(*), sum(step) FROM results").fetchone()
        label = db.execute("SELECT label FROM results WHERE step = 12345").fetchone()[0]
    assert (count, total, label) == (20_000, sum(range(20_000)), "step-12345")
    if shutil.which("sqlite3"):
        out = run("sqlite3", f"file:{path}?mode=ro&immutable=1",
                  "SELECT max(step) FROM results WHERE residual > 0.001")
        assert out.stdout.strip() == "998", out.stderr


def test_legacy_and_hostile_names(served, mnt):
    legacy = sorted(os.listdir(mnt / ROOT / "sim" / "legacy.zip" / "legacy"))
    assert legacy == sorted(n.split("/", 1)[1] for n in served.archives[f"{ROOT}/sim/legacy.zip"])
    hostile = mnt / ROOT / "bad" / "hostile.zip"
    inside = sorted(str(p.relative_to(hostile)) for p in hostile.rglob("*"))
    assert "ok/fine.txt" in inside
    assert all(not name.startswith("..") for name in inside)
    assert not (mnt / ROOT / "escape.txt").exists() and not (mnt / "escape.txt").exists()
    assert not (mnt / ROOT / "bad" / "escape.txt").exists()


def test_inode_numbers_are_stable(mnt):
    path = mnt / ROOT / "task-0001" / "output.zip" / "artifacts" / "stdout.txt"
    first = os.stat(path).st_ino
    os.listdir(path.parent)
    assert os.stat(path).st_ino == first
    assert os.stat(path.parent).st_ino != first


def test_writes_are_refused(mnt):
    base = mnt / ROOT / "plain"
    for action in (lambda: (base / "new.txt").write_bytes(b"x"),
                   lambda: open(base / "big.bin", "r+b"),
                   lambda: os.mkdir(base / "newdir"),
                   lambda: os.unlink(base / "sub" / "small.txt"),
                   lambda: os.rename(base / "big.bin", base / "moved.bin")):
        with pytest.raises(OSError) as info:
            action()
        assert info.value.errno == errno.EROFS


def test_corrupt_or_unsupported_member_is_eio(mnt):
    bad = mnt / ROOT / "bad"
    for path in (bad / "corrupt.zip" / "data.txt", bad / "method99.zip" / "aes.bin"):
        with pytest.raises(OSError) as info:
            path.read_bytes()
        assert info.value.errno == errno.EIO, path
    log = Path(str(mnt.parent / "mount.log")).read_text()
    assert "corrupt.zip/data.txt" in log and "CRC-32" in log
    assert "aes.bin" in log and "method 99" in log


def test_a_zip_that_is_no_archive_is_the_file_it_is(server, mnt, tmp_path):
    """Shown as a folder until listed (stat asks nothing), then as the plain file it is."""
    bad, stored = mnt / ROOT / "bad", server.root / ROOT / "bad"
    not_zip = bad / "not-a-zip.zip"
    assert not_zip.is_dir()  # stat needs no listing
    for walk in (["find", str(bad)], ["du", "-s", str(bad)], ["ls", "-lR", str(bad)]):
        result = subprocess.run(walk, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (walk, result.stderr)
    want = (stored / "not-a-zip.zip").read_bytes()
    cat = subprocess.run(["cat", str(not_zip)], capture_output=True, timeout=60)
    assert cat.returncode == 0 and cat.stdout == want, cat.stderr
    assert not_zip.is_file() and not_zip.stat().st_size == len(want)
    cut = bad / "cut.zip"  # first seen by a read: no listing before
    shutil.copyfile(cut, tmp_path / "cut.zip")
    assert (tmp_path / "cut.zip").read_bytes() == (stored / "cut.zip").read_bytes()
    with open(cut, "rb") as f:
        f.seek(100)
        assert f.read(50) == (stored / "cut.zip").read_bytes()[100:150]
    assert cut.is_file() and not_zip.is_file()
    for walk in (["find", str(bad)], ["du", "-s", str(bad)]):
        result = subprocess.run(walk, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (walk, result.stderr)
    log = Path(str(mnt.parent / "mount.log")).read_text().splitlines()
    for name in ("not-a-zip.zip", "cut.zip"):
        lines = [line for line in log if f"{name}: not readable as a ZIP archive" in line]
        assert len(lines) == 1, log


def test_many_readers_at_once(served, read_mnt):
    task = _task_files()
    archive = read_mnt / ROOT / "task-0001" / "output.zip"
    jobs = [("artifacts/results/field.dat", i) for i in range(4)]
    jobs += [(name, 0) for name in task]
    jobs += [("p:" + path, 0) for path in served.plain]
    errors: list[str] = []

    def read(name: str, _: int) -> None:
        if name.startswith("p:"):
            path, want = read_mnt / name[2:], served.plain[name[2:]]
        else:
            path, want = archive / name, task[name]
        digest = hashlib.sha256(path.read_bytes()).digest()
        if digest != hashlib.sha256(want).digest():
            errors.append(name)

    threads = [threading.Thread(target=read, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors


def test_df_reports_the_storage(server, mnt):
    used = server.get("/storage/size").json()
    st = os.statvfs(mnt)
    assert 0 < used <= (st.f_blocks - st.f_bfree) * st.f_frsize < used + st.f_frsize
    assert st.f_bavail > 0  # not shown as full
    df = subprocess.run(["df", "-P", str(mnt)], capture_output=True, text=True, timeout=30)
    assert df.returncode == 0 and df.stdout.split()[-2] in ("0%", "1%"), df.stdout


def test_mount_refusals_are_one_line(server, served, mnt, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = {
        "already a mount point": [str(mnt)],
        "does not exist": [str(tmp_path / "missing")],
        "API key from --api-key was refused": [str(empty), "--api-key", "wrong-key"],
        "cannot reach": [str(empty), "--api-url", "http://127.0.0.1:9"],
    }
    for needle, args in cases.items():
        cmd = ["mount", args[0], "--api-url", server.url, "--api-key", server.api_key, *args[1:]]
        result = storagefs(*cmd)
        assert result.returncode == 1, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], result.stderr
        assert not os.path.ismount(empty)


# -- separate mounts: signals, stale mount points, options, fstab -------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_unmount_cleanly(server, served, tmp_path, signum):
    require_fuse()
    mountpoint, log = tmp_path / "m", tmp_path / "m.log"
    with foreground_mount(server, mountpoint, log) as process:
        assert (mountpoint / ROOT / "plain" / "sub" / "small.txt").read_bytes() == b"small file\n"
        process.send_signal(signum)
        assert process.wait(15) == 0
        assert not os.path.ismount(mountpoint)
        os.stat(mountpoint)  # not stale
    assert_clean_log(log)


def test_stale_mount_point_gets_a_clear_message(server, tmp_path):
    require_fuse()
    mountpoint, log = tmp_path / "stale", tmp_path / "stale.log"
    with foreground_mount(server, mountpoint, log) as process:
        process.kill()  # no chance to unmount: the mount point is left stale
        process.wait(10)
        with pytest.raises(OSError) as info:
            os.listdir(mountpoint)  # stat may still come from the kernel's attribute cache
        assert info.value.errno == errno.ENOTCONN
        result = storagefs(*mount_args(server, mountpoint, log))
        assert result.returncode == 1
        assert "stale mount" in result.stderr and "storagefs umount" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        cleaned = storagefs("umount", str(mountpoint))
        assert cleaned.returncode == 0, cleaned.stderr
        os.stat(mountpoint)
        assert not os.path.ismount(mountpoint)


def test_zip_as_file_and_umount_command(server, served, tmp_path):
    require_fuse()
    mountpoint, log = tmp_path / "raw", tmp_path / "raw.log"
    mountpoint.mkdir()
    result = storagefs(*mount_args(server, mountpoint, log, "--zip-as", "file",
                                   "--metadata-ttl", "5", "-o", "uid=4321,gid=8765"))
    try:
        assert result.returncode == 0, result.stderr
        archive = mountpoint / ROOT / "sim" / "db.zip"
        assert archive.is_file()
        assert archive.read_bytes() == (server.root / ROOT / "sim" / "db.zip").read_bytes()
        st = os.stat(archive)
        assert (st.st_uid, st.st_gid) == (4321, 8765)
        done = storagefs("umount", str(mountpoint))
        assert done.returncode == 0, done.stderr
        assert not os.path.ismount(mountpoint)
        again = storagefs("umount", str(mountpoint))
        assert again.returncode == 1 and "not mounted" in again.stderr
    finally:
        force_unmount(mountpoint)
    assert_clean_log(log)


def test_fuse_refusal_is_reported(server, tmp_path):
    require_fuse()
    mountpoint = tmp_path / "refused"
    mountpoint.mkdir()
    result = storagefs("mount", str(mountpoint), "--api-url", server.url, "--api-key",
                       server.api_key, "-o", "no_such_fuse_option")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no_such_fuse_option" in lines[0], result.stderr
    assert not os.path.ismount(mountpoint)


def test_fstab_helper(server, served, tmp_path):
    require_fuse()
    mountpoint, log = tmp_path / "fstab", tmp_path / "fstab.log"
    mountpoint.mkdir()
    key_file = tmp_path / "key"
    key_file.write_text(server.api_key + "\n")
    options = (f"noauto,_netdev,user,api_key_file={key_file},metadata_ttl=30,"
               f"cache_size=64M,log_file={log},default_permissions")
    result = subprocess.run([sys.executable, "-m", "storagefs.mount.command", server.url,
                             str(mountpoint), "-o", options], capture_output=True, text=True,
                            timeout=60)
    try:
        assert result.returncode == 0, result.stderr
        assert os.path.ismount(mountpoint)
        assert (mountpoint / ROOT / "plain" / "sub" / "small.txt").read_bytes() == b"small file\n"
    finally:
        force_unmount(mountpoint)
    assert_clean_log(log)


def test_missing_fuse_is_reported(monkeypatch, capsys, tmp_path):
    from storagefs.config import ClientConfig
    from storagefs.mount.command import checks, daemon
    from storagefs.mount.config import MountConfig

    real_exists = os.path.exists
    monkeypatch.setattr(checks.os.path, "exists",
                        lambda p: False if p == "/dev/fuse" else real_exists(p))
    config = MountConfig(mountpoint=tmp_path)
    client = ClientConfig(api_url="http://127.0.0.1:9", api_key="k")
    assert daemon.run(config, client) == 1
    err = capsys.readouterr().err
    assert "/dev/fuse is missing" in err and "modprobe fuse" in err


def test_server_going_away_gives_errors_not_hangs(tmp_path, make_server):
    require_fuse()
    srv = make_server()
    (srv.root / "d").mkdir()
    (srv.root / "d" / "f.txt").write_bytes(b"data\n")
    mountpoint, log = tmp_path / "gone", tmp_path / "gone.log"
    with foreground_mount(srv, mountpoint, log, "--metadata-ttl", "0"):
        assert (mountpoint / "d" / "f.txt").read_bytes() == b"data\n"
        srv.stop()
        started = time.monotonic()
        with pytest.raises(OSError) as info:
            os.listdir(mountpoint / "d")
        assert info.value.errno in (errno.EIO, errno.ENOENT)
        assert time.monotonic() - started < 30
        os.stat(mountpoint)  # the mount itself still answers
    assert_clean_log(log)


def test_logs_never_hold_url_signatures():
    import logging

    from storagefs.mount.command.daemon import _redact_signatures

    record = logging.LogRecord("urllib3", logging.DEBUG, "", 0, '%s "%s %s"', (
        "http://h", "GET", "/-/a.zip?op=download&expires=1&sig=abcdef0123"), None)
    _redact_signatures(record)
    assert "abcdef0123" not in record.getMessage() and "expires=1" in record.getMessage()
    gcs = logging.LogRecord("x", logging.DEBUG, "", 0, "https://g/b/p?X-Goog-Credential=me%40x"
                            "&X-Goog-Signature=deadbeef&X-Goog-Expires=60", (), None)
    _redact_signatures(gcs)
    assert "deadbeef" not in gcs.getMessage() and "me%40x" not in gcs.getMessage()
