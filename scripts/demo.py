"""``make demo`` / ``make demo-stop``: sample task outputs served locally and mounted at ./mnt.

start: writes a sample storage under .demo/storage (once), starts ``storagefs serve`` on a free
       port in the background, mounts it at ./mnt and prints a few commands to try.
stop:  unmounts ./mnt, stops the server this script started, and removes .demo/.

With STORAGEFS_DEMO_STORE=s3://BUCKET[/PREFIX] (``make demo DEMO_STORE=...``) the sample is
uploaded there (once) and the server runs on the bucket (``serve --store``), reaching it at
STORAGEFS_DEMO_S3_ENDPOINT when set; credentials come from the usual AWS variables.

Run from the repository root with the project's virtualenv (the Makefile does both).
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / ".demo"
STORAGE = DEMO / "storage"
STATE = DEMO / "state.json"
MOUNTPOINT = REPO / "mnt"
API_KEY = "demo-key.1"
BUCKET_STORE = os.environ.get("STORAGEFS_DEMO_STORE") or None
S3_ENDPOINT = os.environ.get("STORAGEFS_DEMO_S3_ENDPOINT") or None

TASKS = [("k2x9w1m7ab3cd", "openfoam", 24), ("p8q4r2s6tu1vw", "gromacs", 6),
         ("z3y7x1w5vu9ts", "reef3d", 40)]


# -- sample storage --------------------------------------------------------------------------


def _log_lines(rng: random.Random, steps: int) -> bytes:
    lines = []
    residual = 1.0
    for step in range(1, steps + 1):
        residual *= rng.uniform(0.80, 0.97)
        state = "converged" if residual < 1e-4 else "iterating"
        lines.append(f"Time = {step * 0.005:.3f}  Courant max: {rng.uniform(0.2, 0.9):.4f}  "
                     f"residual = {residual:.6e}  {state}")
    return ("\n".join(lines) + "\nEnd\n").encode()


def _field(rng: random.Random, size: int) -> bytes:
    """A result file: a header and columns of numbers, compressible like real output."""
    out = io.BytesIO()
    out.write(b"# vtk DataFile Version 3.0\nfield\nASCII\nDATASET UNSTRUCTURED_GRID\n")
    while out.tell() < size:
        x = rng.random()
        out.write(("\n".join(f"{x + i * 1e-3:.6f} {rng.gauss(0, 1):.5f} {rng.random():.4f}"
                             for i in range(2000)) + "\n").encode())
    return out.getvalue()[:size]


def task_files(seed: int, simulator: str, field_mib: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    steps = 4000
    stdout = _log_lines(rng, steps)
    csv = b"step,time,residual\n" + b"".join(
        f"{i},{i * 0.005:.3f},{rng.random() * 10 ** -(i // 500):.6e}\n".encode()
        for i in range(steps))
    return {
        "artifacts/stdout.txt": stdout,
        "artifacts/stderr.txt": b"",
        "artifacts/logs/solver.log": _log_lines(random.Random(seed + 1), 2000),
        "artifacts/logs/mesh.log": f"{simulator}: mesh OK, 1,250,000 cells\n".encode() * 50,
        "artifacts/results/residuals.csv": csv,
        f"artifacts/results/field_{steps:05d}.vtk": _field(rng, field_mib << 20),
        "artifacts/post/level1/level2/summary.txt":
            f"simulator: {simulator}\nstatus: ok\n".encode(),
    }


def _write_zip(path: Path, files: dict[str, bytes], streamed: bool) -> None:
    """Like the task runner: stream-zip (descriptors, zip64) when installed, else zipfile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if streamed:
        try:
            import datetime as dt
            import stat
            import zlib

            from stream_zip import ZIP_64, stream_zip
        except ImportError:
            streamed = False
    if streamed:
        now = dt.datetime.now()
        members = [(name, now, stat.S_IFREG | 0o644, ZIP_64, (data,))
                   for name, data in files.items()]
        with path.open("wb") as out:
            for chunk in stream_zip(members, get_compressobj=lambda: zlib.compressobj(
                    1, zlib.DEFLATED, -15)):
                out.write(chunk)
        return
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, data in files.items():
            zf.writestr(name, data)


def build_storage() -> None:
    built = DEMO / "storage-complete"  # beside the storage, not in it: users would see it
    if built.exists():
        return
    print("demo: writing sample task outputs to .demo/storage ...", flush=True)
    shutil.rmtree(STORAGE, ignore_errors=True)
    for index, (task_id, simulator, field_mib) in enumerate(TASKS):
        _write_zip(STORAGE / task_id / "output.zip", task_files(index, simulator, field_mib),
                   streamed=index % 2 == 0)
        inputs = {f"sim_dir/{simulator}.cfg": f"simulator = {simulator}\n".encode(),
                  "sim_dir/system/controlDict": b"endTime 20;\nwriteInterval 100;\n"}
        _write_zip(STORAGE / task_id / "input.zip", inputs, streamed=False)
    (STORAGE / "datasets" / "geometry").mkdir(parents=True, exist_ok=True)
    (STORAGE / "datasets" / "README.txt").write_text("Shared inputs for the sample tasks.\n")
    (STORAGE / "datasets" / "geometry" / "hull.stl").write_bytes(
        b"solid hull\n" + b"facet normal 0 0 1\n outer loop\n  vertex 0 0 0\n endloop\nendfacet\n"
        * 20000 + b"endsolid hull\n")
    built.write_text("")


