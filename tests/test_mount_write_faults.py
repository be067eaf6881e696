"""Writing through ``storagefs mount --read-write`` when things fail: the server answering
500/503 to uploads, killed in the middle of one, the key revoked, the staging disk full, the
mount ended while an upload runs. Every case either stores the whole new content, or keeps
the old content in storage and the new one in the recovery folder, with an error to the
writer; no partial object is ever stored."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from faultproxy import FaultProxy, wait_until
from mountharness import assert_clean_log, foreground_mount, require_fuse


@pytest.fixture(autouse=True)
def _fuse():
    require_fuse()


def rw_mount(server, tmp_path: Path, *extra: str, name: str = "mnt"):
    return foreground_mount(server, tmp_path / name, tmp_path / f"{name}.log", "--read-write",
                            "--write-dir", str(tmp_path / "wd"), *extra)


def kept(tmp_path: Path) -> dict[str, bytes]:
    """The recovery folder: storage path -> content kept."""
    folder = tmp_path / "wd" / "recovery"
    found = {}
    for note in sorted(folder.glob("*.json")) if folder.exists() else []:
        found[json.loads(note.read_text())["path"]] = note.with_suffix(".data").read_bytes()
    return found


def no_partial_objects(root: Path) -> None:
    """Nothing half-stored: only the files the test wrote, whole."""
    leftovers = [p for p in root.rglob("*") if p.name.startswith("upload-")
                 and ".storagefs" not in p.parts]
    assert not leftovers, leftovers


@pytest.mark.parametrize("status", [500, 503])
def test_upload_refused_keeps_old_content_and_new_in_recovery(make_server, tmp_path, status,
                                                              figures):
    server = make_server()
    (server.root / "task").mkdir()
    (server.root / "task" / "input.txt").write_bytes(b"old content")
    new = os.urandom(1 << 20)
    with FaultProxy(server.url) as proxy:
        via = type("Via", (), {"url": proxy.url, "api_key": server.api_key})()
        with rw_mount(via, tmp_path):
            path = tmp_path / "mnt" / "task" / "input.txt"
            assert path.read_bytes() == b"old content"
            proxy.status(status, count=None, path="^/-/", method="PUT")
            f = open(path, "wb")
            f.write(new)
            with pytest.raises(OSError) as info:
                f.close()
            assert info.value.errno == errno.EIO
            figures["write faults survived"] += 1
            assert (server.root / "task" / "input.txt").read_bytes() == b"old content"
            assert wait_until(lambda: kept(tmp_path).get("task/input.txt") == new)
            proxy.clear()
        log = (tmp_path / "mnt.log").read_text()
        assert "kept in" in log and str(tmp_path / "wd" / "recovery") in log
        # the next mount retries the recovery folder and says so
        with rw_mount(via, tmp_path):
            assert wait_until(lambda: (server.root / "task" / "input.txt").read_bytes() == new,
                              timeout=30)
            assert wait_until(lambda: not kept(tmp_path))
            assert (tmp_path / "mnt" / "task" / "input.txt").read_bytes() == new
    assert "stored from the recovery folder" in (tmp_path / "mnt.log").read_text()
    no_partial_objects(server.root)


def test_server_killed_during_an_upload(make_server, tmp_path):
    root = tmp_path / "root"
    server = make_server(root=root)
    (root / "f").mkdir()
    (root / "f" / "big.bin").write_bytes(b"old" * 1000)
    new = os.urandom(40 << 20)
    with FaultProxy(server.url) as proxy:
        via = type("Via", (), {"url": proxy.url, "api_key": server.api_key})()
        with rw_mount(via, tmp_path):
            path = tmp_path / "mnt" / "f" / "big.bin"
            proxy.stall(3, count=1, path="^/-/", method="PUT")
            errors: list[BaseException] = []

            def write() -> None:
                try:
                    with open(path, "wb") as f:
                        f.write(new)
                except OSError as exc:
                    errors.append(exc)

            writer = threading.Thread(target=write)
            writer.start()
            assert wait_until(lambda: proxy.injected["stall"] >= 1, timeout=60)
            server.process.kill()  # in the middle of the upload
            server.process.wait(10)
            writer.join(120)
            assert errors and errors[0].errno == errno.EIO
            assert (root / "f" / "big.bin").read_bytes() == b"old" * 1000
            assert wait_until(lambda: kept(tmp_path).get("f/big.bin") == new)
        restarted = make_server(root=root, port=int(server.url.rsplit(":", 1)[1]))
        assert restarted.url == server.url
        with rw_mount(via, tmp_path):
            assert wait_until(lambda: (root / "f" / "big.bin").stat().st_size == len(new),
                              timeout=60)
            assert (root / "f" / "big.bin").read_bytes() == new
    no_partial_objects(root)


def test_key_revoked(make_server, tmp_path):
    root = tmp_path / "root"
    server = make_server(root=root, api_key="old-key.1")
    (root / "d").mkdir()
    (root / "d" / "a.txt").write_text("old")
    with rw_mount(server, tmp_path):
        path = tmp_path / "mnt" / "d" / "a.txt"
        assert path.read_text() == "old"
        port = int(server.url.rsplit(":", 1)[1])
        server.stop()
        make_server(root=root, port=port, api_key="new-key.2")  # the mount's key is refused
        f = open(path, "w")
        f.write("new")
        with pytest.raises(OSError) as info:
            f.close()
        assert info.value.errno == errno.EACCES
        assert (root / "d" / "a.txt").read_text() == "old"
    assert kept(tmp_path) == {"d/a.txt": b"new"}


def test_staging_disk_full(server, unique, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    wd = tmp_path / "wd"
    wd.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(wd)], check=True)
    try:
        (server.root / unique).mkdir()
        (server.root / unique / "kept.bin").write_bytes(b"old")
        with rw_mount(server, tmp_path):
            top = tmp_path / "mnt" / unique
            small = os.urandom(300_000)
            (top / "small.bin").write_bytes(small)  # fits: stored
            assert (server.root / unique / "small.bin").read_bytes() == small
            with pytest.raises(OSError) as info:
                (top / "kept.bin").write_bytes(os.urandom(3 << 20))
            assert info.value.errno == errno.ENOSPC
            assert (server.root / unique / "kept.bin").read_bytes() == b"old"
            with pytest.raises(OSError) as info:
                (top / "new.bin").write_bytes(os.urandom(3 << 20))
            assert info.value.errno == errno.ENOSPC
            assert not (server.root / unique / "new.bin").exists()
            assert wait_until(lambda: not any((wd / "staging").rglob("*.data")))
            (top / "after.bin").write_bytes(small)  # the space came back
            assert (server.root / unique / "after.bin").read_bytes() == small
        assert kept(tmp_path) == {}
        assert_clean_log(tmp_path / "mnt.log")
    finally:
        subprocess.run(["umount", str(wd)], check=False)


def test_unmount_waits_for_uploads(make_server, tmp_path):
    server = make_server()
    (server.root / "w").mkdir()
    data = os.urandom(2 << 20)
    with FaultProxy(server.url) as proxy:
        via = type("Via", (), {"url": proxy.url, "api_key": server.api_key})()
        with rw_mount(via, tmp_path) as process:
            proxy.stall(4, count=1, path="^/-/", method="PUT")
            writer = threading.Thread(
                target=lambda: (tmp_path / "mnt" / "w" / "late.bin").write_bytes(data))
            writer.start()
            assert wait_until(lambda: proxy.injected["stall"] >= 1, timeout=30)
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)  # the mount is told to end mid-upload
            process.wait(60)
            writer.join(30)
            assert time.monotonic() - started < 60
            err = process.stderr.read() if process.stderr else ""
    assert (server.root / "w" / "late.bin").read_bytes() == data, err
    assert kept(tmp_path) == {}


def test_write_max_size(server, tmp_path):
    (server.root / "limits").mkdir(exist_ok=True)
    (server.root / "limits" / "f.bin").write_bytes(b"old")
    with rw_mount(server, tmp_path, "--write-max-size", "1M"):
        path = tmp_path / "mnt" / "limits" / "f.bin"
        (tmp_path / "mnt" / "limits" / "ok.bin").write_bytes(b"x" * (1 << 20))
        with pytest.raises(OSError) as info:
            path.write_bytes(b"y" * ((1 << 20) + 1))
        assert info.value.errno == errno.EFBIG
        assert (server.root / "limits" / "f.bin").read_bytes() == b"old"
        assert (server.root / "limits" / "ok.bin").stat().st_size == 1 << 20
    assert kept(tmp_path) == {}


def test_mount_killed_with_a_file_open(server, tmp_path):
    """A copy left open by a mount that died may be incomplete: the next mount keeps and
    reports it, and never uploads it on its own."""
    (server.root / "killed").mkdir(exist_ok=True)
    (server.root / "killed" / "f.txt").write_text("old")
    with rw_mount(server, tmp_path) as process:
        handle = open(tmp_path / "mnt" / "killed" / "f.txt", "w")
        handle.write("half of the new")
        handle.flush()
        process.kill()
        process.wait(10)
        try:
            handle.close()
        except OSError:
            pass
    assert (server.root / "killed" / "f.txt").read_text() == "old"
    with rw_mount(server, tmp_path):
        assert (tmp_path / "mnt" / "killed" / "f.txt").read_text() == "old"
    notes = [json.loads(p.read_text()) for p in (tmp_path / "wd" / "recovery").glob("*.json")]
    assert [(n["path"], n["closed"]) for n in notes] == [("killed/f.txt", False)]
    assert kept(tmp_path) == {"killed/f.txt": b"half of the new"}
    assert "open when an earlier mount ended" in (tmp_path / "mnt.log").read_text()
    assert (server.root / "killed" / "f.txt").read_text() == "old"


def test_recovery_folder_retried_while_mounted(make_server, tmp_path):
    server = make_server()
    (server.root / "r").mkdir()
    (server.root / "r" / "a.txt").write_text("old")
    with FaultProxy(server.url) as proxy:
        via = type("Via", (), {"url": proxy.url, "api_key": server.api_key})()
        with rw_mount(via, tmp_path, "--write-retry-interval", "1"):
            proxy.status(503, count=None, path="^/-/", method="PUT")
            with pytest.raises(OSError) as info:
                (tmp_path / "mnt" / "r" / "a.txt").write_text("new")
            assert info.value.errno == errno.EIO
            assert wait_until(lambda: kept(tmp_path) == {"r/a.txt": b"new"})
            assert (server.root / "r" / "a.txt").read_text() == "old"
            proxy.clear()  # the server is back: the same mount stores it
            assert wait_until(lambda: (server.root / "r" / "a.txt").read_text() == "new",
                              timeout=30)
            assert wait_until(lambda: not kept(tmp_path))
            assert (tmp_path / "mnt" / "r" / "a.txt").read_text() == "new"
