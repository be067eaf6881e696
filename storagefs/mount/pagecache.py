"""When an open may keep the kernel's pages of a file (FUSE's ``FOPEN_KEEP_CACHE``).

The kernel keeps the pages it read of a file in its page cache, per inode. An open answered
with ``keep_cache`` leaves them there, so a second ``cat`` or a second SQLite connection is
served by the kernel without a call reaching the mount; an open answered without it drops
them all first (``invalidate_inode_pages2`` in the kernel's ``fuse_open``), so every byte read
afterwards comes from the mount again.

The kernel's inode does not tell versions apart: libfuse 2's high-level API gives the kernel
its own node ids, one per path while the kernel remembers it (``use_ino`` only sets
``st_ino``, and ``vfs.InodeTable`` keeps one number per path as well), so a replaced file or
archive is the same inode with the old version's pages. What guarantees fresh bytes is the
rule below, keyed by path and the entry's version (the object's size and time as the storage
listing gives them; an archive's version for its members):

- an open keeps the pages only when the last open that dropped them was of the same version
  and no file of another version has been open since: those pages can only hold this
  version's bytes, which cannot change while the version does not;
- any other open drops them and records its version; a file still open with an older version
  could fill pages again after that drop, so while one is, and once more after it closed,
  opens drop the pages again.

A new version shows in the listing after ``--metadata-ttl``, as everything else does; from
the first open after that, no old page is served. Forgetting a path only costs one drop. When
the size changed too, the kernel also cuts its pages to the new size on the new attributes.

The drop is the kernel's ``invalidate_inode_pages2``, which skips pages it cannot take at that
moment: measured on Linux 6.18, an open without ``keep_cache`` moments after a read sometimes
left the file's pages in place (``main`` opened every file so, and a second ``cat`` was then
served by the kernel anyway, unpredictably). A version change is only seen a TTL after the
listing that showed the old one, long after such a read, and ``tests/test_page_cache.py``
replaces files and archives under a mount to check that the new bytes are what is read.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Hashable


class _Pages:
    """What the kernel may hold of one path: pages of ``version`` only, unless ``tainted``."""

    __slots__ = ("version", "current", "older", "tainted")

    def __init__(self, version: Hashable) -> None:
        self.version = version
        self.current = 0  # files open with ``version``
        self.older = 0  # files open with an earlier version
        self.tainted = False  # an earlier version's file was open after the last drop


class PageCachePolicy:
    """Says at each open whether the kernel may keep its pages; told of each release."""

    def __init__(self, max_paths: int = 1 << 16) -> None:
        self.max_paths = max_paths
        self._paths: OrderedDict[str, _Pages] = OrderedDict()
        self._lock = threading.Lock()

    def opened(self, path: str, version: Hashable) -> bool:
        """Whether this open may set ``keep_cache``; call ``released`` when it is closed."""
        with self._lock:
            pages = self._paths.get(path)
            if pages is None:
                pages = self._paths[path] = _Pages(version)
                self._forget_idle()
                keep = False
            else:
                self._paths.move_to_end(path)
                keep = pages.version == version and not pages.older and not pages.tainted
                if not keep:  # this open drops the pages: from now on they are this version's
                    if pages.version != version:
                        pages.older += pages.current
                        pages.current = 0
                        pages.version = version
                    pages.tainted = pages.older > 0
            pages.current += 1
            return keep

    def released(self, path: str, version: Hashable) -> None:
        with self._lock:
            pages = self._paths.get(path)
            if pages is None:
                return
            if pages.version == version and pages.current:
                pages.current -= 1
            elif pages.older:
                pages.older -= 1
                pages.tainted = True  # it may have read after the last drop

    def distrust(self, path: str) -> None:
        """A read failed (a damaged member, say): the next open drops the pages, so that the
        bytes are read, and checked, again."""
        with self._lock:
            pages = self._paths.get(path)
            if pages is not None:
                pages.tainted = True

    def _forget_idle(self) -> None:
        """Past ``max_paths``, the least recently opened paths with nothing open go (a path
        with open files must stay: its count of older files is what keeps it safe)."""
        excess = len(self._paths) - self.max_paths
        if excess <= 0:
            return
        idle = []
        for path, pages in self._paths.items():
            if not pages.current and not pages.older:
                idle.append(path)
                if len(idle) == excess:
                    break
        for path in idle:
            del self._paths[path]
