"""Faults between the library and the real server, injected by ``faultproxy.FaultProxy``.

Transient faults (bursts of 5xx/429, a stall past the read timeout, a connection reset before
or in the middle of a body) must be invisible: the bytes come back exact. Lasting ones must
become a typed error within a bounded time. A damaged member must never become a file or
bytes handed to a reader. Each test adds what it injected and verified to the session figures.
"""

from __future__ import annotations

import os
import time

import pytest

from storagefs import storage
from storagefs.mount.backend import CachedBackend, ClientBackend
from storagefs.client import StorageClient
from storagefs.config import ClientConfig
from storagefs.errors import (CorruptArchive, PermissionDenied, ServerError, StorageError,
                              Timeout, TransferError)
from storagefs.mount.vfs import VFS

from archives import build_pyzip, mixed_bytes, text_bytes
from faultproxy import FaultProxy

MiB = 1 << 20
OBJECTS = "^/-/"


@pytest.fixture
def proxy(server):
    with FaultProxy(server.url) as p:
        yield p


def client_via(proxy: FaultProxy, server, **overrides) -> StorageClient:
    values = dict(api_url=proxy.url, api_key=server.api_key, retries=3, backoff_factor=0.01,
                  connect_timeout_s=1.0, read_timeout_s=1.0)
    values.update(overrides)
    return StorageClient(ClientConfig(**values))


@pytest.fixture
def data(server, unique, tmp_path):
    """A plain file and an archive with a large deflated member and a small stored one."""
    base = server.root / unique
    base.mkdir(parents=True, exist_ok=True)
    plain = mixed_bytes(51, 3 * MiB + 11)
    (base / "plain.bin").write_bytes(plain)
    members = {"big.dat": mixed_bytes(52, 2 * MiB + 3), "small.txt": text_bytes(53, 30_000)}
    archive, _ = build_pyzip(tmp_path, {"big.dat": members["big.dat"]}, "deflate", name="a.zip")
    stored, _ = build_pyzip(tmp_path, {"small.txt": members["small.txt"]}, "store",
                            name="s.zip")
    (base / "a.zip").write_bytes(archive.read_bytes())
    (base / "s.zip").write_bytes(stored.read_bytes())
    return {"dir": unique, "plain": plain, "members": members}


def read_plain(client: StorageClient, path: str) -> bytes:
    url = client.signed_urls([path], "download")[0]
    return client.read_range(url, 0, client.object_size(url) - 1)


# -- transient faults: retried and invisible ------------------------------------------------------

@pytest.mark.parametrize("code", [500, 502, 503, 504, 429])
def test_bursts_of_5xx_and_429_are_invisible(proxy, server, data, code, figures):
    path = f"{data['dir']}/plain.bin"
    with client_via(proxy, server) as client:
        for route in ("^/storage/contents", "^/storage/signed-urls", "^/storage/zip-contents",
                      OBJECTS):
            proxy.status(code, count=2, path=route, retry_after="0" if code == 429 else None)
        listing = client.contents(data["dir"] + "/")
        assert {e.name for e in listing.contents} == {"plain.bin", "a.zip", "s.zip"}
        assert client.zip_contents(f"{data['dir']}/a.zip").contents[0].name == "big.dat"
        assert read_plain(client, path) == data["plain"]
        proxy.status(code, count=2 if code in (429, 503) else 0, path="^/storage/copy")
        client.copy(path, f"{data['dir']}/copy.bin")  # a POST is resent on 429/503 only
    assert (server.root / data["dir"] / "copy.bin").read_bytes() == data["plain"]
    injected = proxy.injected[str(code)]
    assert injected >= 8
    figures["faults injected: HTTP 5xx/429 (client)"] += injected
    figures["faults survived: HTTP 5xx/429 (client)"] += injected
    figures["bytes verified (client)"] += len(data["plain"]) * 2


