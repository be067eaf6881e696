"""Archives with many members: how many there are, and their folders kept one by one.

A task that writes a million files writes a million-member ``output.zip``. Its whole listing
is a 176 MB answer that takes the server tens of seconds and would cost the mount over a
gigabyte, so ``vfs.VFS`` lists such an archive one folder at a time (``recursive=false``,
``zip_relative_path``), and keeps each folder's listing here, under the metadata TTL and in
the mount's one memory budget. Small archives are still listed whole, in one call.

Which is which is decided before any listing, from the end-of-central-directory record: one
ranged GET of the archive's last bytes gives the member count and the size of the central
directory (``read_census``). An archive too small in bytes to hold ``LAZY_MEMBERS`` members
is not probed at all (``needs_census``), so small archives cost what they always did.

The threshold, measured (``scripts/bench_listing.py --threshold``: reference server with one
worker and its index warm, this project's shared 2-core machine, archives of
``tests/bigarchive.py``'s shape; the first ls of a deep folder asks for four folders):

=========  =============  ==========  ====================
members    whole listing  tree built  four folder listings
=========  =============  ==========  ====================
10,000     0.20 s         0.06 s      28 ms
30,000     0.61 s         0.19 s      24 ms
100,000    1.95 s         0.67 s      34 ms
300,000    6.64 s         2.18 s      45 ms
=========  =============  ==========  ====================

Listed whole, an archive costs about 27 us per member before its first ``ls`` answers (twice
that when the machine is busy: 1.46 s for 30,000 in an earlier run), and about 0.7 KB per
member of memory while it is kept; listed by folder, the first ``ls`` costs a few folder
listings whatever the size, but a walk of everything (``find``, ``ls -lR``) costs a request
per folder (or per small subtree) instead of one in all. At 20,000 members the whole
listing takes half a second on a quiet machine and a second on a busy one, which is where a
user starts to wait: from there on, folder by folder.

Kept by folder, a member costs about 0.25 KB (``vfs.ArchiveFolder``: no entry is kept per
member), and the folders together take at most a share of the budget (``FolderCache``'s
``limit``, ``vfs.FOLDERS_SHARE``), so that a walk of a million members leaves room for data
and for what libfuse keeps per path. A walk asks for each entry by its whole path just after
listing its folder: ``RecentFolders`` answers those without walking down from the top.
"""

from __future__ import annotations

import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from ..errors import CorruptArchive, NotFound
from ..protocol import ZipEntry, ZipListing
from ..zipfmt import Fetch
from .read.blockcache import BlockCache

# Archives with at least this many members are listed folder by folder (see the notes).
LAZY_MEMBERS = 20_000
# The fewest bytes a member can take: a local header (30) and a central directory header (46),
# each with a name of at least one byte. An archive smaller than LAZY_MEMBERS times this
# cannot have LAZY_MEMBERS members, and is listed whole without being probed.
MIN_MEMBER_BYTES = 78

# 4.3.16 End of central directory record (APPNOTE 6.3.10), 22 bytes + comment: signature,
# this disk (2), CD disk (2), entries on this disk (2), total entries (2), CD size (4),
# CD offset (4), comment length (2). 4.3.15 Zip64 locator, 20 bytes, right before it; 4.3.14
# Zip64 end record, 56 bytes, normally right before the locator.
_EOCD = struct.Struct("<4s4H2LH")
_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_EOCD_SIG, _LOCATOR_SIG, _EOCD64_SIG = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06"
# First probe: the records of an archive with a comment of up to about 900 bytes; an archive
# with a longer comment costs a second GET of the most the records can span.
_FIRST_PROBE = 1024
_MOST_PROBE = _EOCD.size + 0xFFFF + _LOCATOR.size + _EOCD64.size


@dataclass(frozen=True)
class Census:
    """What the end records say: entries in the central directory, and its size in bytes."""

    members: int
    directory_size: int


def needs_census(archive_size: int) -> bool:
    """Whether an archive of this many bytes could hold ``LAZY_MEMBERS`` members."""
    return archive_size >= LAZY_MEMBERS * MIN_MEMBER_BYTES


def read_census(fetch: Fetch, archive_size: int) -> Census:
    """The member count and directory size of the archive, from one ranged GET at its end
    (two if its comment is long); ``CorruptArchive`` if there is no end record."""
    start = max(0, archive_size - _FIRST_PROBE)
    tail = fetch(start, archive_size)
    found = _census(tail)
    if found is None and start > 0:
        start = max(0, archive_size - _MOST_PROBE)
        tail = fetch(start, archive_size)
        found = _census(tail)
    if found is None:
        raise CorruptArchive("no end of central directory record in the archive's last "
                             f"{len(tail)} bytes")
    return found


