"""Mounting: ``run`` checks what can be checked, then serves the FUSE loop.

- ``--foreground``: the FUSE loop runs in this process until unmounted or signalled.
- otherwise: ``supervisor`` starts the same command with ``--foreground`` in a child process
  and waits until the mount answers; the child reports through the supervisor's pipe.

Logs go to ``--log-file``, else stderr in the foreground; in the background, to syslog, or
where there is no syslog to a file in the user's state folder (the success line says which),
never with the signatures of signed URLs. A foreground mount says when it is mounted and
when it is unmounted, on stdout, one line each.

With ``--read-write``, the end of the mount waits for uploads still running (up to
``--unmount-timeout``), says so, and names what is left in the recovery folder.
"""

from __future__ import annotations

import dataclasses
import logging
import logging.handlers
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ... import protocol
from ...config import ClientConfig
from ...errors import EXIT_ERROR, EXIT_OK
from ..config import MountConfig
from .checks import MountError, check_cache_dir, check_fuse, check_mountpoint, check_storage
from .supervisor import ready_fd, report_ready, supervise

if TYPE_CHECKING:
    from ...client import StorageClient

log = logging.getLogger("storagefs.mount")
SYSLOG_SOCKET = "/dev/log"


def run(mount: MountConfig, client_config: ClientConfig,
        make_client: Callable[[ClientConfig], StorageClient] | None = None) -> int:
    """Mount (see the module notes); returns the exit code. ``make_client`` is injectable."""
    if make_client is None:
        from ...client import StorageClient
        make_client = StorageClient
    if not mount.debug:  # retries are logged by urllib3; the outcome is what the user needs
        logging.getLogger("urllib3").setLevel(logging.ERROR)
    # Checking the server fails fast; the mount itself keeps the configured retries.
    probe_config = dataclasses.replace(client_config, retries=min(client_config.retries, 1))
    try:
        check_fuse()
        check_mountpoint(mount.mountpoint, mount.option_map())
        if mount.cache_dir is not None:
            check_cache_dir(mount.cache_dir)
        if mount.read_write:
            check_cache_dir(mount.write_folder)
        with make_client(probe_config) as probe:
            top = check_storage(probe)
        if not mount.foreground:
            return supervise(_with_log_place(mount), client_config)
        client = make_client(client_config)
    except MountError as exc:
        print(f"storagefs mount: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return _serve(mount, client, top)


def _serve(mount: MountConfig, client: StorageClient,
           top: list[protocol.StorageFile] | None = None) -> int:
    """The FUSE loop in this process, until unmounted or signalled."""
    from ..backend import CachedBackend, ClientBackend
    from ..fuseops import StorageOperations, fuse_options, serve_forever
    from ..read import DiskCache, ReadContext
    from ..vfs import VFS

    supervisor_fd = ready_fd()
    _setup_logging(mount, background=supervisor_fd is not None)
    options = mount.option_map()
    backend = CachedBackend(ClientBackend(client, client.config.region),
                            ttl=mount.metadata_ttl, negative_ttl=mount.negative_ttl)
    if top is not None:  # the check's listing of the top folder, while it is fresh
        backend.know_folder("", top)
    disk = DiskCache(mount.cache_dir, mount.cache_dir_size) if mount.cache_dir else None
    vfs = VFS(backend, zip_as_dir=mount.zip_as == "dir", window=mount.window_bytes,
              max_archives=mount.max_archives, negative_ttl=mount.negative_ttl,
              context=ReadContext(mount.cache_size,
                                  checkpoints=disk.checkpoints if disk else None), disk=disk)

    def ready() -> None:
        log.info("mounted %s at %s", client.config.api_url, mount.mountpoint)
        if supervisor_fd is not None:  # the supervisor says it, once the kernel agrees
            report_ready(supervisor_fd)
            _detach_output(mount)
        else:
            print(f"mounted {client.config.api_url} at {mount.mountpoint}; Ctrl-C or "
                  f"'storagefs umount {mount.mountpoint}' unmounts it", flush=True)

    uid = int(options["uid"]) if str(options.get("uid", "")).isdigit() else None
    gid = int(options["gid"]) if str(options.get("gid", "")).isdigit() else None
    writer = _write_layer(mount, vfs, backend, client) if mount.read_write else None
    operations = StorageOperations(vfs, uid=uid, gid=gid, on_ready=ready, writer=writer)
    try:
        serve_forever(operations, str(mount.mountpoint),
                      fuse_options(options, metadata_ttl=mount.metadata_ttl,
                                   read_write=mount.read_write))
    except RuntimeError:  # fusepy: fuse_main failed; libfuse printed why just before
        print(f"storagefs mount: FUSE refused to mount {mount.mountpoint}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if writer is not None:
            _finish_writes(writer, mount)
        client.close()
    log.info("unmounted %s", mount.mountpoint)
    if supervisor_fd is None:
        print(f"unmounted {mount.mountpoint}", flush=True)
    return EXIT_OK


def _write_layer(mount: MountConfig, vfs, backend, client: StorageClient):
    """The write layer of ``--read-write``, started: the recovery folder is retried at once."""
    from ..write import WriteLayer, WriteSettings

    settings = WriteSettings(mount.write_folder, max_size=mount.write_max_size,
                             min_free=mount.write_min_free,
                             retry_interval=mount.write_retry_interval,
                             origin=client.config.api_url)
    writer = WriteLayer(vfs, backend, client, settings, client.config.region)
    writer.start()
    return writer


def _finish_writes(writer, mount: MountConfig) -> None:
    """Uploads still running are waited for; what is left is named, in the log and on stderr."""
    def say(line: str) -> None:
        log.warning("%s", line)
        if mount.foreground and mount.log_file is not None:
            print(line, file=sys.stderr, flush=True)

    for line in writer.finish(mount.unmount_timeout, say=say):
        log.warning("not uploaded: %s", line)


def syslog_available() -> bool:
    return os.path.exists(SYSLOG_SOCKET)


def _with_log_place(mount: MountConfig) -> MountConfig:
    """A background mount logs to syslog; where there is none (containers, WSL), to a file in
    the user's state folder rather than nowhere (``state_log_file``)."""
    if mount.log_file is not None or syslog_available():
        return mount
    path = state_log_file(mount.mountpoint)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MountError(f"there is no syslog and the log folder {path.parent} cannot be "
                         f"made: {exc.strerror} (pass --log-file FILE)") from None
    return dataclasses.replace(mount, log_file=path)


def state_log_file(mountpoint: Path) -> Path:
    """``$XDG_STATE_HOME/storagefs/mount-<folder>.log``, ``~/.local/state`` by default."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                             "state")
    return Path(state, "storagefs", f"mount-{mountpoint.name or 'root'}.log")


def _setup_logging(mount: MountConfig, background: bool) -> None:
    level = logging.DEBUG if mount.debug else (logging.INFO if mount.log_file else logging.WARNING)
    root = logging.getLogger("storagefs")
    root.setLevel(level)
    root.propagate = False
    for old in list(root.handlers):
        root.removeHandler(old)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler: logging.Handler
    if mount.log_file:
        handler = logging.FileHandler(mount.log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(fmt)
    root.addHandler(handler)
    if background and not mount.log_file and syslog_available():
        try:
            syslog = logging.handlers.SysLogHandler(address=SYSLOG_SOCKET)
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
