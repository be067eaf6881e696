"""A trivial in-memory fusepy file system showing a ZIP archive's tree: the floor for ``ls -lR``.

Every answer comes from dicts built before mounting, through fusepy's plain ``Operations``
(multithreaded, the same libfuse 2 as the mount, the same entry and attribute timeouts), so
what ``ls -lR`` costs on it is what the kernel, libfuse and fusepy cost for that tree and
nothing else: the limit of this design. Reads return zeros; only the tree matters.

Usage: ``python scripts/trivialfs.py ARCHIVE MOUNTPOINT [--ttl SECONDS]`` (foreground;
``fusermount -u MOUNTPOINT`` ends it).
"""

from __future__ import annotations

import argparse
import errno
import stat
import sys
import time
import zipfile
from pathlib import Path

from fuse import FUSE, FuseOSError, Operations


class Tree:
    """Folders and files of an archive: path -> stat dict, folder -> names."""

    def __init__(self, archive: Path) -> None:
        now = int(time.time())
        folder = {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2, "st_size": 0,
                  "st_mtime": now, "st_atime": now, "st_ctime": now}
        self.stats: dict[str, dict] = {"/": folder}
        self.children: dict[str, list[str]] = {"/": []}
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                path = "/" + info.filename.rstrip("/")
                self._add_parents(path, folder)
                if info.is_dir():
                    self._add(path, dict(folder))
                else:
                    when = int(time.mktime(info.date_time + (0, 0, -1)))
                    self._add(path, {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1,
                                     "st_size": info.file_size, "st_mtime": when,
                                     "st_atime": when, "st_ctime": when})

    def _add(self, path: str, attrs: dict) -> None:
        if path in self.stats:
            return
        self.stats[path] = attrs
        parent, _, name = path.rpartition("/")
        self.children[parent or "/"].append(name)
        if stat.S_ISDIR(attrs["st_mode"]):
            self.children[path] = []

    def _add_parents(self, path: str, folder: dict) -> None:
        parts = path.strip("/").split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            self._add("/" + "/".join(parts[:depth]), dict(folder))


class TrivialFS(Operations):
    """getattr and readdir from the dicts; nothing else is needed by ``ls -lR``.

    No extended attributes, as in the mount: libfuse answers ENOSYS and the kernel stops
    asking (fusepy's default answer, ENOTSUP, would cost a call per file listed)."""

    getxattr = listxattr = None

    def __init__(self, tree: Tree) -> None:
        self.tree = tree

    def getattr(self, path, fh=None):
        try:
            return self.tree.stats[path]
        except KeyError:
            raise FuseOSError(errno.ENOENT) from None

    def readdir(self, path, fh):
        return [".", ".."] + self.tree.children[path]

    def read(self, path, size, offset, fh):
        length = max(0, min(size, self.tree.stats[path]["st_size"] - offset))
        return bytes(length)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("archive", type=Path)
    parser.add_argument("mountpoint")
    parser.add_argument("--ttl", type=float, default=60.0,
                        help="entry and attribute timeouts, as the mount's --metadata-ttl")
    args = parser.parse_args(argv)
    tree = Tree(args.archive)
    FUSE(TrivialFS(tree), args.mountpoint, foreground=True, nothreads=False, ro=True,
         default_permissions=True, fsname="trivialfs", entry_timeout=f"{args.ttl:g}",
         attr_timeout=f"{args.ttl:g}", negative_timeout="1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
