"""Faults under a real FUSE mount: the mount reads through ``faultproxy.FaultProxy``.

Short timeouts come from the mount's config file (``STORAGEFS_CONFIG``: 1 s read timeout,
2 retries), so a lasting fault must turn into an error within seconds. What is checked:

- transient faults (5xx/429 bursts, resets before and inside bodies, stalls past the timeout,
  a refused signed URL, a server killed and back within the retry window) are invisible: every
  byte read compares equal;
- lasting ones give an error (EIO, or ETIMEDOUT for a stall) within a bounded time, the reader
  can be killed while it waits, nothing is left in uninterruptible sleep, and the mount works
  again by itself once the fault is gone, including a server killed mid-read and restarted;
- a byte flipped in an archive's data is an EIO, never wrong bytes, for members up to the
  verification window; a larger one fails the read that reaches its end.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from archives import build_pyzip, mixed_bytes, text_bytes
from faultproxy import FaultProxy
from mountharness import assert_clean_log, foreground_mount, require_fuse
from serverharness import free_port, start_server

MiB = 1 << 20
OBJECTS = "^/-/"
READ_TIMEOUT = 1.0
EIO_BOUND = 30.0  # seconds a failing read may take, whatever the fault
CONFIG = f"""[storagefs]
connect_timeout_s = 1
read_timeout_s = {READ_TIMEOUT}
retries = 2
backoff_factor = 0.05
"""


def proc_state(pid: int) -> str | None:
    """The one-letter state of a process (R, S, D, Z, ...), None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()[0]


def stuck_threads(pid: int, samples: int = 5) -> set[str]:
    """Threads of a process found in uninterruptible sleep (D) in every one of a few samples."""
    stuck: set[str] | None = None
    for _ in range(samples):
        now = set()
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                if (task / "stat").read_text().rpartition(")")[2].split()[0] == "D":
                    now.add(task.name)
        stuck = now if stuck is None else stuck & now
        time.sleep(0.05)
    return stuck or set()


def mounted(url: str, key: str, mountpoint: Path, log: Path, config: Path, *extra: str):
    """A foreground mount of ``url`` with the timeouts of ``config``."""
    env = {**os.environ, "STORAGEFS_CONFIG": str(config)}
    return foreground_mount(SimpleNamespace(url=url, api_key=key), mountpoint, log, *extra,
                            env=env)


