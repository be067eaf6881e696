"""Background mode: ``storagefs mount`` without ``--foreground``.

The same command runs with ``--foreground`` in a child process of its own session (no fork
after threads or sessions exist), which reports through a pipe once libfuse calls ``init``;
the parent then waits until the mount point is a mount that answers ``stat`` and exits 0, or
prints why the child failed and exits 1. Both ends of that pipe are here.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time

from ...config import API_KEY_ENV, ClientConfig
from ...errors import EXIT_ERROR, EXIT_OK
from ..config import MountConfig

READY_FD_ENV = "STORAGEFS_MOUNT_READY_FD"
_READY = b"ready\n"


def child_argv(mount: MountConfig, client: ClientConfig) -> list[str]:
    """The ``storagefs mount --foreground`` command line equivalent to these configs.

    The key is not in it (argv is public in ``ps``); the child gets it in its environment.
    """
    argv = [sys.executable, "-m", "storagefs", "mount", str(mount.mountpoint), "--foreground",
            "--api-url", client.api_url, "--cache-size", str(mount.cache_size),
            "--metadata-ttl", repr(mount.metadata_ttl), "--zip-as", mount.zip_as]
    if client.region:
        argv += ["--region", client.region]
    for option in mount.fuse_options:
        argv += ["-o", option]
    if mount.cache_dir:
        argv += ["--cache-dir", str(mount.cache_dir), "--cache-dir-size",
                 str(mount.cache_dir_size)]
    if mount.log_file:
        argv += ["--log-file", str(mount.log_file)]
    if mount.debug:
        argv.append("--debug")
    if mount.read_write:
        argv += ["--read-write", "--write-dir", str(mount.write_folder), "--write-max-size",
                 str(mount.write_max_size), "--unmount-timeout", repr(mount.unmount_timeout),
                 "--write-retry-interval", repr(mount.write_retry_interval)]
    return argv


def supervise(mount: MountConfig, client: ClientConfig) -> int:
    """Start the mount in a child process and wait until it answers (or say why not)."""
    read_end, write_end = os.pipe()
    env = {**os.environ, READY_FD_ENV: str(write_end)}
    if client.api_key:
        env[API_KEY_ENV] = client.api_key
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(child_argv(mount, client), stdin=subprocess.DEVNULL,
                                 stdout=errors, stderr=errors, env=env, pass_fds=(write_end,),
                                 start_new_session=True, close_fds=True)
        os.close(write_end)
        try:
            ok = _wait_ready(read_end, child, mount)
        except BaseException:  # Ctrl-C while waiting: leave no mount behind
            _stop_child(child)
            raise
        finally:
            os.close(read_end)
        if ok:
            where = f"log in {mount.log_file}" if mount.log_file else "log in syslog"
            print(f"mounted {client.api_url} at {mount.mountpoint} ({where}); "
                  f"'storagefs umount {mount.mountpoint}' unmounts it")
            return EXIT_OK
        errors.seek(0)
        text = errors.read().decode(errors="replace")
    if child.poll() is None:  # alive but not answering: give up on it
        _stop_child(child)
        print(f"storagefs mount: {mount.mountpoint} did not answer within "
              f"{mount.ready_timeout:g} s{_last_lines(text)}", file=sys.stderr)
        return EXIT_ERROR
    message = _last_lines(text) or f" (exit status {child.returncode})"
    print(f"storagefs mount: mounting failed{message}", file=sys.stderr)
    return EXIT_ERROR


def ready_fd() -> int | None:
    """In the child: the pipe to report on, if a supervisor started this process."""
    value = os.environ.pop(READY_FD_ENV, "")
    return int(value) if value.isdigit() else None


def report_ready(fd: int) -> None:
    """In the child, once libfuse called ``init``; a supervisor that gave up is no error."""
    try:
        os.write(fd, _READY)
        os.close(fd)
    except OSError:
        pass


def _stop_child(child: subprocess.Popen) -> None:
    """SIGTERM makes libfuse unmount before the child exits; SIGKILL only if it hangs."""
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(5)


def _wait_ready(read_end: int, child: subprocess.Popen, mount: MountConfig) -> bool:
    deadline = time.monotonic() + mount.ready_timeout
    got = b""
    while time.monotonic() < deadline and not got.endswith(_READY):
        readable, _, _ = select.select([read_end], [], [], 0.1)
        if readable:
            chunk = os.read(read_end, 64)
            if not chunk:  # the child closed the pipe without being ready: it failed
                child.wait(10)
                return False
            got += chunk
    if not got.endswith(_READY):
        return False
    while time.monotonic() < deadline:  # libfuse called init; check the kernel agrees
        try:
            if os.path.ismount(mount.mountpoint):
                os.stat(mount.mountpoint)
                return True
        except OSError:
            pass
        if child.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def _last_lines(text: str, count: int = 3) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line.removeprefix("storagefs mount: ") for line in lines if "Traceback" not in line]
    return (": " + " | ".join(lines[-count:])) if lines else ""
