"""One user's object storage as the routes see it (``Store``), and its folder implementation.

``Store`` is what every route needs, whatever keeps the bytes: a local folder (``LocalStore``,
here) or an S3 bucket (``s3store.S3Store``). Storage paths reach a store only through
``protocol.clean_path`` (no ``..``, no NUL) and never name the reserved ``.storagefs/`` folder,
so no parameter addresses anything outside the root or prefix.

In a folder, storage paths never leave the root: ``..`` is refused by ``protocol.clean_path``
and symlinks are resolved and checked against the root. Writes go to a temporary file under
the root's reserved ``.storagefs/`` folder and are renamed into place only when complete, so a
reader never sees a partial file and a failed upload never damages the file it was replacing.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Protocol

from ..errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from ..protocol import clean_path

RESERVED = ".storagefs"  # server state under the root; never visible as storage
COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Entry:
    """A file or folder of the storage; ``path`` is its clean storage path; ``version`` tells
    one content of a file from another where the store says so (an S3 ETag), else None."""

    path: str
    is_directory: bool
    size: int | None
    mtime: dt.datetime | None
    version: str | None = None

    @property
    def name(self) -> str:
        base = self.path.rsplit("/", 1)[-1]
        return base + "/" if self.is_directory else base


class Store(Protocol):
    """What the routes need from a storage; every path is a storage path, cleaned inside."""

    @property
    def name(self) -> str:
        """The storage's name as the bucket routes report it."""
        ...

    def entry(self, path: str) -> Entry:
        """The file or folder at ``path``; NotFound when there is none."""
        ...

    def children(self, path: str) -> list[Entry]:
        """Direct children of a folder; Conflict when ``path`` is a file."""
        ...

    def folder_totals(self, path: str) -> tuple[int, dt.datetime | None]:
        """Total bytes under a folder and its newest file's time."""
        ...

    def iter_files(self, path: str) -> Iterator[Entry]:
        """Every file under a folder, or the file itself."""
        ...

    def total_size(self) -> int:
        ...

    def check_path(self, path: str) -> str:
        """The clean path, if it names a place in this storage (nothing else is checked: a
        write there may still find a folder in the way)."""
        ...

    def check_writable(self, path: str) -> str:
        """The clean path, if a file may be written there (not the root, not a folder)."""
        ...

    def write(self, path: str, chunks: Iterable[bytes]) -> int:
        """Store the chunks as the file ``path``, whole or not at all; returns the bytes."""
        ...

    def remove(self, path: str) -> int:
        """Delete a file or a folder recursively; returns the number of files removed."""
        ...

    def copy_file(self, source: str, target: str) -> int:
        ...

    def open_read(self, path: str) -> tuple[Entry, BinaryIO]:
        """The file's entry and its bytes as a seekable binary file (the caller closes it)."""
        ...

    def open_entry(self, entry: Entry) -> BinaryIO:
        """The bytes of the file ``entry`` names (as ``open_read``, without looking it up)."""
        ...

    def local_path(self, entry: Entry) -> Path | None:
        """Where a file's bytes lie on this machine, if they do (the server's fast paths)."""
        ...

    def presign(self, path: str, operation: str, ttl_s: int) -> str | None:
        """A URL of the store's own that reads or writes ``path``, or None when the server
        serves the bytes itself (its own signed URLs, ``signing.Signer``)."""
        ...


def plan_copy(store: Store, source: str, target: str) -> list[tuple[str, str, int]]:
    """(source file, target file, size) for a copy, checked before any byte moves."""
    src, dst = clean_path(source), clean_path(target)
    if not src:
        raise InvalidRequest("cannot copy the storage root")
    if not dst:
        raise InvalidRequest("copy needs a target path")
    entry = store.entry(src)
    if not entry.is_directory:
        store.check_writable(dst)
        return [(src, dst, entry.size or 0)]
    if dst == src or dst.startswith(src + "/"):
        raise InvalidRequest(f"cannot copy a folder into itself: {src} -> {dst}")
    return [(f.path, dst + f.path[len(src):], f.size or 0) for f in store.iter_files(src)]


