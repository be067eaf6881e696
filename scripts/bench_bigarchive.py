#!/usr/bin/env python3
"""The server's figures for a task archive of a million members, against the issue's targets.

Rows (``measure()`` returns them, ``run()`` as ``scripts/benchrows.py`` rows, ``quick``: 64,000
members; ``__main__`` prints them as a table and optionally as JSON):

- ``unzip -l`` of the archive (the reference on this machine; no target);
- the index built in a fresh process (``read_index``): time (<= 4 s) and RSS growth, after the
  build and at its peak (<= 300 MB);
- a freshly started server (one worker): the first folder listing
  (``zip_relative_path=artifacts/processor3/0.500``, ``recursive=false``), cold (<= 5 s), then
  the same folder warm (median of 20, <= 0.05 s) and ten other folders (median, <= 0.05 s), the
  server's RSS growth at its peak (<= 300 MB);
- the whole archive listed recursively (streamed): time to the first byte, total time, bytes;
- a restarted server: the first folder listing, from the index the first server saved.

The machine may be shared: ``unzip -l``, timed in the same run, says how loaded it was, and the
ratio rows hold the time targets against it (the issue measured ``unzip -l`` at 2.6 s on this
kind of machine: 4 s is 1.54 times that, 5 s 1.92 times).

Usage: ``scripts/bench_bigarchive.py [--count N] [--workdir DIR] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # bigarchive, serverharness: as the tests have them

import bigarchive  # noqa: E402
from serverharness import free_port, stop_process, wait_until_answers  # noqa: E402

API_KEY = "bench-key.1"
UNZIP_REFERENCE_S = 2.6  # ``unzip -l`` of the 1,000,000-member archive, idle machine (issue)
FOLDER = "artifacts/processor3/0.500"
OTHER_FOLDERS = [f"artifacts/processor{p}/{bigarchive.step_name(s)}"
                 for p, s in ((41, 732), (0, 0), (62, 499), (7, 998), (30, 123), (55, 871),
                              (12, 345), (19, 600), (33, 999), (48, 1))]

_BUILD = """
import json, os, sys, time
from storagefs.server.zipindex import read_index
def status(field):
    for line in open('/proc/self/status'):
        if line.startswith(field + ':'):
            return int(line.split()[1]) / 1024
before = status('VmRSS')
started = time.perf_counter()
with open(sys.argv[1], 'rb') as f:
    index = read_index(f, os.path.getsize(sys.argv[1]), max_entries=10**8, max_cd_bytes=1 << 34)
elapsed = time.perf_counter() - started
print(json.dumps({"seconds": elapsed, "rss": status('VmRSS') - before,
                  "peak": status('VmHWM') - before, "nbytes": index.nbytes}))
"""


QUICK_COUNT = 64_000  # processors 0-3: FOLDER is there


def _other_folders(count: int) -> list[str]:
    """OTHER_FOLDERS in the full archive; in a smaller one, ten folders spread over it."""
    if count >= bigarchive.FULL_COUNT:
        return OTHER_FOLDERS
    per_step = len(bigarchive.FIELDS)
    per_processor = bigarchive.STEPS * per_step
    spread = [divmod((2 * i + 1) * count // 20, per_processor) for i in range(10)]
    return [f"artifacts/processor{p}/{bigarchive.step_name(rest // per_step)}"
            for p, rest in spread]


def _row(name: str, value: float | None, unit: str, target: float | None = None) -> dict:
    passed = None if target is None or value is None else value <= target
    return {"row": name, "value": value, "unit": unit, "target": target, "pass": passed}


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def _archive(workdir: Path, count: int) -> Path:
    path = workdir / "root" / "big" / f"output-{count}.zip"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        bigarchive.write_task_archive(partial, count)
        partial.rename(path)
    return path


def _environment() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _start_server(root: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "storagefs", "serve", str(root), "--port", str(port),
         "--api-key", API_KEY, "--workers", "1"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env=_environment())
    url = f"http://127.0.0.1:{port}"
    wait_until_answers(process, url + "/version", log, timeout=60)
    return process, url


def _list(url: str, archive: str, folder: str, recursive: bool, stream: bool = False):
    return requests.get(url + "/storage/zip-contents", headers={"X-API-Key": API_KEY},
                        params={"path": archive, "zip_relative_path": folder,
                                "recursive": str(recursive).lower()},
                        stream=stream, timeout=(10, 600))


def _timed_listing(url: str, archive: str, folder: str) -> float:
    started = time.perf_counter()
    r = _list(url, archive, folder, False)
    elapsed = time.perf_counter() - started
    r.raise_for_status()
    if len(r.json()["contents"]) != len(bigarchive.FIELDS):
        raise RuntimeError(f"unexpected listing of {folder}: {r.text[:200]}")
    return elapsed


def run(quick: bool = False, work: Path | None = None, cache: Path | None = None) -> list[dict]:
    """The rows for ``scripts/bench.py``: a million members kept in ``cache`` (``.bench/``), or
    with ``quick`` 64,000 in ``work`` (scratch; the targets are the million's)."""
    folder = ((work if quick else cache) or Path(tempfile.gettempdir())) / "bigarchive"
    folder.mkdir(parents=True, exist_ok=True)
    return [{"what": row["row"], "value": row["value"], "unit": row["unit"],
             "target": "" if row["target"] is None else f"<= {row['target']:g} {row['unit']}",
             "pass": row["pass"], "digits": 3 if row["unit"] == "s" else 2}
            for row in measure(QUICK_COUNT if quick else 1_000_000, folder)]


def measure(count: int = 1_000_000, workdir: Path | None = None) -> list[dict]:
    """Measure once; ``workdir`` keeps the archive between runs (a temporary one otherwise)."""
    own = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="bench-bigarchive-")) if own else workdir
    try:
        return _measure(count, workdir)
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)