def _census(tail: bytes) -> Census | None:
    """From the last bytes of an archive: the last end record whose comment ends them."""
    pos = len(tail) - _EOCD.size
    while pos >= 0:
        pos = tail.rfind(_EOCD_SIG, 0, pos + 4)
        if pos < 0:
            return None
        _sig, _disk, _cd_disk, _here, entries, cd_size, _cd_offset, comment = \
            _EOCD.unpack_from(tail, pos)
        if pos + _EOCD.size + comment == len(tail):
            break
        pos -= 1
    else:
        return None
    locator = pos - _LOCATOR.size
    record = locator - _EOCD64.size
    if record >= 0 and tail[locator:locator + 4] == _LOCATOR_SIG \
            and tail[record:record + 4] == _EOCD64_SIG:
        fields = _EOCD64.unpack_from(tail, record)
        entries, cd_size = fields[7], fields[8]
    return Census(entries, cd_size)


def walk_estimate(subfolders: int, files: int, first_leaf: int) -> int:
    """Members below a folder with ``subfolders`` and ``files``, when its first sub-folder
    turned out to hold ``first_leaf`` entries and no folder: a solver's output repeats one
    shape (``processor3/0.001 .. 1.000`` each with the same 16 fields)."""
    return files + subfolders * (first_leaf + 1)


def split_subtree(listing: ZipListing) -> dict[str, list[tuple[str, ZipEntry]]]:
    """A recursive listing of one folder as the listings of every folder in it, by their
    path relative to it ("" for itself), as ``recursive=false`` would give each: direct
    children by (name, entry), sub-folders once with a trailing "/", including folders only
    deeper names imply (entries keep their full relative name: copying 1e4 of them to rename
    them costs more than the split)."""
    folders: dict[str, dict[str, ZipEntry]] = {"": {}}
    for item in listing.contents:
        parts = item.name.split("/")
        is_dir = item.name.endswith("/")
        if is_dir:
            parts.pop()
        parent = ""
        for part in parts[:-1]:
            path = f"{parent}/{part}" if parent else part
            if path not in folders:
                folders[path] = {}
                folders[parent].setdefault(part + "/", _IMPLIED)
            parent = path
        if not parts or not parts[-1]:
            continue
        last = parts[-1]
        if is_dir:
            path = f"{parent}/{last}" if parent else last
            folders.setdefault(path, {})
            folders[parent][last + "/"] = item
        else:
            folders[parent][last] = item
    return {path: list(children.items()) for path, children in folders.items()}


# A folder only deeper names imply, as the server lists one (its name is not read).
_IMPLIED = ZipEntry("", 0, 0, None, None, 0)


def path_inode(path: str) -> int:
    """An inode number for a path inside an archive listed by folder, with no table to keep.

    Derived from the path (Python's string hash: 64-bit SipHash, keyed afresh in each process
    unless ``PYTHONHASHSEED`` says otherwise, so nobody can craft names that collide; cut to
    2**62 .. 2**63 - 1, far above the numbers
    ``vfs.InodeTable`` counts out from 2), so it is the same each time the path is seen while
    mounted, as ``InodeTable``'s are, and a walk of a million members costs no memory for inode
    numbers, and a tenth of a cryptographic hash's time (``find`` makes one per path). Two
    paths share a number with odds of about n**2 / 2**63: 1e-7 for a million paths."""
    return (hash(path) & _INODE_BITS) | (1 << 62)


_INODE_BITS = (1 << 62) - 1


