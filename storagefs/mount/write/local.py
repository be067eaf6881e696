"""What exists only in this mount: folders made empty, and files open for writing.

The storage has no empty folders (a folder is the prefix of the files in it), so ``mkdir``
makes a folder here, shown until it is removed or a file stored in it makes it real. A file
being written exists here from its ``create`` until it is closed and stored.
"""

from __future__ import annotations

import threading

from .handles import WriteHandle


class LocalState:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirs: set[str] = set()  # mount paths
        self._writers: dict[str, list[WriteHandle]] = {}

    # -- folders ---------------------------------------------------------------------------

    def has_dir(self, path: str) -> bool:
        with self._lock:
            return path in self._dirs

    def add_dir(self, path: str) -> None:
        with self._lock:
            self._dirs.add(path)

    def remove_dir(self, path: str) -> None:
        with self._lock:
            self._dirs.discard(path)

    def children(self, folder: str) -> set[str]:
        """Names directly in ``folder`` that exist only here."""
        prefix = folder.rstrip("/") + "/"
        with self._lock:
            writing = [p for p, hs in self._writers.items() if any(not h.unlinked for h in hs)]
            paths = list(self._dirs) + writing
        return {p[len(prefix):] for p in paths
                if p.startswith(prefix) and "/" not in p[len(prefix):]}

    def rename_tree(self, old: str, new: str) -> None:
        """Folders and open files at or under ``old`` move to ``new``."""
        with self._lock:
            for path in [p for p in self._dirs if _under(p, old)]:
                self._dirs.discard(path)
                self._dirs.add(new + path[len(old):])
            for path in [p for p in self._writers if _under(p, old)]:
                handles = self._writers.pop(path)
                target = new + path[len(old):]
                for handle in handles:
                    handle.path = target
                self._writers.setdefault(target, []).extend(handles)

    # -- files being written -----------------------------------------------------------------

    def add_writer(self, handle: WriteHandle) -> None:
        with self._lock:
            self._writers.setdefault(handle.path, []).append(handle)

    def remove_writer(self, handle: WriteHandle) -> None:
        with self._lock:
            handles = self._writers.get(handle.path, [])
            if handle in handles:
                handles.remove(handle)
            if not handles:
                self._writers.pop(handle.path, None)

    def writers(self, path: str) -> list[WriteHandle]:
        with self._lock:
            return list(self._writers.get(path, ()))

    def latest_writer(self, path: str) -> WriteHandle | None:
        """The handle of ``path`` written last: what ``stat`` shows while it is open."""
        handles = [h for h in self.writers(path) if not h.unlinked]
        return max(handles, key=lambda h: h.mtime) if handles else None

    def all_writers(self) -> list[WriteHandle]:
        with self._lock:
            return [h for hs in self._writers.values() for h in hs]


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")
