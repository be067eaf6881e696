"""Where downloads land on the local disk, and writing there safely.

Remote names and archive members choose local paths, so every path is checked to stay inside
the download folder (symlinks included); files appear only complete (written under a temporary
name, then renamed), and folders a failed download created are removed again.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
import urllib.parse
from typing import BinaryIO, Iterable, Iterator

from ..errors import InvalidRequest, ServerError

_UNSAFE_CHARS = re.compile(r'[<>:"|?*]')  # replaced with '_' in local names, as the SDK does


def safe_segments(segments: Iterable[str], what: str) -> list[str]:
    """Path segments fit for a local path: unsafe characters replaced, escapes refused."""
    out = []
    for segment in segments:
        if segment in ("", "."):
            continue
        if segment == ".." or "\x00" in segment or "\\" in segment:
            raise InvalidRequest(f"refusing to write outside the download folder: {what!r}")
        out.append(_UNSAFE_CHARS.sub("_", segment))
    return out


def inside(local_dir: str, segments: list[str], what: str) -> str:
    """``local_dir/segments...``, refused unless it stays inside ``local_dir`` (symlinks too)."""
    base = os.path.realpath(local_dir or ".")
    target = os.path.join(local_dir or ".", *segments) if segments else (local_dir or ".")
    resolved = os.path.realpath(target)
    if resolved != base and not resolved.startswith(base.rstrip(os.sep) + os.sep):
        raise InvalidRequest(f"refusing to write outside the download folder: {what!r}")
    return os.path.join(local_dir, *segments) if local_dir else os.path.join(*segments)


def local_segments(url: str, remote: str) -> list[str]:
    """Where a downloaded file goes, relative to ``local_dir``: the SDK's layout
    (docs/protocol.md §4.2).

    The signed URL's path holds the storage path (§3.5 a); the local path is the part from
    where the requested path starts. The match is made on whole segments, preferring the
    recommended ``/<one segment>/<user path>`` shape.
    """
    segments = [s for s in urllib.parse.unquote(urllib.parse.urlsplit(url).path).split("/") if s]
    wanted = [s for s in remote.split("/") if s]
    if not wanted:  # the whole storage: drop the bucket-like first segment
        return segments[1:]
    k = len(wanted)
    starts = [i for i in range(len(segments) - k + 1) if segments[i:i + k] == wanted]
    if not starts:
        raise ServerError(f"signed URL {urllib.parse.urlsplit(url).path!r} does not contain "
                          f"the requested path {remote!r}")
    start = 1 if 1 in starts else starts[0]
    return segments[start:]


class Dirs:
    """Creates parent folders and remembers which, to remove them again if a download fails."""

    def __init__(self) -> None:
        self.created: list[str] = []
        self._lock = threading.Lock()

    def make(self, path: str) -> None:
        missing = []
        parent = path
        while parent and not os.path.isdir(parent):
            missing.append(parent)
            parent = os.path.dirname(parent)
        for folder in reversed(missing):
            try:
                os.mkdir(folder)
            except FileExistsError:
                if not os.path.isdir(folder):
                    raise
                continue
            with self._lock:
                self.created.append(folder)

    def undo(self) -> None:
        for folder in sorted(self.created, key=len, reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only if empty: completed files stay


@contextlib.contextmanager
def atomic_file(path: str, dirs: Dirs) -> Iterator[BinaryIO]:
    """A temporary file next to ``path``, renamed to it only if the block completes."""
    folder = os.path.dirname(path) or "."
    dirs.make(folder)
    if os.path.isdir(path):
        raise InvalidRequest(f"cannot write file {path}: a folder has that name")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path)[:100] + ".",
                               suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
