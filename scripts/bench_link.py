"""Long links and memory: the mount through a delayed link, request counts, readers, RSS.

Rows (each with its target; ratios are taken side by side in one run):

- ``cat`` of a ~300 MiB member of CSV floats (7-Zip ``-mx=1`` when 7zz is there, else
  Python's zipfile at level 1) through a fresh mount, on loopback and through
  ``delayproxy`` with a 50 ms round trip: the delayed throughput over the direct one (>= 0.8).
- the first byte of a small member and of a small plain file through the delayed link, on a
  fresh mount whose folder listing is already made (``ls``): open + 1-byte read, in round trips
  (<= 3).
- a cold ``cat`` of a small member stored after the large one: HTTP requests the mount made
  from the moment it answered (<= 4), from the server's ``/metrics``.
- eight ``cat`` s of eight different 32 MiB members at once over one alone: aggregate
  throughput ratio (>= 1.5).
- the daemon's peak RSS (VmHWM) during ``cat`` of a 5 GiB ZIP64 deflate member with the
  default ``--cache-size 256M``, quiet and beside a process that allocates and frees a few GB
  in a loop on one core (<= cache size + 100 MB).

``python scripts/bench_link.py [--work DIR] [--rows cat,first,small,readers,rss] [--json F]``.
The corpus is built once under ``--work`` (default ``.bench/link``). ``measure(...)`` returns
the detailed rows; ``run(...)`` returns them as ``scripts/benchrows.py`` rows (``quick``: a
16 MiB member, 2 MiB readers and no 5 GiB RSS row, in the run's scratch folder).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))  # serverharness
from delayproxy import start_delay_proxy  # noqa: E402
from serverharness import (free_port, read_metrics, stop_process,  # noqa: E402
                           wait_until_answers)

MiB, GiB = 1 << 20, 1 << 30
API_KEY = "bench-link-key"
DELAY_S = 0.025  # each way: a 50 ms round trip
ARCHIVE = "link.zip"
BIG_MEMBER = "floats.csv"
SMALL_MEMBER = "notes.txt"
SMALL_FILE = "readme.txt"
READERS_ZIP = "readers.zip"
HUGE_ZIP = "huge.zip"
HUGE_MEMBER = "huge.csv"
CACHE_SIZE = 256 * MiB
CHURN_GB = float(os.environ.get("BENCH_LINK_CHURN_GB", "4"))
ROWS = ("cat", "first", "small", "readers", "rss")


# -- corpus ----------------------------------------------------------------------------------


def csv_floats(size: int, seed: int) -> Iterator[bytes]:
    """``size`` bytes of CSV rows of floats (about 44% after deflate), made quickly: 8 MiB of
    random rows repeated (deflate's 32 KiB window never sees the repetition)."""
    rng = random.Random(seed)
    rows = []
    made = 0
    while made < 8 * MiB:
        row = ",".join(f"{rng.uniform(-1e3, 1e3):.6e}" for _ in range(6)) + "\n"
        rows.append(row)
        made += len(row)
    unit = "".join(rows).encode()
    left = size
    while left > 0:
        piece = unit[:left]
        left -= len(piece)
        yield piece


def _write_file(path: Path, chunks: Iterator[bytes]) -> None:
    with path.open("wb") as f:
        for chunk in chunks:
            f.write(chunk)


def _zip_with_7zz(archive: Path, folder: Path) -> bool:
    zz = shutil.which("7zz")
    if zz is None:
        return False
    subprocess.run([zz, "a", "-tzip", "-mx=1", "-mmt=on", str(archive), "."], cwd=folder,
                   check=True, stdout=subprocess.DEVNULL)
    return True


def build_link_archive(path: Path, big: int) -> None:
    """The ~300 MiB CSV member and a small member after it, as the task runner zips them."""
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        folder = Path(tmp)
        _write_file(folder / BIG_MEMBER, csv_floats(big, 1))
        (folder / SMALL_MEMBER).write_bytes(b"".join(csv_floats(200_000, 2)))
        part = path.with_suffix(".part")
        part.unlink(missing_ok=True)
        if not _zip_with_7zz(part, folder):
            with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
                zf.write(folder / BIG_MEMBER, BIG_MEMBER)
                zf.write(folder / SMALL_MEMBER, SMALL_MEMBER)
        part.rename(path)


def build_readers_archive(path: Path, each: int) -> None:
    part = path.with_suffix(".part")
    with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for i in range(8):
            with zf.open(f"r{i}.csv", "w") as out:
                for chunk in csv_floats(each, 10 + i):
                    out.write(chunk)
    part.rename(path)


def build_huge_archive(path: Path, size: int) -> None:
    """One ZIP64 deflate member of ``size`` bytes, written quickly: a 64 MiB piece deflated
    once, ending in a full flush (so it needs nothing before it), repeated, then an empty
    final block."""
    unit = b"".join(csv_floats(64 * MiB, 3))
    packer = zlib.compressobj(1, zlib.DEFLATED, -15)
    piece = packer.compress(unit) + packer.flush(zlib.Z_FULL_FLUSH)
    final = zlib.compressobj(1, zlib.DEFLATED, -15).flush()
    count = size // len(unit)
    size = count * len(unit)
    crc = 0
    for _ in range(count):
        crc = zlib.crc32(unit, crc)
    compressed = count * len(piece) + len(final)
    name = HUGE_MEMBER.encode()
    extra = struct.pack("<HH2Q", 1, 16, size, compressed)
    part = path.with_suffix(".part")
    with part.open("wb") as f:
        f.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 45, 0, 8, 0x6000, 0x5A21, crc,
                            0xFFFFFFFF, 0xFFFFFFFF, len(name), len(extra)) + name + extra)
        for _ in range(count):
            f.write(piece)
        f.write(final)
        cd_offset = f.tell()
        extra = struct.pack("<HH3Q", 1, 24, size, compressed, 0)
        central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", (3 << 8) | 45, 45, 0, 8, 0x6000,
                              0x5A21, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(name), len(extra), 0, 0,
                              0, 0o100644 << 16, 0) + name + extra
        f.write(central)
        eocd64 = f.tell()
        f.write(struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 1, 1, len(central),
                            cd_offset))
        f.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, eocd64, 1))
        f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, 0xFFFFFFFF, 0xFFFFFFFF, 0))
    part.rename(path)