class Timed:
    """A reader in its own process: how long it took, how it ended, what states it went
    through (sampled from /proc while it ran)."""

    def __init__(self, *cmd: str) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        self.states: set[str] = set()
        self._stderr: str | None = None

    def wait(self, bound: float = EIO_BOUND) -> float:
        deadline = self.started + bound
        while self.process.poll() is None and time.monotonic() < deadline:
            state = proc_state(self.process.pid)
            if state:
                self.states.add(state)
            time.sleep(0.05)
        elapsed = time.monotonic() - self.started
        if self.process.poll() is None:
            state = proc_state(self.process.pid)
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"{self.process.args} still running after {bound} s "
                                 f"(state {state})")
        return elapsed

    @property
    def stderr(self) -> str:
        if self._stderr is None:
            self._stderr = self.process.stderr.read() if self.process.stderr else ""
        return self._stderr


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A server with a fixed signing key, a proxy in front and a mount through the proxy."""
    require_fuse()
    work = tmp_path_factory.mktemp("mount-faults")
    key_file = work / "signing.key"
    key_file.write_bytes(os.urandom(32).hex().encode())
    config = work / "storagefs.ini"
    config.write_text(CONFIG)
    root = work / "root"
    members = {
        "out/big.dat": mixed_bytes(72, 3 * MiB + 17),  # larger than the 1 MiB window
        "out/small.txt": text_bytes(73, 200_000),
        "out/tiny.txt": b"tiny\n",
    }
    archive, _ = build_pyzip(work, members, "deflate", name="task.zip")
    stored, _ = build_pyzip(work, {"s.txt": text_bytes(74, 300_000)}, "store", name="s.zip")
    stored_files = {"plain/big.bin": mixed_bytes(71, 5 * MiB + 3),
                    "plain/small.txt": b"small\n" * 100,
                    "task/output.zip": archive.read_bytes(),
                    "task/stored.zip": stored.read_bytes()}
    view = {"plain/big.bin": stored_files["plain/big.bin"],
            "plain/small.txt": stored_files["plain/small.txt"],
            **{f"task/output.zip/{n}": d for n, d in members.items()},
            "task/stored.zip/s.txt": text_bytes(74, 300_000)}
    root.mkdir()
    for tag in TAGS:  # stored up front: one wait for the root's listing, not one per test
        for name, data in stored_files.items():
            (root / tag / name).parent.mkdir(parents=True, exist_ok=True)
            (root / tag / name).write_bytes(data)
    server = start_server(root, work, "--signing-key-file", str(key_file))
    proxy = FaultProxy(server.url)
    mountpoint, log = work / "mnt", work / "mount.log"
    try:
        # --cache-size 32M: a 1 MiB decode window, so out/big.dat is a "large" member
        with mounted(proxy.url, server.api_key, mountpoint, log, config,
                     "--metadata-ttl", "1", "--cache-size", "32M") as process:
            yield dict(server=server, proxy=proxy, mnt=mountpoint, stored_files=stored_files,
                       view=view, process=process, key_file=key_file, work=work,
                       config=config, root=root)
    finally:
        proxy.close()
        server.stop()
    assert_clean_log(log)


def fresh(setup, tag: str) -> dict[str, bytes]:
    """The test files as stored under the folder ``tag`` (one per test), so that nothing the
    mount cached from earlier reads answers for them; {path in the mount: bytes}."""
    assert tag in TAGS  # its folders were never listed: the mount must ask the server
    return {f"{tag}/{name}": data for name, data in setup["view"].items()}


def read(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def sha(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


# -- transient faults: invisible ---------------------------------------------------------------

TRANSIENT = {
    "HTTP 500 x2 on objects": lambda p: p.status(500, count=2, path=OBJECTS),
    "HTTP 503 x2 on objects": lambda p: p.status(503, count=2, path=OBJECTS),
    "HTTP 429 x2 on objects": lambda p: p.status(429, count=2, path=OBJECTS, retry_after="0"),
    "HTTP 502 x2 on listings": lambda p: p.status(502, count=2, path="^/storage/contents"),
    # a URL refused, so a new one is asked for, twice answered 503
    "HTTP 503 x2 on signed URLs": lambda p: (p.status(403, count=1, path=OBJECTS),
                                             p.status(503, count=2, path="^/storage/signed"))[1],
    "reset inside a body x2": lambda p: p.reset(after_bytes=50_000, count=2, path=OBJECTS),
    "reset before the answer": lambda p: p.drop(count=1, path=OBJECTS),
    "stall before the answer": lambda p: p.stall(3, count=1, path=OBJECTS),
    "stall inside a body": lambda p: p.stall(3, count=1, path=OBJECTS, after_bytes=100_000),
    "signed URL refused (403)": lambda p: p.status(403, count=1, path=OBJECTS),
}


@pytest.mark.parametrize("fault", list(TRANSIENT))
def test_transient_faults_are_invisible(setup, fault, figures):
    proxy, mnt = setup["proxy"], setup["mnt"]
    tag = f"transient-{list(TRANSIENT).index(fault)}"
    files = fresh(setup, tag)
    before = sum(proxy.injected.values())
    rule = TRANSIENT[fault](proxy)
    verified = 0
    for name in ("plain/big.bin", "task/output.zip/out/big.dat", "task/output.zip/out/small.txt",
                 "task/stored.zip/s.txt"):
        path = mnt / tag / name
        os.listdir(path.parent)
        blob = read(path)
        assert sha(blob) == sha(files[f"{tag}/{name}"]), f"{fault}: {name} differs"
        verified += len(blob)
    proxy.clear()
    injected = sum(proxy.injected.values()) - before
    assert injected >= 1 and rule.hits >= 1, f"{fault} was never injected"
    figures["faults injected: transient (mount)"] += injected
    figures["faults survived: transient (mount)"] += injected
    figures["bytes verified (mount)"] += verified


# -- lasting faults: an error, soon, then recovery ----------------------------------------------

LASTING = {
    "HTTP 503 forever": lambda p: p.status(503, count=None),
    "HTTP 500 forever on objects": lambda p: p.status(500, count=None, path=OBJECTS),
    "stall forever": lambda p: p.stall(60, count=None),
    "reset forever": lambda p: p.reset(after_bytes=10_000, count=None, path=OBJECTS),
    "server unreachable": lambda p: p.down(),
}


TAGS = ([f"transient-{i}" for i in range(len(TRANSIENT))]
        + [f"lasting-{i}" for i in range(len(LASTING))] + ["killable", "flipped", "killed"])


@pytest.mark.parametrize("fault", list(LASTING))
def test_lasting_faults_give_errors_in_bounded_time_then_recover(setup, fault, figures):
    proxy, mnt = setup["proxy"], setup["mnt"]
    tag = f"lasting-{list(LASTING).index(fault)}"
    files = fresh(setup, tag)  # and the listings have expired: ls must ask the server
    LASTING[fault](proxy)
    try:
        for name in ("plain/big.bin", "task/output.zip/out/big.dat"):
            reader = Timed("cat", str(mnt / tag / name))
            elapsed = reader.wait()
            assert reader.process.returncode != 0, f"{fault}: {name} read without error"
            assert ("Input/output error" in reader.stderr
                    or "timed out" in reader.stderr.lower()), reader.stderr
            figures["lasting faults: slowest error (mount, s)"] = max(
                figures["lasting faults: slowest error (mount, s)"], round(elapsed, 1))
            figures["lasting faults: reads answered with an error (mount)"] += 1
        lister = Timed("ls", "-l", str(mnt / tag / "plain"))
        elapsed = lister.wait()
        if fault in ("HTTP 503 forever", "stall forever", "server unreachable"):
            assert lister.process.returncode != 0, f"{fault}: ls succeeded"
        figures["lasting faults: slowest error (mount, s)"] = max(
            figures["lasting faults: slowest error (mount, s)"], round(elapsed, 1))
        assert not stuck_threads(setup["process"].pid)
    finally:
        proxy.clear()
        proxy.up()
    # The mount recovers by itself.
    for name in ("plain/big.bin", "task/output.zip/out/big.dat"):
        want = files[f"{tag}/{name}"]
        assert sha(read(mnt / tag / name)) == sha(want), f"after {fault}: {name}"
        figures["bytes verified (mount)"] += len(want)
    figures["faults injected: lasting (mount)"] += 1
    figures["lasting faults recovered from without remounting (mount)"] += 1


def test_a_reader_waiting_on_a_stalled_server_can_be_killed(setup, figures):
    proxy, mnt = setup["proxy"], setup["mnt"]
    files = fresh(setup, "killable")
    os.stat(mnt / "killable" / "plain" / "big.bin")
    proxy.stall(60, count=None)
    try:
        reader = Timed("cat", str(mnt / "killable" / "plain" / "big.bin"))
        time.sleep(0.7)
        state = proc_state(reader.process.pid)
        assert state in ("S", "D", "R"), state
        killed = time.monotonic()
        reader.process.send_signal(signal.SIGKILL)
        reader.process.wait(5)  # TASK_KILLABLE at worst: SIGKILL ends it at once
        assert time.monotonic() - killed < 3
    finally:
        proxy.clear()
    assert sha(read(mnt / "killable" / "plain" / "big.bin")) == \
        sha(files["killable/plain/big.bin"])
    figures["stalled readers killed promptly (mount)"] += 1


# -- damaged data: never returned -----------------------------------------------------------------

def _middle_of_data(setup, archive: str, member: str) -> int:
    """The archive offset half-way through the member's compressed data."""
    server = setup["server"]
    response = server.get("/storage/zip-contents", params={"path": archive, "recursive": "true"})
    for entry in response.json()["contents"]:
        if entry["name"] == member:
            return entry["range_start"] + entry["compressed_size"] // 2
    raise AssertionError(f"{member} not in {archive}")


