"""Deflate checkpoints: laid by every pass, resumed bit-exactly, kept on disk per member version.

From the inflater up: ``IndexedInflater`` against zlib's own streams, the reader's spacing in
the budget, the on-disk index a new context (a new mount) starts from, and what happens to an
index of another version or a damaged one: it is never trusted, and no wrong byte comes out.
The last test does the same through two real FUSE mounts of the reference server.
"""

from __future__ import annotations

import ctypes
import io
import logging
import os
import random
import threading
import zipfile
import zlib

import pytest

from storagefs.errors import CorruptArchive
from storagefs.mount.read import MemberReader, ReadContext
from storagefs.mount.read.checkpoints import CheckpointIndex, spacing
from storagefs.mount.read.diskcache import CHECKPOINTS
from storagefs.zipfmt import inflate
from storagefs.zipfmt.inflate import Checkpoint, IndexedInflater

from archives import mixed_bytes, read_local_data_offset
from mountharness import assert_clean_log, foreground_mount, require_fuse

KiB, MiB = 1 << 10, 1 << 20

pytestmark = pytest.mark.skipif(not IndexedInflater.available,
                                reason="no zlib library could be loaded through ctypes")


def csv_bytes(seed: int, size: int) -> bytes:
    """Digits, dots, commas and newlines: compresses like the task runner's CSV floats, fast."""
    table = bytes(b"0123456789.,-\n0123456789"[i % 24] for i in range(256))
    return random.Random(seed).randbytes(size).translate(table)


def raw_deflate(data: bytes, level: int) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def inflate_with_marks(stream: bytes, every: int, piece: int = 64 * KiB):
    """All output and the checkpoints asked for every ``every`` bytes."""
    d = IndexedInflater()
    out, points, pos, nxt = [], [], 0, 0
    total = 0
    while not d.eof:
        if total >= nxt:
            nxt += every
            d.mark(nxt)
        if d.needs_input:
            chunk = stream[pos:pos + piece]
            pos += len(chunk)
            if not chunk:
                break
        else:
            chunk = b""
        block = d.decompress(chunk, 256 * KiB)
        total += len(block)
        out.append(block)
        point = d.take_checkpoint()
        if point is not None:
            points.append(point)
    d.flush()
    return b"".join(out), points


DATA = csv_bytes(1, 3 * MiB) + mixed_bytes(2, 2 * MiB)


@pytest.fixture(params=["default", "system zlib"])
def library(request, monkeypatch):
    """Each test with the library found first, and with the system's libz (no zlib-ng)."""
    if request.param == "system zlib":
        system = inflate._system_zlib()
        if system is None:
            pytest.skip("no system libz")
        monkeypatch.setattr(inflate, "_binding", system)
    return request.param


@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_checkpoints_resume_bit_exactly(level, library):
    stream = raw_deflate(DATA, level)
    out, points = inflate_with_marks(stream, 512 * KiB)
    assert out == DATA
    assert len(points) >= len(DATA) // (512 * KiB) - 1
    for point in points:
        assert 0 < point.out and len(point.window) == 32 * KiB
        assert point.window == DATA[point.out - 32 * KiB:point.out]
        d = IndexedInflater(point)
        got = d.decompress(stream[point.in_pos:point.in_pos + 300 * KiB], 200 * KiB)
        assert got == DATA[point.out:point.out + len(got)]
        assert got or point.out == len(DATA)  # (before a final empty block)
    if level:  # Huffman blocks end anywhere in a byte: resuming needs the bits before it
        assert any(p.bits for p in points)


