#!/usr/bin/env python3
"""Listing an archive of a million members through the mount, measured end to end.

Builds the archive once (``tests/bigarchive.py``'s shape: ``artifacts/processor{p}/{step}/
{field}``, under ``.bench/listing/``, reused while its size is unchanged), starts the reference
server on 127.0.0.1 and measures, each on a fresh mount (``--cache-size``, 256 MiB by default):

1. the first ``ls`` of ``artifacts/processor3/0.500`` with a freshly started server (cold: the
   server indexes the archive first), and the same on a fresh mount of a warm server; what the
   mount costs itself is about that figure less the server's own time for the same kind of
   requests (the end-record probe and four folder listings of a sibling path, asked
   directly: "server alone"; the top two come from the server's answer cache there);
2. a further folder, ``ls -l artifacts/processor3/0.501`` (target <= 50 ms);
3. ``find`` over ``artifacts/processor7`` (16,000 members; target <= 2 s), and
4. ``ls -lR`` of the whole archive (must complete), each against the floor: the same command
   on a trivial in-memory fusepy file system with the same tree (``--floor-serve``), all with
   their output to /dev/null;
5. the mount's peak RSS (VmHWM, and VmRSS sampled every 20 ms) over each row: target
   ``--cache-size`` + 100 MB.

Requests come from the server's ``/metrics``. ``--threshold`` measures instead, at several
archive sizes on a warm server, a whole listing (with the tree the mount builds from it)
against one folder listing: the figures behind ``archivelisting.LAZY_MEMBERS``.

Usage: ``scripts/bench_listing.py [--count N] [--rows 1,2,3,4] [--json PATH] [--threshold]``.
``measure(...)`` returns the detailed rows; ``run(...)`` returns them as
``scripts/benchrows.py`` rows (``quick``: 130,000 members instead of a million).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "scripts"), str(REPO / "tests")]

from bench import (API_KEY, RssSampler, Server, StoragefsMount, _unmount,  # noqa: E402
                   _wait_mounted, traffic)
from bigarchive import member_names, write_task_archive  # noqa: E402

WORK = REPO / ".bench" / "listing"
ARCHIVE = "million.zip"
DEEP, FURTHER, PROCESSOR = ("artifacts/processor3/0.500", "artifacts/processor3/0.501",
                            "artifacts/processor7")
MiB = 1 << 20


def build(count: int, where: Path = WORK) -> Path:
    """The served folder, with ``bench/million.zip`` of ``count`` members (kept between runs)."""
    root = where / "root"
    archive = root / "bench" / ARCHIVE
    stamp = where / "count"
    if not archive.exists() or not stamp.exists() or stamp.read_text() != str(count):
        archive.parent.mkdir(parents=True, exist_ok=True)
        write_task_archive(archive, count)
        stamp.write_text(str(count))
    return root


def timed(cmd: list[str], timeout: float = 3600) -> tuple[float, int]:
    """(seconds, exit status) of a command whose output goes to /dev/null."""
    start = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=timeout)
    return time.perf_counter() - start, done.returncode


@contextlib.contextmanager
def sampled(pid: int) -> Iterator[dict]:
    """The process's RSS over the block, in the dict yielded (MB)."""
    sampler = RssSampler(pid)
    figures: dict = {}
    try:
        yield figures
    finally:
        rss = sampler.stop()
        figures["rss_peak_mb"] = round(max(rss["rss_peak_sampled"], rss["hwm"]) / MiB, 1)


def row(name: str, value: float | None, unit: str, target: float | None = None,
        **details) -> dict:
    passed = None if target is None or value is None else value <= target
    return {"row": name, "value": value, "unit": unit, "target": target, "pass": passed,
            **details}


def warm(server: Server, tries: int = 4) -> None:
    """Index the archive in the server's workers (each keeps its own index; requests go to
    whichever accepts), so that a "warm server" figure is the mount's."""
    for _ in range(tries):
        server_alone(server, [PROCESSOR])


def server_alone(server: Server, folders: list[str]) -> float:
    """Seconds the server takes for the requests a first ``ls`` makes, asked directly."""
    import requests

    headers = {"X-API-Key": API_KEY}
    start = time.perf_counter()
    url = server.signed_url(f"bench/{ARCHIVE}")
    size = os.path.getsize(server.root / "bench" / ARCHIVE)
    requests.get(url, headers={"Range": f"bytes={size - 1024}-{size - 1}"}, timeout=600)
    for folder in folders:
        requests.get(server.url + "/storage/zip-contents", headers=headers, timeout=600,
                     params={"path": f"bench/{ARCHIVE}", "zip_relative_path": folder,
                             "recursive": "false"}).raise_for_status()
    return time.perf_counter() - start