def build_corpus(root: Path, big: int, readers_each: int, huge: int) -> None:
    folder = root / "link"
    folder.mkdir(parents=True, exist_ok=True)
    recipe = json.dumps([big, readers_each, huge, 1])
    stamp = root / "recipe.json"
    if stamp.exists() and stamp.read_text() == recipe:
        return
    stamp.unlink(missing_ok=True)
    for name in (ARCHIVE, READERS_ZIP, HUGE_ZIP, SMALL_FILE):
        (folder / name).unlink(missing_ok=True)
    build_link_archive(folder / ARCHIVE, big)
    (folder / SMALL_FILE).write_bytes(b"a small plain file\n" * 100)
    build_readers_archive(folder / READERS_ZIP, readers_each)
    if huge:
        build_huge_archive(folder / HUGE_ZIP, huge)
    stamp.write_text(recipe)


# -- processes -------------------------------------------------------------------------------


class Server:
    """``storagefs serve`` on the corpus; ``metrics()`` reads /metrics as {sample: value}."""

    def __init__(self, root: Path, work: Path) -> None:
        port = free_port()
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        log = work / "server.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "storagefs", "serve", str(root), "--port", str(port),
             "--api-key", API_KEY], stdout=log.open("ab"), stderr=subprocess.STDOUT)
        wait_until_answers(self.process, self.url + "/version", log)

    def metrics(self) -> dict[str, float]:
        return read_metrics(self.url)

    def stop(self) -> None:
        stop_process(self.process)


def requests_between(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """Requests by endpoint between two /metrics snapshots (not counting /metrics)."""
    out: dict[str, int] = {}
    for key, value in after.items():
        if key.startswith("storagefs_requests_total{") and 'endpoint="/metrics"' not in key:
            delta = int(value - before.get(key, 0.0))
            if delta:
                endpoint = key.split('endpoint="', 1)[1].split('"', 1)[0]
                out[endpoint] = out.get(endpoint, 0) + delta
    return out


class Mount:
    """A fresh foreground mount of ``url`` (unmounted on exit); ``pid`` serves FUSE."""

    def __init__(self, url: str, work: Path, *extra: str) -> None:
        self.url, self.work, self.extra = url, work, extra

    def __enter__(self) -> "Mount":
        self.point = Path(tempfile.mkdtemp(prefix="mnt-", dir=self.work))
        self.log = self.point.with_suffix(".log")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "storagefs", "mount", str(self.point), "--foreground",
             "--api-url", self.url, "--api-key", API_KEY, "--log-file", str(self.log),
             *self.extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self.process.pid
        deadline = time.monotonic() + 60
        while not os.path.ismount(self.point):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"the mount did not come up (see {self.log})")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        for cmd in (["fusermount", "-u", str(self.point)], ["fusermount", "-uz", str(self.point)]):
            if self.process.poll() is not None and not os.path.ismount(self.point):
                break
            subprocess.run(cmd, capture_output=True, timeout=60)
            try:
                self.process.wait(30)
                break
            except subprocess.TimeoutExpired:
                continue
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):
            self.point.rmdir()