class LocalStore:
    """A local folder as the storage (``storagefs serve DIR``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))
        self.root.mkdir(parents=True, exist_ok=True)
        self._tmp = self.root / RESERVED / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.root.name or "storage"

    # -- paths -------------------------------------------------------------------------------

    def resolve(self, path: str) -> Path:
        """The local path of a storage path, refusing anything that escapes the root."""
        clean = clean_path(path)
        if clean.split("/", 1)[0] == RESERVED:
            raise NotFound(f"no such file or folder: {clean}")
        local = self.root / clean if clean else self.root
        real = os.path.realpath(local)
        if real != str(self.root) and not real.startswith(str(self.root) + os.sep):
            raise PermissionDenied(f"path leaves the storage root: {clean}")
        return Path(real) if os.path.lexists(local) else local

    def entry(self, path: str) -> Entry:
        clean = clean_path(path)
        local = self.resolve(clean)
        try:
            st = local.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no such file or folder: {clean or '/'}") from None
        mtime = dt.datetime.fromtimestamp(st.st_mtime, tz=dt.timezone.utc)
        if local.is_dir():
            return Entry(clean, True, None, mtime)
        return Entry(clean, False, st.st_size, mtime)

    # -- reading -----------------------------------------------------------------------------

    def children(self, path: str) -> list[Entry]:
        """Direct children of a folder, without the reserved folder."""
        clean = clean_path(path)
        local = self.resolve(clean)
        entries = []
        try:
            names = sorted(os.listdir(local))
        except FileNotFoundError:
            raise NotFound(f"no such folder: {clean or '/'}") from None
        except NotADirectoryError:
            raise Conflict(f"not a folder: {clean}") from None
        for name in names:
            if not clean and name == RESERVED:
                continue
            child = f"{clean}/{name}" if clean else name
            try:
                entries.append(self.entry(child))
            except (NotFound, PermissionDenied):
                continue  # vanished meanwhile, or a symlink pointing out of the root
        return entries

    def folder_totals(self, path: str) -> tuple[int, dt.datetime | None]:
        """Total bytes under a folder and its newest file's time (for recursive listings); an
        empty folder has its own time, so that it sorts among the others by time."""
        total, newest = 0, None
        for entry in self.iter_files(path):
            total += entry.size or 0
            if entry.mtime and (newest is None or entry.mtime > newest):
                newest = entry.mtime
        return total, newest if newest is not None else self.entry(path).mtime

    def iter_files(self, path: str) -> Iterator[Entry]:
        """Every file under a folder (or the file itself), depth first in name order."""
        entry = self.entry(path)
        if not entry.is_directory:
            yield entry
            return
        for child in self.children(entry.path):
            if child.is_directory:
                yield from self.iter_files(child.path)
            else:
                yield child

    def open_file(self, path: str) -> tuple[Path, Entry]:
        entry = self.entry(path)
        if entry.is_directory:
            raise InvalidRequest(f"is a folder, not a file: {entry.path}")
        return self.resolve(entry.path), entry

    def total_size(self) -> int:
        return sum(entry.size or 0 for entry in self.iter_files(""))

    def open_read(self, path: str) -> tuple[Entry, BinaryIO]:
        local, entry = self.open_file(path)
        return entry, local.open("rb")

    def open_entry(self, entry: Entry) -> BinaryIO:
        return self.resolve(entry.path).open("rb")

    def local_path(self, entry: Entry) -> Path | None:
        return self.resolve(entry.path)

    def presign(self, path: str, operation: str, ttl_s: int) -> str | None:
        return None

    # -- writing -----------------------------------------------------------------------------

    def _writable_target(self, path: str) -> tuple[str, Path]:
        clean = clean_path(path)
        if not clean:
            raise InvalidRequest("cannot write to the storage root")
        local = self.resolve(clean)
        if local.is_dir():
            raise Conflict(f"a folder already exists at {clean}")
        parent = local.parent
        probe = parent
        while probe != self.root and not probe.exists():
            probe = probe.parent
        if probe.exists() and not probe.is_dir():
            where = probe.relative_to(self.root)
            raise Conflict(f"a file stands where a folder is needed: {where}")
        return clean, local

    def check_path(self, path: str) -> str:
        clean = clean_path(path)
        self.resolve(clean)
        return clean

    def check_writable(self, path: str) -> str:
        return self._writable_target(path)[0]

    def writer(self, path: str) -> "AtomicWriter":
        """A temporary file that becomes ``path`` on ``commit()`` and vanishes on ``discard()``."""
        clean, local = self._writable_target(path)
        return AtomicWriter(self, local, self._tmp)

    def write(self, path: str, chunks: Iterable[bytes]) -> int:
        """Stream chunks into place atomically; returns the bytes written."""
        writer = self.writer(path)
        try:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()
        finally:
            writer.discard()

    def write_from(self, path: str, source: BinaryIO) -> int:
        return self.write(path, iter(lambda: source.read(COPY_CHUNK), b""))

    def remove(self, path: str) -> int:
        """Delete a file or a folder recursively; returns the number of files removed."""
        clean = clean_path(path)
        if not clean:
            raise InvalidRequest("refusing to delete the storage root")
        entry = self.entry(clean)
        local = self.resolve(clean)
        with self._write_lock:
            if entry.is_directory:
                count = sum(1 for _ in self.iter_files(clean))
                shutil.rmtree(local)
            else:
                count = 1
                local.unlink()
            self._prune_empty_parents(local.parent)
        return count

    def _prune_empty_parents(self, folder: Path) -> None:
        """Folders are prefixes in object storage: one that lost its last file goes too."""
        while folder != self.root:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    def copy_file(self, source: str, target: str) -> int:
        local, _ = self.open_file(source)
        with open(local, "rb") as handle:
            return self.write_from(target, handle)


class AtomicWriter:
    def __init__(self, store: LocalStore, target: Path, tmp_dir: Path) -> None:
        self._store = store
        self._target = target
        fd, self._tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-")
        self._file = os.fdopen(fd, "wb")
        self.written = 0
        self._done = False

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self.written += len(chunk)

    def commit(self) -> int:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        with self._store._write_lock:  # a concurrent delete must not remove the new parent
            self._target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._tmp_name, self._target)
        self._done = True
        return self.written

    def discard(self) -> None:
        """Drop the temporary file unless committed; safe to call more than once."""
        if not self._done:
            self._done = True
            self._file.close()
            Path(self._tmp_name).unlink(missing_ok=True)
