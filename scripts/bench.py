"""``make bench``: what the mount costs, measured end to end in one run, as one table.

The script builds its corpus once (under ``.bench/``, reused while its recipe is unchanged),
starts the reference server on 127.0.0.1 and mounts it, then measures each row below through
the mount. Every row that says "cold" gets a fresh mount process and a dropped page cache
(``echo 3 > /proc/sys/vm/drop_caches``; without root the table says the cache was not
dropped). The mount opens a file whose version it has read before with ``keep_cache``, so the
kernel serves it again from its page cache ("again" sub-rows); other "warm" figures reopen no
file, or measure the daemon's own caches.

Rows (targets from the issue; the JSON has the details behind each figure):

1. ``cat`` of a 512 MiB deflated text member: throughput through the mount over ``unzip -p``
   of the same archive on local disk (>= 2.0; beside it the floors, ``benchfloors``: ``unzip
   -p`` and in-process zlib-ng inflate of the member), and object bytes fetched over the member's
   compressed size (<= 1.05). Again: a second ``cat`` on the same mount, its time over the
   first's (<= 0.5: the kernel's page cache).
2. cold ``cat`` of a small member stored after the large one: HTTP requests the mount made,
   counted from the moment it answers (<= 4), and object bytes fetched (<= compressed + 64 KiB).
3. 200 random 4 KiB ``pread`` s (seed 1234) in the 512 MiB member, on a fresh mount and again
   after that pass: median and p95 (warm: <= 15 ms and <= 40 ms). A pass stops at its time
   budget; the figures then cover the reads done.
4. ``ls -lR`` of an archive of 100,000 members on a fresh mount *and* a freshly started server:
   time (<= 5 s), over the same on ``trivialfs.py`` (an in-memory fusepy file system with the
   same tree, the floor; <= 1.3), again on the same mount (warm, <= 1.5 s), and the daemon's
   peak RSS (<= 200 MB).
5. eight ``cat`` s of eight different members at once: aggregate throughput over one ``cat``
   alone (>= 1.5).
6. the daemon's peak RSS during rows 1 and 5 (<= cache size + 100 MB).
7. one SQLite query on a database stored deflated in an archive, through the mount and on a
   local copy (both cold): time ratio (reported, no target). Then 200 indexed point queries
   (seed 1234), each set on a new connection of a new process, against the same set on the
   local copy: on a first connection (cold), the same queries asked again on a second (<= 2x
   local), and new queries on a third.
8. (``--rows server``) the server alone under load, no mount: ``ab`` (apache2-utils) with
   keep-alive against 4 KiB ranged GETs of one signed URL and against small listings
   (``zip-contents`` of a 10-member archive, ``contents`` of a 10-file folder), 1 and 32
   clients: requests/s (ranges: >= 1,000 with one client, >= 2,000 with 32; listings >= 1,000
   with 32) and p99 (ranges, 32 clients: <= 50 ms). nginx serves the same file with the same
   range in the same run as the reference. Each figure is the median of three runs taken in
   turns (the machine may be shared); the server runs with its default ``--workers`` (one per
   core). Missing ``ab`` or nginx are installed with ``scripts/install-system-deps.sh --bench``
   when possible, otherwise the row says what is missing. This row needs no corpus or mount.

9. (``task``) ``cat`` of the 320 MiB CSV member of archives made as Inductiva's task runner makes
   them (``taskarchives``: ``7zz a -tzip -mx=1 -mmt=on``, and stream-zip), cold: over ``unzip
   -p`` (>= 2.0), beside in-process inflate, with the CPU of the daemon and of each of its
   stages (threads named through ``py-spy dump``) against the floors' CPU; again on the same
   mount (<= 0.5 of the first).

Rows with modules of their own (``seek``, ``link``, ``s3``, ``listing``, ``bigarchive``:
``scripts/bench_NAME.py``, ``run(...) -> rows``; ``benchrows`` says how they are called) run
after these; one whose module is missing is printed as "n/a", not left out.

Requests and bytes come from the server's ``/metrics`` (``storagefs_requests_total``,
``storagefs_object_read_bytes_total``); RSS from ``/proc/PID/status`` (VmRSS sampled every
20 ms, VmHWM) of the process that serves FUSE.

The peer column is ratarmount (installed with pip into ``.bench/ratarmount-venv`` on first
use), mounting the same archive through the same kind of signed URL (fsspec over HTTP), one
archive per mount, its index written to a fresh folder each time. It reads the archive's
directory while mounting, so its requests are counted and its ``ls -lR`` timed from its start.

Usage: ``scripts/bench.py [--quick] [--json PATH] [--rows 1,4,task,server,seek] [--peer none]
[--profile DIR]``. ``--quick`` uses a small corpus (a smoke run; the targets are meant for the
full one). The default is every row; ``make bench BENCH_ARGS="--rows server"`` runs row 8 alone.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import requests

import benchfloors  # scripts/ is on sys.path when this runs as a script
import benchrows
import taskarchives

REPO = Path(__file__).resolve().parent.parent
sys.path.append(str(REPO / "tests"))  # serverharness: the tests' way to start and stop a server
from serverharness import (free_port, read_metrics, stop_process,  # noqa: E402
                           wait_until_answers)

BENCH = REPO / ".bench"
RATARMOUNT_VENV = BENCH / "ratarmount-venv"
API_KEY = "bench-key.1"
MiB = 1 << 20
CORPUS_VERSION = 1  # bump when the recipe below changes: the cached corpus is rebuilt
SEED = 1234
MOUNT_WAIT_S = 60.0
PEER_MOUNT_WAIT_S = 600.0  # ratarmount indexes the archive before it mounts


@dataclass(frozen=True)
class Sizes:
    """The corpus recipe: what each row reads."""

    big: int  # the large deflated text member (rows 1 and 3)
    small: int  # the small member stored after it (row 2)
    parallel: int  # each of the eight members read at once (row 5)
    many: int  # members of the archive listed by ls -lR (row 4)
    db_rows: int  # rows of the SQLite table (row 7)
    reads: int  # random preads per pass (row 3)
    read_budget_s: float  # time budget of one pread pass
    cache: int  # the mount's --cache-size
    task_csv: int  # the task-runner archives' CSV member (row 9)
    task_bin: int  # their binary float member


FULL = Sizes(big=512 * MiB, small=200_000, parallel=64 * MiB, many=100_000, db_rows=1_000_000,
             reads=200, read_budget_s=60.0, cache=256 * MiB, task_csv=320 * MiB,
             task_bin=64 * MiB)
QUICK = Sizes(big=8 * MiB, small=50_000, parallel=1 * MiB, many=2_000, db_rows=20_000,
              reads=20, read_budget_s=10.0, cache=64 * MiB, task_csv=8 * MiB, task_bin=2 * MiB)

BIG_ZIP, BIG_MEMBER, SMALL_MEMBER = "big.zip", "logs/solver.log", "logs/summary.txt"
PARALLEL_ZIP = "parallel.zip"
MANY_ZIP = "many.zip"
DB_ZIP, DB_MEMBER = "db.zip", "results/sim.db"
TASK_7ZIP, TASK_STREAM = taskarchives.SEVEN_ZIP, taskarchives.STREAM_ZIP
TASK_MEMBER, TASK_LOG = taskarchives.CSV_MEMBER, 1 * MiB
QUERY = ("SELECT probe, count(*), avg(value), max(label) FROM samples "
         "WHERE probe BETWEEN 10 AND 14 AND step BETWEEN 2000 AND 6000 GROUP BY probe")


# -- the corpus ------------------------------------------------------------------------------


def _text_chunks(seed: int, total: int, chunk: int = MiB) -> Iterator[bytes]:
    """Log-like text, compressible about 3:1 like solver output; deterministic, fast."""
    rng = random.Random(seed)
    words = ("step residual converged pressure velocity iteration dt= 0.001 Courant max "
             "mean time ExecutionTime ClockTime smoothSolver GAMG Ux Uy Uz p_rgh k epsilon "
             "Solving for Final No Iterations").split()
    pool = [(f"{rng.randrange(10 ** 7):08d} " + " ".join(rng.choice(words) for _ in range(9))
             + f" {rng.random():.6e}\n").encode() for _ in range(50_000)]
    per_chunk = chunk // 80
    written = 0
    while written < total:
        data = b"".join(rng.choices(pool, k=per_chunk))[:total - written]
        written += len(data)
        yield data


def _write_member(zf: zipfile.ZipFile, name: str, chunks: Iterator[bytes]) -> None:
    info = zipfile.ZipInfo(name, (2025, 6, 1, 12, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(info, "w", force_zip64=True) as out:
        for data in chunks:
            out.write(data)


def _build_db(path: Path, rows: int) -> None:
    """A results table inserted in step order, with its index created afterwards (so index
    pages sit at the end of the file, as after a typical bulk load)."""
    path.unlink(missing_ok=True)
    rng = random.Random(SEED)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA page_size = 4096")
        db.execute("CREATE TABLE samples (id INTEGER PRIMARY KEY, step INTEGER, probe INTEGER, "
                   "value REAL, label TEXT)")
        probes = 100
        db.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?)",
                       ((i, i // probes, i % probes, rng.gauss(0, 1), f"probe-{i % probes:03d}")
                        for i in range(rows)))
        db.execute("CREATE INDEX samples_probe_step ON samples (probe, step)")
        db.commit()
        db.execute("VACUUM")


def _build_big(path: Path, sizes: Sizes) -> None:
    with zipfile.ZipFile(path, "w", compresslevel=6) as zf:
        _write_member(zf, BIG_MEMBER, _text_chunks(1, sizes.big))
        _write_member(zf, SMALL_MEMBER, _text_chunks(2, sizes.small))


def _build_parallel(path: Path, sizes: Sizes) -> None:
    with zipfile.ZipFile(path, "w", compresslevel=6) as zf:
        for i in range(8):
            _write_member(zf, f"members/m{i}.log", _text_chunks(10 + i, sizes.parallel))


def _build_many(path: Path, sizes: Sizes) -> None:
    """A task's output tree: 100 cases x 10 steps x 100 small files, written over a day
    (distinct timestamps, as a real run leaves them)."""
    rng = random.Random(3)
    per_dir, per_case = 100, 1000
    start = dt.datetime(2025, 6, 1, 0, 0, 0)
    with zipfile.ZipFile(path, "w", compresslevel=6) as zf:
        for i in range(sizes.many):
            name = (f"output/case{i // per_case:03d}/step{(i // per_dir) % 10:02d}/"
                    f"probe{i:06d}.dat")
            when = start + dt.timedelta(seconds=i * 86400 // max(1, sizes.many))
            info = zipfile.ZipInfo(name, when.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, f"probe {i} {rng.random():.6f}\n".encode() * rng.randrange(1, 8))


def _build_db_zip(path: Path, sizes: Sizes) -> None:
    db = path.parent.parent.parent / "local" / "sim.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    _build_db(db, sizes.db_rows)
    with zipfile.ZipFile(path, "w", compresslevel=6) as zf:
        info = zipfile.ZipInfo(DB_MEMBER, (2025, 6, 1, 12, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        with db.open("rb") as src, zf.open(info, "w", force_zip64=True) as out:
            shutil.copyfileobj(src, out, MiB)


def _build_task_7zip(path: Path, sizes: Sizes) -> None:
    taskarchives.build_7zip(path, sizes.task_csv, sizes.task_bin, TASK_LOG)


def _build_task_stream(path: Path, sizes: Sizes) -> None:
    taskarchives.build_stream_zip(path, sizes.task_csv, sizes.task_bin, TASK_LOG)


# archive -> (builder, the recipe fields it depends on, its own version)
_ARCHIVES = {BIG_ZIP: (_build_big, ("big", "small"), 1),
             PARALLEL_ZIP: (_build_parallel, ("parallel",), 1),
             MANY_ZIP: (_build_many, ("many",), 2),
             DB_ZIP: (_build_db_zip, ("db_rows",), 1),
             TASK_7ZIP: (_build_task_7zip, ("task_csv", "task_bin"), 2),
             TASK_STREAM: (_build_task_stream, ("task_csv", "task_bin"), 2)}


def build_corpus(sizes: Sizes, quick: bool) -> Path:
    """The server's root; each archive is rebuilt only when its recipe changed."""
    corpus = BENCH / ("corpus-quick" if quick else "corpus")
    root = corpus / "root" / "bench"
    root.mkdir(parents=True, exist_ok=True)
    manifest_path = corpus / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = {}
    recipes, facts = manifest.get("recipes", {}), manifest.get("facts", {})
    for archive, (build, fields, version) in _ARCHIVES.items():
        recipe = {"corpus": CORPUS_VERSION, "version": version,
                  **{name: getattr(sizes, name) for name in fields}}
        path = root / archive
        if recipes.get(archive) == recipe and path.exists() and archive in facts:
            continue
        print(f"building {path.relative_to(REPO)} (once) ...", flush=True)
        started = time.monotonic()
        build(path, sizes)
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            facts[archive] = {"size": path.stat().st_size, "members": len(infos),
                              "compressed": {i.filename: i.compress_size for i in infos[:16]},
                              "sizes": {i.filename: i.file_size for i in infos[:16]},
                              "build_s": round(time.monotonic() - started, 1)}
        recipes[archive] = recipe
        manifest_path.write_text(json.dumps({"recipes": recipes, "facts": facts}, indent=1))
    return corpus


