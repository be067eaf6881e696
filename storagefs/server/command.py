"""The ``serve`` verb: every argument checked before anything starts, the URL once it listens.

A value that cannot be right (a port past 65535, a TTL of 0, a public URL without a scheme) is
a usage error, exit 2. What only the machine can answer (the folder, the key file, whether the
port is free on that host) is checked next, in that order, each fault one line and exit 1; the
folder (and the server's state in it) is made last, once the port is bound. The listening socket
is bound here and handed to uvicorn, so the port checked is the port served, and the URL is
printed when uvicorn has started on it.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from ..config import ServerConfig
from ..errors import EXIT_ERROR, EXIT_OK, EXIT_USAGE

_KEY_PATTERN = re.compile(r"^[A-Za-z0-9._-]+$")  # what the official client accepts
MAX_PORT = 65535


class ServeError(Exception):
    """A reason not to start, in one line that says what to change."""


# -- argument types (usage errors) --------------------------------------------------------------

def _api_key(value: str) -> str:
    if not _KEY_PATTERN.match(value):
        raise argparse.ArgumentTypeError("API keys may hold only letters, digits, '.', '_' and '-'")
    return value


def _port(value: str) -> int:
    if not value.isdigit() or int(value) > MAX_PORT:
        raise argparse.ArgumentTypeError(
            f"expected a port number from 0 to {MAX_PORT} (0: any free port), got {value!r}")
    return int(value)


def _seconds(value: str) -> int:
    if not value.isdigit() or int(value) == 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of seconds above 0, "
                                         f"got {value!r}")
    return int(value)


def _workers(value: str) -> int:
    if not value.isdigit() or int(value) == 0:
        raise argparse.ArgumentTypeError(f"expected a number of processes above 0, "
                                         f"got {value!r}")
    return int(value)


def _count(value: str) -> int:
    if not value.isdigit() or int(value) == 0:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {value!r}")
    return int(value)


def default_workers() -> int:
    """One process per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _public_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            f"expected an http:// or https:// URL such as http://{value}, got {value!r}")
    return value.rstrip("/")


def _store_url(value: str) -> str:
    if not value.startswith("s3://") or len(value) <= len("s3://") \
            or value[len("s3://")] == "/":
        raise argparse.ArgumentTypeError(f"expected s3://BUCKET or s3://BUCKET/PREFIX, "
                                         f"got {value!r}")
    return value


