"""What a download does with a local file already where it lands: an identical one is kept
(skipped, so a re-run resumes), a different one is refused unless overwriting was asked for.

"Identical" is decided before fetching when the stored side says enough (size and CRC-32 of a
zip member), else by the size first and, at the same size, the fetched bytes compared with the
local ones before anything is replaced. The setting is process-wide, like the client:
``set_overwrite(True)`` (the command line's ``--overwrite``) or ``with overwriting():``.
"""

from __future__ import annotations

import contextlib
import filecmp
import os
import threading
import zlib
from typing import Iterator, Optional

from ..errors import Conflict

_lock = threading.Lock()
_overwrite = False


def set_overwrite(flag: bool) -> None:
    """Whether downloads replace local files that differ from the stored ones (default: no).
    Uploads with it set send every file, even those already stored and identical."""
    global _overwrite
    with _lock:
        _overwrite = bool(flag)


def overwrite_allowed() -> bool:
    return _overwrite


@contextlib.contextmanager
def overwriting(flag: bool = True) -> Iterator[None]:
    """Within the block, ``set_overwrite(flag)``; the previous setting afterwards."""
    saved = _overwrite
    set_overwrite(flag)
    try:
        yield
    finally:
        set_overwrite(saved)


def refusal(path: str) -> Conflict:
    """The one-line error for a local file that differs from what would replace it."""
    return Conflict(f'"{path}" exists and differs from the stored file; move it away, or '
                    f"download with --overwrite to replace it")


def file_crc32(path: str, chunk: int = 1024 * 1024) -> int:
    crc = 0
    with open(path, "rb") as handle:
        while data := handle.read(chunk):
            crc = zlib.crc32(data, crc)
    return crc


def already_there(path: str, size: Optional[int], crc32: Optional[int] = None) -> bool:
    """True when ``path`` holds the stored file already (skip it); False when it must be
    fetched. Raises ``Conflict`` for a different local file, unless overwriting is allowed.
    Without a CRC-32 a local file of the same size is fetched and compared by ``settle``."""
    if not os.path.isfile(path) or size is None:
        return False
    local_size = os.path.getsize(path)
    if local_size == size and crc32 is not None and file_crc32(path) == crc32:
        return True
    if local_size != size or crc32 is not None:
        if overwrite_allowed():
            return False
        raise refusal(path)
    return False


def settle(tmp: str, path: str) -> None:
    """Moves the complete temporary file ``tmp`` to ``path``; an identical file already there
    is kept instead (its inode, time and links untouched), a different one only replaced when
    overwriting is allowed."""
    if os.path.isfile(path) and not overwrite_allowed():
        same = filecmp.cmp(tmp, path, shallow=False)
        os.unlink(tmp)
        if not same:
            raise refusal(path)
        return
    os.replace(tmp, path)