# -- processes -------------------------------------------------------------------------------


class Server:
    """``storagefs serve`` on the corpus, with /metrics read as {sample: value}."""

    def __init__(self, root: Path, work: Path, *extra: str) -> None:
        self.root = root
        self.work = work
        self.extra = extra
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> None:
        port = free_port()
        log = self.work / f"server-{port}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "storagefs", "serve", str(self.root), "--host", "127.0.0.1",
             "--port", str(port), "--api-key", API_KEY, *self.extra], stdout=log.open("ab"),
            stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        wait_until_answers(self.process, self.url + "/version", log)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def restart(self) -> None:
        """A server with empty caches (its archive index cache lives in the process)."""
        self.stop()
        self.start()

    def metrics(self) -> dict[str, float]:
        return read_metrics(self.url)

    def signed_url(self, path: str) -> str:
        response = requests.get(self.url + "/storage/signed-urls", timeout=10,
                                params={"operation": "download", "paths": path},
                                headers={"X-API-Key": API_KEY})
        response.raise_for_status()
        return response.json()[0]


def traffic(before: dict[str, float], after: dict[str, float]) -> dict:
    """Requests (all, by endpoint) and object bytes between two /metrics snapshots."""
    by_endpoint: dict[str, int] = {}
    for key, value in after.items():
        if key.startswith("storagefs_requests_total{") and 'endpoint="/metrics"' not in key:
            delta = value - before.get(key, 0.0)
            if delta:
                endpoint = key.split('endpoint="', 1)[1].split('"', 1)[0]
                by_endpoint[endpoint] = by_endpoint.get(endpoint, 0) + int(delta)
    name = "storagefs_object_read_bytes_total"
    return {"requests": sum(by_endpoint.values()), "by_endpoint": by_endpoint,
            "object_bytes": int(after.get(name, 0.0) - before.get(name, 0.0))}


def drop_caches() -> bool:
    """Empty the kernel's page cache (root only); False when it could not."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


class RssSampler:
    """VmRSS of a process every 20 ms in a thread, and its VmHWM on demand."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def status(self, field: str) -> int:
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.status("VmRSS"))

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.status("VmRSS"))
        return {"rss_peak_sampled": self.peak, "hwm": max(self.peak, self.status("VmHWM")),
                "rss_now": self.status("VmRSS")}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (the machine may be shared: wall time is
    not all spent by the mount)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of each thread of a process, by thread id."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        found[tid] = (int(fields[11]) + int(fields[12])) / tick
    return found


