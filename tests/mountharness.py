"""Real mounts for tests: the ``storagefs`` command in a subprocess, a foreground mount that is
always unmounted afterwards, and the checks made after one (a clean log, data read)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest


def require_fuse() -> None:
    """Skip without FUSE, unless STORAGEFS_REQUIRE_FUSE=1 (CI), where a missing FUSE fails."""
    problems = []
    if not os.path.exists("/dev/fuse"):
        problems.append("/dev/fuse is missing")
    if not any(Path(d, "fusermount").exists() or Path(d, "fusermount3").exists()
               for d in os.environ.get("PATH", "").split(os.pathsep)):
        problems.append("fusermount is not installed")
    if problems:
        message = "FUSE unavailable: " + ", ".join(problems)
        if os.environ.get("STORAGEFS_REQUIRE_FUSE") == "1":
            pytest.fail(message)
        pytest.skip(message)


def storagefs(*args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "storagefs", *args], capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def force_unmount(mountpoint: Path) -> None:
    for cmd in (["fusermount", "-u", str(mountpoint)], ["fusermount", "-uz", str(mountpoint)]):
        try:
            os.stat(mountpoint)
            if not os.path.ismount(mountpoint):
                return
        except OSError:
            pass  # stale: still needs unmounting
        subprocess.run(cmd, capture_output=True, timeout=30)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if not os.path.ismount(mountpoint):
                    os.stat(mountpoint)
                    return
            except OSError:
                pass
            time.sleep(0.05)


def wait_mounted(mountpoint: Path, process: subprocess.Popen | None = None,
                 timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"mount exited with {process.returncode}: "
                                 f"{process.stderr.read() if process.stderr else ''}")
        if os.path.ismount(mountpoint):
            return
        time.sleep(0.05)
    raise AssertionError(f"{mountpoint} not mounted within {timeout} s")


def mount_args(server, mountpoint: Path, log: Path, *extra: str) -> list[str]:
    return ["mount", str(mountpoint), "--api-url", server.url, "--api-key", server.api_key,
            "--log-file", str(log), *extra]


@contextlib.contextmanager
def foreground_mount(server, mountpoint: Path, log: Path, *extra: str, env: dict | None = None):
    """A foreground mount (unmounted, and its process gone, afterwards); ``server`` needs only
    ``url`` and ``api_key``."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([sys.executable, "-m", "storagefs",
                                *mount_args(server, mountpoint, log, *extra), "--foreground"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_mounted(mountpoint, process)
        yield process
    finally:
        force_unmount(mountpoint)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def assert_clean_log(log: Path) -> None:
    text = log.read_text() if log.exists() else ""
    assert "Traceback" not in text, text[-3000:]


def object_reads(server) -> float:
    return sum(v for k, v in server.metrics().items()
               if k.startswith("storagefs_object_reads_total"))
