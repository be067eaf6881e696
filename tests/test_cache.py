"""The mount's data caches: the memory budget (``BlockCache``), ranges on disk (``DiskCache``)."""

from __future__ import annotations

import os
import random
import threading

import pytest

from storagefs.mount.read.blockcache import BlockCache
from storagefs.mount.read.diskcache import GRANULE, DiskCache

KiB, MiB = 1 << 10, 1 << 20


# -- BlockCache --------------------------------------------------------------------------------


def test_block_cache_evicts_least_recently_used_within_its_budget():
    cache = BlockCache(10 * KiB)
    for i in range(5):
        assert cache.put(i, bytes(2 * KiB))
    assert cache.used == 10 * KiB
    assert cache.get(0) is not None  # 0 is now the most recent
    cache.put(5, bytes(3 * KiB))  # 1 and 2 leave to make room
    assert [k for k in range(6) if k in cache] == [0, 3, 4, 5]
    assert cache.used <= 10 * KiB and cache.stats()["peak"] <= 10 * KiB
    assert not cache.put("huge", bytes(11 * KiB)), "an entry larger than the budget is refused"
    cache.put(3, bytes(1 * KiB))  # replacing an entry counts its new size
    assert cache.used == 2 * KiB + 2 * KiB + 3 * KiB + 1 * KiB


def test_demoted_blocks_go_first():
    cache = BlockCache(4 * KiB)
    for i in range(4):
        cache.put(i, bytes(KiB))
    cache.demote(3)  # a block a sequential reader went past
    cache.put(4, bytes(KiB))
    assert 3 not in cache and all(i in cache for i in (0, 1, 2, 4))
    cache.demote("missing")  # nothing to do


def test_kept_entries_have_their_share_and_go_after_blocks():
    cache = BlockCache(100 * KiB, keep_share=0.2)
    for i in range(3):
        cache.put(("snap", i), object(), 8 * KiB, keep=True)
    assert cache.stats()["kept_bytes"] == 16 * KiB, "beyond its share, the oldest kept goes"
    assert ("snap", 0) not in cache
    for i in range(20):  # a long scan of blocks does not push snapshots out
        cache.put(("block", i), bytes(10 * KiB))
    assert ("snap", 1) in cache and ("snap", 2) in cache
    assert cache.used <= 100 * KiB
    cache.clear(kept=False)
    assert len(cache) == 2 and cache.used == 16 * KiB


def test_reservations_evict_blocks_and_are_bounded():
    cache = BlockCache(100 * KiB)
    for i in range(10):
        cache.put(i, bytes(10 * KiB))
    assert cache.reserve(50 * KiB)
    assert cache.used + cache.reserved <= 100 * KiB and len(cache) == 5
    assert not cache.reserve(30 * KiB), "reservations stop at three quarters of the budget"
    cache.release(50 * KiB)
    assert cache.reserved == 0


def test_block_cache_is_thread_safe():
    cache = BlockCache(64 * KiB)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(2000):
            key = rng.randrange(50)
            if rng.random() < 0.5:
                cache.put(key, bytes(rng.randrange(1, 4 * KiB)))
            else:
                cache.get(key)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = cache.stats()
    assert stats["used"] <= 64 * KiB and stats["peak"] <= 64 * KiB


# -- DiskCache ---------------------------------------------------------------------------------


class Source:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.calls: list[tuple[int, int]] = []

    def __call__(self, start: int, end: int) -> bytes:
        self.calls.append((start, end))
        return self.data[start:end]

    @property
    def fetched(self) -> int:
        return sum(min(end, len(self.data)) - start for start, end in self.calls)


DATA = random.Random(1).randbytes(5 * MiB + 777)
ID = ("task/output.zip", (len(DATA), 1700000000.0))


def test_disk_cache_serves_a_second_instance_without_fetching(tmp_path):
    source = Source(DATA)
    fetch = DiskCache(tmp_path, 64 * MiB).wrap(source, ID)
    ranges = [(0, 100), (1000, 3 * MiB), (3 * MiB + 5, 5 * MiB + 777), (123, 456)]
    for start, end in ranges:
        assert fetch(start, end) == DATA[start:end]
    # Only what was asked for, each byte once (edges of granules are kept partially).
    assert source.fetched == 100 + (3 * MiB - 1000) + (2 * MiB + 772) + (456 - 123)
    again = Source(DATA)
    second = DiskCache(tmp_path, 64 * MiB)
    fetch = second.wrap(again, ID)
    for start, end in ranges:
        assert fetch(start, end) == DATA[start:end]
    assert again.calls == [], "a second mount fetches nothing it has on disk"
    assert second.hits > 0 and second.misses == 0