def drop_caches() -> None:
    os.sync()
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timed_cat(path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True, timeout=3600)
    return time.perf_counter() - started


def status(pid: int, field: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def churn(gigabytes: float) -> Iterator[None]:
    """A process beside the bench that allocates, touches and frees ``gigabytes`` in a loop,
    on one core."""
    code = ("import sys\nn = int(float(sys.argv[1]) * (1 << 30))\n"
            "while True:\n    b = bytearray(b'\\x01') * n\n    del b\n")
    process = subprocess.Popen([sys.executable, "-c", code, str(gigabytes)])
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(process.pid, {0})
    try:
        yield
    finally:
        process.kill()
        process.wait()


# -- rows ------------------------------------------------------------------------------------


def row_cat(server: Server, work: Path, size: int, runs: int = 3) -> dict:
    """Each way ``runs`` times, in turns (the machine may be shared): the medians."""
    times: dict[str, list[float]] = {"direct": [], "proxy_0ms": [], "rtt_50ms": []}
    delays = {"direct": None, "proxy_0ms": 0.0, "rtt_50ms": DELAY_S}
    for _ in range(runs):
        for name, delay in delays.items():
            stop: Callable[[], None] = lambda: None  # noqa: E731
            url = server.url
            if delay is not None:
                port, stop = start_delay_proxy(server.port, delay)
                url = f"http://127.0.0.1:{port}"
            try:
                with Mount(url, work) as m:
                    drop_caches()
                    times[name].append(timed_cat(m.point / "link" / ARCHIVE / BIG_MEMBER))
            finally:
                stop()
    figures: dict[str, dict] = {
        name: {"seconds": statistics.median(runs_s), "runs_s": runs_s,
               "mb_s": size / statistics.median(runs_s) / 1e6}
        for name, runs_s in times.items()}
    ratio = figures["rtt_50ms"]["mb_s"] / figures["direct"]["mb_s"]
    return {"row": f"cat {size / MiB:.0f} MiB member, 50 ms RTT over direct", "value": ratio,
            "target": ">= 0.8", "ok": ratio >= 0.8, **figures}


_FIRST_BYTE = r"""
import os, sys, time
t = time.perf_counter()
fd = os.open(sys.argv[1], os.O_RDONLY)
data = os.read(fd, 1)
print(time.perf_counter() - t)
os.close(fd)
"""


def row_first_byte(server: Server, work: Path) -> dict:
    port, stop = start_delay_proxy(server.port, DELAY_S)
    figures = {}
    try:
        for name, rel in (("member", Path("link") / ARCHIVE / SMALL_MEMBER),
                          ("plain_file", Path("link") / SMALL_FILE)):
            with Mount(f"http://127.0.0.1:{port}", work) as m:
                path = m.point / rel
                os.listdir(path.parent)  # the folder listed: what remains is the open and read
                os.stat(path)
                out = subprocess.run([sys.executable, "-c", _FIRST_BYTE, str(path)],
                                     capture_output=True, text=True, check=True)
                seconds = float(out.stdout)
                figures[name] = {"seconds": seconds, "round_trips": seconds / (2 * DELAY_S)}
    finally:
        stop()
    worst = max(f["round_trips"] for f in figures.values())
    return {"row": "first byte of a small file, 50 ms RTT: round trips", "value": worst,
            "target": "<= 3", "ok": worst <= 3, **figures}


def row_small(server: Server, work: Path) -> dict:
    with Mount(server.url, work) as m:
        before = server.metrics()
        timed_cat(m.point / "link" / ARCHIVE / SMALL_MEMBER)
        by_endpoint = requests_between(before, server.metrics())
    count = sum(by_endpoint.values())
    return {"row": "small member cold: requests", "value": count, "target": "<= 4",
            "ok": count <= 4, "by_endpoint": by_endpoint}


def row_readers(server: Server, work: Path, each: int) -> dict:
    with Mount(server.url, work) as m:
        folder = m.point / "link" / READERS_ZIP
        os.listdir(folder)
        drop_caches()
        one = timed_cat(folder / "r0.csv")
    with Mount(server.url, work) as m:
        folder = m.point / "link" / READERS_ZIP
        os.listdir(folder)
        drop_caches()
        started = time.perf_counter()
        cats = [subprocess.Popen(["cat", str(folder / f"r{i}.csv")], stdout=subprocess.DEVNULL)
                for i in range(8)]
        for cat in cats:
            if cat.wait(3600) != 0:
                raise RuntimeError("a cat failed")
        eight = time.perf_counter() - started
        hwm = status(m.pid, "VmHWM")
    ratio = (8 * each / eight) / (each / one)
    return {"row": "eight readers over one: throughput", "value": ratio, "target": ">= 1.5",
            "ok": ratio >= 1.5, "one_s": one, "eight_s": eight, "one_mb_s": each / one / 1e6,
            "eight_mb_s": 8 * each / eight / 1e6, "rss_hwm_mb": hwm / 1e6}


def row_rss(server: Server, work: Path, huge: int) -> dict:
    figures = {}
    for name, beside in (("quiet", False), ("churn", True)):
        with Mount(server.url, work, "--cache-size", "256M") as m:
            path = m.point / "link" / HUGE_ZIP / HUGE_MEMBER
            os.stat(path)
            drop_caches()
            with churn(CHURN_GB) if beside else contextlib.nullcontext():
                seconds = timed_cat(path)
            figures[name] = {"hwm_mb": status(m.pid, "VmHWM") / 1e6,
                             "rss_after_mb": status(m.pid, "VmRSS") / 1e6,
                             "mb_s": huge / seconds / 1e6}
    worst = max(f["hwm_mb"] for f in figures.values())
    limit = (CACHE_SIZE + 100 * MiB) / 1e6
    return {"row": "peak RSS, 5 GiB member, --cache-size 256M (MB)", "value": worst,
            "target": f"<= {limit:.0f}", "ok": worst <= limit, **figures}


def measure(work: Path, rows: tuple[str, ...] = ROWS, big: int = 300 * MiB,
            readers_each: int = 32 * MiB, huge: int = 5 * GiB) -> list[dict]:
    """Build the corpus under ``work`` (once), start a server, and measure ``rows``."""
    work.mkdir(parents=True, exist_ok=True)
    build_corpus(work / "root", big, readers_each, huge if "rss" in rows else 0)
    server = Server(work / "root", work)
    out = []
    try:
        for row in rows:
            if row == "cat":
                out.append(row_cat(server, work, big))
            elif row == "first":
                out.append(row_first_byte(server, work))
            elif row == "small":
                out.append(row_small(server, work))
            elif row == "readers":
                out.append(row_readers(server, work, readers_each))
            elif row == "rss":
                out.append(row_rss(server, work, huge // (64 * MiB) * 64 * MiB))
            print(_line(out[-1]), flush=True)
    finally:
        server.stop()
    return out


_UNITS = {"cat": "x", "first": "RTT", "small": "req", "readers": "x", "rss": "MB"}


def run(quick: bool = False, work: Path | None = None, cache: Path | None = None) -> list[dict]:
    """The rows for ``scripts/bench.py``: the full corpus kept in ``cache`` between runs, the
    quick one built in ``work`` (scratch)."""
    folder = ((work if quick else cache) or Path(tempfile.gettempdir())) / "link"
    rows = tuple(r for r in ROWS if r != "rss") if quick else ROWS
    sizes = {"big": 16 * MiB, "readers_each": 2 * MiB} if quick else {}
    detail = measure(folder.resolve(), rows, **sizes)
    return [{"what": row["row"], "value": row["value"], "unit": _UNITS[name],
             "target": f"{row['target']} {_UNITS[name]}", "pass": bool(row["ok"]),
             "digits": 0 if name == "small" else 2}
            for name, row in zip(rows, detail)]


def _line(row: dict) -> str:
    value = row["value"]
    shown = f"{value:.2f}" if isinstance(value, float) else str(value)
    return f"{row['row']:<52} {shown:>10}  target {row['target']:<8} " \
           f"{'ok' if row['ok'] else 'MISSED'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path(".bench/link"))
    parser.add_argument("--rows", default=",".join(ROWS),
                        help=f"comma-separated rows among {', '.join(ROWS)}")
    parser.add_argument("--json", type=Path, help="write the rows with their details here")
    parser.add_argument("--huge-gib", type=float, default=5.0)
    args = parser.parse_args()
    rows = tuple(r for r in args.rows.split(",") if r)
    unknown = set(rows) - set(ROWS)
    if unknown:
        parser.error(f"unknown rows {', '.join(sorted(unknown))}; choose among {', '.join(ROWS)}")
    result = measure(args.work.resolve(), rows, huge=int(args.huge_gib * GiB))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
