"""Paths of the mount -> entries: storage folders and files, ``*.zip`` as folders, members.

The contract is three calls and one record (ratarmount's ``MountSource`` is the model):
``lookup(path) -> Entry``, ``list(path) -> [Entry]`` and ``open(path) -> reader``. Paths are
the mount's, ``/`` rooted, as FUSE hands them over.

What the tree shows:

- Storage folders and files come from the listing of their parent folder, fetched page by page
  the first time that folder is needed (never the whole storage at once) and cached with a TTL
  by the backend below (``backend.CachedBackend``). A name missing from a listing is trusted
  for ``negative_ttl`` only: looking it up later asks for the folder again (once per
  ``negative_ttl`` at most), so a file that was just written appears when asked for by name.
- A file whose name ends in ``.zip`` (any case) is a folder with the archive's members, unless
  ``zip_as="file"`` or the server cannot read it as an archive (see "Archives that are
  not"). Its tree comes from one recursive ``zip-contents`` call, kept per archive version
  (path, size, creation time): here, the one cache of archives (the backend keeps no
  listings), so a replaced archive gets a new tree and an unchanged one keeps its tree, and
  its entries, across TTL expiries. Folders implied by deeper names exist even without an
  entry of their own.
- An archive of ``archivelisting.LAZY_MEMBERS`` members or more (by its end records, one
  ranged GET, read only if its size allows that many) is listed one folder at a time
  instead: a path deep inside lists only the folders on the way, each kept in the memory
  budget for the metadata TTL (together at most ``FOLDERS_SHARE`` of it), and a walk lists a
  small subtree at once (``_walk_ahead``); the entries of a folder just listed or walked
  through are found without walking down from the top (``archivelisting.RecentFolders``).
  Its inode numbers come from the paths (``archivelisting.path_inode``).
- Member names are shown as written (the server decodes UTF-8, the Unicode Path field and
  legacy code pages), with what could leave the archive's folder taken out, as ``zipfile``
  does when it extracts: empty, ``.`` and ``..`` components are dropped, so ``/abs/x`` and
  ``../../x`` show as ``abs/x`` and ``x``; a NUL ends a name. Where a file and a folder claim
  one name the folder wins; where two entries claim one name the later one wins, as with
  ``unzip``. Both are logged.
- Archives that are not: a ``*.zip`` is shown as a folder without asking the server
  (``stat`` and ``ls -l`` of a folder of archives cost no archive listing). When its listing
  is first needed (``directory``, ``list``, a path inside it) and ``zip-contents`` refuses it
  (not a ZIP, a damaged central directory, more members than the server lists: 413), that
  version of the object is the plain file it is from then on, readable byte for byte, and
  one warning says why. The kernel may still hold the folder in its entry cache (for
  ``--metadata-ttl``): ``fuseops`` answers the open of that stale folder so that the kernel
  looks the name up again (see ``StorageOperations.open_folder``).
- Inode numbers are given on first sight of a path and kept while mounted, whatever version of
  the file is there (``pagecache`` says why the kernel never serves an old version's pages).
- Sizes are what a read returns. ``stored`` is what the entry costs in storage (the member's
  compressed size), which is what ``du`` counts; ``du --apparent-size`` counts ``size``.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import logging
import re
import dataclasses
import threading
import time
from collections import OrderedDict
from typing import Callable, Hashable, Iterable, Iterator, NamedTuple, Sequence

from cachetools import LRUCache

from .. import protocol
from ..errors import (CorruptArchive, InvalidRequest, IsADirectory, NotADirectory, NotFound,
                      PermissionDenied, StorageError, TooLarge)
from ..gcpause import gc_paused
from ..zipfmt import Fetch
from .archivelisting import (LAZY_MEMBERS, FolderCache, RecentFolders, needs_census, path_inode,
                             read_census, split_subtree, walk_estimate)
from .backend import Backend, MetadataCache
from .memberstart import MemberStart, locate, primed
from .read import DiskCache, FileReader, MemberReader, RangeReader, ReadContext

log = logging.getLogger(__name__)

FOLDER, FILE, ARCHIVE, MEMBER_DIR, MEMBER = "folder", "file", "archive", "member-dir", "member"


class NotAnArchive(NotADirectory):
    """A ``*.zip`` the server cannot read as an archive: a file, so not a folder."""


class Member(NamedTuple):
    """One member of an archive as the tree shows it; ``name`` is the name in the archive.

    A named tuple rather than a dataclass: a tree may hold 1e5 of them, made in one go."""

    name: str
    size: int
    compressed_size: int
    data_start: int | None
    method: int
    crc32: int | None
    mtime: float | None


class Entry(NamedTuple):
    """Everything ``stat`` needs about a path, and where its bytes live (immutable; a named
    tuple for the same reason as ``Member``: one per path listed)."""

    path: str  # in the mount: "/", "/task1/output.zip/artifacts/stdout.txt"
    kind: str  # FOLDER, FILE, ARCHIVE, MEMBER_DIR or MEMBER
    size: int  # bytes a read returns (0 for folders)
    stored: int  # bytes it takes in storage (du)
    mtime: float | None  # seconds since the epoch, None when unknown
    ino: int
    object_path: str = ""  # storage path of the file or archive holding the bytes
    version: Hashable = None  # (size, creation time) of that object, as last listed
    inner: str = ""  # cleaned path inside the archive (MEMBER_DIR, MEMBER)
    member: Member | None = None  # MEMBER only

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]

    @property
    def is_dir(self) -> bool:
        return self.kind in (FOLDER, ARCHIVE, MEMBER_DIR)


class InodeTable:
    """Inode numbers by path, given on first sight and never reused while mounted."""

    def __init__(self) -> None:
        self._numbers: dict[str, int] = {"/": 1}
        self._next = itertools.count(2)  # next() and setdefault() are atomic: no lock needed

    def __call__(self, path: str) -> int:
        number = self._numbers.get(path)
        if number is None:  # two threads may both draw a number; the first one stored wins
            number = self._numbers.setdefault(path, next(self._next))
        return number

    def __len__(self) -> int:
        return len(self._numbers)


def _timestamp(value: _dt.datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def safe_parts(name: str) -> list[str]:
    """Components of a member name that stay inside the archive's folder (see module notes)."""
    if "\x00" in name:
        name = name.split("\x00", 1)[0]
    return [part for part in _displayable(name).split("/") if part not in ("", ".", "..")]


