"""Readers of the mount, driven by nothing but bytes: ``fetch`` slices an archive in memory."""

from __future__ import annotations

import io
import random
import struct
import threading
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings, strategies as st

from storagefs import protocol
from storagefs.errors import CorruptArchive, TransferError, UnsupportedMethod
from storagefs.mount.read import MemberReader, RangeReader, ReadContext
from storagefs.mount.read.blockcache import BlockCache
from storagefs.mount.read.readahead import RangeFeed, ReadAhead
from storagefs.zipfmt.inflate import IndexedInflater
from storagefs.zipfmt.local import archive_crc

from archives import (MissingTool, RawEntry, build_7zz, build_pyzip, build_stream_zip,
                      mixed_bytes, read_local_data_offset, text_bytes, write_raw_zip)

KiB, MiB = 1 << 10, 1 << 20
BIG = mixed_bytes(11, 3 * MiB + 12345)  # larger than the test window below
SMALL = text_bytes(12, 200 * KiB)


class Source:
    """``fetch`` over bytes, counting requests and bytes like the server's /metrics would."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.calls: list[tuple[int, int]] = []
        self.lock = threading.Lock()

    def __call__(self, start: int, end: int) -> bytes:
        assert 0 <= start <= end <= len(self.data), (start, end, len(self.data))
        with self.lock:
            self.calls.append((start, end))
        return self.data[start:end]

    @property
    def fetched(self) -> int:
        return sum(end - start for start, end in self.calls)


def member_of(archive: bytes, name: str, *, with_crc: bool = True, window: int = 1 * MiB,
              crc: int | None = None, size: int | None = None, context=None, key=None):
    """A MemberReader for one member, its Source and its ZipInfo."""
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        info = zf.getinfo(name)
    start = read_local_data_offset(io.BytesIO(archive), info.header_offset)
    source = Source(archive)
    reader = MemberReader(
        source, data_start=start, compressed_size=info.compress_size,
        size=info.file_size if size is None else size, method=info.compress_type,
        crc32=(info.CRC if crc is None else crc) if with_crc else None,
        crc_lookup=None if with_crc else (lambda: archive_crc(source, start,
                                                              info.compress_size)),
        name=name, window=window, context=context or ReadContext(64 * MiB), key=key)
    return reader, source, info


def read_all(reader, size: int, step: int = 128 * KiB) -> bytes:
    out = bytearray()
    for offset in range(0, size, step):
        out += reader.read(offset, step)
    return bytes(out)


def pyzip(tmp_path, method: str, files: dict[str, bytes]) -> bytes:
    path, _ = build_pyzip(tmp_path, files, method, name=f"r-{method}.zip")
    return path.read_bytes()


def zstd_zip(tmp_path, files: dict[str, bytes]) -> bytes:
    zstandard = pytest.importorskip("zstandard")
    entries = [RawEntry(name.encode(), zstandard.ZstdCompressor(level=3).compress(data),
                        method=protocol.ZSTD, size=len(data), crc=zlib.crc32(data))
               for name, data in files.items()]
    path = tmp_path / "zstd.zip"
    write_raw_zip(path, entries)
    return path.read_bytes()


def archive_for(tmp_path, method: str, files: dict[str, bytes]) -> bytes:
    if method == "zstd":
        return zstd_zip(tmp_path, files)
    if method in ("deflate64", "7zz-stream"):
        try:
            if method == "deflate64":
                path, _ = build_7zz(tmp_path, files, method="Deflate64", name="d64.zip")
            else:  # streamed to stdout: data descriptors after every member
                path, _ = build_7zz(tmp_path, files, method="Deflate64", streamed=True,
                                    name="d64s.zip")
        except MissingTool as exc:
            pytest.skip(str(exc))
        return path.read_bytes()
    return pyzip(tmp_path, method, files)


METHODS = ["store", "deflate", "bzip2", "lzma", "deflate64", "zstd"]


# -- plain files -------------------------------------------------------------------------------


def test_range_reader_sequential_reads_grow_and_stay_few():
    source = Source(BIG)
    reader = RangeReader(source, len(BIG))
    assert read_all(reader, len(BIG)) == BIG
    # 128 KiB kernel reads, requests doubling to the 1 MiB window: far fewer than 26 requests.
    assert len(source.calls) <= 6
    assert source.fetched == len(BIG)


def test_range_reader_random_reads_and_edges():
    source = Source(SMALL)
    reader = RangeReader(source, len(SMALL))
    rng = random.Random(3)
    for _ in range(200):
        offset = rng.randrange(len(SMALL) + 10)
        length = rng.randrange(1, 70_000)
        assert reader.read(offset, length) == SMALL[offset:offset + length]
    assert reader.read(len(SMALL), 10) == b""
    assert RangeReader(Source(b""), 0).read(0, 100) == b""


def test_range_reader_short_body_is_an_error():
    reader = RangeReader(lambda start, end: b"x" * (end - start - 1), 1000)
    with pytest.raises(TransferError):
        reader.read(0, 100)


# -- members: every method ---------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_member_sequential_read_matches(tmp_path, method):
    archive = archive_for(tmp_path, method, {"big.bin": BIG, "small.txt": SMALL})
    for name, original in (("big.bin", BIG), ("small.txt", SMALL)):
        reader, source, _ = member_of(archive, name)
        assert read_all(reader, len(original)) == original
        assert reader.restarts == 1, "sequential reads keep one decoder"
        assert reader.read(len(original), 100) == b""


@pytest.mark.parametrize("method", METHODS + ["7zz-stream"])
def test_member_without_listed_crc_is_checked_from_the_archive(tmp_path, method):
    archive = archive_for(tmp_path, method, {"big.bin": BIG})
    reader, source, info = member_of(archive, "big.bin", with_crc=False)
    assert read_all(reader, len(BIG)) == BIG
    start = read_local_data_offset(io.BytesIO(archive), info.header_offset)
    assert archive_crc(source, start, info.compress_size) == info.CRC


@pytest.mark.parametrize("method", ["store", "deflate", "zstd"])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_member_random_reads_match(tmp_path_factory, method, data):
    archive = archive_for(tmp_path_factory.mktemp("z"), method, {"big.bin": BIG})
    reader, _, _ = member_of(archive, "big.bin", window=512 * KiB)
    for _ in range(data.draw(st.integers(1, 6))):
        offset = data.draw(st.integers(0, len(BIG) + 5))
        length = data.draw(st.integers(1, 300 * KiB))
        assert reader.read(offset, length) == BIG[offset:offset + length]


def test_backward_seek_restarts_and_reordered_reads_hit_the_window(tmp_path):
    archive = pyzip(tmp_path, "deflate", {"big.bin": BIG})
    reader, _, _ = member_of(archive, "big.bin", window=1 * MiB)
    step = 128 * KiB
    # The kernel may swap neighbouring read-ahead requests: served from the window.
    order = [0, 2, 1, 3, 5, 4, 6]
    for i in order:
        assert reader.read(i * step, step) == BIG[i * step:(i + 1) * step]
    assert reader.restarts == 1
    assert reader.read(3 * MiB, 10) == BIG[3 * MiB:3 * MiB + 10]  # ahead: decoded through
    assert reader.restarts == 1
    assert reader.read(0, 10) == BIG[:10]  # behind, but its block is cached
    assert reader.read(3 * MiB, 10) == BIG[3 * MiB:3 * MiB + 10]
    assert reader.restarts == 1
    reader._ctx.cache.clear()
    reader._recent.clear()
    assert reader.read(0, 10) == BIG[:10]  # gone from the cache: a new decoder
    assert reader.restarts == 2


def test_stored_member_jumps_instead_of_reading_through(tmp_path):
    archive = pyzip(tmp_path, "store", {"big.bin": BIG})
    reader, source, _ = member_of(archive, "big.bin", window=256 * KiB)
    assert reader.read(3 * MiB, 4096) == BIG[3 * MiB:3 * MiB + 4096]
    assert reader.read(1 * MiB, 4096) == BIG[1 * MiB:1 * MiB + 4096]
    assert source.fetched < 600 * KiB, "random access to a stored member fetches little"


def test_parallel_readers_of_one_handle(tmp_path):
    archive = pyzip(tmp_path, "deflate", {"big.bin": BIG})
    reader, _, _ = member_of(archive, "big.bin", window=1 * MiB)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(15):
                offset = rng.randrange(len(BIG))
                assert reader.read(offset, 65536) == BIG[offset:offset + 65536]
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# -- members: errors ---------------------------------------------------------------------------


def test_small_member_with_wrong_crc_yields_no_bytes(tmp_path):
    archive = pyzip(tmp_path, "deflate", {"small.txt": SMALL})
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        good = zf.getinfo("small.txt").CRC
    reader, _, _ = member_of(archive, "small.txt", crc=good ^ 1)
    with pytest.raises(CorruptArchive, match="CRC-32"):
        reader.read(0, 4096)  # the first read already fails: checked whole before answering
    with pytest.raises(CorruptArchive):
        reader.read(0, 4096)  # and keeps failing


def test_large_member_with_wrong_crc_fails_at_its_end(tmp_path):
    archive = pyzip(tmp_path, "deflate", {"big.bin": BIG})
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        good = zf.getinfo("big.bin").CRC
    reader, _, _ = member_of(archive, "big.bin", crc=good ^ 1, window=1 * MiB)
    step = 128 * KiB
    failed_at = None
    for offset in range(0, len(BIG), step):
        try:
            assert reader.read(offset, step) == BIG[offset:offset + step]
        except CorruptArchive as exc:
            assert "CRC-32" in str(exc)
            failed_at = offset
            break
    # Early blocks were served (all correct); reads fail from the moment the decoder, which
    # runs ahead of a sequential reader, reached the end and found the mismatch.
    assert failed_at is not None and failed_at > 0
    with pytest.raises(CorruptArchive):
        reader.read(0, step)


def test_crc_without_listing_comes_from_descriptor_or_local_header(tmp_path):
    path, _ = build_stream_zip(tmp_path, {"a/data.txt": SMALL})  # streamed: data descriptors
    archive = path.read_bytes()
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        info = zf.getinfo("a/data.txt")
    assert info.flag_bits & 0x08
    start = read_local_data_offset(io.BytesIO(archive), info.header_offset)
    assert archive_crc(Source(archive), start, info.compress_size) == info.CRC
    reader, _, _ = member_of(archive, "a/data.txt", with_crc=False)
    assert read_all(reader, len(SMALL)) == SMALL


def test_corrupt_stored_member_without_listed_crc_yields_no_bytes(tmp_path):
    archive = bytearray(pyzip(tmp_path, "store", {"x.bin": SMALL}))  # CRC in the local header
    with zipfile.ZipFile(io.BytesIO(bytes(archive))) as zf:
        info = zf.getinfo("x.bin")
    start = read_local_data_offset(io.BytesIO(bytes(archive)), info.header_offset)
    assert archive_crc(Source(bytes(archive)), start, info.compress_size) == info.CRC
    archive[start + 1000] ^= 0xFF
    reader, _, _ = member_of(bytes(archive), "x.bin", with_crc=False)
    with pytest.raises(CorruptArchive, match="CRC-32"):
        reader.read(0, 4096)


def test_archive_crc_descriptor_without_signature(tmp_path):
    data = b"hello descriptor " * 100
    crc = zlib.crc32(data)
    header = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0x08, 0, 0, 0, 0, 0, 0, 5, 0) + b"x.txt"
    blob = header + data + struct.pack("<3L", crc, len(data), len(data))
    assert archive_crc(Source(blob), len(header), len(data)) == crc
    # A header that does not end exactly at the data is not taken for this member's.
    assert archive_crc(Source(b"\0" * 40 + data), 40, len(data)) is None


def test_truncated_and_oversized_members_are_errors(tmp_path):
    archive = pyzip(tmp_path, "deflate", {"small.txt": SMALL})
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        info = zf.getinfo("small.txt")
    start = read_local_data_offset(io.BytesIO(archive), info.header_offset)
    short = MemberReader(Source(archive), data_start=start,
                         compressed_size=info.compress_size // 2, size=info.file_size,
                         method=8, crc32=info.CRC, name="short")
    with pytest.raises(CorruptArchive):
        short.read(0, 4096)
    lying, _, _ = member_of(archive, "small.txt", size=info.file_size - 10)
    with pytest.raises(CorruptArchive):
        lying.read(0, 4096)
    garbage = MemberReader(Source(b"\xff" * 5000), data_start=0, compressed_size=5000,
                           size=10000, method=8, crc32=0, name="garbage")
    with pytest.raises(CorruptArchive):
        garbage.read(0, 4096)


def test_unsupported_method_fails_at_open():
    with pytest.raises(UnsupportedMethod):
        MemberReader(Source(b"x"), data_start=0, compressed_size=1, size=1, method=99)


def test_decompression_bomb_is_bounded():
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    raw = bomb.compress(b"\0" * (64 * MiB)) + bomb.flush()
    reader = MemberReader(Source(raw), data_start=0, compressed_size=len(raw), size=1000,
                          method=8, crc32=None, name="bomb", window=1 * MiB)
    with pytest.raises(CorruptArchive, match="longer than"):
        reader.read(0, 4096)


# -- random access: snapshots ------------------------------------------------------------------

HUGE = text_bytes(13, 9 * MiB + 4321)  # several snapshot intervals of the context below


def forget_blocks(reader) -> None:
    """Decoded blocks gone from the cache and the reader (snapshots stay)."""
    reader._ctx.cache.clear(kept=False)
    reader._recent.clear()
    reader._cur = (-1, b"")


@pytest.fixture(scope="module")
def huge_archive(tmp_path_factory) -> bytes:
    return pyzip(tmp_path_factory.mktemp("huge"), "deflate", {"huge.txt": HUGE,
                                                              "after.txt": SMALL})


def test_snapshots_bound_what_a_random_read_inflates(huge_archive):
    context = ReadContext(64 * MiB, interval=1 * MiB)
    reader, source, _ = member_of(huge_archive, "huge.txt", window=256 * KiB, context=context)
    assert read_all(reader, len(HUGE)) == HUGE
    if IndexedInflater.available:  # the sequential pass left a checkpoint every MiB
        assert context.cache.stats()["kept"] == len(HUGE) // MiB
    # The first random read decodes from the pass's snapshots (or from the start, laying a
    # snapshot every MiB on its way).
    forget_blocks(reader)
    reader._ra.note(0, 0)  # as if it had seeked to the start: the next read is random
    assert reader.read(len(HUGE) - 100, 100) == HUGE[-100:]
    assert context.cache.stats()["kept"] == len(HUGE) // MiB
    rng = random.Random(5)
    end = len(HUGE)
    for _ in range(40):
        context.cache.clear(kept=False)  # blocks gone, snapshots kept
        reader._recent.clear()
        reader._cur = (-1, b"")
        offset = end
        while abs(offset - end) < 2 * MiB:  # random, not sequential: no read-ahead
            offset = rng.randrange(len(HUGE))
        length = rng.choice([1, 4096, 65536])
        before = reader.decoded
        assert reader.read(offset, length) == HUGE[offset:offset + length]
        # From the snapshot before the block to the end of the block: one interval at most,
        # and what lies between a checkpoint and its block (two blocks when the read
        # straddles a block boundary).
        behind = IndexedInflater.margin if IndexedInflater.available else 0
        assert reader.decoded - before <= 1 * MiB + behind + (MiB if length > 1 else 0)
        end = offset + length


def test_random_reads_without_a_pass_make_snapshots_as_they_go(huge_archive):
    context = ReadContext(64 * MiB, interval=1 * MiB)
    reader, source, _ = member_of(huge_archive, "huge.txt", window=256 * KiB, context=context)
    rng = random.Random(8)
    for _ in range(60):
        offset = rng.randrange(len(HUGE))
        assert reader.read(offset, 5000) == HUGE[offset:offset + 5000]
    # Never more than a pass, plus an interval per read that went backwards.
    assert reader.decoded <= len(HUGE) + 60 * MiB
    assert reader.read(len(HUGE) - 10, 100) == HUGE[-10:]


def test_random_reads_fetch_about_what_they_inflate(huge_archive):
    context = ReadContext(64 * MiB, interval=1 * MiB)
    reader, source, info = member_of(huge_archive, "huge.txt", window=256 * KiB,
                                     context=context)
    read_all(reader, len(HUGE))
    forget_blocks(reader)
    far = len(HUGE) - 3 * MiB
    assert reader.read(far, 100) == HUGE[far:far + 100]  # lays snapshots up to there
    context.cache.clear(kept=False)
    reader._recent.clear()
    source.calls.clear()
    offset = 3 * MiB + 12345
    assert reader.read(offset, 4096) == HUGE[offset:offset + 4096]
    ratio = info.compress_size / len(HUGE)
    assert len(source.calls) == 1, "one request sized for the interval"
    assert source.fetched <= 1.2 * MiB * ratio + 64 * KiB


def test_shared_state_across_handles(huge_archive):
    context = ReadContext(64 * MiB, interval=1 * MiB)
    first, source, _ = member_of(huge_archive, "huge.txt", context=context, key="m")
    read_all(first, len(HUGE))
    fetched = source.fetched
    second, _, _ = member_of(huge_archive, "huge.txt", context=context, key="m")
    second._fetch = source
    offset = len(HUGE) - 3 * MiB
    assert second.read(offset, 4096) == HUGE[offset:offset + 4096]  # a block still cached
    assert source.fetched == fetched and second.decoded == 0


@pytest.mark.parametrize("method", ["bzip2", "deflate64", "zstd"])
def test_methods_without_snapshots_restart_and_cache_blocks(tmp_path, method):
    archive = archive_for(tmp_path, method, {"big.bin": BIG})
    reader, _, _ = member_of(archive, "big.bin", window=256 * KiB)
    assert reader.read(2 * MiB, 100) == BIG[2 * MiB:2 * MiB + 100]
    assert reader.restarts == 1
    assert reader.read(1 * MiB, 100) == BIG[1 * MiB:1 * MiB + 100]  # behind, but cached
    assert reader.restarts == 1
    reader._ctx.cache.clear()
    reader._recent.clear()
    reader._cur = (-1, b"")
    assert reader.read(1 * MiB + 5, 100) == BIG[1 * MiB + 5:1 * MiB + 105]  # from the start
    assert reader.restarts == 2


def test_crc_checked_whatever_order_blocks_are_read(tmp_path):
    archive = pyzip(tmp_path, "deflate", {"big.bin": BIG})
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        good = zf.getinfo("big.bin").CRC
    reader, _, _ = member_of(archive, "big.bin", crc=good ^ 1, window=256 * KiB)
    blocks = list(range(0, len(BIG), 1 * MiB))
    random.Random(2).shuffle(blocks)
    with pytest.raises(CorruptArchive, match="CRC-32"):
        for offset in blocks:
            assert reader.read(offset, 1 * MiB) == BIG[offset:offset + MiB]
    with pytest.raises(CorruptArchive):  # and every read after that, of any block
        reader.read(0, 10)


def test_crc_of_a_shared_member_holds_for_every_handle(tmp_path):
    archive = pyzip(tmp_path, "deflate", {"big.bin": BIG})
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        good = zf.getinfo("big.bin").CRC
    context = ReadContext(64 * MiB)
    first, _, _ = member_of(archive, "big.bin", crc=good ^ 1, window=256 * KiB,
                            context=context, key="k")
    with pytest.raises(CorruptArchive):
        read_all(first, len(BIG))
    second, _, _ = member_of(archive, "big.bin", crc=good ^ 1, window=256 * KiB,
                             context=context, key="k")
    with pytest.raises(CorruptArchive):
        second.read(0, 10)  # its blocks are cached, but the member is known bad


# -- read-ahead --------------------------------------------------------------------------------


def test_read_ahead_window_grows_and_stops_on_seek():
    ahead = ReadAhead(initial=1 * MiB, maximum=8 * MiB, tolerance=256 * KiB)
    step = 128 * KiB
    windows = [ahead.note(i * step, (i + 1) * step) for i in range(6)]
    assert windows == [1 * MiB, 2 * MiB, 4 * MiB, 8 * MiB, 8 * MiB, 8 * MiB]
    assert ahead.note(7 * step, 8 * step) == 8 * MiB  # the kernel reordered: still sequential
    assert ahead.note(6 * step, 7 * step) == 8 * MiB
    assert ahead.note(100 * MiB, 100 * MiB + step) == 0  # a seek stops it
    assert ahead.note(100 * MiB + step, 100 * MiB + 2 * step) == 1 * MiB  # and it starts over
    fresh = ReadAhead()
    assert fresh.note(5 * MiB, 5 * MiB + step) == 0  # a first read elsewhere than 0 is random


def test_range_feed_fetches_ahead_in_growing_ranges_never_past_its_end():
    data = bytes(range(256)) * 40_000  # ~10 MB
    source = Source(data)
    pool = ThreadPoolExecutor(4)
    budget = BlockCache(64 * MiB)
    feed = RangeFeed(source, 1000, 9_000_000, pool=pool, budget=budget)
    feed.set_depth(3)
    got = bytearray()
    while (piece := feed.next()) is not None:
        got += piece
    assert bytes(got) == data[1000:9_000_000]
    sizes = [end - start for start, end in sorted(source.calls)]
    assert sizes[:4] == [128 * KiB, 256 * KiB, 512 * KiB, 1 * MiB]
    assert max(sizes) <= 4 * MiB
    assert max(end for _, end in source.calls) == 9_000_000
    assert budget.reserved == 0, "every buffer in flight was given back"
    other = RangeFeed(source, 0, 9_000_000, pool=pool, budget=budget)
    other.set_depth(3)
    other.next()
    other.skip_to(500 * KiB)
    other.next()
    other.close()  # with ranges in flight
    pool.shutdown(wait=True)
    assert budget.reserved == 0


def test_range_feed_skip_keeps_what_was_fetched():
    data = bytes(range(256)) * 4000
    source = Source(data)
    pool = ThreadPoolExecutor(2)
    feed = RangeFeed(source, 0, len(data), first=64 * KiB, pool=pool)
    assert feed.next() == data[:64 * KiB]
    feed.set_depth(1)  # the next 128 KiB are fetched ahead
    feed.skip_to(150 * KiB)
    assert feed.next() == data[150 * KiB:192 * KiB]
    assert len(source.calls) == 2, "the skipped-to bytes came from what was fetched"
    feed.set_depth(0)
    feed.skip_to(600 * KiB)  # past everything fetched: the next request starts there
    got = feed.next(hint=300 * KiB)
    assert len(got) >= 300 * KiB and got == data[600 * KiB:600 * KiB + len(got)]
    assert source.calls[-1][0] == 600 * KiB
    pool.shutdown()


def test_sequential_reading_fetches_the_member_once_and_nothing_after_it(huge_archive):
    reader, source, info = member_of(huge_archive, "huge.txt", window=256 * KiB)
    start = read_local_data_offset(io.BytesIO(huge_archive), info.header_offset)
    assert read_all(reader, len(HUGE)) == HUGE
    end = start + info.compress_size
    assert all(start <= a and b <= end for a, b in source.calls), "nothing outside the member"
    assert source.fetched == info.compress_size, "every compressed byte fetched once"
    assert len(source.calls) <= 8
    assert reader.restarts == 1


def test_small_member_is_one_request_of_its_own_bytes(huge_archive):
    reader, source, info = member_of(huge_archive, "after.txt")
    assert read_all(reader, len(SMALL)) == SMALL
    assert len(source.calls) == 1 and source.fetched == info.compress_size


def test_memory_stays_in_the_budget_with_many_readers(tmp_path):
    files = {f"m{i}.txt": text_bytes(40 + i, 3 * MiB) for i in range(6)}
    archive = pyzip(tmp_path, "deflate", files)
    context = ReadContext(4 * MiB)
    readers = [member_of(archive, name, window=256 * KiB, context=context)[0] for name in files]
    errors: list[BaseException] = []

    def cat(reader, want) -> None:
        try:
            assert read_all(reader, len(want)) == want
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=cat, args=(r, files[n])) for r, n in zip(readers, files)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stats = context.cache.stats()
    assert stats["peak"] <= 4 * MiB and stats["used"] <= 4 * MiB
    decoded = sum(r.decoded for r in readers)
    print("decoded / size:", decoded / sum(len(d) for d in files.values()))
    # Read-ahead shrinks to fit: blocks are not decoded again and again.
    assert decoded <= 1.5 * sum(len(d) for d in files.values())


def test_zlib_ng_is_used_when_installed_and_its_inflater_copies():
    from storagefs.zipfmt import codecs

    try:
        from zlib_ng import zlib_ng
    except ImportError:
        pytest.skip("python-zlib-ng is not installed (storagefs[speed])")
    assert codecs.fast_zlib is zlib_ng
    raw = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = text_bytes(3, 300_000)
    stream = raw.compress(data) + raw.flush()
    decoder = codecs.make_decoder(protocol.DEFLATED)
    head = decoder.decompress(stream[:20_000], 100_000)
    twin, held = decoder.checkpoint()
    rest = decoder.decompress(b"", -1) + decoder.decompress(stream[20_000:]) + decoder.flush()
    given = 20_000 - held
    again = twin.decompress(stream[given:]) + twin.flush()
    assert head + rest == data and again == rest
