"""The recovery folder: closed files whose upload failed, kept until they are stored.

``<write dir>/recovery/<id>.data`` holds the content the writer closed, ``<id>.json`` where it
belongs: ``{"path", "origin" (API URL), "error", "failed_at", "closed"}``. Entries of closed
files are retried while mounted and by every later mount of the same storage; the newest entry
for a path is the one that counts (an older one is dropped once a newer close of that path
is stored). Copies left open by a mount that died (``closed: false``) may be half-written:
they are kept and reported, never uploaded on their own.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .staging import StagedCopy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kept:
    """One entry of the recovery folder."""

    data: Path
    note: Path
    path: str
    origin: str
    closed: bool
    failed_at: float
    error: str


class RecoveryFolder:
    def __init__(self, folder: Path, origin: str) -> None:
        self.folder = folder
        self.origin = origin
        self._lock = threading.Lock()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def keep(self, copy: StagedCopy, error: str, *, closed: bool = True) -> Kept:
        """Moves a staged copy here (same disk: a rename; else a copy, then the original goes)."""
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        data, note = self.folder / f"{name}.data", self.folder / f"{name}.json"
        try:
            os.replace(copy.data, data)
        except OSError:
            import shutil
            shutil.copyfile(copy.data, data)
        kept = Kept(data, note, copy.remote, self.origin, closed, time.time(), error)
        tmp = note.with_suffix(".tmp")
        tmp.write_text(json.dumps({"path": kept.path, "origin": kept.origin, "closed": closed,
                                   "failed_at": kept.failed_at, "error": error}))
        os.replace(tmp, note)
        copy.discard()
        return kept

    def entries(self) -> list[Kept]:
        """This storage's entries, oldest first."""
        found = []
        for note in self.folder.glob("*.json"):
            try:
                info = json.loads(note.read_text())
                kept = Kept(note.with_suffix(".data"), note, str(info["path"]),
                            str(info.get("origin", "")), bool(info.get("closed", True)),
                            float(info.get("failed_at", 0)), str(info.get("error", "")))
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if kept.origin == self.origin and kept.data.exists():
                found.append(kept)
        return sorted(found, key=lambda k: (k.failed_at, k.note.name))

    def pending(self) -> list[Kept]:
        """What should be uploaded: the newest closed entry of each path."""
        newest: dict[str, Kept] = {}
        for kept in self.entries():
            if kept.closed:
                newest[kept.path] = kept
        return list(newest.values())

    def superseded(self, path: str, before: float | None = None) -> None:
        """A newer content of ``path`` was stored (or the path removed): older entries go."""
        for kept in self.entries():
            if kept.path == path and kept.closed and (before is None or kept.failed_at <= before):
                self.drop(kept)

    def drop(self, kept: Kept) -> None:
        with self._lock:
            for path in (kept.data, kept.note):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
