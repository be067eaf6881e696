"""Compressed ranges fetched ahead over a long link: the window follows rate x round trip.

The feed (``readahead.RangeFeed``) is driven here as a decoder drives it, over a fetch that
behaves like a ranged GET across a link with a fixed round trip and a bandwidth per
connection; the mount-level figures (a real mount through ``scripts/delayproxy.py``) are in
``test_mount_cache.py`` and ``scripts/bench_link.py``.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from storagefs.mount.read.blockcache import BlockCache
from storagefs.mount.read.readahead import LinkMeter, RangeFeed

KiB, MiB = 1 << 10, 1 << 20


class Link:
    """``fetch(start, end)`` over bytes, as a ranged GET over a link: ``rtt`` seconds, then
    the body at ``per_connection`` bytes/s; counts requests and the most in flight at once."""

    def __init__(self, data: bytes, rtt: float, per_connection: float = 400e6) -> None:
        self.data, self.rtt, self.per_connection = data, rtt, per_connection
        self.calls: list[tuple[int, int]] = []
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()

    def __call__(self, start: int, end: int) -> bytes:
        with self._lock:
            self.calls.append((start, end))
            self.in_flight += end - start
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(self.rtt + (end - start) / self.per_connection)
            return self.data[start:end]
        finally:
            with self._lock:
                self.in_flight -= end - start


def consume(feed: RangeFeed, rate: float) -> tuple[bytes, float]:
    """Take every piece as a decoder working at ``rate`` bytes/s would: the bytes, the time."""
    started = time.monotonic()
    got = bytearray()
    feed.set_depth(2)
    while (piece := feed.next()) is not None:
        got += piece
        time.sleep(len(piece) / rate)
    return bytes(got), time.monotonic() - started


@pytest.fixture
def pool():
    with ThreadPoolExecutor(16) as executor:
        yield executor


def test_a_long_link_is_filled_as_if_it_were_short(pool):
    """40 MiB at 100 MB/s over a 50 ms round trip: with two ranges in flight the decoder
    would wait for most of each round trip (about 2 s); the window grows to the
    bandwidth-delay product (5 MB) and the pass takes little more than the decoder's time."""
    data = bytes(range(256)) * (40 * MiB // 256)
    link = Link(data, rtt=0.05)
    meter = LinkMeter(lambda: 32 * MiB)
    feed = RangeFeed(link, 0, len(data), pool=pool, budget=BlockCache(256 * MiB), link=meter)
    got, seconds = consume(feed, rate=100e6)
    assert got == data
    ideal = len(data) / 100e6
    assert seconds < ideal * 1.35 + 0.2, (seconds, feed.window, feed.stalls)
    assert feed.window >= 5 * MiB, "the window covers rate x round trip"
    assert link.most_in_flight >= 5 * MiB
    assert max(end - start for start, end in link.calls) <= 4 * MiB
    assert meter.window == feed.window, "the mount remembers the window for its next stream"


def test_a_short_link_keeps_a_small_window(pool):
    """On loopback a request ends long before the decoder needs it: a few ranges ahead,
    not the link's limit (memory held for nothing)."""
    data = bytes(range(256)) * (24 * MiB // 256)
    link = Link(data, rtt=0.0002, per_connection=2e9)
    feed = RangeFeed(link, 0, len(data), pool=pool, budget=BlockCache(256 * MiB),
                     link=LinkMeter(lambda: 32 * MiB))
    got, _ = consume(feed, rate=150e6)
    assert got == data
    assert feed.window <= 6 * MiB, feed.window
    assert link.most_in_flight <= 8 * MiB


def test_the_window_stays_within_the_link_limit_and_the_budget(pool):
    data = bytes(range(256)) * (24 * MiB // 256)
    link = Link(data, rtt=0.05)
    budget = BlockCache(64 * MiB)
    peak = []
    feed = RangeFeed(link, 0, len(data), pool=pool, budget=budget,
                     link=LinkMeter(lambda: 3 * MiB))
    feed.set_depth(2)
    while (piece := feed.next()) is not None:
        peak.append(budget.reserved)
        time.sleep(len(piece) / 400e6)
    assert feed.window <= 3 * MiB
    assert link.most_in_flight <= 3 * MiB + 1 * MiB  # the window and the range that tops it up
    assert max(peak) <= budget.capacity * 3 // 4
    pool.shutdown(wait=True)
    assert budget.reserved == 0, "every buffer in flight was given back"


def test_a_new_stream_starts_from_the_window_the_last_one_needed(pool):
    data = bytes(range(256)) * (16 * MiB // 256)
    meter = LinkMeter(lambda: 32 * MiB)
    first = RangeFeed(Link(data, rtt=0.05), 0, len(data), pool=pool, link=meter)
    consume(first, rate=100e6)
    assert meter.window >= 4 * MiB
    link = Link(data, rtt=0.05)
    second = RangeFeed(link, 0, len(data), pool=pool, link=meter)
    second.next()
    second.set_depth(2)
    time.sleep(0.01)
    assert second.window == meter.window
    assert sum(end - start for start, end in link.calls) >= 4 * MiB, \
        "the second stream asked for its window at once, without ramping up again"
    second.close()


def test_the_allocator_gives_its_free_pages_back_as_blocks_are_evicted(monkeypatch):
    """Evicted blocks leave holes in the heap that glibc keeps: every ``trim_every`` evicted
    bytes the cache has them given back (``malloc_trim``)."""
    from storagefs.mount.read import blockcache

    calls = []
    monkeypatch.setattr(blockcache, "give_back_free_memory", lambda: calls.append(1))
    cache = BlockCache(8 * MiB, trim_every=4 * MiB)
    for index in range(8):  # fills the cache: nothing evicted yet
        cache.put(index, bytes(1 * MiB))
    assert not calls
    for index in range(8, 16):  # 8 MiB evicted
        cache.put(index, bytes(1 * MiB))
    assert len(calls) == 2 and cache.stats()["trims"] == 2
    monkeypatch.undo()
    blockcache.give_back_free_memory()  # the real one: harmless anywhere