# -- processes -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _storagefs(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "storagefs", *args], cwd=REPO, **kwargs)


def _alive(pid: int) -> bool:
    """Whether ``pid`` is still the server this script started (not a reused number)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    where = _load_state().get("where") or str(STORAGE)
    return b"storagefs serve" in cmdline and where.encode() in cmdline


def _load_state() -> dict:
    try:
        return json.loads(STATE.read_text())
    except (OSError, ValueError):
        return {}


def _server_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/version", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def start_server() -> str:
    state = _load_state()
    if state.get("pid") and _alive(state["pid"]) and _server_up(state["url"]):
        return state["url"]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (DEMO / "server.log").open("ab")
    where = [str(STORAGE)]
    if BUCKET_STORE:
        upload_to_bucket()
        where = ["--store", BUCKET_STORE, *(("--s3-endpoint-url", S3_ENDPOINT)
                                            if S3_ENDPOINT else ())]
    process = subprocess.Popen([sys.executable, "-m", "storagefs", "serve", *where,
                                "--port", str(port), "--api-key", API_KEY],
                               cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    STATE.write_text(json.dumps({"pid": process.pid, "url": url,
                                 "where": BUCKET_STORE or str(STORAGE)}))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"demo: the server exited; see {DEMO / 'server.log'}")
        if _server_up(url):
            return url
        time.sleep(0.1)
    sys.exit(f"demo: the server did not start; see {DEMO / 'server.log'}")


def upload_to_bucket() -> None:
    """The sample storage, copied to the bucket prefix once (a marker file says it is done)."""
    try:
        import boto3
    except ImportError:
        sys.exit("demo: a bucket needs boto3: pip install -e '.[s3]'")
    assert BUCKET_STORE is not None
    bucket, _, prefix = BUCKET_STORE[len("s3://"):].partition("/")
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    marker = DEMO / "uploaded-to"
    if marker.exists() and marker.read_text() == BUCKET_STORE:
        return
    print(f"demo: uploading the sample storage to {BUCKET_STORE} ...", flush=True)
    client = boto3.client("s3", endpoint_url=S3_ENDPOINT)
    for path in sorted(STORAGE.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, prefix + path.relative_to(STORAGE).as_posix())
    marker.write_text(BUCKET_STORE)


def _mounted() -> bool:
    try:
        return os.path.ismount(MOUNTPOINT)
    except OSError:
        return False


def _stale() -> bool:
    try:
        os.listdir(MOUNTPOINT)
    except OSError as exc:
        return exc.errno == 107  # ENOTCONN
    return False


def mount(url: str) -> None:
    if _stale():
        _storagefs("umount", str(MOUNTPOINT))
    if _mounted():
        return
    MOUNTPOINT.mkdir(exist_ok=True)
    result = _storagefs("mount", str(MOUNTPOINT), "--api-url", url, "--api-key", API_KEY,
                        "--log-file", str(DEMO / "mount.log"))
    if result.returncode != 0:
        sys.exit("demo: mounting failed (see the message above)")


def start() -> None:
    DEMO.mkdir(exist_ok=True)
    build_storage()
    url = start_server()
    mount(url)
    first = TASKS[0][0]
    print(f"""
demo: {url} (API key {API_KEY}) serves {BUCKET_STORE or '.demo/storage'}, mounted read-only at ./mnt

Try:
  ls -l mnt/
  ls -lR mnt/{first}/output.zip
  tail -3 mnt/{first}/output.zip/artifacts/stdout.txt
  grep -rl converged mnt/*/output.zip/artifacts/logs
  du -sh mnt/{first}/output.zip; du -sh --apparent-size mnt/{first}/output.zip
  df -h mnt
  cp -r mnt/{TASKS[1][0]}/output.zip/artifacts /tmp/artifacts-copy
  curl -s {url}/metrics | grep object_read     # what the mount fetched so far
  INDUCTIVA_API_URL={url} INDUCTIVA_API_KEY={API_KEY} .venv/bin/storagefs --help

Stop with: make demo-stop
""")


def stop() -> None:
    if _mounted() or _stale():
        result = _storagefs("umount", str(MOUNTPOINT))
        if result.returncode != 0:
            _storagefs("umount", "--lazy", str(MOUNTPOINT))
    state = _load_state()
    pid = state.get("pid")
    if pid and _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(DEMO, ignore_errors=True)
    try:
        MOUNTPOINT.rmdir()
    except OSError:
        pass
    print("demo: stopped; ./mnt unmounted and .demo/ removed")


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("start", "stop"):
        print("usage: demo.py start|stop", file=sys.stderr)
        return 2
    start() if argv[0] == "start" else stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
