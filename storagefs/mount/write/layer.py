"""The writable mount's operations, below ``fuseops`` (which only translates).

What is written when:

- ``create``, or ``open`` for writing: a private staged copy (``handles``); an existing file
  opened without ``O_TRUNC`` is fetched into it first.
- ``write``/``truncate``: on the copy, once the staging disk has room (``staging``).
- ``flush`` (every ``close``) and ``fsync``: a copy changed since its last upload is uploaded
  whole (``uploader``); the caller waits, and gets EIO/EACCES/ENOSPC if it failed.
- ``release``: a copy whose upload failed goes to the recovery folder (``recovery``), retried
  every ``retry_interval`` and by later mounts; a copy a write was refused for is never
  uploaded (it lacks what the writer meant), and the stored file stays as it was.
- ``unlink``, ``rename`` (server-side copy, then remove; a folder's copy runs as an operation
  and is waited for), ``mkdir`` (a folder of this mount until a file is stored in it: the
  storage has no empty folders) and ``rmdir``.

Nothing under an archive shown as a folder can change: EROFS. Uploads of one path are made one
at a time, in the order of the closes, so the last close is what is stored.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ...client import StorageClient
from ...errors import NotFound
from ..backend import CachedBackend
from ..vfs import ARCHIVE, FILE, FOLDER, MEMBER, MEMBER_DIR, VFS, Entry
from .handles import WriteHandle
from .local import LocalState
from .recovery import RecoveryFolder
from .remote import RemoteChanges
from .staging import Staging
from .uploader import Uploader, UploadFailed

log = logging.getLogger(__name__)

_FETCH_CHUNK = 8 << 20


@dataclass(frozen=True)
class WriteSettings:
    folder: Path  # staging/ and recovery/ live here
    max_size: int  # --write-max-size
    min_free: int  # writes are refused (ENOSPC) when the staging disk would have less free
    retry_interval: float = 30.0  # seconds between retries of the recovery folder
    origin: str = ""  # the API URL: recovery entries belong to one storage


def storage_path(path: str) -> str:
    return path.strip("/")


def _erofs(path: str) -> OSError:
    return OSError(errno.EROFS, f"{path}: archives are read-only")


class WriteLayer:
    def __init__(self, vfs: VFS, backend: CachedBackend, client: StorageClient,
                 settings: WriteSettings, region: str | None = None) -> None:
        self.vfs = vfs
        self.settings = settings
        for folder in (settings.folder, settings.folder / "staging"):  # new content: private
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
        self.staging = Staging(settings.folder / "staging", max_size=settings.max_size,
                               min_free=settings.min_free, origin=settings.origin)
        self.recovery = RecoveryFolder(settings.folder / "recovery", settings.origin)
        self.uploader = Uploader(client, region)
        self.remote = RemoteChanges(client, backend, region)
        self.local = LocalState()
        self._path_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._stop = threading.Event()
        self._retrier: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Places what an earlier mount left, then retries the recovery folder in the
        background (first at once)."""
        orphans = 0
        for copy, info in self.staging.orphans():
            if info.get("origin", self.settings.origin) != self.settings.origin:
                continue
            if info.get("dirty"):
                self.recovery.keep(copy, "open when an earlier mount ended", closed=False)
                orphans += 1
            else:
                copy.discard()
        if orphans:
            log.warning("%d file(s) open when an earlier mount ended are kept in %s (not "
                        "uploaded: they may be incomplete; see their .json notes)", orphans,
                        self.recovery.folder)
        pending = self.recovery.pending()
        if pending:
            log.warning("%d file(s) in the recovery folder %s are not stored yet; retrying",
                        len(pending), self.recovery.folder)
        self._retrier = threading.Thread(target=self._retry_loop, name="recovery", daemon=True)
        self._retrier.start()

    def _retry_loop(self) -> None:
        while True:
            if self.recovery.pending():
                self.retry_kept()
            if self._stop.wait(self.settings.retry_interval):
                return

    def retry_kept(self) -> tuple[int, int]:
        """Uploads the recovery folder's entries; returns (stored, still kept)."""
        stored = kept_back = 0
        for kept in self.recovery.pending():
            with self._path_lock(kept.path):
                if not kept.note.exists():  # a newer close of the path was stored meanwhile
                    continue
                try:
                    size = self.uploader.upload(kept.data, kept.path)
                except UploadFailed as exc:
                    kept_back += 1
                    log.warning("%s: still not stored (%s); kept in %s", kept.path, exc,
                                kept.data)
                    continue
                self.remote.stored(kept.path, size)
                self.recovery.superseded(kept.path, before=kept.failed_at)
                stored += 1
                log.warning("/%s: stored from the recovery folder (%d bytes)", kept.path, size)
        return stored, kept_back

    def finish(self, timeout: float, say=print) -> list[str]:
        """At unmount: waits up to ``timeout`` s for uploads still running, keeps files still
        open, tries the recovery folder once more; returns one line per file left behind."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        if self.uploader.busy:
            say(f"storagefs: waiting up to {timeout:g} s for {self.uploader.busy} upload(s) to "
                "finish before the mount ends")
        if not self.uploader.wait_idle(timeout):
            say(f"storagefs: uploads still running after {timeout:g} s; their files stay in "
                f"the recovery folder {self.recovery.folder}")
        for handle in self.local.all_writers():
            with handle.lock:
                handle.close_file()
                if handle.dirty and not handle.broken and not handle.unlinked:
                    self.recovery.keep(handle.copy, "open when the mount ended", closed=False)
                else:
                    handle.copy.discard()
        if self.recovery.pending() and time.monotonic() < deadline:
            self.retry_kept()
        self.uploader.close()
        left = [f"/{k.path} -> {k.data}" for k in self.recovery.entries()]
        if left:
            say(f"storagefs: {len(left)} file(s) could not be uploaded and are kept in "
                f"{self.recovery.folder}; the next mount retries them")
        self.staging.close()
        return left

    # -- what this mount shows beyond the storage ---------------------------------------------

    def open_entry(self, path: str) -> Entry | None:
        """A file being written here: its size now."""
        handle = self.local.latest_writer(path)
        if handle is None:
            return None
        size = handle.size()
        return Entry(path, FILE, size, size, handle.mtime, self.vfs.inodes(path),
                     storage_path(path))

    def local_folder(self, path: str) -> Entry | None:
        if not self.local.has_dir(path):
            return None
        return Entry(path, FOLDER, 0, 0, self.vfs.started, self.vfs.inodes(path),
                     storage_path(path))

    def extra_names(self, path: str) -> set[str]:
        return self.local.children(path)

    # -- files -------------------------------------------------------------------------------

    def create(self, path: str) -> WriteHandle:
        self._check_parent(path)
        entry = self._find(path)
        if entry is not None and entry.is_dir:
            raise OSError(errno.EISDIR, f"{path}: is a folder")
        handle = WriteHandle(path, self.staging.new_copy(storage_path(path)), self.staging,
                             dirty=True)
        handle.new = True
        handle.copy.write_note(origin=self.settings.origin, dirty=True)
        self.local.add_writer(handle)
        return handle

    def open(self, path: str, flags: int) -> WriteHandle:
        """An open for writing; ``O_TRUNC`` starts empty, else the current content is fetched."""
        self._check_parent(path)
        truncate = bool(flags & os.O_TRUNC)
        handle = WriteHandle(path, self.staging.new_copy(storage_path(path)), self.staging,
                             dirty=truncate)
        try:
            if not self._copy_open(path, handle, truncate):
                entry = self._find(path)  # after a closing writer stored (or kept) its copy
                if entry is None:
                    raise NotFound(f"no such file: {path}")
                if entry.kind != FILE:
                    if entry.kind in (MEMBER, MEMBER_DIR, ARCHIVE):
                        raise _erofs(path)
                    raise OSError(errno.EISDIR, f"{path}: is a folder")
                if entry.size and not truncate:
                    self._fetch(entry, handle)
            if truncate:
                handle.copy.write_note(origin=self.settings.origin, dirty=True)
        except BaseException:
            handle.close_file()
            handle.copy.discard()
            raise
        self.local.add_writer(handle)
        return handle

    def _copy_open(self, path: str, handle: WriteHandle, truncate: bool) -> bool:
        """Starts from the copy of a writer still open here, if any (waiting while one that
        is closing uploads); False if there is none."""
        other = self.local.latest_writer(path)
        if other is None:
            return False
        with other.lock:
            if other.closed:
                return False
            if not truncate:
                size = other.size()
                self.staging.check_room(path, size, size)
                shutil.copyfile(other.copy.data, handle.copy.data)
            return True

    def _fetch(self, entry: Entry, handle: WriteHandle) -> None:
        self.staging.check_room(entry.path, entry.size, entry.size)
        reader = self.vfs.open_entry(entry)
        try:
            offset = 0
            while offset < entry.size:
                data = reader.read(offset, min(_FETCH_CHUNK, entry.size - offset))
                if not data:
                    raise OSError(errno.EIO, f"{entry.path}: ended early while fetched")
                os.pwrite(handle.fd, data, offset)
                offset += len(data)
        finally:
            reader.close()

    def write(self, handle: WriteHandle, data: bytes, offset: int) -> int:
        first = not handle.dirty
        written = handle.write(data, offset)
        if first:
            handle.copy.write_note(origin=self.settings.origin, dirty=True)
        return written

    def truncate(self, path: str, length: int, handle: WriteHandle | None = None) -> None:
        if handle is not None:
            handle.truncate(length)
            return
        handle = self.open(path, os.O_TRUNC if length == 0 else 0)
        try:
            handle.truncate(length)
            self.flush(handle, force=True)
        finally:
            self.release(handle)

    def flush(self, handle: WriteHandle, *, force: bool = False) -> None:
        """Uploads the copy if it changed since its last upload: at each ``close`` once
        something was written (a shell's ``>`` closes the file once before writing to it:
        that close does not store an empty file in place of the old one; a new file is
        stored at its first close), at ``fsync`` and ``release`` always."""
        with handle.lock:
            if handle.broken is not None:
                raise OSError(handle.broken.errno or errno.EIO,
                              f"{handle.path}: not stored: a write to it failed "
                              f"({handle.broken.strerror}); the stored file is unchanged")
            if not handle.dirty or handle.unlinked or \
                    not (force or handle.written or handle.new):
                return
            remote = storage_path(handle.path)
            with self._path_lock(remote):
                try:
                    size = self.uploader.upload(handle.copy.data, remote)
                except UploadFailed as exc:
                    handle.failed = exc
                    log.error("%s; the new content is kept in %s (moved to the recovery folder "
                              "%s at close, then retried)", exc, handle.copy.data,
                              self.recovery.folder)
                    raise
                handle.dirty = handle.written = handle.new = False
                handle.failed = None
                self.remote.stored(remote, size)
                self.recovery.superseded(remote)

    def release(self, handle: WriteHandle) -> None:
        try:
            self._release(handle)
        finally:
            self.local.remove_writer(handle)  # shown until stored or kept

    def _release(self, handle: WriteHandle) -> None:
        with handle.lock:
            if handle.dirty and handle.broken is None and not handle.unlinked \
                    and handle.failed is None:
                try:  # new and never written, or changed after its last flush (mmap)
                    self.flush(handle, force=True)
                except UploadFailed:
                    pass
            handle.close_file()
            if handle.unlinked:
                handle.copy.discard()
            elif handle.broken is not None:
                log.warning("%s: not stored: a write to it failed (%s); the stored file is "
                            "unchanged", handle.path, handle.broken.strerror)
                handle.copy.discard()
            elif handle.dirty:
                kept = self.recovery.keep(handle.copy, str(handle.failed))
                log.warning("%s: not stored; kept in %s and retried every %g s and by the "
                            "next mount", handle.path, kept.data, self.settings.retry_interval)
            else:
                handle.copy.discard()

    # -- names -------------------------------------------------------------------------------

    def mkdir(self, path: str) -> None:
        self._check_parent(path)
        if self._find(path) is not None or self.local.has_dir(path):
            raise OSError(errno.EEXIST, f"{path}: exists")
        self.local.add_dir(path)

    def rmdir(self, path: str) -> None:
        self._check_parent(path)
        entry = self._find(path)
        if entry is not None:
            if entry.kind in (ARCHIVE, MEMBER_DIR):
                raise _erofs(path)
            if entry.kind != FOLDER:
                raise OSError(errno.ENOTDIR, f"{path}: not a folder")
            if self.vfs.list(path):
                raise OSError(errno.ENOTEMPTY, f"{path}: not empty")
        elif not self.local.has_dir(path):
            raise NotFound(f"no such folder: {path}")
        if self.local.children(path):
            raise OSError(errno.ENOTEMPTY, f"{path}: not empty")
        self.local.remove_dir(path)
        if entry is not None:
            self.remote.forget(entry.object_path)

    def unlink(self, path: str) -> None:
        self._check_parent(path)
        entry = self._find(path)
        writers = self.local.writers(path)
        if entry is None and not writers:
            raise NotFound(f"no such file: {path}")
        if entry is not None:
            if entry.kind == ARCHIVE:  # shown as a folder: the kernel would not unlink it
                raise _erofs(path)
            if entry.is_dir:
                raise OSError(errno.EISDIR, f"{path}: is a folder")
            with self._path_lock(entry.object_path):
                self.remote.remove(entry.object_path)
                self.recovery.superseded(entry.object_path)
        for handle in writers:
            handle.unlinked = True
        self._keep_parent(path)

    def rename(self, old: str, new: str) -> None:
        self._check_parent(old)
        self._check_parent(new)
        if new == old or new.startswith(old.rstrip("/") + "/"):
            if new == old:
                return
            raise OSError(errno.EINVAL, f"cannot move {old} into itself")
        source = self._find(old)
        target = self._find(new)
        local_only = source is None
        if local_only and not (self.local.has_dir(old) or self.local.writers(old)):
            raise NotFound(f"no such file or folder: {old}")
        folder = (source.is_dir if source is not None and source.kind != ARCHIVE
                  else self.local.has_dir(old))
        if target is not None or self.local.has_dir(new):
            target_is_dir = target.is_dir if target is not None else True
            if folder and not target_is_dir:
                raise OSError(errno.ENOTDIR, f"{new}: not a folder")
            if not folder and target_is_dir:
                raise OSError(errno.EISDIR, f"{new}: is a folder")
            if folder and ((target is not None and self.vfs.list(new))
                           or self.local.children(new)):
                raise OSError(errno.ENOTEMPTY, f"{new}: not empty")
        if source is not None:
            src, dst = source.object_path, storage_path(new)
            if folder:
                self.remote.copy(src, dst, folder=True)
                self.remote.remove(src, folder=True)
            else:
                size = source.size
                if source.kind == ARCHIVE and isinstance(source.version, tuple):
                    size = source.version[0]  # (an archive's entry is a folder of size 0)
                with self._path_lock(dst):
                    self.remote.copy(src, dst, size=size)
                    self.recovery.superseded(dst)
                self.remote.remove(src)
        if target is not None and folder and target.kind == FOLDER:
            self.local.remove_dir(new)
        self.local.rename_tree(old, new)
        for handle in self.local.all_writers():
            if handle.path == new or handle.path.startswith(new + "/"):
                with handle.lock:
                    handle.copy.remote = storage_path(handle.path)
                    handle.copy.write_note(origin=self.settings.origin, dirty=handle.dirty)
        self._keep_parent(old)

    # -- checks ------------------------------------------------------------------------------

    def check_change(self, path: str) -> None:
        """Times, modes and owners are not stored: accepted where a change could be made."""
        self._check_parent(path)
        if self._find(path) is None and not self.local.has_dir(path) \
                and not self.local.writers(path):
            raise NotFound(f"no such file or folder: {path}")

    def _find(self, path: str) -> Entry | None:
        try:
            return self.vfs.lookup(path)
        except NotFound:
            return None

    def _check_parent(self, path: str) -> None:
        """EROFS inside an archive; ENOENT/ENOTDIR when the parent is no folder."""
        parent = posixpath.dirname(path.rstrip("/")) or "/"
        if parent == "/" and path.strip("/") == "":
            raise OSError(errno.EBUSY, "the mount's root cannot change")
        top = parent
        while True:
            if self.local.has_dir(top):
                if top == parent:
                    return
                break
            try:
                entry = self.vfs.lookup(top)
            except NotFound:
                top = posixpath.dirname(top)
                continue
            if entry.kind in (ARCHIVE, MEMBER_DIR, MEMBER):
                raise _erofs(path)
            if entry.kind != FOLDER:
                raise OSError(errno.ENOTDIR, f"{top}: not a folder")
            if top == parent:
                return
            break
        raise NotFound(f"no such folder: {parent}")

    def _keep_parent(self, path: str) -> None:
        """The storage drops a folder with its last file; here it stays, empty, as on a disk."""
        parent = posixpath.dirname(path)
        if parent == "/":
            return
        try:
            if not self.vfs.list(parent) and not self.local.children(parent):
                self.local.add_dir(parent)
        except (NotFound, NotADirectoryError):
            pass

    def _path_lock(self, remote: str) -> threading.Lock:
        with self._locks_lock:
            lock = self._path_locks.get(remote)
            if lock is None:
                if len(self._path_locks) > 4096:  # drop the idle ones
                    for key in [k for k, v in self._path_locks.items() if not v.locked()]:
                        del self._path_locks[key]
                lock = self._path_locks[remote] = threading.Lock()
            return lock