def test_flipped_byte_is_eio_never_wrong_bytes(setup, figures):
    proxy, mnt = setup["proxy"], setup["mnt"]
    files = fresh(setup, "flipped")
    cases = [("flipped/task/stored.zip", "s.txt"), ("flipped/task/output.zip", "out/small.txt"),
             ("flipped/task/output.zip", "out/big.dat")]
    for archive, member in cases:
        rule = proxy.flip(_middle_of_data(setup, archive, member), count=None)
        path = mnt / archive / member
        want = files[f"{archive}/{member}"]
        good_prefix, damaged = 0, False
        with pytest.raises(OSError) as info:
            with open(path, "rb") as handle:
                while chunk := handle.read(128 * 1024):
                    if not damaged and want[good_prefix:good_prefix + len(chunk)] == chunk:
                        good_prefix += len(chunk)
                        continue
                    if len(want) <= MiB:
                        raise AssertionError(f"{member}: wrong bytes at {good_prefix}")
                    damaged = True  # large: damage may pass before the end is checked
            raise AssertionError(f"{member}: read to the end without an error")
        assert info.value.errno == errno.EIO
        if len(want) <= MiB:
            assert good_prefix == 0, "a damaged small member must yield nothing"
        proxy.clear()
        assert rule.hits >= 1
        figures["faults injected: flipped bytes (mount)"] += rule.hits
        if len(want) <= MiB:
            figures["flipped bytes caught: EIO, no wrong byte (mount)"] += 1
        else:
            figures["flipped bytes in large members: EIO at the end (mount)"] += 1
        try:  # the damage was in transit: whole again, or still refused, never wrong
            assert sha(read(path)) == sha(want)
            figures["bytes verified (mount)"] += len(want)
            figures["members whole again once transit damage stopped (mount)"] += 1
        except OSError as exc:
            assert exc.errno == errno.EIO
            figures["members kept refused after transit damage stopped (mount)"] += 1


