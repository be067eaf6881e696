"""Archives made the way Inductiva's task runner makes a task's outputs, for ``scripts/bench.py``.

The task runner zips a task's output folder with ``7zz a -tzip -mx=1 -mmt=on`` or streams it
with stream-zip. What it zips is mostly numbers: CSV tables of floats (which deflate compresses
to about half) and binary float arrays (which it barely compresses). The bench's older
archives hold log-like text that deflates 3:1 and inflates faster; these are the realistic
case. Data is deterministic (seeded), so a cached archive is the same on every machine.
"""

from __future__ import annotations

import array
import datetime as dt
import random
import shutil
import subprocess
from pathlib import Path
from typing import Iterable, Iterator

MiB = 1 << 20
CSV_MEMBER = "output/results/probes.csv"
BIN_MEMBER = "output/fields/U.bin"
LOG_MEMBER = "output/stdout.txt"
SEVEN_ZIP = "taskrun-7zip.zip"  # 7zz a -tzip -mx=1 -mmt=on
STREAM_ZIP = "taskrun-streamzip.zip"  # stream-zip, its defaults


def csv_chunks(seed: int, total: int, chunk: int = 4 * MiB) -> Iterator[bytes]:
    """Probe samples as a solver writes them: a step, a time and eight float columns in
    ``%.8e`` (numpy's savetxt style); the digits are noise, as in real measurements."""
    rng = random.Random(seed)
    pool = [f"{rng.gauss(0.0, 1.0) * 10 ** rng.randrange(-3, 3):.8e}"
            for _ in range(max(1000, min(400_000, total // 15)))]
    header = b"step,time,p,Ux,Uy,Uz,k,epsilon,nut,T\n"
    written, step = 0, 0
    pending = header
    while written < total:
        lines = []
        for _ in range(chunk // 150):
            lines.append(f"{step},{step * 1e-4:.6e}," + ",".join(rng.choices(pool, k=8)))
            step += 1
        data = (pending + "\n".join(lines).encode() + b"\n")[:total - written]
        pending = b""
        written += len(data)
        yield data


def binary_chunks(seed: int, total: int, chunk: int = 4 * MiB) -> Iterator[bytes]:
    """A float64 field (smooth values plus noise, as a velocity field is): deflate saves a few
    percent, from the exponents and signs."""
    rng = random.Random(seed)
    pool = array.array("d", (1.5 + 0.3 * rng.random() + rng.gauss(0.0, 0.05)
                             for _ in range(max(1 << 12, min(1 << 20, total // 8))))).tobytes()
    written = 0
    while written < total:
        want = min(chunk, total - written, len(pool) // 2)
        start = rng.randrange(0, (len(pool) - want) // 8 + 1) * 8
        data = pool[start:start + want]
        written += len(data)
        yield data


def log_chunks(total: int) -> Iterator[bytes]:
    lines = b"".join(f"Time = {i * 1e-4:.4f}  Courant max: 0.{i % 97:02d}  ExecutionTime = "
                     f"{i * 0.013:.2f} s\n".encode() for i in range(total // 60 + 1))
    yield lines[:total]


def members(csv: int, binary: int, log: int) -> list[tuple[str, Iterable[bytes]]]:
    """The task's outputs: (name, chunks) in the order they are zipped."""
    return [(LOG_MEMBER, log_chunks(log)), (CSV_MEMBER, csv_chunks(7, csv)),
            (BIN_MEMBER, binary_chunks(8, binary))]


def build_7zip(path: Path, csv: int, binary: int, log: int) -> None:
    """Stage the folder on disk and zip it as the task runner does (``7zz``, Debian's 7zip)."""
    seven = shutil.which("7zz")
    if seven is None:
        raise RuntimeError("7zz not found: run scripts/install-system-deps.sh (Debian: 7zip)")
    stage = path.parent / (path.name + ".stage")
    shutil.rmtree(stage, ignore_errors=True)
    try:
        for name, chunks in members(csv, binary, log):
            target = stage / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                for data in chunks:
                    out.write(data)
        path.unlink(missing_ok=True)
        done = subprocess.run([seven, "a", "-tzip", "-mx=1", "-mmt=on", str(path.resolve()),
                               "output"], cwd=stage, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"7zz failed ({done.returncode}): {done.stderr[-500:]}")
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def build_stream_zip(path: Path, csv: int, binary: int, log: int) -> None:
    """Stream the same outputs with stream-zip (its defaults: deflate, data descriptors)."""
    from stream_zip import ZIP_AUTO, stream_zip  # the bench extra

    when = dt.datetime(2025, 6, 1, 12, 0, 0)
    files = [(name, when, 0o644, ZIP_AUTO(size), chunks)
             for (name, chunks), size in zip(members(csv, binary, log), (log, csv, binary))]
    tmp = path.with_suffix(".part")
    with tmp.open("wb") as out:
        for data in stream_zip(files):
            out.write(data)
    tmp.replace(path)
