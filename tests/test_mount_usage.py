"""What ``storagefs mount`` says to its user: sizes checked with their range, a line when
mounted and unmounted, where the log goes, where a refused key came from, and ``df``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from storagefs.mount.backend import CachedBackend
from storagefs.mount.vfs import VFS

from fakes import FakeStorage
from mountharness import force_unmount, foreground_mount, require_fuse, storagefs


@pytest.mark.parametrize("args, needle", [
    (["--cache-size", "0"], "at least 16M"),
    (["--cache-size", "1K"], "at least 16M"),
    (["--cache-size", "-5M"], "cannot be negative"),
    (["--cache-size=-5M"], "cannot be negative"),
    (["--cache-dir-size", "1K"], "at least 16M"),
    (["--cache-size", "lots"], "not a size"),
])
def test_sizes_are_checked_with_their_range(tmp_path, args, needle):
    result = storagefs("mount", str(tmp_path), "--api-url", "http://127.0.0.1:9",
                       "--api-key", "k", *args)
    assert result.returncode == 2, result
    last = result.stderr.strip().splitlines()[-1]
    assert needle in last and args[0].split("=")[0] in last, result.stderr
    if needle.startswith("at least"):
        assert "accepted: 16M " in last  # the whole accepted range


def test_statfs_shows_used_space_and_room_left():
    pytest.importorskip("fuse", exc_type=OSError)
    from storagefs.mount.fuseops import StorageOperations

    storage = FakeStorage({"a/b.txt": b"x" * 10_000})
    st = StorageOperations(VFS(CachedBackend(storage))).statfs("/")
    used = (st["f_blocks"] - st["f_bfree"]) * st["f_frsize"]
    assert 10_000 <= used < 10_000 + st["f_frsize"]
    assert st["f_bavail"] == st["f_bfree"] > st["f_blocks"] // 2  # not full
    assert st["f_ffree"] > 0


def test_foreground_says_when_mounted_and_unmounted(server, tmp_path):
    require_fuse()
    mountpoint = tmp_path / "fg"
    with foreground_mount(server, mountpoint, tmp_path / "fg.log") as process:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert "mounted" in first and str(mountpoint) in first and "umount" in first, first
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=15)
        assert process.returncode == 0
        assert out.strip().splitlines() == [f"unmounted {mountpoint}"], out


def test_background_says_mounted_and_where_it_logs(server, tmp_path):
    require_fuse()
    mountpoint, state = tmp_path / "bg", tmp_path / "state"
    mountpoint.mkdir()
    env = {**os.environ, "XDG_STATE_HOME": str(state)}
    result = storagefs("mount", str(mountpoint), "--api-url", server.url, "--api-key",
                       server.api_key, env=env)
    try:
        assert result.returncode == 0, result.stderr
        lines = result.stdout.strip().splitlines()
        assert len(lines) == 1 and f"at {mountpoint}" in lines[0], result.stdout
        if not os.path.exists("/dev/log"):
            log = state / "storagefs" / "mount-bg.log"
            assert str(log) in lines[0]
            assert log.exists()
        os.listdir(mountpoint)
    finally:
        force_unmount(mountpoint)


@pytest.mark.parametrize("where", ["--api-key", "INDUCTIVA_API_KEY"])
def test_refused_key_names_where_it_came_from(server, tmp_path, where):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "INDUCTIVA_API_KEY": "wrong-key"}
    args = ["mount", str(empty), "--api-url", server.url]
    if where == "--api-key":
        args += ["--api-key", "wrong-too"]
    result = subprocess.run([sys.executable, "-m", "storagefs", *args], capture_output=True,
                            text=True, timeout=60, env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused" in lines[0] and f"from {where}" in lines[0], lines
    assert not os.path.ismount(Path(empty))