def test_resets_in_the_middle_of_a_body_are_resumed(proxy, server, data, figures, tmp_path):
    path = f"{data['dir']}/plain.bin"
    with client_via(proxy, server) as client:
        url = client.signed_urls([path], "download")[0]
        size = client.object_size(url)  # a one-byte GET: asked before the faults are set
        proxy.reset(after_bytes=100_000, count=3, path=OBJECTS)
        assert client.read_range(url, 0, size - 1) == data["plain"]
        assert proxy.injected["reset"] == 3
        proxy.drop(count=1, path=OBJECTS)  # reset before any answer: urllib3 retries
        assert read_plain(client, path) == data["plain"]
        with storage.using(client, progress=False):
            # The first match is the one-byte GET that asks the file's size (nothing to cut).
            proxy.reset(after_bytes=5000, count=3, path=OBJECTS)
            storage.download(path, str(tmp_path / "dl"))
            proxy.reset(after_bytes=70_000, count=2, path=OBJECTS)
            storage.download(f"{data['dir']}/a.zip/big.dat", str(tmp_path / "dl"))
    assert (tmp_path / "dl" / path).read_bytes() == data["plain"]
    member = tmp_path / "dl" / data["dir"] / "a" / "big.dat"
    assert member.read_bytes() == data["members"]["big.dat"]
    injected = proxy.injected["reset"] + proxy.injected["drop"]
    assert injected == 8
    figures["faults injected: connection resets (client)"] += injected
    figures["faults survived: connection resets (client)"] += injected
    figures["bytes verified (client)"] += 3 * len(data["plain"]) + len(data["members"]["big.dat"])


def test_stalls_past_the_read_timeout_are_retried(proxy, server, data, figures):
    path = f"{data['dir']}/plain.bin"
    with client_via(proxy, server, read_timeout_s=0.5) as client:
        url = client.signed_urls([path], "download")[0]
        proxy.stall(3, count=1, path=OBJECTS)  # before the answer
        assert client.read_range(url, 0, len(data["plain"]) - 1) == data["plain"]
        proxy.stall(3, count=1, path=OBJECTS, after_bytes=200_000)  # in the middle of it
        assert client.read_range(url, 0, len(data["plain"]) - 1) == data["plain"]
        proxy.stall(3, count=1, path="^/storage/contents")
        assert client.contents(data["dir"] + "/").contents
    assert proxy.injected["stall"] == 2 and proxy.injected["stall mid-body"] == 1
    figures["faults injected: stalls past the timeout (client)"] += 3
    figures["faults survived: stalls past the timeout (client)"] += 3
    figures["bytes verified (client)"] += 2 * len(data["plain"])


def test_a_replaced_object_is_not_resumed_into_a_mix(proxy, server, data, monkeypatch):
    """A body resumed after a reset must come from the same object version, or fail."""
    path = f"{data['dir']}/plain.bin"
    target = server.root / path
    with client_via(proxy, server) as client:
        url = client.signed_urls([path], "download")[0]
        real_sleep = time.sleep

        def replace_then_sleep(seconds):
            target.write_bytes(mixed_bytes(99, len(data["plain"])))  # same size, new bytes
            os.utime(target, (time.time() + 5, time.time() + 5))
            real_sleep(seconds)

        monkeypatch.setattr("storagefs.client.time.sleep", replace_then_sleep)
        proxy.reset(after_bytes=100_000, count=1, path=OBJECTS)
        with pytest.raises(TransferError, match="changed while it was read"):
            client.read_range(url, 0, len(data["plain"]) - 1)


# -- lasting faults: a typed error, soon ---------------------------------------------------------

def test_lasting_faults_fail_within_a_bounded_time(proxy, server, data, figures):
    path = f"{data['dir']}/plain.bin"
    cases = {
        "503 forever": (lambda: proxy.status(503, count=None), ServerError),
        "stall forever": (lambda: proxy.stall(30, count=None), Timeout),
        "reset forever": (lambda: proxy.reset(after_bytes=1000, count=None, path=OBJECTS),
                          TransferError),
        "down": (proxy.down, TransferError),
    }
    with client_via(proxy, server, read_timeout_s=0.5) as client:
        url = client.signed_urls([path], "download")[0]
        for name, (inject, error) in cases.items():
            inject()
            started = time.monotonic()
            with pytest.raises(error):
                client.read_range(url, 0, len(data["plain"]) - 1)
            elapsed = time.monotonic() - started
            # a stall costs two read timeouts (the first try and one more), the rest less
            assert elapsed < 2 * 0.5 + 2, f"{name}: {elapsed:.1f} s"
            figures["lasting faults: slowest typed error (client, s)"] = max(
                figures["lasting faults: slowest typed error (client, s)"], round(elapsed, 1))
            proxy.clear()
            proxy.up()
        assert read_plain(client, path) == data["plain"]  # and back to normal at once
    figures["faults injected: lasting (client)"] += len(cases)