# -- the server itself: killed mid-read, restarted ------------------------------------------------

def test_server_killed_mid_read_and_restarted(setup, tmp_path, figures):
    """Directly, without the proxy: the server process dies while a file is being read."""
    root = setup["server"].root
    files = fresh(setup, "killed")
    port = free_port()
    extra = ("--signing-key-file", str(setup["key_file"]))
    server = start_server(root, tmp_path, *extra, port=port)
    mountpoint, log = tmp_path / "mnt", tmp_path / "mount.log"
    want = files["killed/task/output.zip/out/big.dat"]
    path = None
    try:
        with mounted(server.url, server.api_key, mountpoint, log, setup["config"],
                     "--metadata-ttl", "1", "--cache-size", "16M"):  # the least accepted
            path = mountpoint / "killed" / "task" / "output.zip" / "out" / "big.dat"
            assert read(mountpoint / "killed" / "plain" / "small.txt") == \
                files["killed/plain/small.txt"]
            outcome: dict = {}

            def slow_reader() -> None:
                got = bytearray()
                try:
                    with open(path, "rb") as handle:
                        while chunk := handle.read(64 * 1024):
                            got += chunk
                            time.sleep(0.02)
                    outcome["data"] = bytes(got)
                except OSError as exc:
                    outcome["error"] = exc.errno
                    outcome["partial"] = bytes(got)

            thread = threading.Thread(target=slow_reader)
            thread.start()
            time.sleep(0.3)
            server.process.kill()  # no goodbye: connections die mid-body
            server.process.wait(10)
            killed = time.monotonic()
            thread.join(EIO_BOUND)
            assert not thread.is_alive(), "the reader hung after the server died"
            if "error" in outcome:
                assert outcome["error"] in (errno.EIO, errno.ETIMEDOUT)
                assert want.startswith(outcome["partial"][:MiB])  # checked window: no garbage
                figures["lasting faults: slowest error (mount, s)"] = max(
                    figures["lasting faults: slowest error (mount, s)"],
                    round(time.monotonic() - killed, 1))
            else:
                assert sha(outcome["data"]) == sha(want)
            server = start_server(root, tmp_path, *extra, port=port)  # same port, same key
            for name, data in files.items():  # back by itself, no remount
                assert sha(read(mountpoint / name)) == sha(data), name
                figures["bytes verified (mount)"] += len(data)
    finally:
        server.stop()
    assert_clean_log(log)
    figures["server kills survived (mount)"] += 1


def test_urls_expiring_during_reads_are_renewed(tmp_path, figures):
    """Signed URLs that live 2 s: reads of one archive spread over 3 s, then one slow reader,
    all exact, with the URL asked for again as it expires."""
    require_fuse()
    root = tmp_path / "root"
    members = {f"m{i}.bin": mixed_bytes(80 + i, 700_000) for i in range(5)}
    archive, _ = build_pyzip(tmp_path, members, "deflate", name="a.zip")
    (root / "d").mkdir(parents=True)
    (root / "d" / "a.zip").write_bytes(archive.read_bytes())
    slow = mixed_bytes(90, 2 * MiB)
    (root / "d" / "slow.bin").write_bytes(slow)
    server = start_server(root, tmp_path, "--url-ttl", "2")
    config = tmp_path / "storagefs.ini"
    config.write_text(CONFIG)
    mountpoint, log = tmp_path / "mnt", tmp_path / "mount.log"
    try:
        with mounted(server.url, server.api_key, mountpoint, log, config):
            for name, data in members.items():
                assert read(mountpoint / "d" / "a.zip" / name) == data
                time.sleep(0.6)
            got = bytearray()
            with open(mountpoint / "d" / "slow.bin", "rb") as handle:
                while chunk := handle.read(256 * 1024):
                    got += chunk
                    time.sleep(0.15)
            assert bytes(got) == slow
        issued = sum(v for k, v in server.metrics().items()
                     if k.startswith("storagefs_requests_total") and "signed-urls" in k)
    finally:
        server.stop()
    assert_clean_log(log)
    assert issued >= 3, f"only {issued} signed URLs asked for in more than 4 s of 2-s URLs"
    figures["signed URLs renewed during reads (mount)"] += int(issued) - 2
    figures["bytes verified (mount)"] += sum(map(len, members.values())) + len(slow)