def add_commands(subparsers) -> None:
    """Registers ``serve``."""
    p = subparsers.add_parser(
        "serve", help="serve a folder or S3 bucket as Inductiva storage",
        description="Serve ROOT (or the bucket named by --store) over the Inductiva storage "
                    "REST protocol. The URL is printed once the server listens; Ctrl-C stops "
                    "it.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""\
examples:
  storagefs serve ./store --api-key my.key       # http://127.0.0.1:8000
  storagefs serve ./store --port 0               # any free port, printed at start
  storagefs serve /srv/data --host 0.0.0.0 --port 9000 --signing-key-file key.bin
  storagefs serve --store s3://my-bucket/team   # AWS credentials from the usual places
  storagefs serve --store s3://demo --s3-endpoint-url http://127.0.0.1:9000  # MinIO, ...""")
    p.add_argument("root", type=Path, nargs="?",
                   help="folder to serve (created if missing); not with --store")
    p.add_argument("--store", type=_store_url, metavar="s3://BUCKET[/PREFIX]",
                   help="serve this bucket (or prefix of it) instead of a folder; clients read "
                   "and write through the store's own presigned URLs")
    p.add_argument("--s3-endpoint-url", type=_public_url, metavar="URL",
                   help="the S3 API's address for a store other than AWS (Google Cloud Storage: "
                   "https://storage.googleapis.com; MinIO, Ceph RGW: theirs)")
    p.add_argument("--uploads-through-server", action="store_true",
                   help="with --store: upload URLs point at this server, which streams the "
                   "bytes into the bucket (for clients that send chunked PUTs, such as the "
                   "official inductiva client: S3 refuses those on its own URLs)")
    p.add_argument("--s3-region", metavar="NAME",
                   help="the bucket's region (default: from the AWS configuration, else "
                   "us-east-1)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=_port, default=8000,
                   help="port, 0 for any free one (default: %(default)s)")
    p.add_argument("--api-key", dest="api_keys", action="append", type=_api_key, default=[],
                   metavar="KEY", help="accepted API key (repeatable); without one, a key is "
                   "generated and printed")
    p.add_argument("--region", default="local", help="region name reported (default: %(default)s)")
    p.add_argument("--public-url", type=_public_url, metavar="URL",
                   help="base URL put in signed URLs (default: the request's)")
    p.add_argument("--signing-key-file", type=Path, metavar="FILE",
                   help="file holding the HMAC key for signed URLs, so URLs survive a restart")
    p.add_argument("--url-ttl", type=_seconds, default=6 * 3600, metavar="SECONDS",
                   help="lifetime of signed URLs (default: %(default)s)")
    p.add_argument("--workers", type=_workers, default=default_workers(), metavar="N",
                   help="processes answering on the port (default: the number of cores, "
                   "%(default)s here; 1: a single process)")
    p.add_argument("--max-zip-entries", type=_count, default=ServerConfig.max_zip_entries,
                   metavar="N", help="refuse to index archives of more members (413; default: "
                   "%(default)s, about 0.3 GB of memory per million while indexed)")
    p.add_argument("--allow-private-urls", action="store_true",
                   help="let upload-from-URL and export reach loopback and private addresses")
    p.set_defaults(run=run_serve)


# -- checks against the machine (exit 1) --------------------------------------------------------

def check_root(root: Path) -> None:
    """ROOT is a folder this process may write in, or one it can make."""
    if root.exists():
        if not root.is_dir():
            raise ServeError(f"{root} is not a folder: name a folder to serve (it is made if "
                             "missing)")
        if not os.access(root, os.W_OK | os.X_OK):
            raise ServeError(f"cannot write in {root}: uploads go there; serve a folder you "
                             "can write in")
        return
    existing = root.absolute().parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        why = "is not a folder" if not existing.is_dir() else "cannot be written in"
        raise ServeError(f"cannot create {root}: {existing} {why}")


def read_signing_key(path: Path | None) -> bytes | None:
    """The key in ``--signing-key-file``, stripped; a missing, unreadable or empty file is an
    error, not a silent random key (URLs would stop working at the next restart)."""
    if path is None:
        return None
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise ServeError(f"cannot read --signing-key-file {path}: "
                         f"{exc.strerror or exc}") from None
    if not key:
        raise ServeError(f"--signing-key-file {path} is empty: put a random key in it, e.g. "
                         f"head -c 32 /dev/urandom | base64 > {path}")
    return key


def require_server_extras() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ServeError(f"serving needs {exc.name}: pip install 'storagefs[server]'") from None


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, as uvicorn would bind it (SO_REUSEADDR, so a restart
    finds the port free at once); every refusal is one line that names the option to change."""
    where = f"{_url_host(host)}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ServeError(f"cannot listen on {host}: {exc.strerror}; check --host") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reasons = {
            errno.EADDRINUSE: "the port is in use; choose another --port (0: any free one)",
            errno.EACCES: "permission denied; ports below 1024 need privileges, choose "
                          "another --port",
            errno.EADDRNOTAVAIL: f"{host} is not an address of this machine; check --host",
        }
        raise ServeError(f"cannot listen on {where}: "
                         f"{reasons.get(exc.errno or 0, exc.strerror or str(exc))}") from None
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# -- the verb -----------------------------------------------------------------------------------

def check_store(url: str, endpoint_url: str | None, region: str | None) -> None:
    """The bucket answers a listing with these credentials, or one line on what to fix."""
    try:
        import boto3  # noqa: F401
    except ImportError:
        raise ServeError("serving from S3 needs boto3: pip install 'storagefs[s3]'") from None
    from ..errors import StorageError
    from .s3store import S3Location, S3Store

    try:
        S3Store(S3Location.parse(url, endpoint_url, region)).check()
    except StorageError as exc:
        raise ServeError(f"cannot serve {url}: {exc}") from None
    except Exception as exc:  # botocore's own: no credentials, a malformed endpoint...
        raise ServeError(f"cannot serve {url}: {exc}; set AWS_ACCESS_KEY_ID and "
                         "AWS_SECRET_ACCESS_KEY (or a profile) for the store") from None


def run_serve(args: argparse.Namespace) -> int:
    if (args.root is None) == (args.store is None):
        print("storagefs serve: name a folder to serve or --store s3://BUCKET, not "
              f"{'both' if args.root else 'neither'}", file=sys.stderr)
        return EXIT_USAGE
    if args.store is None and (args.s3_endpoint_url or args.s3_region
                               or args.uploads_through_server):
        print("storagefs serve: --s3-endpoint-url, --s3-region and --uploads-through-server go "
              "with --store s3://BUCKET", file=sys.stderr)
        return EXIT_USAGE
    where = args.store or str(args.root)
    try:
        if args.store:
            check_store(args.store, args.s3_endpoint_url, args.s3_region)
        else:
            check_root(args.root)
        signing_key = read_signing_key(args.signing_key_file)
        require_server_extras()
        listener = listen(args.host, args.port)
    except ServeError as exc:
        print(f"storagefs serve: {exc}", file=sys.stderr)
        return EXIT_ERROR
    with listener:
        port = listener.getsockname()[1]
        keys = tuple(args.api_keys) or (secrets.token_urlsafe(24),)
        if signing_key is None and args.workers > 1:
            signing_key = secrets.token_bytes(32)  # one key, made before the workers fork
        config = ServerConfig(root=args.root or Path("."), store=args.store,
                              s3_endpoint_url=args.s3_endpoint_url, s3_region=args.s3_region,
                              uploads_through_server=args.uploads_through_server,
                              host=args.host, port=port, api_keys=keys,
                              region=args.region, public_url=args.public_url,
                              signing_key=signing_key, signed_url_ttl_s=args.url_ttl,
                              allow_private_urls=args.allow_private_urls,
                              max_zip_entries=args.max_zip_entries)
        counters = None
        if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # Before the metrics module is imported: the workers' counters go to files there,
            # which /metrics sums (server/metrics.py).
            counters = tempfile.mkdtemp(prefix="storagefs-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = counters
        from . import prepare, run, run_workers
        try:
            app = prepare(config)
        except OSError as exc:
            print(f"storagefs serve: cannot serve {where}: {exc.strerror or exc}"
                  f"{': ' + str(exc.filename) if exc.filename else ''}", file=sys.stderr)
            return EXIT_ERROR
        if not args.api_keys:
            print(f"storagefs serve: generated API key: {keys[0]}", flush=True)
        url = f"http://{_url_host(args.host)}:{port}"

        def announce() -> None:
            print(f"storagefs serve: {where} on {url} (Ctrl-C stops it)", flush=True)

        if args.workers == 1:
            run(app, config, listener, on_listening=announce)
            return EXIT_OK
        try:
            return run_workers(app, config, listener, args.workers, on_listening=announce)
        finally:
            if counters is not None:
                shutil.rmtree(counters, ignore_errors=True)
