"""Hostile and damaged input against the mount's reader, the codecs and the server's archive
analysis, plus hostile member names through a real mount.

- Member bytes with flipped bytes, and listings that lie (size, CRC-32, compressed size), for
  every method: a read returns the original bytes or raises a StorageError; a member up to the
  verification window never yields a wrong byte; a larger one read to its end either matches
  or fails. Memory stays within the window.
- Archives mutated byte by byte, stored in the real server: ``zip-contents`` and
  ``zip-file-range`` never answer 5xx; every listed member either reads through the mount's
  reader equal to what ``zipfile`` extracts (when it can) or fails with a StorageError.
- Names with ``..``, absolute paths, backslashes, NULs, duplicates, a file and a folder with one
  name, through a FUSE mount: nothing leaves the archive's folder, every shown file reads.
"""

from __future__ import annotations

import bz2
import functools
import io
import lzma
import os
import random
import zipfile
import zlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storagefs import protocol
from storagefs.zipfmt import codecs
from storagefs.mount.backend import CachedBackend, ClientBackend
from storagefs.client import StorageClient
from storagefs.config import ClientConfig
from storagefs.errors import StorageError
from storagefs.mount.read import MemberReader
from storagefs.mount.vfs import VFS

from archives import RawEntry, mixed_bytes, text_bytes, write_raw_zip
from figures import FIGURES
from mountharness import force_unmount, foreground_mount, require_fuse, storagefs

KiB, MiB = 1 << 10, 1 << 20
WINDOW = 128 * KiB  # the reader's smallest window: members above it are "large"
PREFIX = b"LOCALHEADER-ISH" * 7


def _lzma_member(data: bytes) -> bytes:
    """APPNOTE 5.8.8: version, properties size, properties, raw LZMA1 (as zipfile writes)."""
    filters = [{"id": lzma.FILTER_LZMA1, "dict_size": 1 << 16}]
    props = lzma._encode_filter_properties(filters[0])  # noqa: SLF001
    compressor = lzma.LZMACompressor(lzma.FORMAT_RAW, filters=filters)
    return b"\x09\x14" + len(props).to_bytes(2, "little") + props + compressor.compress(data) + \
        compressor.flush()


def _compressors() -> dict[int, callable]:
    found = {
        protocol.STORED: lambda d: d,
        protocol.DEFLATED: lambda d: (lambda c: c.compress(d) + c.flush())(
            zlib.compressobj(6, zlib.DEFLATED, -15)),
        protocol.BZIP2: bz2.compress,
        protocol.LZMA: _lzma_member,
        protocol.XZ: lambda d: lzma.compress(d, format=lzma.FORMAT_XZ),
    }
    try:
        import zstandard

        found[protocol.ZSTD] = zstandard.ZstdCompressor(level=3).compress
    except ImportError:
        pass
    return found


@functools.cache
def members() -> tuple[tuple[int, str, bytes, bytes], ...]:
    """(method, 'small'|'large', original, compressed) for each method."""
    out = []
    for method, compress in _compressors().items():
        for label, data in (("small", text_bytes(81, 20_000) + random.Random(8).randbytes(9000)),
                            ("large", mixed_bytes(82, 400_000))):
            out.append((method, label, data, compress(data)))
    return tuple(out)


@st.composite
def damaged(draw):
    """(member index, flips, lie, delta, read plan): small to show, rebuilt by ``_case``."""
    index = draw(st.integers(0, len(members()) - 1))
    length = len(members()[index][3])
    flips = draw(st.lists(st.tuples(st.integers(0, length - 1), st.integers(1, 255)),
                          max_size=3))
    lie = draw(st.sampled_from(["none", "size+", "size-", "crc", "short", "long"]))
    delta = draw(st.integers(1, 5000))
    size = len(members()[index][2])
    plan = draw(st.one_of(
        st.tuples(st.just("sequential"), st.sampled_from([4096, 65536, 131072, 1 << 20])),
        st.tuples(st.just("random"), st.lists(st.tuples(st.integers(0, size),
                                                        st.integers(1, 200_000)),
                                              min_size=1, max_size=6))))
    return index, tuple(flips), lie, delta, plan


def _case(index, flips, lie, delta, plan):
    method, label, data, compressed = members()[index]
    raw = bytearray(compressed)
    for pos, xor in flips:
        raw[pos] ^= xor
    size, crc, csize = len(data), zlib.crc32(data), len(raw)
    if lie == "size+":
        size += delta
    elif lie == "size-":
        size = max(0, size - delta)
    elif lie == "crc":
        crc ^= delta
    elif lie == "short":
        csize = max(0, csize - delta)
    elif lie == "long":
        csize += min(delta, 64)  # into the trailing bytes
    honest = not flips and lie == "none"
    return method, label, data, bytes(raw), size, crc, csize, plan, honest


