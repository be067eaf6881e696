"""The ``mount`` and ``umount`` verbs: their arguments, and the configs built from them.

``configs_from_args`` is the one place where mount arguments become a ``MountConfig`` and a
``ClientConfig``; ``mount.storagefs`` (``fstab``) parses its options with the same
``add_mount_arguments`` and builds through the same function.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from ...config import API_KEY_ENV, API_URL_ENV, ClientConfig
from ...errors import EXIT_USAGE
from ..config import NEGATIVE_SIZE, ZIP_AS, MountConfig, parse_size
from .daemon import run
from .umount import umount


def add_commands(subparsers) -> None:
    """Adds ``mount`` and ``umount`` to the ``storagefs`` command."""
    p = subparsers.add_parser(
        "mount", help="mount the storage as a local folder (ZIP archives as folders)",
        description="Mount the remote storage at MOUNTPOINT, read-only unless --read-write. "
                    "Every *.zip shows as a folder of its members, read on demand with ranged "
                    "requests (one that cannot be read as an archive: as the plain file it "
                    "is, once listed); archives stay read-only.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""\
examples:
  storagefs mount ~/storage               # in the background; 'storagefs umount' ends it
  storagefs mount -f ~/storage --cache-dir ~/.cache/storagefs    # foreground, disk cache
  cat ~/storage/TASK/output.zip/stdout.txt   # a member, read without the whole archive
  storagefs mount --read-write ~/storage  # files written there are uploaded at close""")
    add_mount_arguments(p)
    p.set_defaults(run=run_mount_command)

    u = subparsers.add_parser("umount", help="unmount a storagefs mount",
                              description="Unmount MOUNTPOINT (also a stale one).",
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""\
examples:
  storagefs umount ~/storage
  storagefs umount -z ~/storage    # a process still has a file open there""")
    u.add_argument("mountpoint", type=Path, help="the folder a storagefs mount is on")
    u.add_argument("-z", "--lazy", action="store_true",
                   help="detach now even if busy; finish when the last user closes it")
    u.set_defaults(run=run_umount_command)


def add_mount_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``storagefs mount``, which ``configs_from_args`` reads."""
    p.add_argument("mountpoint", type=Path, help="an existing, empty folder")
    p.add_argument("--api-url", metavar="URL",
                   help=f"storage API (default: ${API_URL_ENV} or the config file)")
    p.add_argument("--api-key", metavar="KEY",
                   help=f"API key (default: ${API_KEY_ENV}, the config file or "
                   "~/.inductiva/api_key)")
    p.add_argument("--region", help="storage region (default: the account's)")
    p.add_argument("-f", "--foreground", action="store_true",
                   help="stay in the foreground; Ctrl-C unmounts")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS",
                   help="FUSE options, comma-separated: allow_other, uid=N, gid=N, umask=...")
    p.add_argument("--cache-size", type=_size, default=MountConfig.cache_size, metavar="SIZE",
                   help="memory for decoded data, 16M up to the machine's memory (default: 256M)")
    p.add_argument("--cache-dir", type=Path,
                   help="keep fetched ranges and deflate checkpoints in this folder, for this "
                   "and later mounts")
    p.add_argument("--cache-dir-size", type=_size, default=MountConfig.cache_dir_size,
                   metavar="SIZE",
                   help="at most this much in --cache-dir, 16M or more (default: 4G)")
    p.add_argument("--metadata-ttl", type=float, default=MountConfig.metadata_ttl,
                   metavar="SECONDS", help="how long listings are trusted (default: %(default)s)")
    p.add_argument("--zip-as", choices=ZIP_AS, default="dir",
                   help="show *.zip as a folder of members (dir, default) or as the raw file")
    p.add_argument("--log-file", type=Path, help="write the log here (default: stderr in the "
                   "foreground; in the background syslog, or where there is none "
                   "$XDG_STATE_HOME/storagefs/mount-NAME.log, ~/.local/state by default)")
    p.add_argument("--read-write", action="store_true",
                   help="allow creating, writing, renaming and removing files: each file is "
                   "staged on local disk and uploaded when closed (see --write-dir)")
    p.add_argument("--write-dir", type=Path, metavar="DIR",
                   help="stage written files here, and keep those whose upload failed in its "
                   "recovery/ folder (default: CACHE_DIR/write, else "
                   "~/.cache/storagefs/write)")
    p.add_argument("--write-max-size", type=_size, default=MountConfig.write_max_size,
                   metavar="SIZE", help="refuse to let a written file grow past SIZE "
                   "(default: 1T)")
    p.add_argument("--unmount-timeout", type=float, default=MountConfig.unmount_timeout,
                   metavar="SECONDS", help="at unmount, wait this long for uploads still "
                   "running (default: %(default)g)")
    p.add_argument("--write-retry-interval", type=float,
                   default=MountConfig.write_retry_interval, metavar="SECONDS",
                   help="retry uploads kept in the recovery folder this often while mounted "
                   "(default: %(default)g)")
    p.add_argument("--debug", dest="mount_debug", action="store_true",
                   help="log every HTTP request and failed operation")
    # argparse takes "-5M" for an unknown option ("expected one argument"); told that it is
    # a value, it reaches ``_size``, which says a size cannot be negative. (The attribute is
    # argparse's own, unchanged from 3.8 to 3.13; no option of ours looks like a number.)
    p._negative_number_matcher = NEGATIVE_SIZE


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def configs_from_args(args: argparse.Namespace) -> tuple[MountConfig, ClientConfig]:
    """Raises ``ValueError`` for values that parse but make no sense (a negative TTL...)."""
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
        read_write=bool(getattr(args, "read_write", False)),
        write_dir=Path(os.path.abspath(args.write_dir)) if getattr(args, "write_dir", None)
        else None,
        write_max_size=getattr(args, "write_max_size", MountConfig.write_max_size),
        unmount_timeout=getattr(args, "unmount_timeout", MountConfig.unmount_timeout),
        write_retry_interval=getattr(args, "write_retry_interval",
                                     MountConfig.write_retry_interval),
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


def run_mount_command(args: argparse.Namespace) -> int:
    try:
        mount, client = configs_from_args(args)
    except ValueError as exc:
        print(f"storagefs mount: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return run(mount, client)


def run_umount_command(args: argparse.Namespace) -> int:
    return umount(Path(os.path.abspath(args.mountpoint)), lazy=args.lazy)
