"""Staged copies: the local files that writes go to before they are uploaded.

Each mount stages in its own folder ``<write dir>/staging/<pid>/``; every copy is a data file
and a small JSON note naming the storage path it is for, written when the copy is made, so a
mount that died with files open leaves copies the next mount can still place (``orphans``).
A write is accepted only while the staging disk keeps ``min_free`` bytes free (5 % of a disk
smaller than 20 times that) and the file stays within ``max_size``: a full disk answers
ENOSPC to the writer, and a copy that missed a write is never uploaded.
"""

from __future__ import annotations

import errno
import itertools
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


class StagingFull(OSError):
    """The staging disk has no room for a write (ENOSPC)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)


class FileTooLarge(OSError):
    """A write would take the file past ``--write-max-size`` (EFBIG)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EFBIG, message)


@dataclass
class StagedCopy:
    """One staged file: its data on disk and the note saying where it belongs."""

    data: Path
    note: Path
    remote: str  # storage path, no leading slash

    def write_note(self, **extra: object) -> None:
        """Names the storage path next to the data (replaced atomically on a rename)."""
        tmp = self.note.with_suffix(".tmp")
        tmp.write_text(json.dumps({"path": self.remote, **extra}))
        os.replace(tmp, self.note)

    def size(self) -> int:
        return self.data.stat().st_size

    def discard(self) -> None:
        for path in (self.data, self.note):
            try:
                path.unlink()
            except FileNotFoundError:
                pass


class Staging:
    """This mount's staging folder; checks room before writes are accepted."""

    def __init__(self, root: Path, *, max_size: int, min_free: int, origin: str) -> None:
        self.root = root  # <write dir>/staging
        self.folder = root / str(os.getpid())
        self.max_size = max_size
        self.min_free = min_free
        self.origin = origin  # the API URL: a copy is only ever uploaded to where it came from
        self._numbers = itertools.count(1)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def new_copy(self, remote: str) -> StagedCopy:
        number = next(self._numbers)
        copy = StagedCopy(self.folder / f"{number}.data", self.folder / f"{number}.json", remote)
        fd = os.open(copy.data, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        os.close(fd)
        copy.write_note(origin=self.origin)
        return copy

    def check_room(self, path: str, end: int, growth: int) -> None:
        """Before a write that ends at byte ``end`` and adds ``growth`` bytes to the copy."""
        if end > self.max_size:
            raise FileTooLarge(f"{path}: larger than --write-max-size ({self.max_size} bytes)")
        if growth <= 0:
            return
        fs = os.statvfs(self.folder)
        free = fs.f_bavail * fs.f_frsize
        reserve = min(self.min_free, fs.f_blocks * fs.f_frsize // 20)  # a small disk: 5 %
        if free - growth < reserve:
            raise StagingFull(f"{path}: the staging folder {self.folder} is full "
                              f"({free} bytes free); free space there or pass --write-dir")

    def orphans(self) -> Iterator[tuple[StagedCopy, dict]]:
        """Copies left by mounts whose process is gone (their folders are removed after)."""
        if not self.root.is_dir():
            return
        for folder in sorted(self.root.iterdir()):
            if folder == self.folder or not folder.name.isdigit() or _alive(int(folder.name)):
                continue
            for note in sorted(folder.glob("*.json")):
                try:
                    info = json.loads(note.read_text())
                except (OSError, ValueError):
                    continue
                data = note.with_suffix(".data")
                if data.exists() and isinstance(info.get("path"), str):
                    yield StagedCopy(data, note, info["path"]), info
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Removes this mount's folder if every copy in it was uploaded or kept elsewhere; a
        copy still there (it could not be moved) is left for the next mount (``orphans``)."""
        left = list(self.folder.glob("*.data"))
        if left:
            log.warning("%d staged file(s) left in %s; the next mount keeps them in its "
                        "recovery folder", len(left), self.folder)
            return
        shutil.rmtree(self.folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