_SURROGATE = re.compile("[\ud800-\udfff]")


def _displayable(name: str) -> str:
    """Lone surrogates cannot become a UTF-8 file name; they show as U+FFFD."""
    return name if name.isascii() else _SURROGATE.sub("\ufffd", name)


class ArchiveTree:
    """The folders and members of one archive, by their cleaned relative paths."""

    def __init__(self, listing: protocol.ZipListing, label: str = "") -> None:
        self.size = listing.size
        self.dirs: dict[str, dict[str, Member | None]] = {"": {}}  # folder -> name -> member
        self.dir_times: dict[str, float | None] = {}
        self.files: dict[str, Member] = {}
        self.entries: dict[str, Entry] = {}  # the VFS's entries, made on first use
        for item in listing.contents:
            self._add(item, label)

    def _add(self, item: protocol.ZipEntry, label: str) -> None:
        parts = safe_parts(item.name)
        if not parts:
            if item.name.strip("/"):
                log.warning("%s: member %r has no usable name; not shown", label, item.name)
            return
        is_dir = item.name.split("\x00", 1)[0].endswith("/")
        parent = "/".join(parts[:-1])
        if parent not in self.dirs:  # (a known folder's parents are all known)
            parent = ""
            for part in parts[:-1]:
                parent = self._ensure_dir(parent, part, label)
        last = parts[-1]
        mtime = _timestamp(item.creation_time)
        if is_dir:
            path = self._ensure_dir(parent, last, label)
            self.dir_times[path] = mtime
            return
        path = f"{parent}/{last}" if parent else last
        if path in self.dirs:
            log.warning("%s: file %r has the name of a folder; the folder is shown", label,
                        item.name)
            return
        if path in self.files:
            log.info("%s: %r appears twice; the later entry is shown", label, item.name)
        member = Member(item.name, item.size or 0, item.compressed_size or 0, item.range_start,
                        item.compress_type or 0, item.crc32, mtime)
        self.files[path] = member
        self.dirs[parent][last] = member

    def _ensure_dir(self, parent: str, name: str, label: str) -> str:
        path = f"{parent}/{name}" if parent else name
        if path in self.files:
            log.warning("%s: %r is both a file and a folder; the folder is shown", label, path)
            del self.files[path]
        if path not in self.dirs:
            self.dirs[path] = {}
        self.dirs[parent][name] = None
        return path

    # Bytes one member costs in a tree, its entry included, besides its name three times
    # (member, key, entry path) and the archive's path once: measured with tracemalloc over
    # trees of 3,000 and 16,000 members of tests/bigarchive.py's shape (575 bytes each with
    # the entries, names aside), rounded up.
    MEMBER_COST = 650

    def cost(self, listing: protocol.ZipListing, label: int) -> int:
        """What the tree takes in memory, about, once every entry is made (``listing`` is
        the one it was built from)."""
        names = sum(len(item.name) for item in listing.contents)
        return len(listing.contents) * (self.MEMBER_COST + label) + 3 * names

    def dir_time(self, rel: str) -> float | None:
        """The time of a folder, else of its nearest ancestor that has one."""
        while rel:
            when = self.dir_times.get(rel)
            if when:
                return when
            rel = rel.rpartition("/")[0]
        return None

    def __len__(self) -> int:
        return len(self.files) + len(self.dirs) - 1


