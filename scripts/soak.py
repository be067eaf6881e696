"""``make soak``: many concurrent readers and writers on a real mount; every byte checked.

Starts ``storagefs serve`` on a temporary folder (plain files and ZIP archives with stored,
deflate and bzip2 members, small and larger than a decode window), mounts it with
``storagefs mount --foreground`` and runs ``--readers`` threads for ``--duration`` seconds.
Each reader picks a file at random and either reads it whole (compared by SHA-256) or reads
random ranges of it (compared with the original bytes). Beside them, ``--writers`` threads
write through the same mount (``--read-write``): each writes files of random sizes in a folder
of its own, rewrites and removes some, and saves others as an editor does (a temporary file,
fsync, rename over); every file is read back through the mount after its close, and after the
unmount every file in storage is compared with the last content its writer closed (and the
removed ones must be gone). Meanwhile the mount's RSS, threads and open descriptors are
sampled from /proc.

Exit status 0 only if: no mismatch, no error, nothing left in the recovery folder, the
mount's peak RSS within ``--rss-budget``,
no more threads or descriptors after the second half of the run than after the first (pools
fill up once; what keeps growing leaks), and the mount process gone and the mount point clean
after unmounting. The figures are printed, and
written as JSON with ``--json FILE``.

    .venv/bin/python scripts/soak.py --duration 60 --readers 32 --writers 4
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

MiB = 1 << 20
API_KEY = "soak-key.1"
# Threads and descriptors the mount may hold once a load is over beyond what it held after an
# earlier load (threads: libfuse keeps up to 10 idle workers) or at rest (descriptors: the
# HTTP pool keeps connections open).
THREAD_SLACK = 10
FD_SLACK = 20
RSS_OVERHEAD_MIB = 320


def _size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = text[-1] if text and text[-1] in units else ""
    return int(float(text[:len(text) - len(unit)]) * units[unit])


# -- data -------------------------------------------------------------------------------------


def _text(rng: random.Random, size: int) -> bytes:
    words = [b"step", b"residual", b"converged", b"pressure", b"velocity", b"dt=", b"0.001"]
    out = bytearray()
    while len(out) < size:
        out += b"%07d " % rng.randrange(10**7) + b" ".join(rng.choices(words, k=8)) + b"\n"
    return bytes(out[:size])


def _mixed(rng: random.Random, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        run = rng.randrange(1024, 64 * 1024)
        out += rng.randbytes(run) if rng.random() < 0.4 else _text(rng, run)
    return bytes(out[:size])


def build_storage(root: Path, scale: float) -> dict[str, bytes]:
    """Files under ``root``; returns {path in the mount: bytes} for everything readable."""
    rng = random.Random(20250101)
    expected: dict[str, bytes] = {}
    plain = {"plain/empty": b"", "plain/tiny.txt": b"tiny\n",
             "plain/log.txt": _text(rng, 300_000),
             "plain/field.bin": _mixed(rng, int(3 * MiB * scale)),
             "plain/big.bin": _mixed(rng, int(12 * MiB * scale))}
    for name, data in plain.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        expected[name] = data
    members = {
        "artifacts/stdout.txt": _text(rng, 700_000),
        "artifacts/stderr.txt": b"",
        "artifacts/results/field.dat": _mixed(rng, int(6 * MiB * scale)),
        "artifacts/results/table.csv":
            b"".join(b"%d,%f\n" % (i, 1 / (i + 1)) for i in range(40_000)),
        "artifacts/logs/solver.log": _text(rng, 1_500_000),
        "artifacts/small/a.txt": b"a" * 10,
        "artifacts/small/b.bin": rng.randbytes(5000),
    }
    methods = {"deflate": zipfile.ZIP_DEFLATED, "store": zipfile.ZIP_STORED,
               "bzip2": zipfile.ZIP_BZIP2}
    for task, method in (("task-a", "deflate"), ("task-b", "store"), ("task-c", "bzip2"),
                         ("task-d", "deflate")):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", methods[method], compresslevel=1 if method == "deflate"
                             else None) as zf:
            for name, data in members.items():
                if method == "bzip2" and len(data) > 2 * MiB:
                    continue  # bzip2 in pure decode is slow; keep its share of CPU fair
                zf.writestr(name, data)
                expected[f"{task}/output.zip/{name}"] = data
        (root / task).mkdir(parents=True, exist_ok=True)
        (root / task / "output.zip").write_bytes(buffer.getvalue())
    return expected


# -- processes ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(root: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-m", "storagefs", "serve", str(root),
                                "--port", str(port), "--api-key", API_KEY],
                               stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/version", timeout=1):
                return process, url
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"soak: the server did not start: {log.read_text()[-2000:]}")


def start_mount(url: str, mountpoint: Path, log: Path, cache_size: str,
                write_dir: Path | None = None) -> subprocess.Popen:
    mountpoint.mkdir(parents=True, exist_ok=True)
    writable = ["--read-write", "--write-dir", str(write_dir)] if write_dir else []
    process = subprocess.Popen([sys.executable, "-m", "storagefs", "mount", str(mountpoint),
                                "--foreground", "--api-url", url, "--api-key", API_KEY,
                                "--log-file", str(log), "--cache-size", cache_size,
                                *writable],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"soak: the mount failed: {process.stderr.read().decode()[-2000:]}")
        if os.path.ismount(mountpoint):
            return process
        time.sleep(0.05)
    process.kill()
    raise SystemExit("soak: the mount did not come up within 30 s")


def unmount(mountpoint: Path) -> None:
    tool = shutil.which("fusermount3") or shutil.which("fusermount") or "umount"
    for args in (["-u"], ["-uz"]):
        if not os.path.ismount(mountpoint):
            return
        subprocess.run([tool, *args, str(mountpoint)], capture_output=True, timeout=30)
        deadline = time.monotonic() + 10
        while os.path.ismount(mountpoint) and time.monotonic() < deadline:
            time.sleep(0.05)


def proc_figures(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss": int(fields["VmRSS"].split()[0]) * 1024, "threads": int(fields["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


# -- the load -----------------------------------------------------------------------------------


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.files = self.ranges = self.bytes = self.mismatches = self.errors = 0
        self.written = self.written_bytes = self.renamed = self.removed = 0
        self.messages: list[str] = []

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def fail(self, kind: str, message: str) -> None:
        with self.lock:
            setattr(self, kind, getattr(self, kind) + 1)
            if len(self.messages) < 20:
                self.messages.append(message)


def reader(seed: int, mountpoint: Path, expected: dict[str, bytes],
           digests: dict[str, bytes], stop: threading.Event, tally: Tally) -> None:
    rng = random.Random(seed)
    names = sorted(expected)
    while not stop.is_set():
        name = rng.choice(names)
        want = expected[name]
        path = mountpoint / name
        try:
            if rng.random() < 0.6 or len(want) < 64 * 1024:
                digest = hashlib.sha256()
                size = 0
                with open(path, "rb") as handle:
                    while chunk := handle.read(rng.choice((4096, 65536, 131072, 1 << 20))):
                        digest.update(chunk)
                        size += len(chunk)
                if digest.digest() != digests[name]:
                    tally.fail("mismatches", f"{name}: whole read differs ({size} bytes)")
                else:
                    tally.add(files=1, bytes=size)
            else:
                with open(path, "rb") as handle:
                    for _ in range(rng.randrange(1, 8)):
                        offset = rng.randrange(len(want))
                        length = rng.choice((1, 512, 4096, 100_000, 1 << 20))
                        got = os.pread(handle.fileno(), length, offset)
                        if got != want[offset:offset + length]:
                            tally.fail("mismatches", f"{name}: bytes {offset}+{length} differ")
                            break
                        tally.add(ranges=1, bytes=len(got))
        except OSError as exc:
            tally.fail("errors", f"{name}: {exc}")


def writer(seed: int, mountpoint: Path, stop: threading.Event, tally: Tally,
           final: dict[str, bytes | None]) -> None:
    """Writes, rewrites, saves by rename and removes files in ``written/w<seed>/``, reading
    each back after its close; ``final`` gets what storage must hold at the end (None: no
    file)."""
    rng = random.Random(seed)
    folder = f"written/w{seed}"
    os.makedirs(mountpoint / folder, exist_ok=True)
    while not stop.is_set():
        name = f"{folder}/f{rng.randrange(12)}.bin"
        path = mountpoint / name
        action = rng.random()
        try:
            if action < 0.1 and final.get(name) is not None:
                os.unlink(path)
                final[name] = None
                tally.add(removed=1)
                continue
            size = rng.choice((0, 1, 4096, 100_000, 1 << 20, 3 * MiB))
            data = rng.randbytes(size)
            if action < 0.3:  # an editor's save: a temporary file, fsync, rename over
                tmp = path.with_name(f".{path.name}.tmp")
                with open(tmp, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.rename(tmp, path)
                tally.add(renamed=1)
            else:
                with open(path, "wb") as handle:
                    for start in range(0, size, 128 * 1024):
                        handle.write(data[start:start + 128 * 1024])
            final[name] = data
            tally.add(written=1, written_bytes=size)
            with open(path, "rb") as handle:
                if handle.read() != data:
                    tally.fail("mismatches", f"{name}: read back differs after close")
                else:
                    tally.add(bytes=size)
        except OSError as exc:
            tally.fail("errors", f"{name}: {exc}")
            final.pop(name, None)  # unknown now: not compared


def check_written(root: Path, final: dict[str, bytes | None], tally: Tally) -> None:
    """After the unmount: storage holds exactly what each writer closed last."""
    for name, data in sorted(final.items()):
        stored = root / name
        if data is None:
            if stored.exists():
                tally.fail("mismatches", f"{name}: removed through the mount, still stored")
        elif not stored.is_file() or stored.read_bytes() != data:
            tally.fail("mismatches", f"{name}: stored content differs from the last close")
        else:
            tally.add(bytes=len(data))


def soak(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="storagefs-soak-"))
    root, mountpoint = work / "storage", work / "mnt"
    root.mkdir()
    expected = build_storage(root, args.scale)
    digests = {name: hashlib.sha256(data).digest() for name, data in expected.items()}
    server, url = start_server(root, work / "server.log")
    mount = None
    finals: list[dict[str, bytes | None]] = []
    write_dir = work / "write" if args.writers else None
    figures: dict = {"readers": args.readers, "writers": args.writers,
                     "duration_s": args.duration,
                     "files": len(expected), "data_bytes": sum(map(len, expected.values()))}
    problems: list[str] = []
    try:
        mount = start_mount(url, mountpoint, work / "mount.log", args.cache_size, write_dir)
        for name in expected:  # warm the metadata so the idle counts are comparable
            os.stat(mountpoint / name)
        idle = proc_figures(mount.pid)
        figures["idle_rss_bytes"], figures["idle_threads"], figures["idle_fds"] = \
            idle["rss"], idle["threads"], idle["fds"]
        tally = Tally()
        peak = dict(idle)
        started = time.monotonic()
        # Two halves with a pause between: thread pools fill up in the first, so threads or
        # descriptors that still grow in the second are leaks, not pools.
        rests = []
        for half in range(2):
            stop = threading.Event()
            threads = [threading.Thread(target=reader, args=(half * 1000 + i, mountpoint,
                                                             expected, digests, stop, tally),
                                        daemon=True) for i in range(args.readers)]
            for i in range(args.writers):
                finals.append({})
                threads.append(threading.Thread(target=writer, args=(
                    half * 1000 + i, mountpoint, stop, tally, finals[-1]), daemon=True))
            for thread in threads:
                thread.start()
            while time.monotonic() - started < args.duration * (half + 1) / 2:
                time.sleep(0.25)
                now = proc_figures(mount.pid)
                for key in peak:
                    peak[key] = max(peak[key], now[key])
            stop.set()
            for thread in threads:
                thread.join(120)
            if any(thread.is_alive() for thread in threads):
                problems.append("a reader did not finish within 120 s of the end")
            time.sleep(2)  # let libfuse retire its extra workers
            rests.append(proc_figures(mount.pid))
        elapsed = time.monotonic() - started - 4
        middle, after = rests
        figures.update({
            "elapsed_s": round(elapsed, 1), "whole_files_verified": tally.files,
            "ranges_verified": tally.ranges, "bytes_verified": tally.bytes,
            "throughput_mib_s": round(tally.bytes / MiB / elapsed, 1),
            "files_written": tally.written, "bytes_written": tally.written_bytes,
            "saved_by_rename": tally.renamed, "removed": tally.removed,
            "mismatches": tally.mismatches, "errors": tally.errors,
            "peak_rss_bytes": peak["rss"], "peak_threads": peak["threads"],
            "peak_fds": peak["fds"], "middle_threads": middle["threads"],
            "middle_fds": middle["fds"], "after_threads": after["threads"],
            "after_fds": after["fds"],
            "rss_budget_bytes": args.rss_budget * MiB,
        })
        if tally.files + tally.ranges == 0:
            problems.append("nothing was read")
        if args.writers and tally.written == 0:
            problems.append("nothing was written")
        if peak["rss"] > args.rss_budget * MiB:
            problems.append(f"peak RSS {peak['rss'] / MiB:.0f} MiB over the budget of "
                            f"{args.rss_budget} MiB")
        if after["threads"] > middle["threads"] + THREAD_SLACK:
            problems.append(f"threads: {middle['threads']} after the first half, "
                            f"{after['threads']} after the second")
        if after["fds"] > max(middle["fds"], idle["fds"] + FD_SLACK):
            problems.append(f"descriptors: {idle['fds']} idle, {middle['fds']} after the first "
                            f"half, {after['fds']} after the second")
        open_in_mount = _open_in(mountpoint)
        if open_in_mount:
            problems.append(f"files still open in the mount: {open_in_mount}")
    finally:
        unmount(mountpoint)
        if mount is not None:
            try:
                mount.wait(15)
            except subprocess.TimeoutExpired:
                problems.append("the mount process did not exit after unmounting")
                mount.kill()
                mount.wait(5)
            figures["mount_exit_status"] = mount.returncode
            if mount.returncode != 0:
                problems.append(f"the mount exited with {mount.returncode}")
        if args.writers and mount is not None:
            for final in finals:  # every byte written, compared in storage itself
                check_written(root, final, tally)
            figures["bytes_verified"] = tally.bytes
            kept = list((work / "write" / "recovery").glob("*.data"))
            if kept:
                problems.append(f"{len(kept)} file(s) left in the recovery folder")
        problems += tally.messages
        if tally.mismatches or tally.errors:
            problems.append(f"{tally.mismatches} mismatches and {tally.errors} errors")
        figures["mismatches"], figures["errors"] = tally.mismatches, tally.errors
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log = (work / "mount.log").read_text() if (work / "mount.log").exists() else ""
        if "Traceback" in log:
            problems.append("the mount log holds a traceback")
        if os.path.ismount(mountpoint):
            problems.append("still mounted after unmounting")
        figures["problems"] = problems
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            figures["work_dir"] = str(work)
    return figures


def _open_in(mountpoint: Path) -> int:
    """Descriptors of this process that still point into the mount."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(mountpoint) + "/"):
                count += 1
        except OSError:
            pass
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--readers", type=int, default=32, help="concurrent readers (32)")
    parser.add_argument("--writers", type=int, default=4,
                        help="concurrent writers through the same mount (4; 0: read-only)")
    parser.add_argument("--cache-size", default="16M",
                        help="the mount's --cache-size (16M: less than the data, so blocks are "
                             "evicted and fetched again)")
    parser.add_argument("--rss-budget", type=int, metavar="MIB",
                        help="peak RSS allowed to the mount, MiB (default: the cache size plus "
                             f"{RSS_OVERHEAD_MIB} for the interpreter, threads and transfers)")
    parser.add_argument("--scale", type=float, default=1.0, help="size of the larger files")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and logs")
    args = parser.parse_args(argv)
    if args.rss_budget is None:
        args.rss_budget = (_size(args.cache_size) >> 20) + RSS_OVERHEAD_MIB
    figures = soak(args)
    for key, value in figures.items():
        if key != "problems":
            print(f"{key:>22}: {value:,}" if isinstance(value, int) else f"{key:>22}: {value}")
    for problem in figures["problems"]:
        print(f"soak: FAIL: {problem}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    ok = not figures["problems"]
    print(f"soak: {'ok' if ok else 'FAILED'}: {figures.get('bytes_verified', 0):,} bytes "
          f"verified, {figures.get('mismatches', '?')} mismatches, "
          f"{figures.get('errors', '?')} errors")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
