"""``storagefs mount`` / ``storagefs umount`` and the ``mount.storagefs`` helper for fstab.

Arguments become a ``MountConfig`` and a ``ClientConfig``; ``run`` checks what can be checked
before mounting (FUSE present, mount point usable, API reachable and the key accepted), each
failure a one-line message with its fix, then mounts:

- ``--foreground``: the FUSE loop runs in this process until unmounted or signalled.
- otherwise: the same command runs with ``--foreground`` in a child process of its own session
  (no fork after threads or sessions exist), which reports through a pipe once libfuse calls
  ``init``; the parent then waits until the mount point is a mount that answers ``stat`` and
  exits 0, or prints why the child failed and exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import logging.handlers
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from ..config import API_KEY_ENV, API_URL_ENV, ClientConfig
from ..errors import (EXIT_ERROR, EXIT_OK, EXIT_USAGE, AuthenticationError, PermissionDenied,
                      StorageError, TransferError)
from .config import ZIP_AS, MountConfig, parse_size

log = logging.getLogger("storagefs.mount")

READY_FD_ENV = "STORAGEFS_MOUNT_READY_FD"
_READY = b"ready\n"


class MountError(Exception):
    """Why a mount cannot be made, in one line that says how to fix it."""


# -- arguments ---------------------------------------------------------------------------------


def add_commands(subparsers) -> None:
    """Adds ``mount`` and ``umount`` to the ``storagefs`` command."""
    p = subparsers.add_parser(
        "mount", help="mount the storage as a local folder (ZIP archives as folders)",
        description="Mount the remote storage read-only at MOUNTPOINT. Every *.zip shows as a "
                    "folder of its members, read on demand with ranged requests.")
    p.add_argument("mountpoint", type=Path, help="an existing, empty folder")
    p.add_argument("--api-url", help=f"storage API (default: ${API_URL_ENV} or the config file)")
    p.add_argument("--api-key", help=f"API key (default: ${API_KEY_ENV}, the config file or "
                   "~/.inductiva/api_key)")
    p.add_argument("--region", help="storage region (default: the account's)")
    p.add_argument("-f", "--foreground", action="store_true",
                   help="stay in the foreground; Ctrl-C unmounts")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS",
                   help="FUSE options, comma-separated: allow_other, uid=N, gid=N, umask=...")
    p.add_argument("--cache-size", type=_size, default=MountConfig.cache_size, metavar="SIZE",
                   help="memory for decoded data, e.g. 256M (default: 256M)")
    p.add_argument("--cache-dir", type=Path,
                   help="keep fetched ranges in this folder, for this and later mounts")
    p.add_argument("--cache-dir-size", type=_size, default=MountConfig.cache_dir_size,
                   metavar="SIZE", help="at most this much in --cache-dir (default: 4G)")
    p.add_argument("--metadata-ttl", type=float, default=MountConfig.metadata_ttl,
                   metavar="SECONDS", help="how long listings are trusted (default: %(default)s)")
    p.add_argument("--zip-as", choices=ZIP_AS, default="dir",
                   help="show *.zip as a folder of members (dir, default) or as the raw file")
    p.add_argument("--log-file", type=Path, help="write the log here (default: stderr in the "
                   "foreground, syslog in the background)")
    p.add_argument("--debug", dest="mount_debug", action="store_true",
                   help="log every HTTP request and failed operation")
    p.set_defaults(run=run_mount_command)

    u = subparsers.add_parser("umount", help="unmount a storagefs mount",
                              description="Unmount MOUNTPOINT (also a stale one).")
    u.add_argument("mountpoint", type=Path)
    u.add_argument("-z", "--lazy", action="store_true",
                   help="detach now even if busy; finish when the last user closes it")
    u.set_defaults(run=run_umount_command)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def configs_from_args(args: argparse.Namespace) -> tuple[MountConfig, ClientConfig]:
    debug = bool(getattr(args, "mount_debug", False) or getattr(args, "debug", False))
    mount = MountConfig(
        mountpoint=Path(os.path.abspath(args.mountpoint)),
        foreground=args.foreground,
        fuse_options=tuple(args.options),
        cache_size=args.cache_size,
        cache_dir=Path(os.path.abspath(args.cache_dir)) if args.cache_dir else None,
        cache_dir_size=args.cache_dir_size,
        metadata_ttl=args.metadata_ttl,
        negative_ttl=min(args.metadata_ttl, MountConfig.negative_ttl),
        zip_as=args.zip_as,
        log_file=Path(os.path.abspath(args.log_file)) if args.log_file else None,
        debug=debug,
    )
    client = ClientConfig.from_env(api_url=args.api_url, api_key=args.api_key, region=args.region)
    return mount, patient_enough(client)


def patient_enough(client: ClientConfig) -> ClientConfig:
    """A process reading a file waits on the mount: fail within a minute, not after several.

    A stalled read costs the read timeout twice (one retry) and the kernel asks twice, so the
    cap of 15 s bounds a read on a silent server near 60 s; a config file may set less.
    """
    return dataclasses.replace(client, read_timeout_s=min(client.read_timeout_s, 15.0),
                               retries=min(client.retries, 3))


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
    return argv


# -- checks before mounting ------------------------------------------------------------------


def check_fuse() -> None:
    if not os.path.exists("/dev/fuse"):
        raise MountError("FUSE is not available: /dev/fuse is missing (load it with "
                         "'modprobe fuse'; in a container, run with --device /dev/fuse "
                         "--cap-add SYS_ADMIN)")
    if os.geteuid() != 0:
        if not os.access("/dev/fuse", os.R_OK | os.W_OK):
            raise MountError("FUSE is not usable: no permission on /dev/fuse (ask for access, "
                             "or add yourself to the 'fuse' group)")
        if not (shutil.which("fusermount") or shutil.which("fusermount3")):
            raise MountError("FUSE is not usable: fusermount is missing "
                             "(install it: apt-get install fuse3)")
    try:
        import fuse  # noqa: F401 - loads libfuse.so.2
    except (ImportError, OSError) as exc:
        raise MountError(f"FUSE is not usable: {exc} (install libfuse 2: apt-get install "
                         "libfuse2, or libfuse2t64 on newer releases)") from None


def check_mountpoint(path: Path, options: dict) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MountError(f"mount point {path} does not exist (create it: mkdir -p {path})") \
            from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise MountError(f"{path} is a stale mount: the process that served it is gone "
                             f"(clean it up: storagefs umount {path})") from None
        raise MountError(f"cannot use {path} as a mount point: {exc.strerror}") from None
    if not os.path.isdir(path):
        raise MountError(f"mount point {path} is not a folder")
    if os.path.ismount(path):
        # The kernel may answer stat from its cache for a while after the server died;
        # listing the folder always asks the server.
        try:
            with os.scandir(path) as entries:
                next(entries, None)
        except OSError as exc:
            if exc.errno == errno.ENOTCONN:
                raise MountError(f"{path} is a stale mount: the process that served it is "
                                 f"gone (clean it up: storagefs umount {path})") from None
        raise MountError(f"{path} is already a mount point (unmount it first: "
                         f"storagefs umount {path})")
    if os.geteuid() != 0 and (st.st_uid != os.geteuid() or not os.access(path, os.W_OK)):
        raise MountError(f"mount point {path} must be a folder you own and can write to")
    if "nonempty" not in options and any(os.scandir(path)):
        raise MountError(f"mount point {path} is not empty (its files would be hidden; "
                         "use an empty folder, or -o nonempty)")


def check_storage(client) -> None:
    """One small listing: the URL answers and accepts the key."""
    url = client.config.api_url
    if not client.config.api_key:
        raise MountError(f"no API key (pass --api-key, set {API_KEY_ENV}, or log in so that "
                         "~/.inductiva/api_key exists)")
    try:
        client.contents("/", per_page=1)
    except (AuthenticationError, PermissionDenied):
        raise MountError(f"the API key was refused by {url} (check --api-key, {API_KEY_ENV} "
                         "or ~/.inductiva/api_key)") from None
    except TransferError as exc:
        raise MountError(f"cannot reach the storage API at {url}: {exc.message.rsplit(': ', 1)[-1]} "
                         f"(check --api-url or {API_URL_ENV}, and that the server is up)") \
            from None
    except StorageError as exc:
        raise MountError(f"the storage API at {url} failed: {exc}") from None


# -- running ---------------------------------------------------------------------------------


def run_mount_command(args: argparse.Namespace) -> int:
    try:
        mount, client = configs_from_args(args)
    except ValueError as exc:
        print(f"storagefs mount: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return run(mount, client)


def run(mount: MountConfig, client_config: ClientConfig,
        make_client: Callable[[ClientConfig], object] | None = None) -> int:
    """Mount (see the module notes); returns the exit code. ``make_client`` is injectable."""
    if make_client is None:
        from ..client import StorageClient as make_client
    if not mount.debug:  # retries are logged by urllib3; the outcome is what the user needs
        logging.getLogger("urllib3").setLevel(logging.ERROR)
    # Checking the server fails fast; the mount itself keeps the configured retries.
    probe_config = dataclasses.replace(client_config, retries=min(client_config.retries, 1))
    try:
        check_fuse()
        check_mountpoint(mount.mountpoint, mount.option_map())
        if mount.cache_dir is not None:
            mount.cache_dir.mkdir(parents=True, exist_ok=True)
            if not os.access(mount.cache_dir, os.W_OK):
                raise MountError(f"cache folder {mount.cache_dir} is not writable")
        with make_client(probe_config) as probe:
            check_storage(probe)
        if not mount.foreground:
            return _supervise(mount, client_config)
        client = make_client(client_config)
    except MountError as exc:
        print(f"storagefs mount: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return _serve(mount, client)


def _serve(mount: MountConfig, client) -> int:
    """The FUSE loop in this process, until unmounted or signalled."""
    from .backend import CachedBackend, ClientBackend
    from .fuseops import StorageOperations, fuse_options, serve_forever
    from .read.diskcache import DiskCache
    from .read.reader import ReadContext
    from .vfs import VFS

    ready_fd = _ready_fd()
    _setup_logging(mount, background=ready_fd is not None)
    options = mount.option_map()
    backend = CachedBackend(ClientBackend(client, client.config.region),
                            ttl=mount.metadata_ttl, negative_ttl=mount.negative_ttl)
    disk = DiskCache(mount.cache_dir, mount.cache_dir_size) if mount.cache_dir else None
    vfs = VFS(backend, zip_as_dir=mount.zip_as == "dir", window=mount.window_bytes,
              max_archives=mount.max_archives, negative_ttl=mount.negative_ttl,
              context=ReadContext(mount.cache_size), disk=disk)

    def ready() -> None:
        log.info("mounted %s at %s", client.config.api_url, mount.mountpoint)
        if ready_fd is not None:
            try:
                os.write(ready_fd, _READY)
                os.close(ready_fd)
            except OSError:
                pass
            _detach_output(mount)

    uid = int(options["uid"]) if str(options.get("uid", "")).isdigit() else None
    gid = int(options["gid"]) if str(options.get("gid", "")).isdigit() else None
    operations = StorageOperations(vfs, uid=uid, gid=gid, on_ready=ready)
    try:
        serve_forever(operations, str(mount.mountpoint),
                      fuse_options(options, metadata_ttl=mount.metadata_ttl))
    except RuntimeError:  # fusepy: fuse_main failed; libfuse printed why just before
        print(f"storagefs mount: FUSE refused to mount {mount.mountpoint}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        client.close()
    log.info("unmounted %s", mount.mountpoint)
    return EXIT_OK


def _ready_fd() -> int | None:
    value = os.environ.pop(READY_FD_ENV, "")
    return int(value) if value.isdigit() else None


def _setup_logging(mount: MountConfig, background: bool) -> None:
    level = logging.DEBUG if mount.debug else (logging.INFO if mount.log_file else logging.WARNING)
    root = logging.getLogger("storagefs")
    root.setLevel(level)
    root.propagate = False
    for handler in list(root.handlers):
        root.removeHandler(handler)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if mount.log_file:
        handler: logging.Handler = logging.FileHandler(mount.log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(fmt)
    root.addHandler(handler)
    if background and not mount.log_file and os.path.exists("/dev/log"):
        try:
            syslog = logging.handlers.SysLogHandler(address="/dev/log")
            syslog.setFormatter(logging.Formatter("storagefs[%(process)d]: %(message)s"))
            syslog.setLevel(logging.WARNING)
            root.addHandler(syslog)
        except OSError:
            pass
    handler.addFilter(_redact_signatures)
    # Every HTTP request (urllib3, at debug) and fusepy's own complaints, in the same place.
    # fusepy's debug lines only repeat, with tracebacks, the errno we chose: left out.
    for name, level in (("urllib3", logging.DEBUG if mount.debug else logging.WARNING),
                        ("fuse", logging.WARNING)):
        other = logging.getLogger(name)
        other.setLevel(level)
        other.propagate = False
        for old in list(other.handlers):
            other.removeHandler(old)
        other.addHandler(handler)


_SIGNATURE = re.compile(r"((?:sig|signature|x-goog-signature|x-amz-signature|x-goog-credential"
                        r"|x-amz-credential|x-amz-security-token)=)[^&\s\"']+", re.I)


def _redact_signatures(record: logging.LogRecord) -> bool:
    """Signed URLs are credentials while they last: logs keep their path, not their signature."""
    message = record.getMessage()
    redacted = _SIGNATURE.sub(r"\1…", message)
    if redacted != message:
        record.msg, record.args = redacted, ()
    return True


def _detach_output(mount: MountConfig) -> None:
    """Background child, once mounted: stdout/stderr no longer go to the parent's files."""
    target = os.open(mount.log_file or os.devnull, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    for fd in (1, 2):
        os.dup2(target, fd)
    os.close(target)


def _supervise(mount: MountConfig, client: ClientConfig) -> int:
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


# -- umount ----------------------------------------------------------------------------------


def run_umount_command(args: argparse.Namespace) -> int:
    return umount(Path(os.path.abspath(args.mountpoint)), lazy=args.lazy)


def umount(path: Path, lazy: bool = False, wait: float = 10.0) -> int:
    stale = False
    try:
        os.stat(path)
    except FileNotFoundError:
        print(f"storagefs umount: {path} does not exist", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        stale = exc.errno == errno.ENOTCONN
    if not stale and not os.path.ismount(path):
        print(f"storagefs umount: {path} is not mounted", file=sys.stderr)
        return EXIT_ERROR
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool:
        cmd = [tool, "-u"] + (["-z"] if lazy else []) + [str(path)]
    elif os.geteuid() == 0:
        cmd = ["umount"] + (["-l"] if lazy else []) + [str(path)]
    else:
        print("storagefs umount: fusermount is missing (install it: apt-get install fuse3)",
              file=sys.stderr)
        return EXIT_ERROR
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        detail = " ".join((result.stderr or result.stdout).split()) or f"{cmd[0]} failed"
        hint = ""
        if "busy" in detail.lower():
            hint = (f" (close the programs using it, see 'fuser -vm {path}', "
                    "or use storagefs umount --lazy)")
        print(f"storagefs umount: {detail}{hint}", file=sys.stderr)
        return EXIT_ERROR
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            if not os.path.ismount(path):
                break
        except OSError:
            pass
        time.sleep(0.05)
    return EXIT_OK


# -- mount.storagefs: the helper mount(8) runs for fstab entries of type "storagefs" ----------

# mount(8) options that mean nothing to FUSE or to us.
_MOUNT8_ONLY = {"defaults", "auto", "noauto", "user", "users", "nouser", "owner", "group",
                "_netdev", "nofail", "rw", "ro", "exec", "noexec", "suid", "nosuid", "dev",
                "nodev", "sync", "async", "atime", "noatime", "relatime", "strictatime",
                "nodiratime", "diratime", "loud", "silent"}
_OURS = {"api_url", "api_key_file", "region", "cache_size", "cache_dir", "cache_dir_size",
         "metadata_ttl", "zip_as", "log_file", "debug"}


def mount_helper(argv: list[str] | None = None) -> int:
    """``mount.storagefs SOURCE MOUNTPOINT [-o OPTIONS]``, as mount(8) calls it.

    SOURCE is the API URL (``http(s)://...``), or any word (``storagefs``) to take it from the
    ``api_url=`` option, the environment or the config file. Options are ours (``api_url``,
    ``api_key_file``, ``region``, ``cache_size``, ``cache_dir``, ``cache_dir_size``,
    ``metadata_ttl``, ``zip_as``,
    ``log_file``, ``debug``), FUSE's (``allow_other``, ``uid``, ``gid``, ``umask``, ...) or
    mount(8)'s own (``noauto``, ``_netdev``, ``user``..., ignored).
    """
    parser = argparse.ArgumentParser(prog="mount.storagefs",
                                     description="Mount storagefs from /etc/fstab.")
    parser.add_argument("source")
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("-o", dest="options", action="append", default=[])
    for flag in ("-n", "-v", "-s", "-f"):  # no mtab, verbose, sloppy, fake: from mount(8)
        parser.add_argument(flag, action="store_true")
    args = parser.parse_args(argv)
    ours: dict[str, str | bool] = {}
    fuse: list[str] = []
    for item in args.options:
        for part in item.split(","):
            name, sep, value = part.strip().partition("=")
            if not name or name in _MOUNT8_ONLY or name.startswith(("x-", "comment")):
                continue
            if name in _OURS:
                ours[name] = value if sep else True
            else:
                fuse.append(part.strip())
    if args.f:
        return EXIT_OK
    api_key = None
    if ours.get("api_key_file"):
        try:
            api_key = Path(str(ours["api_key_file"])).expanduser().read_text().strip()
        except OSError as exc:
            print(f"mount.storagefs: cannot read api_key_file: {exc.strerror}", file=sys.stderr)
            return EXIT_ERROR
    api_url = ours.get("api_url") or (args.source if "://" in args.source else None)
    try:
        mount = MountConfig(
            mountpoint=Path(os.path.abspath(args.mountpoint)),
            fuse_options=(",".join(fuse),) if fuse else (),
            cache_size=parse_size(str(ours.get("cache_size", MountConfig.cache_size))),
            cache_dir=Path(str(ours["cache_dir"])) if ours.get("cache_dir") else None,
            cache_dir_size=parse_size(str(ours.get("cache_dir_size",
                                                   MountConfig.cache_dir_size))),
            metadata_ttl=float(ours.get("metadata_ttl", MountConfig.metadata_ttl)),
            negative_ttl=min(float(ours.get("metadata_ttl", MountConfig.metadata_ttl)),
                             MountConfig.negative_ttl),
            zip_as=str(ours.get("zip_as", "dir")),
            log_file=Path(str(ours["log_file"])) if ours.get("log_file") else None,
            debug=bool(ours.get("debug")),
        )
    except ValueError as exc:
        print(f"mount.storagefs: {exc}", file=sys.stderr)
        return EXIT_USAGE
    client = ClientConfig.from_env(api_url=api_url, api_key=api_key,
                                   region=ours.get("region") or None)
    return run(mount, patient_enough(client))


if __name__ == "__main__":
    sys.exit(mount_helper())