class ArchiveFolder:
    """One folder of an archive listed folder by folder (``archivelisting``): its children by
    shown name (a ``Member``, or None for a sub-folder) and the sub-folders' times. Names are
    cleaned as ``ArchiveTree`` cleans them; the server has already left out what its own
    normalising drops.

    No entry is kept per child (``VFS._folder_entry`` makes one when asked, in about 2 us):
    the kernel keeps what ``stat`` said for the metadata TTL, and kept entries doubled what a
    folder costs, so that the folders of a 100,000-member archive did not fit their share of
    the budget and a second ``ls -lR`` asked the server for them all again."""

    __slots__ = ("children", "times", "cost")

    # Bytes a file and a sub-folder cost besides their names (a file's member name holds the
    # folder's path too): measured with tracemalloc over folders of 1,000 members (about 190
    # and 100; ``tests/test_vfs.py`` checks the estimate), rounded up.
    FILE_COST = 200
    FOLDER_COST = 110
    BASE_COST = 1200

    def __init__(self, items: Iterable[tuple[str, protocol.ZipEntry]], inner: str,
                 label: str) -> None:
        """``items``: (name relative to the folder, entry) as listed (``listed``,
        ``archivelisting.split_subtree``)."""
        self.children: dict[str, Member | None] = {}
        self.times: dict[str, float | None] = {}
        prefix = inner + "/" if inner else ""
        names = 0
        stamps: dict[_dt.datetime | None, float | None] = {None: None}  # members share times
        for listed_name, item in items:
            raw = listed_name.split("\x00", 1)[0]
            name = _displayable(raw.strip("/"))
            if not name or "/" in name or name in (".", ".."):
                log.warning("%s/%s: member %r has no usable name; not shown", label, inner,
                            listed_name)
                continue
            if raw.endswith("/"):
                if self.children.get(name) is not None:
                    log.warning("%s: %r is both a file and a folder; the folder is shown",
                                label, prefix + name)
                self.children[name] = None
                self.times[name] = _timestamp(item.creation_time)
            elif name in self.children and self.children[name] is None:
                log.warning("%s: file %r has the name of a folder; the folder is shown", label,
                            prefix + raw)
                continue
            else:
                when = item.creation_time
                stamp = stamps.get(when, False)
                if stamp is False:
                    stamp = stamps[when] = _timestamp(when)
                self.children[name] = Member(
                    prefix + raw, item.size or 0, item.compressed_size or 0, item.range_start,
                    item.compress_type or 0, item.crc32, stamp)
            names += len(name)
        folders = len(self.times)
        self.cost = self.BASE_COST + folders * self.FOLDER_COST + 2 * names + \
            (len(self.children) - folders) * (self.FILE_COST + len(prefix))


def listed(listing: protocol.ZipListing) -> Iterator[tuple[str, protocol.ZipEntry]]:
    """A folder's listing as ``ArchiveFolder`` takes it."""
    return ((item.name, item) for item in listing.contents)