def measure(count: int = 1_000_000, rows: tuple[str, ...] = ("1", "2", "3", "4"),
            cache_size: int = 256 * MiB, work: Path | None = None,
            where: Path = WORK) -> list[dict]:
    """Measure the rows (see the module notes) and return them; the archive is kept under
    ``where``."""
    root = build(count, where)
    work = Path(tempfile.mkdtemp(prefix="bench-listing-", dir=work or WORK))
    server = Server(root, work)
    server.start()
    mounts = StoragefsMount(server, work, cache_size)
    limit = cache_size / MiB + 100
    out: list[dict] = []
    try:
        with mounts.fresh(ARCHIVE) as mounted:  # cold: the server has just started
            with sampled(mounted.pid) as rss:
                took, status = timed(["ls", str(mounted.archive_dir / DEEP)])
                before = server.metrics()
                further, further_status = timed(["ls", "-l",
                                                 str(mounted.archive_dir / FURTHER)])
            out.append(row("first ls of a deep folder, cold server", round(took, 3), "s", 5.0,
                           status=status, **rss))
            if "2" in rows:
                out.append(row("a further folder (ls -l)", round(further * 1000, 1), "ms", 50.0,
                               status=further_status,
                               requests=traffic(before, server.metrics())["by_endpoint"]))
        warm(server)
        with mounts.fresh(ARCHIVE) as mounted:  # the server's index is warm now
            before = server.metrics()
            with sampled(mounted.pid) as rss:
                took, status = timed(["ls", str(mounted.archive_dir / DEEP)])
            asked = traffic(before, server.metrics())
            # The same requests for a sibling folder (the server keeps answers it gave: the
            # top and artifacts come from there, as they would not for the mount's first ls);
            # each worker keeps its own index: the best of three asks a warm one.
            alone = min(server_alone(server, ["", "artifacts", f"artifacts/processor{n}",
                                              f"artifacts/processor{n}/0.500"])
                        for n in (4, 5, 6))
            out.append(row("first ls of a deep folder, warm server", round(took, 3), "s", 5.0,
                           status=status, server_alone_s=round(alone, 3),
                           mount_itself_s=round(max(0.0, took - alone), 3),
                           requests=asked["by_endpoint"], **rss))
            if "3" in rows:
                before = server.metrics()
                with sampled(mounted.pid) as rss:
                    took, status = timed(["find", str(mounted.archive_dir / PROCESSOR)])
                out.append(row("find over one processor folder (17,001 paths)",
                               round(took, 3), "s", 2.0, status=status,
                               requests=traffic(before, server.metrics())["by_endpoint"], **rss))
        floors = floor_times(count, work, find="3" in rows, ls="4" in rows)
        if "3" in rows and floors["find"]:
            find_row = next(r for r in out if r["row"].startswith("find"))
            find_row.update(floor_of="find", floor_s=round(floors["find"], 3),
                            over_floor=round(find_row["value"] / floors["find"], 2))
        if "4" in rows:
            with mounts.fresh(ARCHIVE) as mounted:
                before = server.metrics()
                with sampled(mounted.pid) as rss:
                    took, status = timed(["ls", "-lR", str(mounted.archive_dir)])
                floor = floors["ls"] or 0.0
                out.append(row("ls -lR of the whole archive", round(took, 1), "s", None,
                               status=status, floor_of="ls -lR", floor_s=round(floor, 1),
                               over_floor=round(took / floor, 2) if floor else None,
                               requests=traffic(before, server.metrics())["by_endpoint"], **rss))
        peak = max(r.get("rss_peak_mb", 0) for r in out)
        out.append(row("mount RSS peak over the rows", peak, "MB", limit))
    finally:
        server.stop()
    return out


# -- the floor: a trivial in-memory fusepy file system with the same tree -----------------------


QUICK_COUNT = 130_000  # enough for processor7, the ``find`` row's folder


def run(quick: bool = False, work: Path | None = None, cache: Path | None = None,
        cache_size: int = 256 * MiB) -> list[dict]:
    """The rows for ``scripts/bench.py``: a million members kept in ``cache`` (``.bench/``), or
    with ``quick`` 130,000 built in ``work`` (scratch)."""
    folder = ((work if quick else cache) or WORK.parent) / "listing"
    folder.mkdir(parents=True, exist_ok=True)
    count = QUICK_COUNT if quick else 1_000_000
    rows = []
    for line in measure(count, cache_size=cache_size, work=folder, where=folder):
        target = "" if line["target"] is None else f"<= {line['target']:g} {line['unit']}"
        rows.append({"what": line["row"], "value": line["value"], "unit": line["unit"],
                     "target": target, "pass": line["pass"]})
        if line.get("over_floor") is not None:
            rows.append({"what": f"{line['floor_of']}: over the trivial fusepy file system",
                         "value": line["over_floor"], "unit": "x", "target": "", "pass": None})
    return rows


