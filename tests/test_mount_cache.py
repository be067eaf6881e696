"""The mount's data path for real: random reads into a deflated member, and --cache-dir.

A FUSE mount of the shared reference server; what the mount fetched is read from the server's
``/metrics``. The unit tests of the pieces are in test_reader.py and test_cache.py.
"""

from __future__ import annotations

import dataclasses
import os
import random
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from archives import mixed_bytes, text_bytes
from mountharness import assert_clean_log, foreground_mount, object_reads, require_fuse

ROOT = "mnt-cache-tests"
MiB = 1 << 20
MEMBER = text_bytes(61, 6 * MiB) + mixed_bytes(62, 2 * MiB + 333)  # several 4 MiB intervals
PLAIN = mixed_bytes(63, 3 * MiB + 9)


@pytest.fixture(scope="module")
def stored(server, tmp_path_factory):
    work = tmp_path_factory.mktemp("mount-cache")
    (server.root / ROOT).mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(server.root / ROOT / "run.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("out/field.dat", MEMBER)
        zf.writestr("out/after.txt", b"after\n" * 1000)
    (server.root / ROOT / "plain.bin").write_bytes(PLAIN)
    return work


def object_bytes(server) -> float:
    return sum(v for k, v in server.metrics().items()
               if k.startswith("storagefs_object_read_bytes_total"))


def preads(path, data: bytes, seed: int, count: int = 120) -> None:
    rng = random.Random(seed)
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(count):
            offset = rng.randrange(len(data))
            length = rng.choice([1, 4096, 65536, 300_000])
            assert os.pread(fd, length, offset) == data[offset:offset + length], offset
    finally:
        os.close(fd)


def test_random_reads_and_a_second_mount_from_the_disk_cache(server, stored, tmp_path):
    require_fuse()
    cache_dir = tmp_path / "cache"
    member = f"{ROOT}/run.zip/out/field.dat"
    for attempt in ("first", "second"):
        mountpoint, log = tmp_path / f"m-{attempt}", tmp_path / f"{attempt}.log"
        with foreground_mount(server, mountpoint, log, "--cache-dir", str(cache_dir),
                              "--cache-size", "32M"):
            before, before_bytes = object_reads(server), object_bytes(server)
            preads(mountpoint / member, MEMBER, seed=1)  # random first: snapshots as it goes
            assert (mountpoint / member).read_bytes() == MEMBER
            preads(mountpoint / member, MEMBER, seed=2)  # after a pass: from snapshots
            assert (mountpoint / f"{ROOT}/plain.bin").read_bytes() == PLAIN
            preads(mountpoint / f"{ROOT}/plain.bin", PLAIN, seed=3, count=30)
            reads, fetched = object_reads(server) - before, object_bytes(server) - before_bytes
        assert_clean_log(log)
        if attempt == "first":
            compressed = zipfile.ZipFile(server.root / ROOT / "run.zip").getinfo(
                "out/field.dat").compress_size
            assert reads > 0
            assert fetched <= 1.5 * (compressed + len(PLAIN)), "random reads fetch a bounded part"
        else:
            assert reads == 0 and fetched == 0, "the second mount fetched nothing"
    assert any(cache_dir.rglob("*-*"))


def test_parallel_readers_through_the_mount(server, stored, tmp_path):
    require_fuse()
    mountpoint, log = tmp_path / "m", tmp_path / "m.log"
    with foreground_mount(server, mountpoint, log, "--cache-size", "16M"):
        errors: list[str] = []

        def work(seed: int) -> None:
            try:
                if seed % 2:
                    assert (mountpoint / f"{ROOT}/run.zip/out/field.dat").read_bytes() == MEMBER
                else:
                    preads(mountpoint / f"{ROOT}/run.zip/out/field.dat", MEMBER, seed, 40)
            except AssertionError as exc:
                errors.append(f"{seed}: {exc}")

        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors
    assert_clean_log(log)


def _requests_made(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """Requests by endpoint between two /metrics snapshots (/metrics itself not counted)."""
    made: dict[str, int] = {}
    for key, value in after.items():
        if key.startswith("storagefs_requests_total{") and 'endpoint="/metrics"' not in key:
            endpoint = key.split('endpoint="', 1)[1].split('"', 1)[0]
            if value - before.get(key, 0.0):
                made[endpoint] = made.get(endpoint, 0) + int(value - before.get(key, 0.0))
    return made


def test_a_small_member_cold_costs_four_requests_and_the_end_record(make_server, tmp_path):
    """Listing its folder, the archive's listing, a signed URL, one ranged GET (the local
    header's proof of the data offset and the data together): the top folder is known from
    the mount's start-up check. An archive big enough to hold ``LAZY_MEMBERS`` members costs
    one more small GET before its listing: its end record, which says whether to list it whole
    (``mount/archivelisting.py``)."""
    require_fuse()
    server = make_server()
    small = text_bytes(64, 150_000)
    (server.root / "runs").mkdir(parents=True)
    with zipfile.ZipFile(server.root / "runs" / "task.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.dat", mixed_bytes(65, 3 * MiB))
        zf.writestr("logs/small.txt", small)
    mountpoint, log = tmp_path / "m", tmp_path / "m.log"
    with foreground_mount(server, mountpoint, log):
        before = server.metrics()
        assert (mountpoint / "runs/task.zip/logs/small.txt").read_bytes() == small
        made = _requests_made(before, server.metrics())
    assert_clean_log(log)
    assert made == {"/storage/contents": 1, "/storage/zip-contents": 1,
                    "/storage/signed-urls": 1, "object": 2}, made


def test_reading_through_a_long_link(server, stored, tmp_path):
    """A 50 ms round trip (``scripts/delayproxy.py``): the mount reads the same bytes,
    sequentially and at random, with its window of ranges in flight widened."""
    require_fuse()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    from delayproxy import start_delay_proxy

    port, stop = start_delay_proxy(int(server.url.rsplit(":", 1)[1]), 0.025)
    try:
        delayed = dataclasses.replace(server, url=f"http://127.0.0.1:{port}")
        mountpoint, log = tmp_path / "m", tmp_path / "m.log"
        with foreground_mount(delayed, mountpoint, log, "--cache-size", "64M", "--debug"):
            assert (mountpoint / f"{ROOT}/run.zip/out/field.dat").read_bytes() == MEMBER
            assert (mountpoint / f"{ROOT}/plain.bin").read_bytes() == PLAIN
            preads(mountpoint / f"{ROOT}/plain.bin", PLAIN, seed=4, count=10)
    finally:
        stop()
    assert_clean_log(log)
    windows = [int(line.split("window ")[1].split()[0]) for line in log.read_text().splitlines()
               if "read ahead:" in line]
    assert windows and max(windows) > 2 * MiB, "the window grew beyond two ranges"
