"""The kernel's page cache: files read again may be served by the kernel, never an old version.

First the rule (``pagecache.PageCachePolicy``) and what ``open`` tells libfuse, without a
mount; then real mounts of the shared reference server with archives and files replaced under
the mount. Whether the kernel still holds a page is its own choice (it may evict, and on some
kernels keeps pages without ``keep_cache`` too), so what is asserted is the flag and that a new
version is never served from old pages; the gain is measured by the bench (row 1, cat again).
"""

from __future__ import annotations

import os
import time
import zipfile

import pytest

from storagefs.mount.backend import CachedBackend
from storagefs.mount.pagecache import PageCachePolicy
from storagefs.mount.vfs import VFS

from archives import mixed_bytes
from fakes import FakeStorage
from mountharness import assert_clean_log, foreground_mount, require_fuse

ROOT = "mnt-page-cache"
MiB = 1 << 20


# -- the rule ----------------------------------------------------------------------------------


def test_the_same_version_keeps_the_pages_a_new_one_drops_them():
    policy = PageCachePolicy()
    assert not policy.opened("/a", 1)  # nothing known: drop
    policy.released("/a", 1)
    assert policy.opened("/a", 1) and policy.opened("/a", 1)  # again, and side by side
    policy.released("/a", 1)
    policy.released("/a", 1)
    assert not policy.opened("/b", 1)  # per path
    assert not policy.opened("/a", 2)  # a new version drops the old pages
    policy.released("/a", 2)
    assert policy.opened("/a", 2)
    policy.released("/a", 2)
    assert not policy.opened("/a", 1)  # an old listing again (another version all the same)


def test_a_file_of_an_older_version_still_open_keeps_every_open_dropping():
    policy = PageCachePolicy()
    policy.opened("/a", 1)  # left open: it may read (and fill pages) after the change
    assert not policy.opened("/a", 2)
    policy.released("/a", 2)
    assert not policy.opened("/a", 2), "version 1 is still open"
    policy.released("/a", 2)
    policy.released("/a", 1)
    assert not policy.opened("/a", 2), "once more after it closed: it may have read"
    policy.released("/a", 2)
    assert policy.opened("/a", 2)


def test_a_failed_read_drops_the_pages_at_the_next_open():
    policy = PageCachePolicy()
    policy.opened("/a", 1)
    policy.distrust("/a")  # a damaged member: its pages are not to be trusted
    policy.released("/a", 1)
    assert not policy.opened("/a", 1)
    policy.released("/a", 1)
    assert policy.opened("/a", 1)


def test_forgetting_paths_spares_those_open():
    policy = PageCachePolicy(max_paths=2)
    policy.opened("/open", 1)
    for name in ("/x", "/y", "/z"):
        policy.opened(name, 1)
        policy.released(name, 1)
    assert not policy.opened("/x", 1)  # forgotten: one drop more, never a stale keep
    assert not policy.opened("/open", 2)  # still known: its open file of version 1 counts
    policy.released("/open", 2)
    assert not policy.opened("/open", 2)


def test_open_sets_keep_cache_only_for_the_version_read_before():
    fuse = pytest.importorskip("fuse", exc_type=OSError)
    from storagefs.mount.fuseops import StorageOperations

    now = [0.0]
    storage = FakeStorage({"f/plain.txt": b"one\n"})
    operations = StorageOperations(VFS(CachedBackend(storage, ttl=1.0, clock=lambda: now[0])))

    def open_read(path: str) -> tuple[int, bytes]:
        fi = fuse.fuse_file_info(flags=os.O_RDONLY)
        assert operations("open", path, fi) == 0
        assert not fi.direct_io  # the page cache and mmap stay
        data = operations("read", path, 100, 0, fi)
        operations("release", path, fi)
        return fi.keep_cache, data

    assert open_read("/f/plain.txt") == (0, b"one\n")
    assert open_read("/f/plain.txt") == (1, b"one\n")
    storage.files["f/plain.txt"] = b"two!!\n"  # a new version (size): once the TTL is over
    now[0] = 5.0
    assert open_read("/f/plain.txt") == (0, b"two!!\n")
    assert open_read("/f/plain.txt") == (1, b"two!!\n")


def test_fuse_options_leave_the_page_cache_to_open(caplog):
    pytest.importorskip("fuse", exc_type=OSError)
    from storagefs.mount.fuseops import fuse_options

    options = fuse_options({"kernel_cache": True, "auto_cache": True, "allow_other": True},
                           metadata_ttl=5)
    assert not {"kernel_cache", "auto_cache", "direct_io"} & set(options)
    assert options["allow_other"] is True and options["attr_timeout"] == "5"
    assert "-o kernel_cache ignored" in caplog.text


# -- real mounts -------------------------------------------------------------------------------


def _archive(path, member: bytes) -> None:
    """One deflated member, always with the same time: only its bytes tell versions apart."""
    info = zipfile.ZipInfo("out/data.txt", date_time=(2024, 1, 2, 3, 4, 6))
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(info, member)


def _replace(path, write, *args) -> None:
    """Writes the new version with a later time, as an upload gives it."""
    before = path.stat().st_mtime
    write(*args)
    os.utime(path, (before + 10, before + 10))


@pytest.mark.parametrize("kind", ["member", "file"])
def test_a_replaced_object_is_never_served_from_old_pages(server, tmp_path, kind):
    require_fuse()
    folder = server.root / ROOT / f"replaced-{kind}"
    folder.mkdir(parents=True, exist_ok=True)
    old, new = mixed_bytes(73, 2 * MiB + 5), mixed_bytes(74, 2 * MiB + 5)  # the same size
    if kind == "member":
        stored, shown = folder / "run.zip", f"replaced-{kind}/run.zip/out/data.txt"
        write = _archive
    else:
        stored, shown = folder / "plain.bin", f"replaced-{kind}/plain.bin"
        write = type(stored).write_bytes
    write(stored, old)
    ttl = 1.0
    mountpoint, log = tmp_path / "m", tmp_path / "m.log"
    with foreground_mount(server, mountpoint, log, "--metadata-ttl", f"{ttl:g}"):
        path = mountpoint / ROOT / shown
        assert path.read_bytes() == old
        assert path.read_bytes() == old  # open, read, closed: the kernel holds its pages
        _replace(stored, write, stored, new)
        time.sleep(ttl * 2.5)  # the listing (and the kernel's attributes) expire
        with open(path, "rb") as f:
            assert f.read(4096) == new[:4096]
            f.seek(1 * MiB)
            assert f.read() == new[1 * MiB:], "no old page, anywhere in the file"
        assert path.read_bytes() == new
        _replace(stored, write, stored, old)  # and back
        time.sleep(ttl * 2.5)
        assert path.read_bytes() == old
    assert_clean_log(log)