def thread_stages(pid: int, before: dict[str, float]) -> dict[str, float]:
    """CPU seconds each stage of the daemon spent since ``before`` (``thread_cpu``), by the
    Python names of its threads (``py-spy dump``): ``storagefs-decode``, ``storagefs-fetch``,
    and ``fuse`` for libfuse's threads (the read path: fusepy, the copies); by thread id when
    py-spy is not installed. Measured without a profiler slowing the daemon down."""
    after = thread_cpu(pid)
    names: dict[str, str] = {}
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if os.path.exists(spy):
        dump = subprocess.run([spy, "dump", "-p", str(pid)], capture_output=True, text=True,
                              timeout=60).stdout
        for line in dump.splitlines():
            if line.startswith("Thread "):
                tid = line.split()[1]
                name = line.split('"')[1] if '"' in line else "fuse"
                name = name.rstrip("0123456789").rstrip("_-")
                names[tid] = "fuse" if name in ("Dummy", "fuse") else name
    stages: dict[str, float] = {}
    for tid, seconds in after.items():
        spent = seconds - before.get(tid, 0.0)
        if spent > 0:
            name = names.get(tid, "fuse" if names else f"thread {tid}")
            stages[name] = round(stages.get(name, 0.0) + spent, 3)
    return stages


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (the server's workers)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return cpu_seconds(pid) + sum(cpu_seconds(int(c)) for c in children)


def _unmount(mountpoint: Path, process: subprocess.Popen) -> None:
    for cmd in (["fusermount", "-u", str(mountpoint)], ["fusermount", "-uz", str(mountpoint)]):
        if process.poll() is not None and not os.path.ismount(mountpoint):
            break
        subprocess.run(cmd, capture_output=True, timeout=60)
        try:
            process.wait(30)
            break
        except subprocess.TimeoutExpired:
            continue
    if process.poll() is None:
        process.kill()
        process.wait(10)


def _wait_mounted(mountpoint: Path, process: subprocess.Popen, timeout: float,
                  log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"the mount exited with {process.returncode}: {tail}")
        if os.path.ismount(mountpoint):
            return
        time.sleep(0.02)
    raise RuntimeError(f"{mountpoint} was not mounted within {timeout:.0f} s")


@dataclass
class Mounted:
    """A fresh mount: where the archive's members are, and the serving process."""

    archive_dir: Path
    pid: int
    start_metrics: dict  # /metrics just before the mount process started
    ready_metrics: dict  # /metrics once it answered
    started: float  # time.monotonic() at the start of the process
    ready: float  # time.monotonic() once it answered


class StoragefsMount:
    name = "storagefs"

    def __init__(self, server: Server, work: Path, cache_size: int) -> None:
        self.server = server
        self.work = work
        self.cache_size = cache_size
        self.count = 0

    @contextlib.contextmanager
    def fresh(self, archive: str) -> Iterator[Mounted]:
        self.count += 1
        mountpoint = self.work / f"mnt-{self.count}"
        mountpoint.mkdir()
        log = self.work / f"mount-{self.count}.log"
        before = self.server.metrics()
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "storagefs", "mount", str(mountpoint), "--foreground",
             "--api-url", self.server.url, "--api-key", API_KEY, "--log-file", str(log),
             "--cache-size", str(self.cache_size)],
            stdout=subprocess.DEVNULL, stderr=(self.work / f"mount-{self.count}.err").open("w"))
        try:
            _wait_mounted(mountpoint, process, MOUNT_WAIT_S, log)
            yield Mounted(mountpoint / "bench" / archive, process.pid, before,
                          self.server.metrics(), started, time.monotonic())
        finally:
            _unmount(mountpoint, process)
        text = log.read_text(errors="replace") if log.exists() else ""
        if "Traceback" in text:
            print(f"warning: the mount logged a traceback (see {log})", file=sys.stderr)


class RatarmountMount:
    name = "ratarmount"

    def __init__(self, server: Server, work: Path, executable: Path) -> None:
        self.server = server
        self.work = work
        self.executable = executable
        self.count = 0

    @contextlib.contextmanager
    def fresh(self, archive: str) -> Iterator[Mounted]:
        self.count += 1
        mountpoint = self.work / f"rat-{self.count}"
        index = self.work / f"rat-index-{self.count}"
        mountpoint.mkdir()
        index.mkdir()
        log = self.work / f"rat-{self.count}.log"
        url = self.server.signed_url(f"bench/{archive}")
        before = self.server.metrics()
        started = time.monotonic()
        process = subprocess.Popen(
            [str(self.executable), "-f", "-c", "--index-folders", str(index), url,
             str(mountpoint)], stdout=log.open("w"), stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            _wait_mounted(mountpoint, process, PEER_MOUNT_WAIT_S, log)
            yield Mounted(mountpoint, process.pid, before, self.server.metrics(), started,
                          time.monotonic())
        finally:
            _unmount(mountpoint, process)
            shutil.rmtree(index, ignore_errors=True)


def ensure_ratarmount(allow_install: bool) -> tuple[Path | None, str]:
    """ratarmount from its own venv, installed with pip on first use; (path, note). A venv
    that does not run (half installed, or moved: venvs name their own folder in every script)
    is made again."""
    executable = RATARMOUNT_VENV / "bin" / "ratarmount"
    if _version(executable) is None and allow_install:
        print("installing ratarmount into .bench/ratarmount-venv (once) ...", flush=True)
        shutil.rmtree(RATARMOUNT_VENV, ignore_errors=True)
        log = BENCH / "ratarmount-install.log"
        BENCH.mkdir(exist_ok=True)
        with log.open("w") as out:
            ok = subprocess.run([sys.executable, "-m", "venv", str(RATARMOUNT_VENV)],
                                stdout=out, stderr=subprocess.STDOUT).returncode == 0
            ok = ok and subprocess.run(
                [str(RATARMOUNT_VENV / "bin" / "pip"), "install", "--quiet", "ratarmount",
                 "fsspec[http]", "aiohttp"], stdout=out, stderr=subprocess.STDOUT).returncode == 0
        if not ok:
            return None, f"ratarmount did not install with pip (see {log.relative_to(REPO)})"
    version = _version(executable)
    if version is None:
        return None, "ratarmount not installed"
    return executable, version


def _version(executable: Path) -> str | None:
    """The first line ``--version`` prints, or None if the program does not run."""
    try:
        done = subprocess.run([str(executable), "--version"], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0] if first else "ratarmount"


# -- measurements ----------------------------------------------------------------------------


def _run_timed(cmd: list[str], timeout: float, stdout=subprocess.DEVNULL) -> float:
    started = time.perf_counter()
    result = subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, timeout=timeout)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({result.returncode}): "
                           f"{result.stderr.decode(errors='replace')[-500:]}")
    return elapsed


def _run_timed_cpu(cmd: list[str], timeout: float) -> tuple[float, float]:
    """Wall seconds and the command's own CPU seconds (for ``cat``: the kernel's copies)."""
    started = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        timer.cancel()
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({process.returncode})")
    return elapsed, usage.ru_utime + usage.ru_stime


_PREADS = r"""
import json, os, sys, time
path, offsets = sys.argv[1], json.loads(sys.argv[2])
length, budget = int(sys.argv[3]), float(sys.argv[4])
fd = os.open(path, os.O_RDONLY)
times, started = [], time.perf_counter()
for offset in offsets:
    t = time.perf_counter()
    data = os.pread(fd, length, offset)
    times.append(time.perf_counter() - t)
    assert len(data) == length, (offset, len(data))
    if time.perf_counter() - started > budget:
        break
os.close(fd)
print(json.dumps(times))
"""

_QUERY = r"""
import json, sqlite3, sys, time
t = time.perf_counter()
db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro&immutable=1", uri=True)
rows = db.execute(sys.argv[2]).fetchall()
print(json.dumps({"seconds": time.perf_counter() - t, "rows": rows}))
"""


def preads(path: Path, offsets: list[int], budget: float) -> list[float]:
    result = subprocess.run([sys.executable, "-c", _PREADS, str(path), json.dumps(offsets),
                             "4096", str(budget)], capture_output=True, text=True,
                            timeout=budget + 600)
    if result.returncode != 0:
        raise RuntimeError(f"preads failed: {result.stderr[-500:]}")
    return json.loads(result.stdout)


def query(path: Path, timeout: float = 900) -> dict:
    result = subprocess.run([sys.executable, "-c", _QUERY, str(path), QUERY],
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"query failed: {result.stderr[-500:]}")
    return json.loads(result.stdout)


_POINTS = r"""
import json, sqlite3, sys, time
keys = json.loads(sys.argv[2])
t = time.perf_counter()
db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro&immutable=1", uri=True)
rows = [db.execute("SELECT value, label FROM samples WHERE probe = ? AND step = ?", k).fetchall()
        for k in keys]
print(json.dumps({"seconds": time.perf_counter() - t, "rows": rows}))
"""


def points(path: Path, keys: list[list[int]], timeout: float = 900) -> dict:
    """Indexed point queries on one new connection, in a process of their own."""
    result = subprocess.run([sys.executable, "-c", _POINTS, str(path), json.dumps(keys)],
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"point queries failed: {result.stderr[-500:]}")
    return json.loads(result.stdout)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _latency(times: list[float], wanted: int) -> dict:
    if not times:
        return {"done": 0, "of": wanted}
    return {"done": len(times), "of": wanted, "median_ms": statistics.median(times) * 1e3,
            "p95_ms": _pct(times, 0.95) * 1e3, "total_s": sum(times)}


@contextlib.contextmanager
def trivial_mount(archive: Path, work: Path) -> Iterator[Path]:
    """``scripts/trivialfs.py`` serving the archive's tree, unmounted afterwards."""
    mountpoint = work / "trivialfs"
    mountpoint.mkdir(exist_ok=True)
    log = work / "trivialfs.log"
    process = subprocess.Popen([sys.executable, str(Path(__file__).parent / "trivialfs.py"),
                                str(archive), str(mountpoint)], stdout=log.open("w"),
                               stderr=subprocess.STDOUT)
    try:
        _wait_mounted(mountpoint, process, PEER_MOUNT_WAIT_S, log)
        yield mountpoint
    finally:
        _unmount(mountpoint, process)


