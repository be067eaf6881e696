"""Progress bars for transfers: tqdm in bytes when installed and wanted (by default only on a
terminal), else nothing."""

from __future__ import annotations

import sys
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


# tqdm's own format leaves the unit off counts below 1000 ("500/500"): say "500B/500B".
_BAR_FORMAT = ("{l_bar}{bar}| {n_fmt}{unit}/{total_fmt}{unit} "
               "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")


def progress_bar(desc: str, total: int) -> Any:
    """One tqdm bar in bytes (decimal units, as the SDK), or nothing without tqdm."""
    if not progress_shown():
        return NoBar()
    try:
        import tqdm
    except ImportError:
        return NoBar()
    return tqdm.tqdm(total=max(total, 0), unit="B", unit_scale=True, unit_divisor=1000,
                     desc=desc, bar_format=_BAR_FORMAT)


def end_open_line() -> None:
    """Ends a bar's line left open (an interrupted transfer), so the next message starts clean."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is None:
        return
    bars = list(getattr(tqdm.tqdm, "_instances", ()))
    for bar in bars:
        bar.close()  # leave=True: draws the last state and ends its line


class LockedBar:
    """Serialises updates from the transfer threads."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar
        self._lock = threading.Lock()

    def update(self, n: int) -> None:
        if n:
            with self._lock:
                self._bar.update(n)
