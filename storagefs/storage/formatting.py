"""The SDK's output formatting: sizes, costs, times and its table, byte for byte.

Scripts and people compare this output with the SDK's, so widths, units and spacing follow
the SDK (and ``tabulate`` as the SDK calls it) exactly.
"""

from __future__ import annotations

import datetime
import os
import re
import sys
import unicodedata
from typing import Optional


def _ansi_enabled() -> bool:
    value = os.environ.get("INDUCTIVA_DISABLE_ANSI", "false").strip().lower()
    if value in ("y", "yes", "t", "true", "on", "1"):
        return False
    return hasattr(sys.stdout, "isatty") and sys.stdout.isatty()


def bytes_formatter(n_bytes: Optional[float]) -> Optional[str]:
    if n_bytes is None:
        return None
    res = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if res < 1000:
            return f"{res:.0f} {unit}" if unit == "B" else f"{res:.2f} {unit}"
        res /= 1000
    return f"{res:.2f} PB"


def currency_formatter(amount: float) -> str:
    if amount == 0:
        return "0 US$"
    decimals = f"{amount:.15f}".split(".")[1]
    first_non_zero = next((i for i, digit in enumerate(decimals) if digit != "0"), 10)
    places = max(2, first_non_zero + 2)
    if amount < 0.1:
        return f"{amount:.{places}f} US$"
    return f"{amount:.2f} US$"


def datetime_formatter(value: Optional[datetime.datetime]) -> Optional[str]:
    return None if value is None else value.strftime("%d/%m, %H:%M:%S")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal: wide (CJK) characters take two, combining marks
    none, ANSI colour codes none; what ``len`` gets wrong for ``数据.txt``."""
    width = 0
    for char in _ANSI.sub("", text):
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 folder``, ``2 folders``, ``1 entry``, ``0 entries``."""
    return f"{count} {singular if count == 1 else plural_form or singular + 's'}"


def table(rows: list[list[Optional[str]]], columns: list[str]) -> str:
    """The SDK's table: bold upper-case headers, columns three spaces apart, 'n/a' for None.

    Column widths are those of ``tabulate`` as the SDK calls it: the widest cell, or the
    header plus two; lines carry no trailing spaces and are indented by one space. Widths are
    measured in terminal columns, so that wide (CJK) names keep the columns aligned.
    """
    bold = _ansi_enabled()
    headers = [f"\033[1m{c.upper()}\033[0m" if bold else c.upper() for c in columns]
    cells = [["n/a" if v is None else str(v) for v in row] for row in rows]
    widths = [max([len(c) + 2] + [display_width(r[i]) for r in cells])
              for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        padded = [v + " " * (w - display_width(v)) for v, w in zip(values, widths)]
        return " " + "   ".join(padded).rstrip()

    rendered = "\n".join([line(headers)] + [line(r) for r in cells])
    return f"\n{rendered}\n"