def profile_summary(raw: Path, title: str) -> str:
    """py-spy's raw stacks folded into own time and time within, per function, and samples
    per thread: where the daemon's time goes."""
    own: dict[str, int] = {}
    within: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = 0
    for line in raw.open(errors="replace"):
        stack, _, count = line.rstrip().rpartition(" ")
        if not count.isdigit():
            continue
        parts = [f for f in stack.split(";") if f]
        thread = next((f for f in parts if f.startswith("thread")), "?")
        frames = [f for f in parts if not f.startswith(("thread", "process"))]
        if not frames:
            continue
        total += int(count)
        threads[thread] = threads.get(thread, 0) + int(count)
        own[frames[-1]] = own.get(frames[-1], 0) + int(count)
        for frame in set(frames):
            within[frame] = within.get(frame, 0) + int(count)
    out = [title, f"{total} samples (the thread holding the GIL); own time, then time "
                  "within, then by thread"]
    for counts, n in ((own, 30), (within, 40), (threads, 20)):
        for frame, samples in sorted(counts.items(), key=lambda kv: -kv[1])[:n]:
            out.append(f"{100 * samples / max(total, 1):5.1f}%  {frame}")
        out.append("")
    return "\n".join(out)


class Bench:
    def __init__(self, args: argparse.Namespace, sizes: Sizes, corpus: Path, work: Path) -> None:
        self.args = args
        self.sizes = sizes
        self.corpus = corpus
        self.facts = json.loads((corpus / "manifest.json").read_text())["facts"]
        self.work = work
        self.server = Server(corpus / "root", work)
        self.dropped = True
        self.timeout = 3600.0
        self.peer_note = ""
        self._floors: dict[tuple[str, str], dict] = {}
        self._trivial: dict | None = None

    def cold(self) -> bool:
        dropped = drop_caches()
        self.dropped = dropped and self.dropped
        return dropped

    def member_path(self, m: Mounted, member: str) -> Path:
        return m.archive_dir / member

    def floors(self, archive: str, member: str) -> dict:
        """``unzip -p`` (cold, warm) and in-process inflate of a member, measured once a run,
        when the first system reads it (so right beside the mount's own figures)."""
        key = (archive, member)
        if key not in self._floors:
            print(f"  floors: unzip -p and in-process inflate of {archive}/{member} ...",
                  flush=True)
            self._floors[key] = benchfloors.measure(self.corpus / "root" / "bench" / archive,
                                                    member, self.timeout, self.cold)
        return self._floors[key]

    def trivial_floor(self) -> dict:
        """``ls -lR`` of the 100k-member tree on ``trivialfs`` (in-memory, plain fusepy):
        cold (fresh mount, dropped caches) and again within the entry timeout."""
        if self._trivial is None:
            print("  floor: ls -lR on a trivial in-memory fusepy file system ...", flush=True)
            with trivial_mount(self.corpus / "root" / "bench" / MANY_ZIP, self.work) as mnt:
                self.cold()
                cold = _run_timed(["ls", "-lR", str(mnt)], self.timeout)
                warm = _run_timed(["ls", "-lR", str(mnt)], self.timeout)
            self._trivial = {"cold_s": cold, "warm_s": warm}
        return self._trivial

    # Each row runs against one system (a StoragefsMount or a RatarmountMount) and returns a dict.

    def row_cat(self, system) -> dict:
        facts = self.facts[BIG_ZIP]
        floors = self.floors(BIG_ZIP, BIG_MEMBER)
        with system.fresh(BIG_ZIP) as m:
            self.cold()
            rss = RssSampler(m.pid)
            before = self.server.metrics()
            seconds = _run_timed(["cat", str(m.archive_dir / BIG_MEMBER)], self.timeout)
            moved = traffic(before, self.server.metrics())
            memory = rss.stop()
        size, compressed = facts["sizes"][BIG_MEMBER], facts["compressed"][BIG_MEMBER]
        return {"seconds": seconds, "mb_s": size / seconds / 1e6,
                "fetched_over_compressed": moved["object_bytes"] / compressed,
                "traffic": moved, "memory": memory, "floors": floors}

    def row_small(self, system) -> dict:
        with system.fresh(BIG_ZIP) as m:
            self.cold()
            seconds = _run_timed(["cat", str(m.archive_dir / SMALL_MEMBER)], self.timeout)
            after = self.server.metrics()
        # storagefs fetches nothing before a path is used; ratarmount reads the archive's
        # directory while mounting, so its count starts with the process.
        start = m.ready_metrics if system.name == "storagefs" else m.start_metrics
        moved = traffic(start, after)
        compressed = self.facts[BIG_ZIP]["compressed"][SMALL_MEMBER]
        return {"seconds": seconds, "requests": moved["requests"],
                "object_bytes": moved["object_bytes"], "compressed": compressed,
                "bytes_over_compressed": moved["object_bytes"] - compressed, "traffic": moved}

    def row_preads(self, system) -> dict:
        size = self.facts[BIG_ZIP]["sizes"][BIG_MEMBER]
        rng = random.Random(SEED)
        offsets = [rng.randrange(0, size - 4096) for _ in range(self.sizes.reads)]
        with system.fresh(BIG_ZIP) as m:
            self.cold()
            path = m.archive_dir / BIG_MEMBER
            before = self.server.metrics()
            cold = preads(path, offsets, self.sizes.read_budget_s)
            between = self.server.metrics()
            self.cold()
            warm = preads(path, offsets, self.sizes.read_budget_s)
            after = self.server.metrics()
        return {"cold": {**_latency(cold, len(offsets)), "traffic": traffic(before, between)},
                "warm": {**_latency(warm, len(offsets)), "traffic": traffic(between, after)}}

    def row_ls(self, system) -> dict:
        floor = self.trivial_floor()
        self.server.restart()
        out = self.work / f"ls-{system.name}.txt"
        with system.fresh(MANY_ZIP) as m:
            self.cold()
            rss = RssSampler(m.pid)
            before = self.server.metrics()
            assert self.server.process is not None
            cpu = cpu_seconds(m.pid), cpu_seconds(self.server.process.pid)
            with out.open("w") as listing:
                ls_s = _run_timed(["ls", "-lR", str(m.archive_dir)], self.timeout, listing)
            cpu = cpu_seconds(m.pid) - cpu[0], cpu_seconds(self.server.process.pid) - cpu[1]
            moved = traffic(before, self.server.metrics())
            memory = rss.stop()
            mount_s = m.ready - m.started
            # The same listing again on this mount: the kernel's and the daemon's caches.
            again_s = _run_timed(["ls", "-lR", str(m.archive_dir)], self.timeout)
        # A second fresh mount against the now warm server: the mount's own share.
        with system.fresh(MANY_ZIP) as m:
            self.cold()
            warm_server_s = _run_timed(["ls", "-lR", str(m.archive_dir)], self.timeout)
        if self.args.profile:  # apart from the timed runs: the profiler slows the daemon down
            self.profile_ls(system)
        files = sum(1 for line in out.open(errors="replace") if line.startswith("-"))
        # storagefs lists an archive when it is first used; ratarmount indexes it before it
        # mounts, so its time to mount is part of its cold listing.
        seconds = ls_s if system.name == "storagefs" else mount_s + ls_s
        return {"seconds": seconds, "ls_seconds": ls_s, "mount_seconds": mount_s,
                "daemon_cpu_s": cpu[0], "server_cpu_s": cpu[1], "files_listed": files,
                "expected_files": self.facts[MANY_ZIP]["members"], "memory": memory,
                "traffic": moved, "again_same_mount_s": again_s,
                "fresh_mount_warm_server_s": warm_server_s, "trivial": floor,
                "over_trivial": seconds / floor["cold_s"]}

    def profile_ls(self, system) -> None:
        """py-spy on the daemon during ``ls -lR`` on a fresh mount (server warm)."""
        with system.fresh(MANY_ZIP) as m:
            self.cold()
            self.profile(m, ["ls", "-lR", str(m.archive_dir)], f"ls-{system.name}")

    def profile(self, m: Mounted, command: list[str], label: str) -> None:
        """Run ``command`` with py-spy recording the daemon's thread that holds the GIL
        (``--gil``: the Python side; the stages' CPU in the results shows the native side),
        raw stacks and the top functions (own time, time within, by thread) in
        ``--profile`` DIR. Apart from the timed runs: the profiler slows the daemon down."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not os.path.exists(spy):
            print("  --profile: py-spy is not installed (pip install -e '.[bench]')",
                  file=sys.stderr)
            return
        self.args.profile.mkdir(parents=True, exist_ok=True)
        raw = self.args.profile / f"{label}.txt"
        recorder = subprocess.Popen([spy, "record", "-p", str(m.pid), "-o", str(raw),
                                     "--format", "raw", "--threads", "--gil", "-r", "250"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        cpu = cpu_seconds(m.pid)
        seconds = _run_timed(command, self.timeout)
        cpu = cpu_seconds(m.pid) - cpu
        recorder.send_signal(signal.SIGINT)
        recorder.wait(120)
        top = profile_summary(raw, f"{' '.join(command[:1])}: {seconds:.2f} s under the "
                                   f"profiler, daemon CPU {cpu:.2f} s")
        (self.args.profile / f"{label}-top.txt").write_text(top)
        print(f"  profile: {self.args.profile / f'{label}-top.txt'}")

    def row_task(self, system) -> dict:
        """``cat`` of the CSV member of each task-runner archive, cold on a fresh mount, then
        again on the same mount, beside its floors (``unzip -p``, in-process inflate)."""
        result: dict = {}
        for name, archive in (("7zip", TASK_7ZIP), ("stream", TASK_STREAM)):
            floors = self.floors(archive, TASK_MEMBER)
            with system.fresh(archive) as m:
                self.cold()
                path = str(m.archive_dir / TASK_MEMBER)
                rss = RssSampler(m.pid)
                before = self.server.metrics()
                assert self.server.process is not None
                threads, server_cpu = thread_cpu(m.pid), tree_cpu(self.server.process.pid)
                cpu = cpu_seconds(m.pid)
                first, cat_cpu = _run_timed_cpu(["cat", path], self.timeout)
                cpu = cpu_seconds(m.pid) - cpu
                threads = thread_stages(m.pid, threads)
                server_cpu = tree_cpu(self.server.process.pid) - server_cpu
                moved = traffic(before, self.server.metrics())
                second = _run_timed(["cat", path], self.timeout)
                memory = rss.stop()
            if name == "7zip" and self.args.profile and system.name == "storagefs":
                with system.fresh(archive) as again:
                    self.cold()
                    self.profile(again, ["cat", str(again.archive_dir / TASK_MEMBER)],
                                 f"cat-task-{system.name}")
            size = floors["size"]
            inflate = floors["inflate"].get("zlib-ng") or floors["inflate"]["zlib"]
            result[name] = {"seconds": first, "mb_s": size / first / 1e6,
                            "over_unzip": floors["unzip_cold_s"] / first,
                            "over_inflate": inflate["seconds"] / first,
                            "again_s": second, "again_ratio": second / first,
                            "daemon_cpu_s": cpu, "daemon_threads_cpu_s": threads,
                            "server_cpu_s": server_cpu, "cat_cpu_s": cat_cpu,
                            "traffic": moved, "memory": memory,
                            "floors": floors}
        return result

    def row_parallel(self, system) -> dict:
        members = [f"members/m{i}.log" for i in range(8)]
        size = self.facts[PARALLEL_ZIP]["sizes"][members[0]]
        with system.fresh(PARALLEL_ZIP) as m:
            self.cold()
            rss1 = RssSampler(m.pid)
            one_s = _run_timed(["cat", str(m.archive_dir / members[0])], self.timeout)
            mem1 = rss1.stop()
        with system.fresh(PARALLEL_ZIP) as m:
            self.cold()
            rss = RssSampler(m.pid)
            started = time.perf_counter()
            procs = [subprocess.Popen(["cat", str(m.archive_dir / name)],
                                      stdout=subprocess.DEVNULL) for name in members]
            codes = [p.wait(self.timeout) for p in procs]
            all_s = time.perf_counter() - started
            memory = rss.stop()
        if any(codes):
            raise RuntimeError(f"parallel cat failed: {codes}")
        one, together = size / one_s / 1e6, 8 * size / all_s / 1e6
        return {"one_mb_s": one, "eight_mb_s": together, "ratio": together / one,
                "memory": memory, "memory_one": mem1}

    def row_sqlite(self, system) -> dict:
        with system.fresh(DB_ZIP) as m:
            self.cold()
            before = self.server.metrics()
            mounted = query(m.archive_dir / DB_MEMBER)
            moved = traffic(before, self.server.metrics())
        self.cold()
        local = query(self.corpus / "local" / "sim.db")
        if mounted["rows"] != local["rows"]:
            raise RuntimeError("the query answered differently through the mount")
        return {"mount_s": mounted["seconds"], "local_s": local["seconds"],
                "ratio": mounted["seconds"] / max(local["seconds"], 1e-6), "traffic": moved,
                "db_bytes": self.facts[DB_ZIP]["sizes"][DB_MEMBER]}

    # -- repeated reads: what the kernel's page cache serves (sub-rows of rows 1 and 7) --------

    def row_cat_again(self, system) -> dict:
        """``cat`` of the large member twice on one mount: the second is served by the kernel
        when the file is opened with ``keep_cache``."""
        with system.fresh(BIG_ZIP) as m:
            self.cold()
            path = str(m.archive_dir / BIG_MEMBER)
            first = _run_timed(["cat", path], self.timeout)
            before = self.server.metrics()
            second = _run_timed(["cat", path], self.timeout)
            moved = traffic(before, self.server.metrics())
        return {"first_s": first, "second_s": second, "ratio": second / first,
                "second_object_bytes": moved["object_bytes"]}

    def row_sqlite_again(self, system) -> dict:
        """200 point queries on a first connection, the same again on a second, new ones on a
        third: each a new process that opens the file, through the mount and locally."""
        rng = random.Random(SEED)
        probes, steps = 100, max(1, self.sizes.db_rows // 100)

        def keys() -> list[list[int]]:
            return [[rng.randrange(probes), rng.randrange(steps)] for _ in range(200)]

        asked, new = keys(), keys()
        with system.fresh(DB_ZIP) as m:
            self.cold()
            mounted = [points(m.archive_dir / DB_MEMBER, k) for k in (asked, asked, new)]
        self.cold()
        local = [points(self.corpus / "local" / "sim.db", k) for k in (asked, asked, new)]
        if [r["rows"] for r in mounted] != [r["rows"] for r in local]:
            raise RuntimeError("the point queries answered differently through the mount")
        names = ("first", "again", "new")
        return {name: {"mount_s": mnt["seconds"], "local_s": loc["seconds"],
                       "ratio": mnt["seconds"] / max(loc["seconds"], 1e-6)}
                for name, mnt, loc in zip(names, mounted, local)}


# -- the table -------------------------------------------------------------------------------


# -- row 8: the server alone under many clients ------------------------------------------------

AB_REQUESTS = 3000
AB_REPEATS = 3
SERVER_FILE = "data.bin"
SERVER_RANGE = (1 << 20, (1 << 20) + 4095)  # 4 KiB, inside the file


def ensure_load_tools(allow_install: bool) -> tuple[str | None, str | None, list[str]]:
    """Paths of ``ab`` and ``nginx`` (installed once if missing and allowed), and notes."""
    def find() -> tuple[str | None, str | None]:
        nginx = shutil.which("nginx") or next(
            (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(p, os.X_OK)), None)
        return shutil.which("ab"), nginx

    ab, nginx = find()
    notes = []
    if (ab is None or nginx is None) and allow_install:
        installed = subprocess.run([str(REPO / "scripts" / "install-system-deps.sh"), "--bench"],
                                   capture_output=True, text=True)
        if installed.returncode != 0:
            notes.append("installing apache2-utils/nginx failed: "
                         + (installed.stderr.strip().splitlines() or ["?"])[-1])
        ab, nginx = find()
    if ab is None:
        notes.append("ab not found: apt-get install apache2-utils (make bench installs it)")
    if nginx is None:
        notes.append("nginx not found: apt-get install nginx-light (make bench installs it); "
                     "no reference figures")
    return ab, nginx, notes


def run_ab(ab: str, url: str, clients: int, headers: dict[str, str], requests_n: int) -> dict:
    """One ``ab -k`` run: requests/s, p99 and the failures it saw."""
    cmd = [ab, "-q", "-k", "-n", str(requests_n), "-c", str(clients)]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=600).stdout
    figures: dict = {"rps": None, "p99_ms": None, "failed": 0, "non_2xx": 0}
    for line in out.splitlines():
        words = line.split()
        if line.startswith("Requests per second:"):
            figures["rps"] = float(words[3])
        elif line.strip().startswith("99%"):
            figures["p99_ms"] = float(words[1])
        elif line.startswith("Failed requests:"):
            figures["failed"] = int(words[2])
        elif line.startswith("Non-2xx responses:"):
            figures["non_2xx"] = int(words[2])
    if figures["rps"] is None:
        raise RuntimeError(f"ab printed no figures for {url}: {out[-300:]}")
    return figures


def _nginx_config(folder: Path, root: Path, port: int) -> Path:
    config = folder / "nginx.conf"
    temp = "\n".join(f"    {kind}_temp_path {folder / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers read the bench's own folder
    config.write_text(f"""{user}worker_processes auto;
