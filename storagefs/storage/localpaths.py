"""Where downloads land on the local disk, and writing there safely.

Remote names and archive members choose local paths, so every path is checked to stay inside
the download folder (symlinks included); names are kept as they are where the local file system
allows them; files appear only complete (written under a temporary name, then renamed), with the
modes ``cp`` or ``unzip`` would give them, and folders a failed download created are removed
again.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import threading
import urllib.parse
from typing import BinaryIO, Iterable, Iterator

from ..errors import InvalidRequest, ServerError
from .overwrite import settle

# Characters Windows refuses in file names: replaced with '_' there, as the SDK does. POSIX
# systems refuse only '/' (which separates segments) and NUL (refused below): names stay as is.
_WINDOWS_UNSAFE = re.compile(r'[<>:"|?*]')
_ESCAPES = ("\x00", "\\") if os.name == "nt" else ("\x00",)  # separators other than '/'


def safe_segments(segments: Iterable[str], what: str) -> list[str]:
    """Path segments fit for a local path: names kept where the OS allows them, escapes
    refused."""
    out = []
    for segment in segments:
        if segment in ("", "."):
            continue
        if segment == ".." or any(c in segment for c in _ESCAPES):
            raise InvalidRequest(f"refusing to write outside the download folder: {what!r}")
        out.append(_WINDOWS_UNSAFE.sub("_", segment) if os.name == "nt" else segment)
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


def _create_temporary(folder: str, name: str, executable: bool) -> tuple[int, str]:
    """A new hidden file next to where ``name`` goes. Created with mode 0666 (0777 for an
    executable) so that the kernel applies the umask and default ACLs, as ``cp`` and ``unzip``
    get them; ``mkstemp`` would make it 0600."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    short = name.encode()[:100].decode(errors="ignore")  # room in NAME_MAX (255 bytes)
    while True:
        tmp = os.path.join(folder, f".{short}.{secrets.token_hex(4)}.part")
        try:
            return os.open(tmp, flags, 0o777 if executable else 0o666), tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_file(path: str, dirs: Dirs, executable: bool = False) -> Iterator[BinaryIO]:
    """A temporary file next to ``path``, moved there only if the block completes (and only
    over a different file when overwriting is allowed: ``overwrite.settle``)."""
    folder = os.path.dirname(path) or "."
    dirs.make(folder)
    if os.path.isdir(path):
        raise InvalidRequest(f"cannot write file {path}: a folder has that name")
    fd, tmp = _create_temporary(folder, os.path.basename(path), executable)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        settle(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