# -- damaged data: never returned ---------------------------------------------------------------

def test_flipped_byte_in_a_member_never_becomes_data(proxy, server, data, tmp_path, figures):
    archive = f"{data['dir']}/s.zip"
    with client_via(proxy, server) as client:
        entry = client.zip_contents(archive).contents[0]
        at = entry.range_start + 1234  # inside the stored member's data
        proxy.flip(at, count=None)
        with storage.using(client, progress=False):
            with pytest.raises(CorruptArchive, match="CRC-32"):
                storage.download(f"{archive}/small.txt", str(tmp_path / "dl"))
        assert not any(p.is_file() for p in (tmp_path / "dl").rglob("*"))
        # The mount's reader: no byte of a damaged small member is ever handed out.
        vfs = VFS(CachedBackend(ClientBackend(client)))
        reader = vfs.open(f"/{archive}/small.txt")
        for offset in (0, 4096, 20_000):
            with pytest.raises(CorruptArchive):
                reader.read(offset, 4096)
        reader.close()
        flips = proxy.injected["flip"]
        proxy.clear()  # the damage was in transit: a fresh read is whole, or refused still
        try:
            reader = vfs.open(f"/{archive}/small.txt")
            assert reader.read(0, 1 << 20) == data["members"]["small.txt"]
            figures["members whole again once transit damage stopped (client)"] += 1
        except CorruptArchive:
            figures["members kept refused after transit damage stopped (client)"] += 1
    assert flips >= 1
    figures["faults injected: flipped bytes (client)"] += flips
    figures["flipped bytes caught (client)"] += flips


def test_expired_url_during_a_read_is_renewed(make_server, tmp_path, figures):
    srv = make_server("--url-ttl", "2")
    (srv.root / "d").mkdir()
    blob = mixed_bytes(61, 6 * MiB)
    (srv.root / "d" / "f.bin").write_bytes(blob)
    with FaultProxy(srv.url) as proxy, client_via(proxy, srv) as client:
        vfs = VFS(CachedBackend(ClientBackend(client)))
        reader = vfs.open("/d/f.bin")
        out, offset, started = bytearray(), 0, time.monotonic()
        proxy.status(403, count=1, path=OBJECTS)  # one URL refused as expired before its time
        while offset < len(blob):
            out += reader.read(offset, 128 * 1024)
            offset += 128 * 1024
            time.sleep(0.07)  # a slow reader: the URL expires part-way
        reader.close()
        assert bytes(out) == blob
        assert time.monotonic() - started > 3
        issued = sum(v for k, v in srv.metrics().items()
                     if k.startswith("storagefs_requests_total") and "signed-urls" in k)
    assert proxy.injected["403"] == 1
    assert issued >= 2, "the URL should have been renewed after the 403"
    figures["signed URLs renewed during a read (client)"] += int(issued) - 1
    figures["bytes verified (client)"] += len(blob)


def test_no_fault_leaks_an_untyped_exception(proxy, server, data):
    """Whatever the proxy does, the library raises StorageErrors only."""
    path = f"{data['dir']}/plain.bin"
    with client_via(proxy, server, retries=0, read_timeout_s=0.3) as client:
        url = client.signed_urls([path], "download")[0]
        for inject in (lambda: proxy.status(500), lambda: proxy.stall(1),
                       lambda: proxy.reset(10), lambda: proxy.drop(),
                       lambda: proxy.stall(1, after_bytes=10)):
            inject()
            with pytest.raises(StorageError):
                client.read_range(url, 0, 100_000)
            proxy.clear()
        with pytest.raises(PermissionDenied):
            client.read_range(url.replace("sig=", "sig=0"), 0, 10)
        assert client.read_range(url, 0, 9) == data["plain"][:10]
