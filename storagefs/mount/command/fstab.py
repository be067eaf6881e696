"""``mount.storagefs``: the helper mount(8) runs for fstab entries of type "storagefs".

Its ``-o`` options become ``storagefs mount`` arguments, parsed by the same parser and built
into configs by the same function (``arguments.configs_from_args``), so an fstab entry and the
command line mean the same thing.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from ...errors import EXIT_ERROR, EXIT_OK, EXIT_USAGE
from .arguments import add_mount_arguments, configs_from_args
from .daemon import run

# mount(8) options that mean nothing to FUSE or to us.
_MOUNT8_ONLY = {"defaults", "auto", "noauto", "user", "users", "nouser", "owner", "group",
                "_netdev", "nofail", "ro", "exec", "noexec", "suid", "nosuid", "dev",
                "nodev", "sync", "async", "atime", "noatime", "relatime", "strictatime",
                "nodiratime", "diratime", "loud", "silent"}
# Ours: each is the ``storagefs mount`` argument of the same name (cache_size: --cache-size),
# except api_key_file, which is read here so that the key is never an option's value.
_OURS = {"api_url", "api_key_file", "region", "cache_size", "cache_dir", "cache_dir_size",
         "metadata_ttl", "zip_as", "log_file", "debug", "write_dir", "write_max_size",
         "unmount_timeout", "write_retry_interval"}
# Switches: any value turns them on. ``rw`` is ``--read-write`` (without it: read-only).
_SWITCHES = {"debug": "--debug", "rw": "--read-write"}


def mount_helper(argv: list[str] | None = None) -> int:
    """``mount.storagefs SOURCE MOUNTPOINT [-o OPTIONS]``, as mount(8) calls it.

    SOURCE is the API URL (``http(s)://...``), or any word (``storagefs``) to take it from the
    ``api_url=`` option, the environment or the config file. Options are ours (``api_url``,
    ``api_key_file``, ``region``, ``cache_size``, ``cache_dir``, ``cache_dir_size``,
    ``metadata_ttl``, ``zip_as``, ``log_file``, ``debug``, ``rw`` (``--read-write``),
    ``write_dir``, ``write_max_size``, ``unmount_timeout``, ``write_retry_interval``), FUSE's
    (``allow_other``, ``uid``, ``gid``, ``umask``, ...) or mount(8)'s own (``noauto``,
    ``_netdev``, ``user``..., ignored).
    """
    parser = argparse.ArgumentParser(
        prog="mount.storagefs", description="Mount storagefs from /etc/fstab.",
        epilog="api_key_file names a file that holds the API key; each of our other options "
               "means what the 'storagefs mount' argument of the same name means (see "
               "'storagefs mount --help').")
    parser.add_argument("source", help="the API URL, or a word (storagefs) to take it from "
                        "api_url=, $INDUCTIVA_API_URL or the config file")
    parser.add_argument("mountpoint", type=Path, help="an existing, empty folder")
    parser.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS",
                        help=f"comma-separated: ours ({', '.join(sorted(_OURS))}), FUSE's "
                        "(allow_other, uid=N, ...) or mount(8)'s (ignored)")
    for flag in ("-n", "-v", "-s"):  # no mtab, verbose, sloppy: from mount(8)
        parser.add_argument(flag, action="store_true", help="ignored (from mount(8))")
    parser.add_argument("-f", action="store_true", help="fake: mount nothing")
    args = parser.parse_args(argv)
    ours, fuse = _split_options(args.options)
    if args.f:
        return EXIT_OK
    mount_argv = [os.path.abspath(args.mountpoint)]
    if fuse:
        mount_argv.append("-o=" + ",".join(fuse))
    key_file = ours.pop("api_key_file", None)
    if key_file:
        try:
            api_key = Path(str(key_file)).expanduser().read_text().strip()
        except OSError as exc:
            print(f"mount.storagefs: cannot read api_key_file: {exc.strerror}", file=sys.stderr)
            return EXIT_ERROR
        mount_argv.append(f"--api-key={api_key}")
    if not ours.get("api_url") and "://" in args.source:
        ours["api_url"] = args.source
    for name, value in ours.items():
        if value == "":  # "name=" is as if not given
            continue
        if name in _SWITCHES:  # any value turns a switch on; the others need their value
            mount_argv.append(_SWITCHES[name])
            continue
        flag = "--" + name.replace("_", "-")
        mount_argv.append(flag if value is True else f"{flag}={value}")
    options = argparse.ArgumentParser(prog="mount.storagefs", add_help=False,
                                      exit_on_error=False)
    add_mount_arguments(options)
    try:
        mount, client = configs_from_args(options.parse_args(mount_argv))
    except argparse.ArgumentError as exc:
        print(f"mount.storagefs: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"mount.storagefs: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if key_file:  # a refused key is reported where the user wrote it
        client = dataclasses.replace(client, api_key_source=f"api_key_file={key_file}")
    return run(mount, client)


def _split_options(items: list[str]) -> tuple[dict[str, str | bool], list[str]]:
    """``-o`` values -> (ours as ``{name: value or True}``, FUSE's as given)."""
    ours: dict[str, str | bool] = {}
    fuse: list[str] = []
    for item in items:
        for part in item.split(","):
            name, sep, value = part.strip().partition("=")
            if not name or name in _MOUNT8_ONLY or name.startswith(("x-", "comment")):
                continue
            if name in _OURS or name in _SWITCHES:
                ours[name] = value if sep else True
            else:
                fuse.append(part.strip())
    return ours, fuse
