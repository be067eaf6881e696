"""The mount's data path for real: random reads into a deflated member, and --cache-dir.

A FUSE mount of the shared reference server; what the mount fetched is read from the server's
``/metrics``. The unit tests of the pieces are in test_reader.py and test_cache.py.
"""

from __future__ import annotations

import os
import random
import threading
import zipfile

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
