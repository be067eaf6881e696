"""Progress bars for transfers: tqdm in bytes when installed and wanted, else nothing."""

from __future__ import annotations

import threading
from typing import Any

from .defaults import progress_shown


class NoBar:
    """A progress bar that shows nothing: progress is off, or tqdm is not installed."""

    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self) -> "NoBar":
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress_bar(desc: str, total: int) -> Any:
    """One tqdm bar in bytes (decimal units, as the SDK), or nothing without tqdm."""
    if not progress_shown():
        return NoBar()
    try:
        import tqdm
    except ImportError:
        return NoBar()
    return tqdm.tqdm(total=max(total, 0), unit="B", unit_scale=True, unit_divisor=1000,
                     desc=desc)


class LockedBar:
    """Serialises updates from the transfer threads."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar
        self._lock = threading.Lock()

    def update(self, n: int) -> None:
        if n:
            with self._lock:
                self._bar.update(n)