def test_disk_cache_fetches_only_the_missing_parts(tmp_path):
    source = Source(DATA)
    fetch = DiskCache(tmp_path, 64 * MiB).wrap(source, ID)
    fetch(GRANULE + 10, 2 * GRANULE + 10)
    source.calls.clear()
    assert fetch(0, 3 * GRANULE) == DATA[:3 * GRANULE]
    # Granule 0 and the tail of granule 2 were missing; granule 1's head too, but touching
    # ranges are fetched in one request per run of granules that are not fully there.
    assert all(start < GRANULE + 10 or start >= 2 * GRANULE for start, _ in source.calls)
    source.calls.clear()
    assert fetch(0, 3 * GRANULE) == DATA[:3 * GRANULE]
    assert source.calls == []


def test_disk_cache_serves_a_range_from_parts_written_apart(tmp_path):
    # Two mounts (or two fetches at once) each wrote a part without seeing the other's.
    first, second = DiskCache(tmp_path, 64 * MiB), DiskCache(tmp_path, 64 * MiB)
    first.wrap(Source(DATA), ID)(0, 1000)
    second.wrap(Source(DATA), ID)(1000, 5000)
    assert len([p for p in tmp_path.rglob("*") if p.is_file()]) == 2
    source = Source(DATA)
    assert DiskCache(tmp_path, 64 * MiB).wrap(source, ID)(10, 4000) == DATA[10:4000]
    assert source.calls == []


def test_disk_cache_another_version_is_another_object(tmp_path):
    cache = DiskCache(tmp_path, 64 * MiB)
    cache.wrap(Source(DATA), ID)(0, 1000)
    changed = bytes(b ^ 1 for b in DATA[:1000])
    fetch = cache.wrap(Source(changed), ("task/output.zip", (len(DATA), 1800000000.0)))
    assert fetch(0, 1000) == changed


def test_disk_cache_stays_under_its_limit_least_recently_used_out(tmp_path):
    limit = 3 * GRANULE + 1000
    cache = DiskCache(tmp_path, limit)
    source = Source(DATA)
    fetch = cache.wrap(source, ID)
    for index in (0, 1, 2):
        fetch(index * GRANULE, (index + 1) * GRANULE)
    fetch(0, 10)  # granule 0 is used again
    fetch(3 * GRANULE, 4 * GRANULE)  # granule 1 must go
    assert cache.size <= limit and cache.evicted == 1
    on_disk = sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file())
    assert on_disk <= limit
    source.calls.clear()
    fetch(0, GRANULE)
    fetch(2 * GRANULE, 4 * GRANULE)
    assert source.calls == []
    fetch(GRANULE, GRANULE + 10)
    assert source.calls == [(GRANULE, GRANULE + 10)]
    # A new instance finds the files and their use order, and keeps the limit too.
    smaller = DiskCache(tmp_path, 2 * GRANULE + 1000)
    assert smaller.size <= 2 * GRANULE + 1000


def test_damaged_cache_file_is_detected_and_fetched_again(tmp_path):
    cache = DiskCache(tmp_path, 64 * MiB)
    source = Source(DATA)
    cache.wrap(source, ID)(0, 2 * GRANULE)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 2
    raw = bytearray(files[0].read_bytes())
    raw[5000] ^= 0x40  # a flipped bit
    files[0].write_bytes(bytes(raw))
    files[1].write_bytes(files[1].read_bytes()[:1000])  # torn
    source.calls.clear()
    fresh = DiskCache(tmp_path, 64 * MiB)
    assert fresh.wrap(source, ID)(0, 2 * GRANULE) == DATA[:2 * GRANULE]
    assert fresh.corrupt == 2 and source.fetched == 2 * GRANULE
    source.calls.clear()
    assert fresh.wrap(source, ID)(0, 2 * GRANULE) == DATA[:2 * GRANULE]
    assert source.calls == [], "rewritten whole"


def test_disk_cache_leaves_no_temporary_files_and_cleans_old_ones(tmp_path):
    folder = tmp_path / "0123"
    folder.mkdir()
    (folder / ".tmp-1-dead").write_bytes(b"half a write")  # a crash between write and rename
    cache = DiskCache(tmp_path, 64 * MiB)
    assert not (folder / ".tmp-1-dead").exists()
    cache.wrap(Source(DATA), ID)(0, 3 * MiB)
    assert not [p for p in tmp_path.rglob(".tmp-*")]


def test_disk_cache_short_object_and_unwritable_folder(tmp_path):
    cache = DiskCache(tmp_path / "c", 64 * MiB)
    fetch = cache.wrap(Source(DATA[:1500]), ("short", 1))
    assert fetch(1000, 5000) == DATA[1000:1500]  # the object ends early: what there is
    assert fetch(1000, 1500) == DATA[1000:1500]
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    (tmp_path / "c").chmod(0o500)
    try:
        assert cache.wrap(Source(DATA), ("other", 1))(0, 10) == DATA[:10]  # still answers
    finally:
        (tmp_path / "c").chmod(0o700)