class FolderCache:
    """Listings of archive folders by key, each kept ``ttl`` seconds, in the memory budget.

    The entries live in the mount's ``BlockCache`` (``--cache-size``), next to decoded data
    and counted at the cost their loader reports, so the least recently used folder or block
    goes first whichever the mount holds more of: a walk of a million members keeps what the
    budget allows, not the whole tree. The last folder too large for the budget is kept
    outside it, alone. Concurrent misses on one key wait for a single load; a ``NotFound``
    is remembered for ``negative_ttl`` (at most ``MISSES_KEPT`` of them), other errors are
    not kept. ``vfs`` keeps whole archive trees here too, with an infinite TTL (a version
    fixes them).

    ``limit``: the folders together take at most that many bytes of the budget, their own
    least recently used going first beyond it. A walk needs only the folders it is in, and the
    kernel makes the mount remember something of every path it walked besides (libfuse 2
    keeps a node per path the kernel holds, 150 to 190 bytes each: about 190 MB after
    ``ls -lR`` of a million members), so listings filling the whole budget would put the mount
    that much over it.
    """

    MISSES_KEPT = 1024

    def __init__(self, budget: BlockCache, ttl: float, negative_ttl: float = 0.0,
                 clock: Callable[[], float] = time.monotonic,
                 limit: int | None = None) -> None:
        self.budget = budget
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.limit = limit
        self._costs: OrderedDict[Hashable, int] = OrderedDict()  # kept keys, least recent first
        self._total = 0  # their costs (a key the budget evicted counts until it is found gone)
        self._clock = clock
        self._lock = threading.Lock()
        self._loading: dict[Hashable, threading.Lock] = {}
        self._missing: dict[Hashable, tuple[NotFound, float]] = {}
        # The last value larger than the budget (a flat folder of 1e5 members with a small
        # --cache-size): kept outside it, alone, so that ``ls -l`` of it lists it once.
        self._oversize: tuple[Hashable, tuple[Any, float]] | None = None
        self.loads = 0  # for tests and figures: listings asked of the server

    def get(self, key: Hashable, load: Callable[[], tuple[Any, int]]) -> Any:
        """The kept value for ``key``, or ``load()`` -> (value, cost in bytes), kept."""
        value = self._fresh(key)
        if value is not None:
            return value
        with self._lock:
            gate = self._loading.setdefault(key, threading.Lock())
        try:
            with gate:
                value = self._fresh(key)
                if value is not None:
                    return value
                self.loads += 1
                try:
                    value, cost = load()
                except NotFound as exc:
                    if self.negative_ttl > 0:
                        with self._lock:
                            self._missing[key] = (exc, self._clock())
                            if len(self._missing) > self.MISSES_KEPT:
                                del self._missing[next(iter(self._missing))]
                    raise
                self.put(key, value, cost)
                return value
        finally:
            with self._lock:
                self._loading.pop(key, None)

    def put(self, key: Hashable, value: Any, cost: int) -> None:
        """Keep a value loaded some other way (a folder of a subtree listed at once)."""
        item = (value, self._clock())
        if not self.budget.put(("listing", key), item, size=cost):
            self._oversize = (key, item)
            return
        if self.limit is None or cost > self.limit:
            # A folder larger than the share alone (a top folder of 4e5 files, needed again
            # for each sub-folder a walk enters) is left to the budget's own LRU: within the
            # share, each next folder would evict it.
            return
        gone = []
        with self._lock:
            self._total += cost - self._costs.pop(key, 0)
            self._costs[key] = cost
            while self._total > self.limit and len(self._costs) > 1:
                old, old_cost = self._costs.popitem(last=False)
                self._total -= old_cost
                gone.append(old)
        for old in gone:
            self.budget.discard(("listing", old))

    def peek(self, key: Hashable) -> Any:
        """The kept value for ``key``, or None (nothing is loaded)."""
        try:
            return self._fresh(key)
        except NotFound:
            return None

    def discard(self, key: Hashable) -> None:
        self.budget.discard(("listing", key))
        self._forget_cost(key)
        oversize = self._oversize
        if oversize is not None and oversize[0] == key:
            self._oversize = None

    def _fresh(self, key: Hashable) -> Any:
        if self._missing:
            with self._lock:
                missing = self._missing.get(key)
                if missing is not None and self._clock() - missing[1] >= self.negative_ttl:
                    del self._missing[key]
                    missing = None
            if missing is not None:
                raise missing[0]
        item = self.budget.get(("listing", key))
        if item is None:
            self._forget_cost(key)
            oversize = self._oversize
            if oversize is None or oversize[0] != key:
                return None
            item = oversize[1]
        elif self.limit is not None:
            with self._lock:
                if key in self._costs:
                    self._costs.move_to_end(key)
        value, loaded = item
        if self._clock() - loaded >= self.ttl:
            self.discard(key)
            return None
        return value

    def _forget_cost(self, key: Hashable) -> None:
        if self.limit is not None and key in self._costs:
            with self._lock:
                self._total -= self._costs.pop(key, 0)


class RecentFolders:
    """The last few folders of archives listed by folder, by their mount path.

    ``find`` and ``ls -lR`` ask for every entry of a folder just after listing it, each by its
    whole path; resolved from the top, each ask walks the storage folders and the archive's
    folders above it again, about 60 us of Python per path (a third of ``find``'s time over
    17,001 paths). A folder here is trusted for ``horizon`` seconds (at most the metadata TTL,
    so an answer may be that much older than the folder's own TTL allows) and while no cached
    storage listing has changed (``changes``, the backend's counter, read before the path was
    resolved). Only small folders are kept, as they are kept here outside the memory budget
    (until the next ``put`` or ``clear``): at most ``size`` of ``max_children`` entries each,
    a few MB at worst.
    """

    def __init__(self, horizon: float, size: int = 8, max_children: int = 2048,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.horizon = horizon
        self.size = size
        self.max_children = max_children
        self._clock = clock
        self._items: dict[str, tuple[Any, float, int]] = {}  # path -> (value, until, changes)
        self._lock = threading.Lock()

    def get(self, path: str, changes: int) -> Any:
        """The value kept for ``path`` if it is still to be trusted, else None."""
        item = self._items.get(path)
        if item is None or item[2] != changes or self._clock() >= item[1]:
            return None
        return item[0]

    def put(self, path: str, value: Any, children: int, changes: int) -> None:
        if children > self.max_children or self.horizon <= 0:
            return
        now = self._clock()
        with self._lock:
            items = self._items
            items.pop(path, None)
            for old in [key for key, item in items.items() if item[1] <= now]:
                del items[old]
            while len(items) >= self.size:
                del items[next(iter(items))]
            items[path] = (value, now + self.horizon, changes)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