def floor_times(count: int, work: Path, find: bool, ls: bool) -> dict[str, float | None]:
    """Seconds of ``find`` over the processor folder and of ``ls -lR`` of the whole tree on
    ``--floor-serve`` (each None when not asked), on one mount of it."""
    times: dict[str, float | None] = {"find": None, "ls": None}
    if not (find or ls):
        return times
    mountpoint = work / "floor"
    mountpoint.mkdir(exist_ok=True)
    log = work / "floor.log"
    process = subprocess.Popen([sys.executable, __file__, "--floor-serve", str(mountpoint),
                                "--count", str(count)], stdout=log.open("w"),
                               stderr=subprocess.STDOUT)
    try:
        _wait_mounted(mountpoint, process, 600, log)
        if find:
            times["find"] = timed(["find", str(mountpoint / ARCHIVE / PROCESSOR)])[0]
        if ls:
            times["ls"] = timed(["ls", "-lR", str(mountpoint / ARCHIVE)])[0]
        return times
    finally:
        _unmount(mountpoint, process)


def floor_serve(mountpoint: str, count: int) -> None:
    """Serve the archive's tree from dicts: what any fusepy file system costs at the least."""
    from fuse import FUSE, FuseOSError, Operations

    folders: dict[str, list[str]] = {"/": [ARCHIVE], "/" + ARCHIVE: []}
    sizes: dict[str, int] = {}
    for name in member_names(count):
        parent = "/" + ARCHIVE
        parts = name.split("/")
        for part in parts[:-1]:
            path = f"{parent}/{part}"
            if path not in folders:
                folders[path] = []
                folders[parent].append(part)
            parent = path
        folders[parent].append(parts[-1])
        sizes[f"{parent}/{parts[-1]}"] = 40
    now = time.time()

    class Floor(Operations):
        def getattr(self, path: str, fh: int | None = None) -> dict:
            if path in folders:
                return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2, "st_mtime": now}
            if path in sizes:
                return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": sizes[path],
                        "st_mtime": now}
            raise FuseOSError(2)

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", ".."] + folders[path]

    FUSE(Floor(), mountpoint, foreground=True, nothreads=False, ro=True,
         entry_timeout="60", attr_timeout="60")


# -- the threshold -------------------------------------------------------------------------------


def threshold(sizes: tuple[int, ...] = (10_000, 30_000, 100_000, 300_000)) -> list[dict]:
    """Whole listing + tree against one folder listing, per archive size, warm server."""
    from storagefs.client import StorageClient
    from storagefs.config import ClientConfig
    from storagefs.gcpause import gc_paused
    from storagefs.mount.vfs import ArchiveTree

    root = WORK / "threshold"
    for count in sizes:
        path = root / "bench" / f"n{count}.zip"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_task_archive(path, count)
    work = Path(tempfile.mkdtemp(prefix="bench-threshold-", dir=WORK))
    server = Server(root, work, "--workers", "1")  # one index: warmed once, asked each time
    server.start()
    out = []
    try:
        config = ClientConfig(api_url=server.url, api_key=API_KEY, read_timeout_s=600)
        with StorageClient(config) as client:
            for count in sizes:
                path = f"bench/n{count}.zip"
                client.zip_contents(path, "artifacts/processor0", recursive=False)  # warm
                by_folder, whole, tree = [], [], []
                for attempt in range(3):  # trees: best of three (the machine may be shared)
                    start = time.perf_counter()
                    for folder in ("", "artifacts", f"artifacts/processor{attempt}",
                                   f"artifacts/processor{attempt}/0.500"):
                        client.zip_contents(path, folder, recursive=False)
                    by_folder.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    listing = client.zip_contents(path, "", recursive=True)
                    whole.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    with gc_paused():
                        ArchiveTree(listing, path)
                    tree.append(time.perf_counter() - start)
                    del listing
                # The server keeps answers it gave: only the first asks of it are the index's.
                out.append({"members": count, "whole_listing_s": round(whole[0], 3),
                            "tree_s": round(min(tree), 3),
                            "four_folders_s": round(by_folder[0], 3)})
    finally:
        server.stop()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--rows", default="1,2,3,4")
    parser.add_argument("--cache-size", type=int, default=256, help="MiB (default: 256)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--threshold", action="store_true")
    parser.add_argument("--floor-serve", metavar="MOUNTPOINT")
    args = parser.parse_args()
    if args.floor_serve:
        floor_serve(args.floor_serve, args.count)
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    if args.threshold:
        rows = threshold()
        for line in rows:
            print(line)
    else:
        rows = measure(args.count, tuple(args.rows.split(",")), args.cache_size * MiB)
        print(f"{'row':56} {'value':>10} {'target':>8}  result")
        for line in rows:
            target = "" if line["target"] is None else f"{line['target']:g}"
            verdict = {True: "PASS", False: "FAIL", None: ""}[line["pass"]]
            print(f"{line['row']:56} {line['value']!s:>7} {line['unit']:2} {target:>8}  {verdict}")
            if line.get("floor_s") is not None:
                print(f"  {line['floor_of']} on the trivial fusepy file system: "
                      f"{line['floor_s']} s, {line['over_floor']}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