daemon off;
pid {folder / 'nginx.pid'};
error_log {folder / 'error.log'} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
{temp}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
""")
    return config


@contextlib.contextmanager
def nginx_serving(nginx: str, root: Path, work: Path) -> Iterator[str]:
    """nginx on a free 127.0.0.1 port serving ``root`` from a generated config, stopped after."""
    folder = work / "nginx"
    folder.mkdir(exist_ok=True)
    port = free_port()
    config = _nginx_config(folder, root, port)
    log = (folder / "stderr.log").open("wb")
    process = subprocess.Popen([nginx, "-c", str(config), "-p", str(folder), "-e",
                                str(folder / "error.log")], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                raise RuntimeError("nginx exited: "
                                   + (folder / "stderr.log").read_text()[-300:].strip())
            try:
                if requests.get(f"{url}/{SERVER_FILE}", timeout=1,
                                headers={"Range": "bytes=0-0"}).status_code == 206:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("nginx did not answer within 15 s")
            time.sleep(0.05)
        yield url
    finally:
        stop_process(process)  # SIGTERM: nginx's fast shutdown
        log.close()


def _server_corpus(root: Path, file_size: int) -> None:
    """A file for the ranges, a 10-member archive and a 10-file folder for the listings."""
    (root / "listing").mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    with open(root / SERVER_FILE, "wb") as f:
        for _ in range(file_size // MiB):
            f.write(rng.randbytes(MiB))
    with zipfile.ZipFile(root / "small.zip", "w") as zf:
        for i in range(10):
            zf.writestr(f"run/out{i}.txt", f"line {i}\n" * 50)
    for i in range(10):
        (root / "listing" / f"f{i}.txt").write_bytes(b"x" * (i + 1) * 100)


def _workers(pid: int) -> int:
    """How many processes a ``storagefs serve`` answers with (its children, or itself)."""
    try:
        return len(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()) or 1
    except OSError:
        return 1


def measure_server(work: Path, quick: bool, allow_install: bool = True) -> dict:
    """Row 8: our server and nginx under ``ab``, in turns, each configuration three times."""
    ab, nginx, notes = ensure_load_tools(allow_install)
    if ab is None:
        raise RuntimeError(notes[-1] if nginx is None and len(notes) > 1 else notes[0])
    root = work / "server-root"
    _server_corpus(root, (8 if quick else 64) * MiB)
    requests_n = AB_REQUESTS // 3 if quick else AB_REQUESTS
    server = Server(root, work)
    first, last = SERVER_RANGE
    ranged = {"Range": f"bytes={first}-{last}"}
    keyed = {"X-API-Key": API_KEY}
    runs: dict[str, list[dict]] = {}
    with contextlib.ExitStack() as stack:
        server.start()
        stack.callback(server.stop)
        assert server.process is not None
        workers = _workers(server.process.pid)
        targets = {"ranges": (server.signed_url(SERVER_FILE), ranged),
                   "zip_contents": (f"{server.url}/storage/zip-contents?path=small.zip", keyed),
                   "contents": (f"{server.url}/storage/contents?path=listing", keyed)}
        if nginx is not None:
            try:
                base = stack.enter_context(nginx_serving(nginx, root, work))
                targets["nginx_ranges"] = (f"{base}/{SERVER_FILE}", ranged)
            except RuntimeError as exc:
                notes.append(f"nginx could not start: {exc}")
        for url, headers in targets.values():  # a warm-up each: caches, connections
            run_ab(ab, url, 4, headers, 200)
        for _ in range(AB_REPEATS):  # in turns, so a busy moment of the machine hits all
            for name, (url, headers) in targets.items():
                for clients in (1, 32):
                    runs.setdefault(f"{name}_{clients}", []).append(
                        run_ab(ab, url, clients, headers, requests_n))
    result: dict = {"workers": workers, "requests_per_run": requests_n, "notes": notes,
                    "runs": runs, "cpus": os.cpu_count(), "load": os.getloadavg()}
    for key, values in runs.items():
        latencies = [v["p99_ms"] for v in values if v["p99_ms"] is not None]
        result[key] = {
            "rps": statistics.median(v["rps"] for v in values),
            "p99_ms": statistics.median(latencies) if latencies else None,
            "rps_spread": [min(v["rps"] for v in values), max(v["rps"] for v in values)],
            "errors": sum(v["failed"] + v["non_2xx"] for v in values)}
    return result


@dataclass
class Line:
    row: str
    what: str
    target: str
    check: Callable[[float], bool] | None
    pick: Callable[[dict], float | None]
    unit: str = ""
    digits: int = 2
    floor: bool = False  # measured once for the run (shown in the storagefs column only)


def _inflate(floors: dict) -> dict:
    return floors["inflate"].get("zlib-ng") or floors["inflate"]["zlib"]


def _inflate_mb_s(floors: dict) -> float:
    return _inflate(floors)["mb_s"]


def _task_lines(sizes: Sizes, key: str, label: str) -> list[Line]:
    """Row 9, one archive: the mount beside its floors."""
    return [
        Line("9", f"cat {sizes.task_csv / MiB:g} MiB CSV ({label}), cold: speed / unzip -p",
             ">= 2.0", lambda v: v >= 2.0, lambda r: r["task"][key]["over_unzip"], "x"),
        Line("9", "  throughput through the mount", "", None,
             lambda r: r["task"][key]["mb_s"], "MB/s", 0),
        Line("9", "  floor: unzip -p, local archive, cold", "", None,
             lambda r: r["task"][key]["floors"]["unzip_mb_s"], "MB/s", 0, floor=True),
        Line("9", "  floor: in-process inflate (zlib-ng)", "", None,
             lambda r: _inflate_mb_s(r["task"][key]["floors"]), "MB/s", 0, floor=True),
        Line("9", "  mount speed / in-process inflate", "", None,
             lambda r: r["task"][key]["over_inflate"], "x"),
        Line("9", "  CPU: daemon / in-process inflate (zlib-ng)", "", None,
             lambda r: r["task"][key]["daemon_cpu_s"] / _inflate(r["task"][key]["floors"])[
                 "cpu_s"], "x"),
        Line("9", "  CPU: decode stage / in-process inflate + CRC", "", None,
             lambda r: r["task"][key]["daemon_threads_cpu_s"]["storagefs-decode"] / _inflate(
                 r["task"][key]["floors"])["with_crc_cpu_s"], "x"),
        Line("9", "  CPU: unzip -p / daemon", "", None,
             lambda r: r["task"][key]["floors"]["unzip_cpu_s"] / r["task"][key]["daemon_cpu_s"],
             "x"),
        Line("9", "  compressed / size", "", None,
             lambda r: r["task"][key]["floors"]["ratio"], "x", 3, floor=True),
        Line("9", "  cat again, same mount: time / first", "<= 0.5", lambda v: v <= 0.5,
             lambda r: r["task"][key]["again_ratio"], "x", 3)]


def lines(sizes: Sizes) -> dict[str, list[Line]]:
    cache_mb = sizes.cache / 1e6
    big = f"{sizes.big / MiB:g} MiB"
    return {
        "1": [Line("1", f"cat {big} deflated: speed / unzip -p", ">= 2.0", lambda v: v >= 2.0,
                   lambda r: r["cat"]["mb_s"] / r["cat"]["floors"]["unzip_mb_s"], "x"),
              Line("1", "  bytes fetched / compressed", "<= 1.05", lambda v: v <= 1.05,
                   lambda r: r["cat"]["fetched_over_compressed"], "x", 3),
              Line("1", "  throughput through the mount", "", None,
                   lambda r: r["cat"]["mb_s"], "MB/s", 0),
              Line("1", "  floor: unzip -p, local archive, cold", "", None,
                   lambda r: r["cat"]["floors"]["unzip_mb_s"], "MB/s", 0, floor=True),
              Line("1", "  floor: in-process inflate (zlib-ng)", "", None,
                   lambda r: _inflate_mb_s(r["cat"]["floors"]), "MB/s", 0, floor=True),
              Line("1", "  cat again, same mount: time / first", "<= 0.5", lambda v: v <= 0.5,
                   lambda r: r["cat_again"]["ratio"], "x", 3)],
        "2": [Line("2", "small member after it, cold: requests", "<= 4", lambda v: v <= 4,
                   lambda r: r["small"]["requests"], "", 0),
              Line("2", "  of which folder listings on the way", "", None,
                   lambda r: r["small"]["traffic"]["by_endpoint"].get("/storage/contents", 0),
                   "", 0),
              Line("2", "  bytes fetched over compressed size", "<= 64 KiB",
                   lambda v: v <= 65536, lambda r: r["small"]["bytes_over_compressed"] / 1024,
                   "KiB", 1)],
        "3": [Line("3", f"{sizes.reads} random 4 KiB preads, cold: median", "", None,
                   lambda r: r["preads"]["cold"].get("median_ms"), "ms", 1),
              Line("3", "  cold: p95", "", None,
                   lambda r: r["preads"]["cold"].get("p95_ms"), "ms", 1),
              Line("3", "  cold: reads done in the budget", "", None,
                   lambda r: r["preads"]["cold"]["done"], "", 0),
              Line("3", "  warm: median", "<= 15 ms", lambda v: v <= 15,
                   lambda r: r["preads"]["warm"].get("median_ms"), "ms", 1),
              Line("3", "  warm: p95", "<= 40 ms", lambda v: v <= 40,
                   lambda r: r["preads"]["warm"].get("p95_ms"), "ms", 1)],
        "4": [Line("4", f"ls -lR of {sizes.many:,} members, cold", "<= 5 s", lambda v: v <= 5,
                   lambda r: r["ls"]["seconds"], "s", 2),
              Line("4", "  floor: trivial in-memory fusepy fs, cold", "", None,
                   lambda r: r["ls"]["trivial"]["cold_s"], "s", 2, floor=True),
              Line("4", "  cold / trivial fusepy fs", "<= 1.3", lambda v: v <= 1.3,
                   lambda r: r["ls"]["over_trivial"], "x"),
              Line("4", "  daemon peak RSS", "<= 200 MB", lambda v: v <= 200,
                   lambda r: r["ls"]["memory"]["hwm"] / 1e6, "MB", 0),
              Line("4", "  fresh mount, server already warm", "", None,
                   lambda r: r["ls"]["fresh_mount_warm_server_s"], "s", 2),
              Line("4", "  warm: again on the same mount", "<= 1.5 s", lambda v: v <= 1.5,
                   lambda r: r["ls"]["again_same_mount_s"], "s", 2),
              Line("4", "  floor: trivial fusepy fs, warm", "", None,
                   lambda r: r["ls"]["trivial"]["warm_s"], "s", 2, floor=True)],
        "5": [Line("5", "8 readers at once / 1 reader", ">= 1.5", lambda v: v >= 1.5,
                   lambda r: r["parallel"]["ratio"], "x")],
        "6": [Line("6", "daemon peak RSS in rows 1 and 5", f"<= {cache_mb + 100:.0f} MB",
                   lambda v: v <= cache_mb + 100,
                   lambda r: max(r["cat"]["memory"]["hwm"],
                                 r["parallel"]["memory"]["hwm"]) / 1e6, "MB", 0)],
        "7": [Line("7", "SQLite query: mount / local copy", "", None,
                   lambda r: r["sqlite"]["ratio"], "x", 1),
              Line("7", "  200 point queries, 1st connection / local", "", None,
                   lambda r: r["sqlite_again"]["first"]["ratio"], "x", 1),
              Line("7", "  asked again, 2nd connection / local", "<= 2x", lambda v: v <= 2,
                   lambda r: r["sqlite_again"]["again"]["ratio"], "x", 1),
              Line("7", "  new queries, 3rd connection / local", "", None,
                   lambda r: r["sqlite_again"]["new"]["ratio"], "x", 1),
              Line("7", "  local: 200 point queries, 1st connection", "", None,
                   lambda r: r["sqlite_again"]["first"]["local_s"] * 1e3, "ms", 1, floor=True),
              Line("7", "  local: asked again, 2nd connection", "", None,
                   lambda r: r["sqlite_again"]["again"]["local_s"] * 1e3, "ms", 1, floor=True)],
        "9": _task_lines(sizes, "7zip", "7zz -mx=1") + _task_lines(sizes, "stream",
                                                                   "stream-zip"),
        "8": [Line("8", "server: 4 KiB ranged GET, 1 client", ">= 1,000/s",
                   lambda v: v >= 1000, lambda r: r["server"]["ranges_1"]["rps"], "/s", 0),
              Line("8", "  nginx, same file and range", "", None,
                   lambda r: r["server"]["nginx_ranges_1"]["rps"], "/s", 0),
              Line("8", "  32 clients", ">= 2,000/s", lambda v: v >= 2000,
                   lambda r: r["server"]["ranges_32"]["rps"], "/s", 0),
              Line("8", "  nginx, 32 clients", "", None,
                   lambda r: r["server"]["nginx_ranges_32"]["rps"], "/s", 0),
              Line("8", "  32 clients: p99", "<= 50 ms", lambda v: v <= 50,
                   lambda r: r["server"]["ranges_32"]["p99_ms"], "ms", 0),
              Line("8", "  nginx, 32 clients: p99", "", None,
                   lambda r: r["server"]["nginx_ranges_32"]["p99_ms"], "ms", 0),
              Line("8", "  1 client: p99", "", None,
                   lambda r: r["server"]["ranges_1"]["p99_ms"], "ms", 0),
              Line("8", "server: zip-contents (10), 32 clients", ">= 1,000/s",
                   lambda v: v >= 1000, lambda r: r["server"]["zip_contents_32"]["rps"], "/s", 0),
              Line("8", "  1 client", "", None,
                   lambda r: r["server"]["zip_contents_1"]["rps"], "/s", 0),
              Line("8", "  32 clients: p99", "", None,
                   lambda r: r["server"]["zip_contents_32"]["p99_ms"], "ms", 0),
              Line("8", "server: contents (10 files), 32 clients", ">= 1,000/s",
                   lambda v: v >= 1000, lambda r: r["server"]["contents_32"]["rps"], "/s", 0),
              Line("8", "  1 client", "", None,
                   lambda r: r["server"]["contents_1"]["rps"], "/s", 0)],
    }


def _format(value: float | None, line: Line) -> str:
    if value is None:
        return "-"
    text = f"{value:,.{line.digits}f}"
    return f"{text} {line.unit}".strip()


def module_lines(row: str, found: list[benchrows.RowLine]) -> list[Line]:
    """A module row's lines as the table's own (its figures, targets and verdicts)."""

    def verdict(passed: bool | None) -> Callable[[float], bool] | None:
        return None if passed is None else (lambda value: passed)

    def figure(index: int) -> Callable[[dict], float | None]:
        return lambda result: result["modules"][row][index].value

    return [Line(row, ("  " if i else "") + line.what, line.target, verdict(line.passed),
                 figure(i), line.unit, line.digits) for i, line in enumerate(found)]


def render(results: dict[str, dict], sizes: Sizes, rows: list[str]) -> tuple[str, list[dict]]:
    systems = list(results)
    table: list[dict] = []
    shown: list[Line] = []
    modules = results["storagefs"].get("modules", {})
    for row in rows:
        found = modules.get(row) if row in benchrows.REGISTRY else None
        row_lines = lines(sizes)[row] if found is None else module_lines(row, found)
        for index, line in enumerate(row_lines):
            shown.append(line)
            entry: dict[str, Any] = {"row": line.row, "what": line.what.strip(),
                                     "target": line.target, "unit": line.unit}
            for name in systems:
                result = results[name]
                if found is not None:
                    module_line = found[index]
                    entry[name] = module_line.value if name == "storagefs" else module_line.peer
                    if module_line.note and name == "storagefs":
                        entry[name + "_error"] = module_line.note
                    continue
                if (row in _SERVER_ROWS or line.floor) and name != "storagefs":
                    entry[name] = None  # floors and the server row are measured once
                    continue
                missing = [k for k in _NEEDS[row] if k not in result]
                if missing:
                    entry[name] = None
                    errors = result.get("errors", {})
                    entry[name + "_error"] = next(
                        (errors[k] for k in missing if k in errors), result.get("error", "not run"))
                    continue
                try:
                    value = line.pick(result)
                except (KeyError, TypeError, ZeroDivisionError):
                    value = None
                entry[name] = value
            value = entry.get("storagefs")
            entry["pass"] = None if line.check is None or value is None else bool(
                line.check(value))
            if line.check is not None and value is None:
                entry["pass"] = False
            table.append(entry)
    widths = [11, max((len(line.what) for line in shown), default=8) + 2, 18, 18, 12, 6]
    head = ["row", "what", "storagefs", systems[1] if len(systems) > 1 else "", "target", "pass"]
    out = ["".join(h.ljust(w) for h, w in zip(head, widths)).rstrip(),
           "-" * (sum(widths) - 2)]
    current = ""
    for entry, line in zip(table, shown):
        cells = [entry["row"] if entry["row"] != current else "", line.what]
        current = entry["row"]
        for name in systems[:2]:
            error = entry.get(name + "_error")
            if error:
                cells.append("n/a" if error.startswith("not available") else "error")
            elif line.floor and name != "storagefs":
                cells.append("")
            else:
                cells.append(_format(entry.get(name), line))
        if len(systems) < 2:
            cells.append("")
        cells.append(line.target or "-")
        cells.append({True: "PASS", False: "FAIL", None: ""}[entry["pass"]])
        out.append("".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
    return "\n".join(out), table


# Which result keys each row needs.
_NEEDS = {"1": ("cat",), "2": ("small",), "3": ("preads",), "4": ("ls",),
          "5": ("parallel",), "6": ("cat", "parallel"), "7": ("sqlite",), "8": ("server",),
          "9": ("task",)}
_SERVER_ROWS = {"8"}  # measured on the server alone, not through a mount
_ROW_NAMES = {"server": "8", "task": "9"}
_RUNS = {"1": ("cat",), "2": ("small",), "3": ("preads",), "4": ("ls",), "5": ("parallel",),
         "6": ("cat", "parallel"), "7": ("sqlite",), "9": ("task",)}
# Repeated reads, served by the kernel's page cache: sub-rows of rows 1 and 7.
_RUNS["1"] += ("cat_again",)
_RUNS["7"] += ("sqlite_again",)
# Every row, in the order ``make bench`` runs them: the mount's, the server's, the modules'.
ALL_ROWS = ["1", "2", "3", "4", "5", "6", "7", "9", "8", *benchrows.REGISTRY]


def run_system(bench: Bench, system, rows: list[str]) -> dict:
    methods = {"cat": bench.row_cat, "small": bench.row_small, "preads": bench.row_preads,
               "ls": bench.row_ls, "parallel": bench.row_parallel, "sqlite": bench.row_sqlite,
               "cat_again": bench.row_cat_again, "sqlite_again": bench.row_sqlite_again,
               "task": bench.row_task}
    wanted: list[str] = []
    for row in rows:
        for key in _RUNS[row]:
            if key not in wanted:
                wanted.append(key)
    result: dict = {}
    for key in wanted:
        print(f"  {system.name}: {key} ...", flush=True)
        started = time.monotonic()
        try:
            result[key] = methods[key](system)
        except Exception as exc:  # noqa: BLE001 - a failed row is reported, the rest still run
            message = f"{type(exc).__name__}: {exc}"[:300]
            print(f"  {system.name}: {key} failed: {message}", file=sys.stderr, flush=True)
            result.setdefault("errors", {})[key] = message
            result["error"] = message
        else:
            print(f"  {system.name}: {key} done in {time.monotonic() - started:.1f} s", flush=True)
    return result


def run_module_rows(args: argparse.Namespace, sizes: Sizes, work: Path, rows: list[str],
                    results: dict[str, dict]) -> None:
    """Rows of their own modules (``benchrows``), each reported even when it cannot run."""
    options = {"quick": args.quick, "work": work, "cache": BENCH, "cache_size": sizes.cache,
               "timeout": 3600.0, "drop_caches": drop_caches, "peer": args.peer}
    found = results["storagefs"].setdefault("modules", {})
    for row in rows:
        print(f"{row} (scripts/{benchrows.REGISTRY[row][0]}.py) ...", flush=True)
        started = time.monotonic()
        found[row] = benchrows.run_row(row, options)
        notes = [line.note for line in found[row] if line.note]
        print(f"  {row}: {notes[0] if notes else 'done'} in "
              f"{time.monotonic() - started:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small corpus: a smoke run")
    parser.add_argument("--json", type=Path, default=REPO / "bench-results.json",
                        help="where to save the results (default: %(default)s)")
    parser.add_argument("--rows", default="all",
                        help="rows to run, comma-separated: 1-9 (8 or 'server': the server "
                             "alone; 9 or 'task': task-runner archives), "
                             f"{', '.join(benchrows.REGISTRY)} (rows of their own modules); "
                             "default: all")
    parser.add_argument("--peer", choices=("ratarmount", "none"), default="ratarmount",
                        help="the second column (default: ratarmount, installed on first use)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="also record the daemon with py-spy during an extra ls -lR "
                             "(row 4) and cat of the 7-Zip task member (row 9), and write "
                             "the top functions to DIR")
    args = parser.parse_args(argv)
    rows = ALL_ROWS if args.rows == "all" else [
        _ROW_NAMES.get(r.strip(), r.strip()) for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in _NEEDS and r not in benchrows.REGISTRY]
    if unknown:
        parser.error(f"--rows: no row {', '.join(unknown)}; choose from 1-9, server, task, "
                     f"{', '.join(benchrows.REGISTRY)} or all")
    sizes = QUICK if args.quick else FULL
    BENCH.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=BENCH))
    peer_note = "not run (--peer none)"
    started = time.monotonic()
    results: dict[str, dict] = {"storagefs": {}}
    mount_rows = [r for r in rows if r not in _SERVER_ROWS and r not in benchrows.REGISTRY]
    module_rows = [r for r in rows if r in benchrows.REGISTRY]
    bench = None
    try:
        if "8" in rows:
            print("storagefs: server under ab ...", flush=True)
            try:
                results["storagefs"]["server"] = measure_server(work, args.quick)
            except Exception as exc:  # noqa: BLE001 - reported in the table, the rest still run
                message = f"{type(exc).__name__}: {exc}"[:300]
                print(f"  storagefs: server failed: {message}", file=sys.stderr, flush=True)
                results["storagefs"].setdefault("errors", {})["server"] = message
                results["storagefs"]["error"] = message
        if mount_rows:
            bench = run_mount_rows(args, sizes, work, mount_rows, results)
            peer_note = bench.peer_note
        else:
            peer_note = "not run (no mount rows)"
        if module_rows:
            run_module_rows(args, sizes, work, module_rows, results)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text, table = render(results, sizes, rows)
    notes = [f"corpus: {'quick' if args.quick else 'full'}; mount --cache-size "
             f"{sizes.cache // MiB} MiB; {os.cpu_count()} cores; run took "
             f"{time.monotonic() - started:.0f} s",
             f"peer: {peer_note}"]
    server_row = results["storagefs"].get("server")
    if server_row is not None:
        notes.append(f"server row: {server_row['workers']} worker processes, ab -k, "
                     f"{server_row['requests_per_run']} requests a run, median of "
                     f"{AB_REPEATS} runs in turns; load average before "
                     f"{server_row['load'][0]:.2f}")
        notes += [f"server row: {note}" for note in server_row["notes"]]
    if bench is not None and not bench.dropped:
        notes.append("page cache NOT dropped between cold runs (needs root)")
    for name, result in results.items():
        for key, message in result.get("errors", {}).items():
            notes.append(f"{name}: {key} failed: {message}")
    print()
    print(text)
    for note in notes:
        print(note)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "commit": commit, "quick": args.quick, "sizes": asdict(sizes),
              "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                          "python": platform.python_version()},
              "page_cache_dropped": bench.dropped if bench is not None else None,
              "peer": peer_note, "notes": notes, "table": table, "results": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=str))
    print(f"saved {args.json}")
    return 0


def run_mount_rows(args: argparse.Namespace, sizes: Sizes, work: Path, rows: list[str],
                   results: dict[str, dict]) -> Bench:
    """Rows 1-7: the corpus, the server on it, storagefs's mount and then the peer's."""
    corpus = build_corpus(sizes, args.quick)
    bench = Bench(args, sizes, corpus, work)
    bench.peer_note = "not run (--peer none)"
    try:
        bench.server.start()
        print("storagefs:", flush=True)
        results["storagefs"].update(run_system(
            bench, StoragefsMount(bench.server, work, sizes.cache), rows))
        if args.peer == "ratarmount":
            executable, bench.peer_note = ensure_ratarmount(allow_install=True)
            if executable is not None:
                print(f"{bench.peer_note}:", flush=True)
                results["ratarmount"] = run_system(
                    bench, RatarmountMount(bench.server, work, executable), rows)
            else:
                results["ratarmount"] = {"error": bench.peer_note}
    finally:
        bench.server.stop()
    return bench


if __name__ == "__main__":
    sys.exit(main())