def _verify(case, figures) -> None:
    method, label, data, raw, size, crc, csize, plan, honest = case
    blob = PREFIX + raw + b"PK\x07\x08" + b"\xee" * 200
    fetch = lambda start, end: blob[start:end]  # noqa: E731
    reader = MemberReader(fetch, data_start=len(PREFIX), compressed_size=csize, size=size,
                          method=method, crc32=crc, name=f"m{method}-{label}", window=WINDOW)
    small = size <= WINDOW
    kind, detail = plan
    if kind == "sequential":
        got, offset, failed = bytearray(), 0, False
        while True:
            try:
                chunk = reader.read(offset, detail)
            except StorageError:
                failed = True
                break
            if not chunk:
                break
            if small:
                assert chunk == data[offset:offset + len(chunk)], "wrong bytes from a small member"
            got += chunk
            offset += len(chunk)
        if honest:
            assert not failed and bytes(got) == data
        elif not failed:
            assert bytes(got) == data, "a damaged member was read to its end without an error"
            figures["damaged members that still decoded right (reader)"] += 1
        else:
            figures["damaged members refused (reader)"] += 1
    else:
        for offset, length in detail:
            try:
                chunk = reader.read(offset, length)
            except StorageError:
                assert not honest
                continue
            if small or honest:
                assert chunk == data[offset:offset + length], "wrong bytes"
    reader.close()
    # the same bytes through the one-shot decoder that downloads use
    try:
        out = codecs.decompress_bytes(method, raw[:csize], crc32=crc, size=size)
    except StorageError:
        assert not honest
    else:
        assert out == data


@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(damaged())
def test_damaged_members_never_yield_wrong_bytes(damage):
    _verify(_case(*damage), FIGURES)
    FIGURES["damaged member inputs tried (reader, codecs)"] += 1


# -- mutated archives through the server and the reader ----------------------------------------

@functools.cache
def archive_bases() -> tuple[bytes, ...]:
    bases = []
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", method) as zf:
            zf.writestr("d/", b"")
            zf.writestr("d/a.txt", text_bytes(91, 3000))
            zf.writestr("b.bin", random.Random(9).randbytes(700))
            zf.writestr("c/e.txt", b"e" * 100)
        bases.append(buffer.getvalue())
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"storagefs-z64-{os.getpid()}.zip"
    write_raw_zip(path, [RawEntry(b"x/y.txt", b"data" * 50, descriptor=True),
                         RawEntry("ü.txt".encode(), b"u" * 10, flags=0x800)], zip64=True)
    bases.append(path.read_bytes())
    path.unlink()
    return tuple(bases)


@st.composite
def mutated_archive(draw) -> bytes:
    out = bytearray(draw(st.sampled_from(archive_bases())))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(out) - 1))
        out[pos] = draw(st.integers(0, 255))
    if draw(st.integers(0, 9)) == 0:
        out = out[:draw(st.integers(0, len(out)))]
    return bytes(out)