class VFS:
    """The mount's tree over a ``Backend`` (normally a ``backend.CachedBackend``)."""

    def __init__(self, backend: Backend, *, zip_as_dir: bool = True, window: int = 8 << 20,
                 max_archives: int = 64, negative_ttl: float = 5.0,
                 clock: Callable[[], float] = time.time, context: ReadContext | None = None,
                 disk: DiskCache | None = None, metadata_ttl: float | None = None) -> None:
        self.backend = backend
        self.negative_ttl = negative_ttl  # a name missing from a listing is trusted this long
        self.zip_as_dir = zip_as_dir
        self.window = window
        # Block cache, snapshots and pools shared by all open files.
        self.context = context if context is not None else ReadContext()
        self.disk = disk  # fetched ranges kept on disk (--cache-dir)
        self.inodes = InodeTable()
        self.started = clock()
        self.root = Entry("/", FOLDER, 0, 0, self.started, 1)
        # Indexes built from what the backend returns; rebuilt when it returns a new listing.
        self._lock = threading.Lock()
        # A plain dict: it is read on every stat, where a dict get costs 0.04 us and a cachetools
        # LRUCache get 0.6 us (measured in one process); the oldest listing goes first, past 1024.
        self._folders: dict[str, _Folder] = {}  # storage path -> its last listing
        # (path, version) -> tree, kept in the memory budget (``ArchiveTree.cost``), at most
        # ``max_archives`` of them, the least recently built going first; concurrent misses
        # build one tree from one listing, and a missing archive is remembered for
        # ``negative_ttl``.
        self._trees = FolderCache(self.context.cache, float("inf"), negative_ttl)
        self._tree_keys: OrderedDict[tuple, None] = OrderedDict()
        self.max_archives = max(1, max_archives)
        # (object path, version, member) -> where its data starts, proven: opened again, a
        # member costs no request.
        self._starts: LRUCache[tuple, MemberStart] = LRUCache(maxsize=1 << 16)
        self._starts_lock = threading.Lock()
        # (object path, version) -> why the server could not list it: shown as a file.
        self._not_archives: dict[tuple[str, Hashable], str] = {}
        # Archives of many members, listed folder by folder (``archivelisting``): (path,
        # version) -> member count from the end records; folders kept in the memory budget
        # for the backend's metadata TTL (``metadata_ttl`` for a backend that keeps none).
        self._censuses = MetadataCache(float("inf"), negative_ttl, maxsize=4096)
        if metadata_ttl is None:
            metadata_ttl = getattr(backend, "ttl", 60.0)
        self._archive_folders = FolderCache(
            self.context.cache, float(metadata_ttl),
            limit=max(FOLDERS_MIN, int(self.context.cache.capacity * FOLDERS_SHARE)))
        # (path, version, folder) -> when it was listed (readdir), and when its whole subtree
        # was: a walk lists a folder's subtree at once (``_walk_ahead``).
        self._listed: LRUCache[tuple, float] = LRUCache(maxsize=4096)
        self._subtrees: LRUCache[tuple, float] = LRUCache(maxsize=4096)
        self._walk_lock = threading.Lock()
        # Folders of those archives just listed or walked through, by mount path: the next
        # asks for their entries skip the walk from the top. Only over a backend that counts
        # its changes (``CachedBackend``), for a second at most.
        self._recent = RecentFolders(min(1.0, float(metadata_ttl))) \
            if hasattr(backend, "changes") else None

    # -- the contract ------------------------------------------------------------------------

    def lookup(self, path: str) -> Entry:
        return self._resolve(path)[0]

    def names(self, path: str) -> list[str]:
        """The names of ``list(path)``; in an archive listed by folder, without making an
        entry for each (``readdir`` needs the names only)."""
        changes = self._changes()
        entry, archive = self._resolve(path, changes)
        if not entry.is_dir:
            raise NotADirectory(f"not a folder: {entry.path}")
        if archive is None or not self._by_folder(archive):
            return [child.name for child in self._children(entry, archive)]
        return list(self._listed_folder(entry, archive, changes).children)

    def list(self, path: str) -> list[Entry]:
        changes = self._changes()
        entry, archive = self._resolve(path, changes)
        if not entry.is_dir:
            raise NotADirectory(f"not a folder: {entry.path}")
        if archive is None or not self._by_folder(archive):
            return list(self._children(entry, archive))
        folder = self._listed_folder(entry, archive, changes)
        return [child for name in folder.children
                if (child := self._folder_entry(archive, folder, entry.inner, name)) is not None]

    def directory(self, path: str) -> Entry:
        """The entry at ``path``, once it is known whether it can be listed: an archive is
        listed here, and one that cannot be read as an archive comes back as a file."""
        entry, _ = self._resolve(path)
        if entry.kind == ARCHIVE:
            try:
                if self._by_folder(entry):
                    self._archive_folder(entry, "")
                else:
                    self._tree(entry)
            except NotAnArchive:
                return self.lookup(path)
        return entry

    def open(self, path: str) -> FileReader:
        """A reader (``read(offset, length)``, ``close()``) for a file or member."""
        return self.open_entry(self.lookup(path))

    def open_entry(self, entry: Entry) -> FileReader:
        """A reader for the version of the file or member that ``entry`` was listed with (the
        caller knows which version it opened: see ``pagecache``)."""
        path = entry.path
        if entry.is_dir:
            raise IsADirectory(f"is a folder: {entry.path}")
        fetch = self._fetcher(entry.object_path)
        identity = (entry.object_path, entry.version)
        if self.disk is not None:
            fetch = self.disk.wrap(fetch, identity)
        if entry.kind == FILE:
            return RangeReader(fetch, entry.size, name=entry.path, context=self.context,
                               key=identity)
        member = entry.member
        assert member is not None
        start = self._member_start(entry, fetch)
        data_start, compressed = start.start, start.compressed_size
        crc_lookup: Callable[[], int | None] | None = None
        if member.crc32 is None:
            archive_crc = start.crc_lookup(fetch)

            def lookup_crc() -> int | None:
                crc = archive_crc()
                if crc is None:
                    log.warning("%s: no CRC-32 found in the archive; served unchecked", path)
                return crc
            crc_lookup = lookup_crc
        if start.prefetched:  # only the data: released once a read has reached its end
            fetch = primed(fetch, data_start, start.prefetched[:compressed])
        return MemberReader(fetch, data_start=data_start, compressed_size=compressed,
                            size=member.size, method=start.method, crc32=member.crc32,
                            crc_lookup=crc_lookup, name=entry.path, window=self.window,
                            context=self.context, key=(identity, data_start, compressed))

    def space_used(self) -> int:
        """Bytes in storage, 0 when the API cannot say: ``df`` should not fail because the API
        is slow."""
        try:
            return self.backend.space_used()
        except StorageError as exc:
            log.warning("space used unknown (df shows 0): %s", exc)
            return 0

    # -- paths ---------------------------------------------------------------------------------

    def _resolve(self, path: str, changes: int | None = None) -> tuple[Entry, Entry | None]:
        """The entry at a mount path, and the archive it lies in (None outside archives).

        Entries are made once per listing (storage folders) or per archive version (members
        of archives listed whole); in archives listed by folder, when asked. ``changes``: the
        backend's change counter read before anything was resolved (``_recent`` keeps folders
        under it: a listing that changes meanwhile makes them stale at once).
        """
        if changes is None:
            changes = self._changes()
        if self._recent is not None:  # an entry of a folder just listed or walked through
            parent, _, name = path.rpartition("/")
            recent = self._recent.get(parent, changes)
            if recent is not None:
                archive, folder, inner = recent
                found = self._folder_entry(archive, folder, inner, name)
                if found is not None:
                    return found, archive
        entry = self.root
        names = [name for name in path.split("/") if name]
        for i, name in enumerate(names):
            if entry.kind != FOLDER:
                if not entry.is_dir:
                    raise NotADirectory(f"not a folder: {entry.path}")
                return self._member(entry, names[i:], changes), entry
            child = self._child(entry, name)
            if child is None:
                raise NotFound(f"no such file or folder: {_join(entry.path, name)}")
            entry = child
        return entry, (entry if entry.kind == ARCHIVE else None)

    def _member(self, archive: Entry, names: Sequence[str], changes: int) -> Entry:
        """The entry at ``names`` inside the archive (its cleaned path, split)."""
        if self._by_folder(archive):
            return self._folder_member(archive, names, changes)
        tree = self._tree(archive)
        rel = "/".join(names)
        entry = tree.entries.get(rel) or self._member_entry(archive, tree, rel)
        if entry is not None:
            return entry
        for i in range(1, len(names)):  # why not: a file on the way, or a missing name
            if "/".join(names[:i]) in tree.files:
                raise NotADirectory(f"not a folder: {archive.path}/{'/'.join(names[:i])}")
        raise NotFound(f"no such file or folder: {archive.path}/{rel}")

    def _child(self, parent: Entry, name: str) -> Entry | None:
        """An entry of a storage folder."""
        folder = self._folder(parent.object_path)
        entry = folder.entries.get(name)
        if entry is not None:
            return entry
        item = folder.items.get(name)
        if item is None:  # perhaps new since the listing: ask again if it is not recent
            folder = self._folder(parent.object_path, self.negative_ttl)
            item = folder.items.get(name)
            if item is None:
                return None
        entry = folder.entries[name] = self._storage_entry(parent, name, item)
        return entry

    def _children(self, parent: Entry, archive: Entry | None) -> Iterator[Entry]:
        if parent.kind == FOLDER:
            for name in list(self._folder(parent.object_path).items):
                entry = self._child(parent, name)
                if entry is not None:
                    yield entry
        else:
            assert archive is not None  # an archive listed whole (``list`` sees to that)
            tree = self._tree(archive)
            prefix = parent.inner + "/" if parent.inner else ""
            for name in tree.dirs.get(parent.inner, {}):
                rel = prefix + name
                entry = tree.entries.get(rel) or self._member_entry(archive, tree, rel)
                if entry is not None:
                    yield entry

    # -- storage folders -----------------------------------------------------------------------

    def _folder(self, storage_path: str, max_age: float | None = None) -> "_Folder":
        """The folder's items by name, from its (cached) listing."""
        listing = self.backend.list_folder(storage_path, max_age)
        cached = self._folders.get(storage_path)
        if cached is not None and cached.listing is listing:
            return cached
        index: dict[str, protocol.StorageFile] = {}
        for item in listing:
            raw = item.name.rstrip("/")
            if not raw or "/" in raw or raw in (".", "..") or "\x00" in raw:
                log.info("/%s: entry %r cannot be a file name; not shown", storage_path, item.name)
                continue
            name = _displayable(raw)
            earlier = index.get(name)
            if earlier is not None and earlier.is_directory != item.is_directory:
                log.info("/%s: a file and a folder are both named %r; the folder is shown",
                         storage_path, name)
                if earlier.is_directory:
                    continue
            index[name] = item
        folder = _Folder(listing, index)
        with self._lock:
            self._folders.pop(storage_path, None)
            self._folders[storage_path] = folder
            if len(self._folders) > _FOLDERS_KEPT:  # the oldest listing goes first
                del self._folders[next(iter(self._folders))]
        return folder

    def _storage_entry(self, parent: Entry, name: str, item: protocol.StorageFile) -> Entry:
        path = _join(parent.path, name)
        raw = item.name.rstrip("/")  # the storage's own spelling, for requests
        object_path = f"{parent.object_path}/{raw}" if parent.object_path else raw
        mtime = _timestamp(item.creation_time) or self.started
        if item.is_directory:
            return Entry(path, FOLDER, 0, 0, mtime, self.inodes(path), object_path)
        size = item.size_bytes or 0
        version = (size, mtime)
        if (self.zip_as_dir and name.lower().endswith(".zip")
                and (object_path, version) not in self._not_archives):
            return Entry(path, ARCHIVE, 0, 0, mtime, self.inodes(path), object_path, version)
        return Entry(path, FILE, size, size, mtime, self.inodes(path), object_path, version)

    # -- archives ------------------------------------------------------------------------------

    def _tree(self, entry: Entry) -> ArchiveTree:
        """The archive's tree, built once per archive version; ``NotAnArchive`` if the server
        cannot read it as one (see the module notes)."""
        key = (entry.object_path, entry.version)

        def build() -> tuple[ArchiveTree, int]:
            self._check_archive(entry, key)  # (another thread may have been refused)
            try:
                listing = self.backend.zip_listing(entry.object_path, entry.version)
            except (InvalidRequest, TooLarge, CorruptArchive) as exc:
                self._not_an_archive(entry, key, str(exc))
                raise self._refusal(entry, key) from None
            with gc_paused():  # 1e5 members: see storagefs.gcpause
                tree = ArchiveTree(listing, "/" + entry.object_path)
            with self._lock:
                self._tree_keys[key] = None
                self._tree_keys.move_to_end(key)
                while len(self._tree_keys) > self.max_archives:
                    self._trees.discard(self._tree_keys.popitem(last=False)[0])
            return tree, tree.cost(listing, len(entry.path))

        self._check_archive(entry, key)
        return self._trees.get(key, build)

    def _check_archive(self, entry: Entry, key: tuple[str, Hashable]) -> None:
        if key in self._not_archives:
            raise self._refusal(entry, key)

    def _refusal(self, entry: Entry, key: tuple[str, Hashable]) -> NotAnArchive:
        return NotAnArchive(f"not a folder: {entry.path} is not readable as a ZIP archive "
                            f"({self._not_archives.get(key)}), so it is shown as a file")

    def _not_an_archive(self, entry: Entry, key: tuple[str, Hashable], why: str) -> None:
        """From now on the file it is: its folder's entry is made again, as a file."""
        with self._lock:
            self._not_archives[key] = why
            if len(self._not_archives) > _NOT_ARCHIVES_KEPT:
                del self._not_archives[next(iter(self._not_archives))]
            folder = self._folders.get(entry.object_path.rpartition("/")[0])
            if folder is not None:
                folder.entries.pop(entry.name, None)
        if self._recent is not None:  # its folders walked through just now are no more
            self._recent.clear()
        log.warning("%s: not readable as a ZIP archive (%s); shown as a file", entry.path, why)

    # -- archives listed folder by folder (archivelisting) ----------------------------------

    def _by_folder(self, archive: Entry) -> bool:
        """Whether the archive is listed folder by folder: it has ``LAZY_MEMBERS`` members or
        more, by its end records (read once per version, and only when its size allows)."""
        key = (archive.object_path, archive.version)
        self._check_archive(archive, key)
        size = archive.version[0] if isinstance(archive.version, tuple) else 0
        if not needs_census(size):
            return False

        def count() -> int:
            fetch = self._fetcher(archive.object_path)
            if self.disk is not None:  # a later mount finds the end records there
                fetch = self.disk.wrap(fetch, key)
            try:
                census = read_census(fetch, size)
            except CorruptArchive as exc:  # the server will say what it is
                log.info("%s: %s; listed whole", archive.path, exc)
                return 0
            log.debug("%s: %d members, central directory of %d bytes", archive.path,
                      census.members, census.directory_size)
            return census.members

        return bool(self._censuses.get(key, count) >= LAZY_MEMBERS)

    def _archive_folder(self, archive: Entry, inner: str) -> ArchiveFolder:
        """One folder of the archive (``inner`` = its cleaned path, "" for the top), kept in
        the memory budget for the metadata TTL; ``NotAnArchive`` if the server refuses."""
        key = (archive.object_path, archive.version)

        def load() -> tuple[ArchiveFolder, int]:
            self._check_archive(archive, key)  # (another thread may have been refused)
            try:
                listing = self.backend.zip_folder(archive.object_path, inner, archive.version)
            except (InvalidRequest, TooLarge, CorruptArchive) as exc:
                self._not_an_archive(archive, key, str(exc))
                raise self._refusal(archive, key) from None
            with gc_paused():
                folder = ArchiveFolder(listed(listing), inner, archive.path)
            return folder, folder.cost

        return self._archive_folders.get(key + (inner,), load)

    def _listed_folder(self, entry: Entry, archive: Entry, changes: int) -> ArchiveFolder:
        """The folder of ``entry`` (in an archive listed by folder), listed as ``ls`` lists it:
        a walk may list its parent's subtree first, and it is noted as listed and recent."""
        self._walk_ahead(archive, entry.inner)
        folder = self._archive_folder(archive, entry.inner)
        self._remember(archive, folder, entry.inner, changes)
        with self._walk_lock:
            self._listed[(archive.object_path, archive.version, entry.inner)] = time.monotonic()
        return folder

    def _walk_ahead(self, archive: Entry, inner: str) -> None:
        """Before listing ``inner``: if this is a walk (``find``, ``ls -R``, ``du``: its parent
        was listed less than ``WALK_GAP`` seconds before) and ``inner`` holds only files, the
        parent's subtree is estimated from it (``archivelisting.walk_estimate``) and, if it
        has fewer than ``LAZY_MEMBERS`` members, listed in one request, its folders all kept:
        a walk of ``processor3`` costs one request instead of one per time step. Someone
        typing ``ls`` of a folder, then of one inside, is slower than a walk, and is answered
        with that folder's listing alone."""
        key = (archive.object_path, archive.version)
        ttl = self._archive_folders.ttl
        now = time.monotonic()
        parent = inner.rpartition("/")[0]
        with self._walk_lock:
            walked = inner and now - self._listed.get(key + (parent,), -ttl) < WALK_GAP
            if not walked or now - self._subtrees.get(key + (parent,), -ttl) < ttl:
                return
            self._subtrees[key + (parent,)] = now  # tried once per TTL, whatever the answer
        folder = self._archive_folder(archive, inner)
        if None in folder.children.values():
            return
        above = self._archive_folder(archive, parent)
        subfolders = sum(1 for child in above.children.values() if child is None)
        estimate = walk_estimate(subfolders, len(above.children) - subfolders,
                                 len(folder.children))
        if estimate >= LAZY_MEMBERS:
            return
        try:
            listing = self.backend.zip_folder(archive.object_path, parent, archive.version,
                                              recursive=True)
        except StorageError as exc:  # only a shortcut: the walk goes on folder by folder
            log.warning("%s/%s: listing it at once failed (%s); listed folder by folder",
                        archive.path, parent, exc)
            return
        # The folders above the subtree are the walk's way back up: made the most recently
        # used before the subtree comes in (older folders go first if it nearly fills the
        # share) and again after it.
        way_up = parent.split("/") if parent else []
        above_keys = [key + ("/".join(way_up[:depth]),) for depth in range(len(way_up) + 1)]
        for above_key in above_keys:
            self._archive_folders.peek(above_key)
        with gc_paused():
            for rel, part in split_subtree(listing).items():
                path = f"{parent}/{rel}" if parent and rel else parent or rel
                made = ArchiveFolder(part, path, archive.path)
                self._archive_folders.put(key + (path,), made, made.cost)
        for above_key in above_keys:
            self._archive_folders.peek(above_key)

    def _folder_member(self, archive: Entry, names: Sequence[str], changes: int) -> Entry:
        """The entry at ``names``, listing only the folders on the way (none if its own
        folder is kept: ``ls -lR`` asks for each path through every folder above it)."""
        if len(names) > 1:
            inner = "/".join(names[:-1])
            kept = self._archive_folders.peek((archive.object_path, archive.version, inner))
            if kept is not None:
                found = self._folder_entry(archive, kept, inner, names[-1])
                if found is None:
                    raise NotFound(f"no such file or folder: {archive.path}/{inner}/{names[-1]}")
                self._remember(archive, kept, inner, changes)
                return found
        folder = self._archive_folder(archive, "")
        inner = ""
        entry = archive
        for i, name in enumerate(names):
            if i:
                if not entry.is_dir:
                    raise NotADirectory(f"not a folder: {entry.path}")
                inner = entry.inner
                folder = self._archive_folder(archive, inner)
            found = self._folder_entry(archive, folder, inner, name)
            if found is None:
                raise NotFound(f"no such file or folder: {_join(entry.path, name)}")
            entry = found
        self._remember(archive, folder, inner, changes)
        return entry

    def _changes(self) -> int:
        return getattr(self.backend, "changes", 0)

    def _remember(self, archive: Entry, folder: ArchiveFolder, inner: str, changes: int) -> None:
        """``folder`` (at ``inner``) was just listed or walked through: see ``_recent``."""
        if self._recent is not None:
            path = f"{archive.path}/{inner}" if inner else archive.path
            self._recent.put(path, (archive, folder, inner), len(folder.children), changes)

    def _folder_entry(self, archive: Entry, folder: ArchiveFolder, inner: str,
                      name: str) -> Entry | None:
        """The entry of one child of a listed folder, made anew (see ``ArchiveFolder``); None
        if absent. Its inode number comes from its path (``archivelisting.path_inode``)."""
        if name not in folder.children:
            return None
        member = folder.children[name]
        rel = f"{inner}/{name}" if inner else name
        path = f"{archive.path}/{rel}"
        if member is None:
            entry = Entry(path, MEMBER_DIR, 0, 0, folder.times.get(name) or archive.mtime,
                          path_inode(path), archive.object_path, archive.version, rel)
        else:
            entry = Entry(path, MEMBER, member.size, member.compressed_size,
                          member.mtime or archive.mtime, path_inode(path), archive.object_path,
                          archive.version, rel, member)
        return entry

    def _member_entry(self, archive: Entry, tree: ArchiveTree, rel: str) -> Entry | None:
        """The entry of a folder or member (by cleaned path), kept in the tree; None if absent.

        A time missing from the archive is its folder's, else the archive's own."""
        path = f"{archive.path}/{rel}"
        if rel in tree.dirs:
            entry = Entry(path, MEMBER_DIR, 0, 0, tree.dir_time(rel) or archive.mtime,
                          self.inodes(path), archive.object_path, archive.version, rel)
        else:
            member = tree.files.get(rel)
            if member is None:
                return None
            mtime = member.mtime or tree.dir_time(rel.rpartition("/")[0]) or archive.mtime
            entry = Entry(path, MEMBER, member.size, member.compressed_size, mtime,
                          self.inodes(path), archive.object_path, archive.version, rel, member)
        tree.entries[rel] = entry
        return entry

    def _member_start(self, entry: Entry, fetch: Fetch) -> MemberStart:
        """Where the member's compressed bytes are: the listing's ``range_start`` once its
        local header proves it (no request of its own: see ``memberstart``), else
        ``zip-file-range``. Kept per archive version, so a member opened again costs
        nothing."""
        member = entry.member
        assert member is not None
        key = (entry.object_path, entry.version, member.name)
        with self._starts_lock:
            known = self._starts.get(key)
        if known is not None:
            return known

        def ask_range() -> tuple[int, int, int]:
            rng = self.backend.member_range(entry.object_path, member.name, entry.version)
            return rng.range_start, rng.range_end - rng.range_start + 1, rng.compress_type

        start = locate(fetch, name=member.name, listed_start=member.data_start,
                       compressed_size=member.compressed_size, method=member.method,
                       ask_range=ask_range)
        with self._starts_lock:
            self._starts[key] = dataclasses.replace(start, prefetched=b"")
        return start

    def _fetcher(self, object_path: str) -> Callable[[int, int], bytes]:
        """``fetch(start, end)`` over the object's signed URL, renewed once if refused."""
        backend = self.backend

        def fetch(start: int, end: int) -> bytes:
            if end <= start:
                return b""
            url = backend.download_url(object_path)
            try:
                return backend.read_range(url, start, end - 1)
            except PermissionDenied:
                backend.forget_url(object_path)  # expired early, or the key rotated
                return backend.read_range(backend.download_url(object_path), start, end - 1)

        return fetch


_FOLDERS_KEPT = 1024
# A folder listed within this many seconds after its parent's listing ended is a walk: ``ls
# -lR`` stats the parent's entries in between (0.46 ms each over a million members, measured
# on a busy 2-core machine: 0.5 s for a folder of 1,000).
WALK_GAP = 5.0
# The part of the memory budget folders of archives listed by folder may take together
# (``archivelisting.FolderCache``): 64 MiB of the default 256 MiB, about 250,000 members; at
# least 32 MiB, so that a walk's subtree (``_walk_ahead``: under ``LAZY_MEMBERS``, about 5 MiB
# for a solver's 16,000) always fits with the folders above it.
FOLDERS_SHARE = 0.25
FOLDERS_MIN = 32 << 20
_NOT_ARCHIVES_KEPT = 4096


class _Folder:
    """One listing of a storage folder: its items by shown name, and their entries once made."""

    __slots__ = ("listing", "items", "entries")

    def __init__(self, listing: list[protocol.StorageFile],
                 items: dict[str, protocol.StorageFile]) -> None:
        self.listing = listing
        self.items = items
        self.entries: dict[str, Entry] = {}


def _join(parent: str, name: str) -> str:
    return parent.rstrip("/") + "/" + name
