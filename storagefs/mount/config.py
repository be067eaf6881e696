"""Typed configuration of ``storagefs mount``: one frozen dataclass with documented defaults.

Built once at the edge from arguments (``command.arguments.configs_from_args``, for both
``storagefs mount`` and ``mount.storagefs``); the layers below only read it. Where to reach
the API (URL, key, region) is ``config.ClientConfig``'s business.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

ZIP_AS = ("dir", "file")
_SIZE = re.compile(r"^\s*(-?)(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.I)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
# What looks like a negative size on a command line: argparse is told it is a value, not an
# option (``--cache-size -5M`` is then refused for being negative, not for a missing value).
NEGATIVE_SIZE = re.compile(r"^-\d+(?:\.\d+)?[kmgt]?i?b?$", re.I)

# The smallest memory budget the read engine works in: a decode job reserves 4 MiB
# (``tuning.job_memory``), which must fit in the three quarters of the block cache that
# reservations may take, and blocks are 1 MiB each, a reader keeping two of them besides the
# cache. Below this, every read would decode its block again.
MIN_CACHE_SIZE = 16 << 20
# The smallest disk cache worth having: sixteen of its 1 MiB granules.
MIN_CACHE_DIR_SIZE = 16 << 20


def parse_size(text: str) -> int:
    """``512M``, ``1G``, ``1.5GiB``, ``4096`` -> bytes (binary units, as ``du -h`` prints)."""
    found = _SIZE.match(str(text))
    if not found:
        raise ValueError(f"not a size: {text!r} (examples: 4096, 512M, 2G)")
    if found.group(1):
        raise ValueError(f"a size cannot be negative: {text!r} (examples: 64M, 2G)")
    number, unit = float(found.group(2)), found.group(3).lower()
    return int(number * _UNITS[unit])


def format_size(size: int) -> str:
    """Bytes as ``parse_size`` reads them back, in the largest unit that keeps a short
    figure: 16M, 1.5G, 15.6G."""
    for unit in "TGMK":
        scale = _UNITS[unit.lower()]
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + unit
    return str(size)


def memory_size() -> int:
    """This machine's memory: no cache of decoded data can usefully be larger."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 1 << 40


def check_size(option: str, size: int, least: int, most: int | None = None) -> None:
    """Raises ``ValueError`` naming the option and the accepted range."""
    accepted = f"{format_size(least)} to {format_size(most)}" if most else \
        f"{format_size(least)} or more"
    if size < least:
        raise ValueError(f"{option} {format_size(size)} is too small: it must be at least "
                         f"{format_size(least)} (accepted: {accepted})")
    if most is not None and size > most:
        raise ValueError(f"{option} {format_size(size)} is more than this machine's memory "
                         f"(accepted: {accepted})")


@dataclass(frozen=True)
class MountConfig:
    """How one mount behaves. Sizes are bytes, times are seconds."""

    mountpoint: Path
    # Run the FUSE loop in this process (no supervisor); logs go to stderr unless log_file.
    foreground: bool = False
    # Extra ``-o`` options handed to FUSE as given: allow_other, uid=N, gid=N, umask=...
    fuse_options: tuple[str, ...] = ()
    # Memory for decoded data, one budget for the whole mount: decoded blocks, inflater
    # snapshots and read-ahead buffers of all open files (reader.ReadContext).
    cache_size: int = 256 << 20
    # Fetched ranges kept on disk here (diskcache.DiskCache), reused by later mounts.
    cache_dir: Path | None = None
    # At most this much in cache_dir; least recently used ranges go first.
    cache_dir_size: int = 4 << 30
    # How long listings, archive trees and statfs figures are trusted.
    metadata_ttl: float = 60.0
    # "Not found" answers are trusted for less: users create what they just looked for.
    negative_ttl: float = 5.0
    # "dir": every *.zip is a directory of its members; "file": the raw archive.
    zip_as: str = "dir"
    log_file: Path | None = None
    debug: bool = False
    # Seconds the background mode waits for the mount to answer before giving up.
    ready_timeout: float = 30.0
    # Archive trees kept (each one costs memory proportional to its member count).
    max_archives: int = 64
    # --read-write: files can be created, written, renamed and removed (mount/write).
    read_write: bool = False
    # Where written files are staged before upload and kept when an upload fails (staging/,
    # recovery/); None: cache_dir/write, else $XDG_CACHE_HOME/storagefs/write.
    write_dir: Path | None = None
    # No file written through the mount may grow past this (EFBIG).
    write_max_size: int = 1 << 40
    # Writes are refused (ENOSPC) when the staging disk would keep less than this free.
    write_min_free: int = 64 << 20
    # How long the end of a mount waits for uploads still running, in seconds.
    unmount_timeout: float = 600.0
    # Seconds between retries of the recovery folder while mounted.
    write_retry_interval: float = 30.0

    def __post_init__(self) -> None:
        if self.zip_as not in ZIP_AS:
            raise ValueError(f"--zip-as must be one of {', '.join(ZIP_AS)}")
        if self.metadata_ttl < 0 or self.negative_ttl < 0:
            raise ValueError("TTLs must be >= 0")
        check_size("--cache-size", self.cache_size, MIN_CACHE_SIZE, memory_size())
        check_size("--cache-dir-size", self.cache_dir_size, MIN_CACHE_DIR_SIZE)
        if self.write_max_size < 1:
            raise ValueError("--write-max-size must be at least 1 byte (examples: 64G, 1T)")
        if self.unmount_timeout < 0:
            raise ValueError("--unmount-timeout must be >= 0 seconds")
        if self.write_retry_interval <= 0:
            raise ValueError("--write-retry-interval must be more than 0 seconds")

    @property
    def write_folder(self) -> Path:
        """Staging and recovery folders of ``--read-write`` (see ``write_dir``)."""
        if self.write_dir is not None:
            return self.write_dir
        if self.cache_dir is not None:
            return self.cache_dir / "write"
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                                 ".cache")
        return Path(cache, "storagefs", "write")

    @property
    def window_bytes(self) -> int:
        """Members up to this size are decoded and CRC-checked whole before their first byte
        is returned (``cache_size`` // 32, 1 to 16 MiB)."""
        return max(1 << 20, min(16 << 20, self.cache_size // 32))

    def option_map(self) -> dict[str, str | bool]:
        """``fuse_options`` as ``{name: value or True}``; later repeats win."""
        options: dict[str, str | bool] = {}
        for item in self.fuse_options:
            for part in item.split(","):
                part = part.strip()
                if not part:
                    continue
                name, sep, value = part.partition("=")
                options[name.strip()] = value.strip() if sep else True
        return options