def _zipfile_view(data: bytes) -> dict[str, bytes | None]:
    """What zipfile extracts: {name: bytes, or None when zipfile itself fails on it}."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - zipfile raises many types on hostile input
        return {}
    view = {}
    for info in zf.infolist():
        try:
            view[info.filename] = zf.read(info)
        except Exception:  # noqa: BLE001
            view[info.filename] = None
    return view


def test_mutated_archives_through_server_and_reader(server, unique, figures):
    folder = server.root / unique
    folder.mkdir(parents=True, exist_ok=True)
    config = ClientConfig(api_url=server.url, api_key=server.api_key, retries=0)
    counter = {"n": 0, "members": 0, "agreed": 0}

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(mutated_archive())
    def run(data):
        counter["n"] += 1
        name = f"m{counter['n']}.zip"
        (folder / name).write_bytes(data)
        path = f"{unique}/{name}"
        response = server.get("/storage/zip-contents", params={"path": path, "recursive": "true"})
        assert response.status_code < 500, response.text
        if response.status_code != 200:
            assert response.status_code in (400, 404, 413, 422), response.text
            return
        expected = _zipfile_view(data)
        with StorageClient(config) as client:
            vfs = VFS(CachedBackend(ClientBackend(client)), window=1 * MiB)
            for entry in response.json()["contents"]:
                if entry["name"].endswith("/"):
                    continue
                r = server.get("/storage/zip-file-range",
                               params={"path": path, "filename": entry["name"]})
                assert r.status_code < 500, r.text
                counter["members"] += 1
                try:
                    reader = vfs.open(f"/{path}/{entry['name']}")
                    got = reader.read(0, 1 << 20)
                    reader.close()
                except StorageError:
                    continue
                want = expected.get(entry["name"])
                if want is not None:
                    assert got == want, entry["name"]
                    counter["agreed"] += 1

    before = _rss(server.process.pid)
    run()
    growth = _rss(server.process.pid) - before
    assert growth < 64 * MiB, f"the server grew by {growth >> 20} MiB on hostile archives"
    figures["mutated archives tried (server, reader)"] += counter["n"]
    figures["members of mutated archives read or refused, no 5xx (server, reader)"] += \
        counter["members"]


# -- hostile names through a real mount -----------------------------------------------------------

HOSTILE_NAMES = [
    (b"../../escape.txt", b"escape"),
    (b"/abs/root.txt", b"absolute"),
    (b"a\\b\\c.txt", b"backslashes"),
    (b"..\\..\\win.txt", b"windows traversal"),
    (b"nul\x00hidden.txt", b"nul"),
    (b"dup.txt", b"first"),
    (b"dup.txt", b"second"),
    (b"same", b"a file named like a folder"),
    (b"same/", b""),
    (b"same/inner.txt", b"inner"),
    (b"./dot/./x.txt", b"dots"),
    (b"a//b.txt", b"double slash"),
    (b"new\nline.txt", b"newline"),
    ("r\u202eevil.txt".encode(), b"rtl override"),
    (b"n" * 300 + b".txt", b"too long for a file name"),
    (b"ok/fine.txt", b"fine"),
]


def test_hostile_names_through_the_mount(server, unique, tmp_path, figures):
    require_fuse()
    entries = [RawEntry(name, data, flags=0x800) for name, data in HOSTILE_NAMES]
    (server.root / unique).mkdir(parents=True, exist_ok=True)
    write_raw_zip(server.root / unique / "names.zip", entries)
    r = server.get("/storage/zip-contents", params={"path": f"{unique}/names.zip",
                                                    "recursive": "true"})
    assert r.status_code == 200, r.text
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    result = storagefs("mount", str(mountpoint), "--api-url", server.url, "--api-key",
                       server.api_key, "--log-file", str(tmp_path / "mount.log"))
    assert result.returncode == 0, result.stderr
    try:
        archive = mountpoint / unique / "names.zip"
        assert sorted(os.listdir(mountpoint / unique)) == ["names.zip"]
        seen: dict[str, bytes] = {}
        for folder, dirs, files in os.walk(archive):
            for name in dirs + files:
                assert name not in (".", "..") and "/" not in name and "\x00" not in name
            for name in files:
                path = Path(folder) / name
                seen[str(path.relative_to(archive))] = path.read_bytes()
        assert "escape.txt" not in seen and not (mountpoint / "escape.txt").exists()
        assert not (mountpoint / unique / "escape.txt").exists()
        assert seen["abs/root.txt"] == b"absolute"
        assert seen["a\\b\\c.txt"] == b"backslashes"  # one name on Linux, not a path
        assert seen["..\\..\\win.txt"] == b"windows traversal"
        assert seen["nul"] == b"nul"
        assert seen["dup.txt"] == b"second"  # the later entry wins, as with unzip
        assert (archive / "same").is_dir() and seen["same/inner.txt"] == b"inner"
        assert seen["dot/x.txt"] == b"dots" and seen["a/b.txt"] == b"double slash"
        assert seen["new\nline.txt"] == b"newline" and seen["ok/fine.txt"] == b"fine"
        assert seen["r\u202eevil.txt"] == b"rtl override"
        for data in seen.values():
            assert data in {d for _, d in HOSTILE_NAMES}
        figures["hostile member names shown safely through the mount"] += len(HOSTILE_NAMES)
    finally:
        force_unmount(mountpoint)
    log = (tmp_path / "mount.log").read_text()
    assert "Traceback" not in log, log[-3000:]


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_decompression_bomb_through_the_mount_stays_bounded(server, unique, tmp_path, figures):
    """256 MiB of zeros in a 0.25 MiB member, honest about its size: reading its start, its
    end and all of it keeps the mount within its memory budget."""
    require_fuse()
    size = 256 * MiB
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = b"\0" * (8 * MiB)
    raw = b"".join(compressor.compress(chunk) for _ in range(size // len(chunk)))
    raw += compressor.flush()
    crc = 0
    for _ in range(size // len(chunk)):
        crc = zlib.crc32(chunk, crc)
    (server.root / unique).mkdir(parents=True, exist_ok=True)
    write_raw_zip(server.root / unique / "bomb.zip",
                  [RawEntry(b"zeros.bin", raw, method=8, size=size, crc=crc)])
    mountpoint, log = tmp_path / "mnt", tmp_path / "mount.log"
    with foreground_mount(server, mountpoint, log, "--cache-size", "32M") as process:
        idle = _rss(process.pid)
        path = mountpoint / unique / "bomb.zip" / "zeros.bin"
        assert os.stat(path).st_size == size
        with open(path, "rb") as handle:
            assert handle.read(MiB) == b"\0" * MiB
            handle.seek(size - MiB)
            assert handle.read(MiB) == b"\0" * MiB
            handle.seek(0)
            total, peak = 0, idle
            while block := handle.read(4 * MiB):
                assert block.count(0) == len(block)
                total += len(block)
                peak = max(peak, _rss(process.pid))
        assert total == size
    assert peak - idle < 32 * MiB + 160 * MiB, f"RSS grew by {(peak - idle) >> 20} MiB"
    figures["decompression bomb: bytes read through the mount"] += size + 2 * MiB
    figures["decompression bomb: mount RSS growth (MiB)"] = max(
        figures["decompression bomb: mount RSS growth (MiB)"], (peak - idle) >> 20)
