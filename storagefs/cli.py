"""The ``storagefs`` command: ``main(argv) -> int``.

Each verb is argparse -> typed config -> one call; the verbs of the mount and of the storage
library add themselves (``mount.command.arguments``, ``storage.cli``). Errors end here: one
line on stderr and exit 1, or the traceback with ``--debug``.
"""

from __future__ import annotations

import argparse
import logging
import re
import secrets
import sys
from pathlib import Path

from . import __version__
from .config import (API_KEY_ENV, API_KEY_FILE, API_URL_ENV, CONFIG_FILE, CONFIG_FILE_ENV,
                     DEFAULT_API_URL, ServerConfig)
from .errors import EXIT_ERROR, EXIT_OK, StorageError

_KEY_PATTERN = re.compile(r"^[A-Za-z0-9._-]+$")  # what the official client accepts


def _api_key(value: str) -> str:
    if not _KEY_PATTERN.match(value):
        raise argparse.ArgumentTypeError("API keys may hold only letters, digits, '.', '_' and '-'")
    return value


def add_serve(subparsers) -> None:
    p = subparsers.add_parser("serve", help="serve a folder as Inductiva-compatible storage",
                              description="Serve ROOT over the Inductiva storage REST protocol.")
    p.add_argument("root", type=Path, help="folder to serve (created if missing)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--api-key", dest="api_keys", action="append", type=_api_key, default=[],
                   metavar="KEY", help="accepted API key (repeatable); without one, a key is "
                   "generated and printed")
    p.add_argument("--region", default="local", help="region name reported (default: %(default)s)")
    p.add_argument("--public-url", help="base URL put in signed URLs (default: the request's)")
    p.add_argument("--signing-key-file", type=Path,
                   help="file holding the HMAC key for signed URLs, so URLs survive a restart")
    p.add_argument("--url-ttl", type=int, default=6 * 3600, metavar="SECONDS",
                   help="lifetime of signed URLs (default: %(default)s)")
    p.add_argument("--allow-private-urls", action="store_true",
                   help="let upload-from-URL and export reach loopback and private addresses")
    p.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from .server import serve

    keys = tuple(args.api_keys)
    if not keys:
        keys = (secrets.token_urlsafe(24),)
        print(f"storagefs serve: generated API key: {keys[0]}", flush=True)
    signing_key = args.signing_key_file.read_bytes().strip() if args.signing_key_file else None
    config = ServerConfig(root=args.root, host=args.host, port=args.port, api_keys=keys,
                          region=args.region, public_url=args.public_url, signing_key=signing_key,
                          signed_url_ttl_s=args.url_ttl, allow_private_urls=args.allow_private_urls)
    print(f"storagefs serve: {args.root} on http://{args.host}:{args.port}", flush=True)
    serve(config)
    return EXIT_OK


DESCRIPTION = """\
Remote simulation storage (the Inductiva storage API) as a local drive.

  serve          serve a local folder as Inductiva-compatible storage, for a
                 first run, self-hosting or tests (needs storagefs[server])
  mount, umount  the storage as a read-only folder in which every ZIP archive is
                 a folder of its members, read on demand; umount undoes it
  ls, download, upload, rm, cp, zip-ls, size, export
                 the Inductiva SDK's storage functions, as commands"""

EPILOG = f"""\
Run 'storagefs COMMAND --help' for the arguments of one command.

environment (for mount and the storage commands):
  {API_URL_ENV}  the storage API (default: {DEFAULT_API_URL})
  {API_KEY_ENV}  your API key (default: {API_KEY_FILE}, where the
                     inductiva client keeps it)
  --api-url and --api-key win over these; these win over the [storagefs] section
  of {CONFIG_FILE} (or of the file ${CONFIG_FILE_ENV} names)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storagefs", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"storagefs {__version__}")
    parser.add_argument("--debug", action="store_true", help="log details and show tracebacks")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                       title="commands")
    add_serve(subparsers)
    from .mount.command.arguments import add_commands as add_mount_commands  # mount, umount
    add_mount_commands(subparsers)
    from .storage.cli import add_commands  # ls, download, upload, rm, cp, zip-ls, size, export
    add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return EXIT_ERROR
    except StorageError as exc:
        if args.debug:
            raise
        print(f"storagefs: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        if args.debug:
            raise
        print(f"storagefs: error: {exc.strerror or exc}"
              f"{': ' + str(exc.filename) if exc.filename else ''}", file=sys.stderr)
        return EXIT_ERROR