def test_inflater_refuses_bad_data_and_ignores_what_follows_the_end(library):
    stream = raw_deflate(DATA, 6)
    d = IndexedInflater()
    assert d.decompress(stream + b"trailing junk", -1) == DATA and d.eof
    assert d.decompress(b"more", 10) == b""
    d.flush()
    cut = IndexedInflater()
    cut.decompress(stream[:len(stream) // 2], -1)
    with pytest.raises(CorruptArchive):
        cut.flush()
    bad = bytearray(stream)
    bad[0] = 0xFF  # block type 3: reserved
    with pytest.raises(CorruptArchive):
        IndexedInflater().decompress(bytes(bad), -1)
    with pytest.raises(ValueError):
        Checkpoint(1, 0, 3, 1, b"")  # bits of a byte before the first one
    closed = IndexedInflater()
    closed.close()
    with pytest.raises(ValueError):
        closed.decompress(stream, 100)  # an error, not a crash


def test_spacing_keeps_any_member_within_the_budget():
    share, cost = 28 * MiB, 48 * KiB
    for size in (10 * MiB, 300 * MiB, 5 << 30, 50 << 30):
        gap = spacing(size, interval=4 * MiB, block=MiB, share=share, cost=cost, spill=False)
        assert gap >= 4 * MiB and gap % MiB == 0
        assert -(-size // gap) * cost <= share // 2
    assert spacing(5 << 30, interval=4 * MiB, block=MiB, share=share, cost=cost,
                   spill=True) == 4 * MiB


# -- the reader -------------------------------------------------------------------------------

MEMBER = csv_bytes(3, 12 * MiB + 777)


@pytest.fixture(scope="module")
def archive() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("floats.csv", MEMBER)
        zf.writestr("other.csv", MEMBER[:2 * MiB])
    return buf.getvalue()


class Source:
    """``fetch`` over bytes, counting what was fetched."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.fetched = 0

    def __call__(self, start: int, end: int) -> bytes:
        self.fetched += end - start
        return self.data[start:end]


def open_member(data: bytes, context: ReadContext, key, name: str = "floats.csv"):
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo(name)
    source = Source(data)
    reader = MemberReader(source, data_start=read_local_data_offset(io.BytesIO(data),
                                                                    info.header_offset),
                          compressed_size=info.compress_size, size=info.file_size,
                          method=info.compress_type, crc32=info.CRC, name=name,
                          window=256 * KiB, context=context, key=key)
    return reader, source


def read_through(reader, size: int) -> bytes:
    return b"".join(reader.read(o, 128 * KiB) for o in range(0, size, 128 * KiB))


def test_a_pass_leaves_checkpoints_within_its_budget(archive):
    context = ReadContext(64 * MiB, interval=1 * MiB)
    reader, _ = open_member(archive, context, key="a")
    assert read_through(reader, len(MEMBER)) == MEMBER
    assert context.cache.stats()["kept"] == len(MEMBER) // MiB
    small = ReadContext(4 * MiB, interval=1 * MiB)  # room for a few checkpoints only
    reader, _ = open_member(archive, small, key="a")
    assert read_through(reader, len(MEMBER)) == MEMBER
    stats = small.cache.stats()
    assert 0 < stats["kept"] and stats["kept_bytes"] <= small.cache.keep_limit // 2
    assert reader._state.spacing > MiB


def test_a_seek_after_a_pass_inflates_one_spacing(archive):
    context = ReadContext(64 * MiB)  # the mount's 4 MiB spacing
    reader, source = open_member(archive, context, key="a")
    assert read_through(reader, len(MEMBER)) == MEMBER
    context.cache.clear(kept=False)
    reader._recent.clear()
    reader._cur = (-1, b"")
    reader._ra.note(0, 0)
    before, fetched = reader.decoded, source.fetched
    offset = len(MEMBER) - 3 * MiB - 5000
    assert reader.read(offset, 4096) == MEMBER[offset:offset + 4096]
    assert reader.decoded - before <= 4 * MiB + IndexedInflater.margin
    assert source.fetched - fetched < 0.7 * (4 * MiB + IndexedInflater.margin)


def test_without_a_zlib_library_deflate_reads_from_copies(archive, monkeypatch, tmp_path):
    monkeypatch.setattr(IndexedInflater, "available", False)
    context = ReadContext(64 * MiB, interval=MiB, checkpoints=CheckpointIndex(tmp_path))
    reader, _ = open_member(archive, context, key="a")
    rng = random.Random(3)
    for _ in range(20):
        offset = rng.randrange(len(MEMBER))
        assert reader.read(offset, 5000) == MEMBER[offset:offset + 5000]
    assert read_through(reader, len(MEMBER)) == MEMBER and reader._state.verified
    assert context.cache.stats()["kept"] > 0 and not list(tmp_path.iterdir())


def first_mount(archive: bytes, root, key) -> CheckpointIndex:
    index = CheckpointIndex(root)
    reader, _ = open_member(archive, ReadContext(64 * MiB, checkpoints=index), key)
    assert read_through(reader, len(MEMBER)) == MEMBER
    reader.close()
    return index


def far_read(archive: bytes, root, key, offset: int = len(MEMBER) - 2 * MiB - 999):
    """A new mount's first read far into the member: (bytes decoded, bytes fetched)."""
    reader, source = open_member(archive, ReadContext(64 * MiB,
                                                      checkpoints=CheckpointIndex(root)), key)
    assert reader.read(offset, 4096) == MEMBER[offset:offset + 4096]
    return reader, reader.decoded, source.fetched


def index_file(root, archive: bytes, key):
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        info = zf.getinfo("floats.csv")
    return CheckpointIndex(root).member(key, info.file_size, info.compress_size, info.CRC,
                                        info.compress_type).path


KEY = (("runs/a.zip", (123456, 1700000000.0)), 40, 999)


def test_a_new_mount_starts_from_the_checkpoints_on_disk(archive, tmp_path):
    first_mount(archive, tmp_path, KEY)
    reader, decoded, fetched = far_read(archive, tmp_path, KEY)
    assert decoded <= 4 * MiB + IndexedInflater.margin + MiB, "no inflate from the start"
    assert fetched < 0.7 * (5 * MiB + IndexedInflater.margin)
    # Everything decoded from checkpoints is still checked against the CRC-32 at the end.
    assert read_through(reader, len(MEMBER)) == MEMBER and reader._state.verified


def test_an_index_of_another_version_is_never_used(archive, tmp_path, caplog):
    first_mount(archive, tmp_path, KEY)
    replaced = (("runs/a.zip", (123456, 1700000099.0)), 40, 999)  # same path, new version
    _, decoded, _ = far_read(archive, tmp_path, replaced)
    assert decoded > len(MEMBER) - 3 * MiB, "inflated from the start"
    # Even a file under the new version's name, but written for the old one, is refused.
    index_file(tmp_path, archive, KEY).rename(index_file(tmp_path, archive, replaced))
    with caplog.at_level(logging.WARNING):
        _, decoded, _ = far_read(archive, tmp_path, replaced)
    assert decoded > len(MEMBER) - 3 * MiB
    assert "not the checkpoint index of this member" in caplog.text


def shift_every_record(raw: bytearray, forge: bool = False) -> None:
    """Move each record's compressed offset one byte on, as a bug or a bad disk could
    (``forge``: with its CRC-32 made right again)."""
    at = 40  # the header
    while at + 34 <= len(raw):
        length = int.from_bytes(raw[at + 30:at + 34], "little")
        raw[at + 20] ^= 1
        if forge:
            raw[at:at + 4] = zlib.crc32(raw[at + 4:at + 34 + length]).to_bytes(4, "little")
        at += 34 + length


@pytest.mark.parametrize("damage", ["flip", "fields", "forged", "truncate", "garbage"])
def test_a_damaged_index_never_yields_wrong_bytes(archive, tmp_path, caplog, damage):
    first_mount(archive, tmp_path, KEY)
    path = index_file(tmp_path, archive, KEY)
    raw = bytearray(path.read_bytes())
    if damage == "flip":  # a bit flipped in every record past the first
        for at in range(len(raw) // 3, len(raw), 997):
            raw[at] ^= 0x10
    elif damage in ("fields", "forged"):
        shift_every_record(raw, forge=damage == "forged")
    elif damage == "truncate":  # a torn last record
        raw = raw[:len(raw) - 100]
    else:
        raw[60:] = random.Random(4).randbytes(len(raw) - 60)
    path.write_bytes(bytes(raw))
    rng = random.Random(7)
    with caplog.at_level(logging.WARNING):
        reader, _, _ = far_read(archive, tmp_path, KEY)
        for _ in range(30):
            offset = rng.randrange(len(MEMBER))
            assert reader.read(offset, 4096) == MEMBER[offset:offset + 4096]
    if damage in ("flip", "fields"):
        assert "is damaged" in caplog.text
    if damage == "forged":  # passes the checks, fails to decode: the whole file goes
        assert caplog.text.count("does not decode") == 1
    assert read_through(reader, len(MEMBER)) == MEMBER and reader._state.verified


def test_index_files_beyond_their_limit_go_least_recently_used_first(archive, tmp_path):
    for version in range(3):
        first_mount(archive, tmp_path, ("runs/a.zip", version))
        os.utime(index_file(tmp_path, archive, ("runs/a.zip", version)), (1000 + version,) * 2)
    sizes = [index_file(tmp_path, archive, ("runs/a.zip", v)).stat().st_size for v in range(3)]
    (tmp_path / ".tmp-1-crashed").write_bytes(b"x")
    CheckpointIndex(tmp_path, limit=sizes[1] + sizes[2])
    assert [index_file(tmp_path, archive, ("runs/a.zip", v)).exists() for v in range(3)] == \
        [False, True, True]
    assert not (tmp_path / ".tmp-1-crashed").exists()


# -- through the mount --------------------------------------------------------------------------

ROOT = "mnt-checkpoint-tests"
BIG = csv_bytes(9, 24 * MiB + 4321)


def test_a_second_mount_reads_far_into_a_member_from_its_disk_index(server, tmp_path):
    require_fuse()
    (server.root / ROOT).mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(server.root / ROOT / "run.zip", "w", zipfile.ZIP_DEFLATED,
                         compresslevel=1) as zf:
        zf.writestr("out/floats.csv", BIG)
    cache_dir = tmp_path / "cache"
    member = f"{ROOT}/run.zip/out/floats.csv"
    first, log = tmp_path / "m1", tmp_path / "m1.log"
    with foreground_mount(server, first, log, "--cache-dir", str(cache_dir)):
        assert (first / member).read_bytes() == BIG
    assert_clean_log(log)
    assert list((cache_dir / CHECKPOINTS).glob("*.ckpt"))
    for folder in cache_dir.iterdir():  # fetched ranges gone: the next mount fetches again
        if folder.name != CHECKPOINTS:
            for f in folder.iterdir():
                f.unlink()
    second, log = tmp_path / "m2", tmp_path / "m2.log"
    with foreground_mount(server, second, log, "--cache-dir", str(cache_dir)):
        before = object_bytes(server)
        fd = os.open(second / member, os.O_RDONLY)
        try:
            offset = len(BIG) - 3 * MiB - 12345
            assert os.pread(fd, 4096, offset) == BIG[offset:offset + 4096]
            fetched = object_bytes(server) - before
        finally:
            os.close(fd)
    assert_clean_log(log)
    assert fetched < 0.7 * 6 * MiB, f"fetched {fetched} bytes: inflated from the start?"


def object_bytes(server) -> float:
    return sum(v for k, v in server.metrics().items()
               if k.startswith("storagefs_object_read_bytes_total"))


def test_an_output_larger_than_zlibs_counters_is_never_padded(library):
    """zlib counts output in 32 bits: a larger request is filled in parts, never claimed whole
    (the bytes object is allocated lazily; only what is decoded is touched)."""
    stream = raw_deflate(DATA, 6)
    pieces = [stream]
    try:
        out = IndexedInflater().fill((1 << 32) + 100, lambda: pieces.pop() if pieces else None)
    except MemoryError:
        pytest.skip("no address space for a 4 GiB request")
    assert len(out) == len(DATA)  # (not compared whole first: a 4 GiB diff would not end)
    assert out == DATA


class _WiderStream(ctypes.Structure):
    """A stream layout no library has: what a rebuilt zlib-ng with a changed struct would be."""

    _fields_ = [("known", ctypes.c_byte * 112), ("extra", ctypes.c_void_p)]


def test_a_library_whose_stream_layout_differs_is_not_used():
    """zlib-ng's own entry point does no checks: the loader must refuse a layout the library
    does not take, and deflate falls back to the readers without checkpoints."""
    assert inflate._zlib_ng(_WiderStream) is None
    assert inflate._system_zlib(_WiderStream) is None
    if inflate.codecs.fast_zlib is not zlib:
        assert inflate._zlib_ng() is not None
    assert inflate._system_zlib() is not None


def test_closing_from_another_thread_waits_for_the_inflate_in_progress(library):
    """close() frees zlib's state: run while another thread inflates (the call releases the
    GIL) it would free memory zlib is using. It waits; the inflate ends with its data."""
    stream = raw_deflate(DATA, 6)
    d = IndexedInflater()
    inside, go_on = threading.Event(), threading.Event()
    pieces = [stream[len(stream) // 2:], stream[:len(stream) // 2]]

    def more():
        if len(pieces) == 1:  # half the input inflated: the state is live
            inside.set()
            go_on.wait(5)
        return pieces.pop() if pieces else None

    result: list[bytes] = []
    worker = threading.Thread(target=lambda: result.append(d.fill(len(DATA), more)))
    worker.start()
    assert inside.wait(5)
    closer = threading.Thread(target=d.close)
    closer.start()
    closer.join(0.5)
    assert closer.is_alive()  # waits for the fill
    go_on.set()
    worker.join(10)
    closer.join(10)
    assert result == [DATA] and not d._open