def _measure(count: int, workdir: Path) -> list[dict]:
    path = _archive(workdir, count)
    shutil.rmtree(workdir / "root" / ".storagefs", ignore_errors=True)  # a cold first server
    archive = f"big/{path.name}"
    rows = []
    unzip = None
    if shutil.which("unzip"):
        started = time.perf_counter()
        subprocess.run(["unzip", "-l", str(path)], stdout=subprocess.DEVNULL, check=True)
        unzip = time.perf_counter() - started
        rows.append(_row("unzip -l (reference)", unzip, "s"))
    built = json.loads(subprocess.run([sys.executable, "-c", _BUILD, str(path)],
                                      capture_output=True, text=True, check=True,
                                      env=_environment()).stdout)
    rows += [_row("index build", built["seconds"], "s", 4.0),
             _row("index build: RSS growth after", built["rss"], "MB", 300),
             _row("index build: RSS growth at peak", built["peak"], "MB", 300),
             _row("index size (nbytes)", built["nbytes"] / 2**20, "MB")]
    if unzip is not None:
        rows.append(_row("index build / unzip -l", built["seconds"] / unzip, "x",
                         round(4.0 / UNZIP_REFERENCE_S, 2)))
    process, url = _start_server(workdir / "root", workdir / "server.log")
    try:
        before = _status_mb(process.pid, "VmRSS")
        cold = _timed_listing(url, archive, FOLDER)
        rows.append(_row("server: first folder listing, cold", cold, "s", 5.0))
        if unzip is not None:
            rows.append(_row("cold folder listing / unzip -l", cold / unzip, "x",
                             round(5.0 / UNZIP_REFERENCE_S, 2)))
        warm = [_timed_listing(url, archive, FOLDER) for _ in range(20)]
        rows.append(_row("server: same folder, warm (median of 20)", statistics.median(warm),
                         "s", 0.05))
        others = [_timed_listing(url, archive, folder) for folder in _other_folders(count)]
        rows.append(_row(f"server: {len(others)} other folders, warm index (median)",
                         statistics.median(others), "s", 0.05))
        rows.append(_row("server: RSS growth after the listings",
                         _status_mb(process.pid, "VmRSS") - before, "MB", 300))
        started = time.perf_counter()
        first_byte = None
        total = 0
        with _list(url, archive, "", True, stream=True) as r:
            r.raise_for_status()
            for chunk in r.iter_content(1 << 20):
                if first_byte is None:
                    first_byte = time.perf_counter() - started
                total += len(chunk)
        rows += [_row("whole listing (streamed): first byte", first_byte, "s"),
                 _row("whole listing (streamed): total", time.perf_counter() - started, "s"),
                 _row("whole listing (streamed): size", total / 2**20, "MB"),
                 _row("server: RSS growth at peak, all of the above",
                      _status_mb(process.pid, "VmHWM") - before, "MB", 300)]
    finally:
        stop_process(process)
    process, url = _start_server(workdir / "root", workdir / "server.log")
    try:
        before = _status_mb(process.pid, "VmRSS")
        rows.append(_row("restarted server: first folder listing (saved index)",
                         _timed_listing(url, archive, FOLDER), "s", 0.5))
        rows.append(_row("restarted server: RSS growth",
                         _status_mb(process.pid, "VmRSS") - before, "MB", 300))
    finally:
        stop_process(process)
    return rows


def _print(rows: list[dict], count: int) -> None:
    print(f"archive of {count:,} members")
    for row in rows:
        value = "-" if row["value"] is None else f"{row['value']:.3f}"
        target = "" if row["target"] is None else f"  (target <= {row['target']} {row['unit']}: "
        if target:
            target += "pass)" if row["pass"] else "FAIL)"
        print(f"  {row['row']:<46} {value:>10} {row['unit']:<3}{target}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, help="keep the archive here between runs")
    parser.add_argument("--json", type=Path, help="write the rows here too")
    args = parser.parse_args()
    rows = measure(args.count, args.workdir)
    _print(rows, args.count)
    if args.json:
        args.json.write_text(json.dumps({"count": args.count, "rows": rows}, indent=1))
    return 0 if all(row["pass"] is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
