"""``storagefs mount --read-write`` on real FUSE mounts against the real server: files and
folders made, changed, moved and removed through the mount arrive in storage byte for byte,
the mount shows each change at once, and archives and read-only mounts refuse changes."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import sqlite3
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from mountharness import (assert_clean_log, force_unmount, foreground_mount, require_fuse,
                          storagefs)


@pytest.fixture(autouse=True)
def _fuse():
    require_fuse()


def rw_mount(server, tmp_path: Path, *extra: str):
    return foreground_mount(server, tmp_path / "mnt", tmp_path / "mount.log", "--read-write",
                            "--write-dir", str(tmp_path / "wd"), *extra)


def stored(server, path: str) -> bytes:
    return (server.root / path).read_bytes()


def test_new_files_are_stored_and_shown_at_once(server, unique, tmp_path):
    (server.root / unique).mkdir()
    (server.root / unique / "old.txt").write_bytes(b"old")
    data = os.urandom(3 << 20)
    with rw_mount(server, tmp_path, "--metadata-ttl", "300"):
        top = tmp_path / "mnt" / unique
        assert sorted(os.listdir(top)) == ["old.txt"]  # listing cached for 300 s
        (top / "new.bin").write_bytes(data)
        (top / "a" / "b").mkdir(parents=True)
        (top / "a" / "b" / "deep.txt").write_text("deep")
        (top / "empty").touch()
        assert sorted(os.listdir(top)) == ["a", "empty", "new.bin", "old.txt"]
        assert (top / "new.bin").stat().st_size == len(data)
        assert (top / "new.bin").read_bytes() == data
        assert (top / "a" / "b" / "deep.txt").read_text() == "deep"
        assert stored(server, f"{unique}/new.bin") == data
        assert stored(server, f"{unique}/a/b/deep.txt") == b"deep"
        assert stored(server, f"{unique}/empty") == b""
        # a rewrite in place, an append and a shorter rewrite: the listing follows at once
        with open(top / "new.bin", "r+b") as f:
            f.seek(1000)
            f.write(b"X" * 10)
        expected = data[:1000] + b"X" * 10 + data[1010:]
        assert stored(server, f"{unique}/new.bin") == expected
        with open(top / "old.txt", "ab") as f:
            f.write(b"+more")
        assert stored(server, f"{unique}/old.txt") == b"old+more"
        (top / "old.txt").write_bytes(b"s")
        assert (top / "old.txt").stat().st_size == 1
        assert (top / "old.txt").read_bytes() == b"s"
        os.truncate(top / "new.bin", 100)
        assert stored(server, f"{unique}/new.bin") == expected[:100]
        assert (top / "new.bin").read_bytes() == expected[:100]
    assert_clean_log(tmp_path / "mount.log")


def test_folders_unlink_and_rename(server, unique, tmp_path):
    base = server.root / unique
    (base / "task" / "sub").mkdir(parents=True)
    for i in range(5):
        (base / "task" / "sub" / f"f{i}.txt").write_text(f"file {i}")
    (base / "task" / "top.txt").write_text("top")
    with rw_mount(server, tmp_path, "--metadata-ttl", "300"):
        top = tmp_path / "mnt" / unique
        os.listdir(top / "task")
        (top / "made").mkdir()
        assert (top / "made").is_dir() and os.listdir(top / "made") == []
        assert "made" in os.listdir(top)
        with pytest.raises(FileExistsError):
            (top / "made").mkdir()
        (top / "made").rmdir()
        assert not (top / "made").exists()
        with pytest.raises(OSError) as info:
            (top / "task").rmdir()
        assert info.value.errno == errno.ENOTEMPTY
        # a file renamed, then a folder: server-side copy and remove
        os.rename(top / "task" / "top.txt", top / "task" / "renamed.txt")
        assert (top / "task" / "renamed.txt").read_text() == "top"
        assert not (base / "task" / "top.txt").exists()
        assert (base / "task" / "renamed.txt").read_text() == "top"
        os.rename(top / "task" / "sub", top / "moved")
        assert sorted(os.listdir(top / "moved")) == [f"f{i}.txt" for i in range(5)]
        assert not (top / "task" / "sub").exists()
        assert (base / "moved" / "f3.txt").read_text() == "file 3"
        assert not (base / "task" / "sub").exists()
        # the last file of a folder goes: the folder stays, empty, until removed
        os.unlink(top / "task" / "renamed.txt")
        assert not (base / "task").exists()
        assert (top / "task").is_dir() and os.listdir(top / "task") == []
        (top / "task").rmdir()
        assert "task" not in os.listdir(top)
        subprocess.run(["rm", "-rf", str(top / "moved")], check=True)
        assert not (base / "moved").exists() and not (top / "moved").exists()
        with pytest.raises(FileNotFoundError):
            os.unlink(top / "nothing")
    assert_clean_log(tmp_path / "mount.log")


def test_archives_and_read_only_mounts_refuse_changes(server, unique, tmp_path):
    base = server.root / unique
    base.mkdir()
    with zipfile.ZipFile(base / "out.zip", "w") as archive:
        archive.writestr("inner/a.txt", "a")
    (base / "plain.txt").write_text("plain")
    with rw_mount(server, tmp_path):
        top = tmp_path / "mnt" / unique
        assert (top / "out.zip" / "inner" / "a.txt").read_text() == "a"
        for action in (lambda: open(top / "out.zip" / "inner" / "a.txt", "w"),
                       lambda: open(top / "out.zip" / "new.txt", "w"),
                       lambda: (top / "out.zip" / "inner" / "new").mkdir(),
                       lambda: os.unlink(top / "out.zip" / "inner" / "a.txt"),
                       lambda: (top / "out.zip" / "inner").rmdir(),
                       lambda: os.rename(top / "plain.txt", top / "out.zip" / "p.txt"),
                       lambda: os.rename(top / "out.zip" / "inner" / "a.txt", top / "x.txt")):
            with pytest.raises(OSError) as info:
                action()
            assert info.value.errno == errno.EROFS, action
        with pytest.raises(OSError) as info:
            open(top / "out.zip", "w")  # shown as a folder
        assert info.value.errno in (errno.EISDIR, errno.EROFS)
        assert (base / "out.zip").stat().st_size > 0
    mnt = tmp_path / "ro"
    with foreground_mount(server, mnt, tmp_path / "ro.log"):
        for action in (lambda: open(mnt / unique / "new.txt", "w"),
                       lambda: open(mnt / unique / "plain.txt", "a"),
                       lambda: os.unlink(mnt / unique / "plain.txt"),
                       lambda: (mnt / unique / "d").mkdir()):
            with pytest.raises(OSError) as info:
                action()
            assert info.value.errno == errno.EROFS
    assert (base / "plain.txt").read_text() == "plain"


def test_two_writers_of_one_path_last_close_wins(server, unique, tmp_path):
    (server.root / unique).mkdir()
    with rw_mount(server, tmp_path):
        path = tmp_path / "mnt" / unique / "shared.bin"
        first, second = open(path, "wb"), open(path, "wb")
        for _ in range(64):
            first.write(b"A" * 4096)
            second.write(b"B" * 4096)
        second.write(b"B" * 100)
        first.close()
        assert stored(server, f"{unique}/shared.bin") == b"A" * (64 << 12)
        second.close()
        assert stored(server, f"{unique}/shared.bin") == b"B" * ((64 << 12) + 100)
        assert path.read_bytes() == b"B" * ((64 << 12) + 100)
        # concurrently: whichever closes last is stored whole
        results = []

        def writer(byte: bytes) -> None:
            with open(path, "wb") as f:
                for _ in range(200):
                    f.write(byte * 8192)
            results.append(byte)

        threads = [threading.Thread(target=writer, args=(b,)) for b in (b"x", b"y", b"z")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        content = stored(server, f"{unique}/shared.bin")
        assert len(set(content)) == 1 and len(content) == 200 * 8192
    assert_clean_log(tmp_path / "mount.log")


def _tree(folder: Path, count: int, seed: int, big: int = 0) -> dict[str, bytes]:
    """``count`` files of mixed sizes in nested folders (``big`` of 1 to 3 MiB, the first of
    20 MiB)."""
    rng = random.Random(seed)
    files = {}
    for i in range(count):
        size = rng.choice([0, 1, 100, 4095, 4096, 70_000]) if i >= big else \
            20 << 20 if i == 0 else rng.randint(1 << 20, 3 << 20)
        rel = f"d{i % 7}/s{i % 3}/file{i}.dat"
        files[rel] = rng.randbytes(size)
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(files[rel])
    return files


def _digest_tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cp_rsync_tar_mv_and_download_are_byte_identical(server, unique, tmp_path):
    source, small = tmp_path / "src", tmp_path / "small"
    files = _tree(source, 1000, seed=1, big=4)
    _tree(small, 150, seed=2, big=1)
    (server.root / unique).mkdir()
    with rw_mount(server, tmp_path):
        top = tmp_path / "mnt" / unique
        subprocess.run(["cp", "-r", str(source), str(top / "copied")], check=True)
        subprocess.run(["rsync", "-a", f"{small}/", str(top / "synced")], check=True)
        with tarfile.open(tmp_path / "t.tar", "w") as tar:
            tar.add(small, arcname="untarred")
        subprocess.run(["tar", "xf", str(tmp_path / "t.tar"), "-C", str(top)], check=True)
        subprocess.run(["mv", str(top / "untarred"), str(top / "moved")], check=True)
        expected, expected_small = _digest_tree(source), _digest_tree(small)
        assert _digest_tree(top / "copied") == expected
        for name in ("synced", "moved"):
            assert _digest_tree(top / name) == expected_small, name
        assert not (top / "untarred").exists()
        subprocess.run(["rm", "-rf", str(top / "synced")], check=True)
        assert not (top / "synced").exists()
    done = storagefs("download", f"{unique}/copied", str(tmp_path / "dl"),
                     env={**os.environ, "INDUCTIVA_API_URL": server.url,
                          "INDUCTIVA_API_KEY": server.api_key}, timeout=300)
    assert done.returncode == 0, done.stderr
    downloaded = next(p for p in (tmp_path / "dl").rglob("copied") if p.is_dir())
    assert _digest_tree(downloaded) == expected
    assert _digest_tree(server.root / unique / "moved") == expected_small
    assert not (server.root / unique / "synced").exists()
    assert len(files) == 1000
    assert_clean_log(tmp_path / "mount.log")


def test_editor_save_pattern_and_sqlite(server, unique, tmp_path):
    (server.root / unique).mkdir()
    (server.root / unique / "input.cfg").write_text("steps = 10\n")
    with rw_mount(server, tmp_path):
        top = tmp_path / "mnt" / unique
        # an editor's save: a temporary file, fsync, rename over the original
        tmp = top / ".input.cfg.swp"
        with open(tmp, "w") as f:
            f.write("steps = 20\n")
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, top / "input.cfg")
        assert (top / "input.cfg").read_text() == "steps = 20\n"
        assert sorted(os.listdir(top)) == ["input.cfg"]
        assert stored(server, f"{unique}/input.cfg") == b"steps = 20\n"
        vim = subprocess.run(["vim", "-Nu", "NONE", "-n", "-es", "+%s/20/30/", "+wq",
                              str(top / "input.cfg")], capture_output=True, timeout=60)
        assert vim.returncode == 0, vim.stderr
        assert stored(server, f"{unique}/input.cfg") == b"steps = 30\n"
        # SQLite creating, then updating a database in the mount
        db = top / "runs.db"
        with sqlite3.connect(db) as conn:
            conn.execute("create table runs (id integer primary key, name text)")
            conn.executemany("insert into runs (name) values (?)",
                             [(f"run{i}",) for i in range(500)])
        conn.close()
        with sqlite3.connect(db) as conn:
            conn.execute("update runs set name = 'changed' where id <= 10")
            conn.execute("delete from runs where id > 400")
        conn.close()
        cli = subprocess.run(["sqlite3", str(db), "insert into runs (name) values ('cli');"],
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
    copy = tmp_path / "runs.db"
    copy.write_bytes(stored(server, f"{unique}/runs.db"))
    with sqlite3.connect(copy) as conn:
        assert conn.execute("select count(*) from runs").fetchone()[0] == 401
        assert conn.execute("select count(*) from runs where name = 'changed'").fetchone()[0] \
            == 10
        assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
    conn.close()
    assert sorted(p.name for p in (server.root / unique).iterdir()) == ["input.cfg", "runs.db"]
    assert_clean_log(tmp_path / "mount.log")


def test_fstab_rw_in_the_background(server, unique, tmp_path):
    """``mount.storagefs -o rw``: the background mount (a child started by the supervisor)
    is writable too; without ``rw`` it is read-only."""
    (server.root / unique).mkdir()
    key_file = tmp_path / "key"
    key_file.write_text(server.api_key)
    for writable, name in ((True, "rw"), (False, "ro")):
        mnt, log = tmp_path / name, tmp_path / f"{name}.log"
        mnt.mkdir()
        options = f"api_key_file={key_file},log_file={log},write_dir={tmp_path / 'wd'}" + \
            (",rw" if writable else "")
        result = subprocess.run([sys.executable, "-m", "storagefs.mount.command", server.url,
                                 str(mnt), "-o", options], capture_output=True, text=True,
                                timeout=60)
        try:
            assert result.returncode == 0, result.stderr
            target = mnt / unique / f"{name}.txt"
            if writable:
                target.write_text("written in the background")
                assert stored(server, f"{unique}/rw.txt") == b"written in the background"
            else:
                with pytest.raises(OSError) as info:
                    target.write_text("no")
                assert info.value.errno == errno.EROFS
        finally:
            assert storagefs("umount", str(mnt)).returncode == 0
            force_unmount(mnt)
        assert_clean_log(log)
