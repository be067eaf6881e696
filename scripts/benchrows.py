"""Rows of ``scripts/bench.py`` that live in modules of their own, found by name.

A row module is a script in ``scripts/`` with ``run(...) -> rows``: it starts what it needs
(server, mounts, proxies), measures, stops everything, and returns its figures. ``run`` is
called with those of the keyword arguments below that its signature names (so a module takes
only what it uses):

- ``quick`` (bool): the small smoke corpus, not the full one;
- ``work`` (Path): a scratch folder of this run, removed afterwards;
- ``cache`` (Path): ``.bench/``, where a corpus may be built once and kept between runs;
- ``cache_size`` (int): the mount's ``--cache-size`` in bytes;
- ``timeout`` (float): seconds any one measurement may take;
- ``drop_caches`` (callable): empties the kernel's page cache, False when it could not;
- ``peer`` (str): ``"ratarmount"`` or ``"none"``, the second column asked for.

Each row it returns is a dict (or a dataclass) with ``what`` (str), ``value`` (float or None),
``unit`` (str), ``target`` (str, empty when there is none) and ``pass`` (bool, or None when
there is no target); optionally ``peer`` (the same figure for the second column) and
``digits``. A module that is missing, fails to import or raises is reported as a line saying
so, never left out of the table.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

SCRIPTS = Path(__file__).resolve().parent

# name on the command line -> (module in scripts/, what the row measures)
REGISTRY: dict[str, tuple[str, str]] = {
    "seek": ("bench_seek", "random reads: persistent index, first seek after a pass"),
    "link": ("bench_link", "cat and first byte over a 50 ms round trip"),
    "s3": ("bench_s3", "the mount over an S3-compatible store"),
    "listing": ("bench_listing", "listings of large folders and archives"),
    "bigarchive": ("bench_bigarchive", "a task archive of a million members"),
}


@dataclasses.dataclass
class RowLine:
    """One printed line of a module's row."""

    what: str
    value: float | None
    unit: str = ""
    target: str = ""
    passed: bool | None = None
    peer: float | None = None
    digits: int = 2
    note: str = ""  # "not available: ..." or "failed: ..." instead of a figure


def _line(raw: Any) -> RowLine:
    is_row = dataclasses.is_dataclass(raw) and not isinstance(raw, type)
    data = dataclasses.asdict(raw) if is_row else dict(raw)
    value = data.get("value")
    passed = data.get("pass", data.get("passed", data.get("ok")))
    target = str(data.get("target") or "")
    return RowLine(what=str(data.get("what", "?")),
                   value=float(value) if isinstance(value, (int, float)) else None,
                   unit=str(data.get("unit", "")), target=target,
                   passed=None if passed is None else bool(passed),
                   peer=data.get("peer", data.get("ratarmount")),
                   digits=int(data.get("digits", 2)),
                   note="" if value is not None or not target else "no figure")


def run_row(name: str, options: dict[str, Any]) -> list[RowLine]:
    """The lines of row ``name``: its module's figures, or one line saying why there are none."""
    module_name, about = REGISTRY[name]
    if not (SCRIPTS / f"{module_name}.py").exists():
        return [RowLine(what=about, value=None,
                        note=f"not available: scripts/{module_name}.py is missing")]
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    try:
        module = importlib.import_module(module_name)
        run: Callable = module.run
    except Exception as exc:  # noqa: BLE001 - reported in the table, the rest still run
        return [RowLine(what=about, value=None,
                        note=f"not available: {module_name}: {type(exc).__name__}: {exc}"[:200])]
    wanted = inspect.signature(run).parameters
    takes_all = any(p.kind is p.VAR_KEYWORD for p in wanted.values())
    kwargs = {k: v for k, v in options.items() if takes_all or k in wanted}
    try:
        rows = [_line(raw) for raw in run(**kwargs)]
    except Exception as exc:  # noqa: BLE001 - reported in the table, the rest still run
        print(traceback.format_exc(), file=sys.stderr)
        return [RowLine(what=about, value=None, passed=False,
                        note=f"failed: {type(exc).__name__}: {exc}"[:200])]
    return rows or [RowLine(what=about, value=None, note="the module returned no figures")]
