"""The storage verbs of the command line, mirroring ``inductiva storage``.

Each verb is argparse -> ``ClientConfig`` -> one call into ``storage``; errors travel up as
``StorageError`` to the one handler in ``cli.main`` (one line, exit 1; ``--debug`` shows the
traceback). Usage errors exit 2 through argparse.
"""

from __future__ import annotations

import argparse
import sys
import textwrap

from .. import storage
from ..client import StorageClient
from ..config import ClientConfig
from ..errors import EXIT_ERROR, EXIT_OK, EXIT_USAGE, StorageError
from ..zipfmt import codecs
from .formatting import bytes_formatter, table
from .overwrite import overwriting


def _connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection")
    group.add_argument("--api-url", metavar="URL",
                       help="storage API base URL (default: $INDUCTIVA_API_URL, the config file, "
                       "or the public Inductiva API)")
    group.add_argument("--api-key", metavar="KEY",
                       help="API key (default: $INDUCTIVA_API_KEY, the config file, or "
                       "~/.inductiva/api_key)")
    group.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return common


def _region(parser: argparse.ArgumentParser, extra: str = "") -> None:
    parser.add_argument("-r", "--region", default=None,
                        help="storage region (default: the user's default region)" + extra)


def _wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true",
                        help="wait for the server-side operation to finish")


def add_commands(subparsers) -> None:
    """Registers ls, download, upload, rm, cp, zip-ls, size and export."""
    common = _connection_options()

    def add(name: str, aliases: list[str], help_text: str, run, epilog: str = ""):
        parser = subparsers.add_parser(
            name, aliases=aliases, parents=[common], help=help_text,
            description=help_text[0].upper() + help_text[1:],
            epilog=textwrap.dedent(epilog) or None,
            formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.set_defaults(run=lambda args: _with_client(args, run))
        return parser

    p = add("ls", ["list"], "list a storage folder", run_ls, """\
        examples:
          storagefs ls                       # the 10 newest top-level folders
          storagefs ls my_data --all -o size""")
    p.add_argument("path", nargs="?", default="/", help="folder to list (default: the root)")
    p.add_argument("-m", "--max-results", type=int, default=10,
                   help="number of entries to show (default: %(default)s)")
    p.add_argument("-o", "--order-by", choices=["creation_time", "size", "name"],
                   default="creation_time", help="sort key (default: %(default)s)")
    p.add_argument("-s", "--sort-order", choices=["desc", "asc"], default="desc",
                   help="sort order (default: %(default)s)")
    p.add_argument("--all", action="store_true", help="list every entry, ignoring -m")
    p.add_argument("--sizes", action="store_true", help="compute the size of sub-folders")
    _region(p, "; 'all' lists every region")

    p = add("download", ["dl"], "download a file or folder, or one file inside a zip", run_download,
            """\
        examples:
          storagefs download my_data ./here            # -> ./here/my_data/...
          storagefs download TASK/output.zip/stdout.txt  # -> ./TASK/output/stdout.txt
          storagefs download TASK/output.zip --decompress""")
    p.add_argument("remote_path", help="storage path; may name a file inside a .zip")
    p.add_argument("local_dir", nargs="?", default="",
                   help="local folder to download into (default: the current folder)")
    p.add_argument("--decompress", action="store_true",
                   help="extract downloaded .zip files (and remove them)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace local files that differ from the stored ones (default: refuse; "
                   "identical ones are always skipped)")
    _region(p)

    p = add("upload", ["ul"], "upload a file or folder", run_upload, """\
        examples:
          storagefs upload results.csv my_data    # -> my_data/results.csv
          storagefs upload ./inputs my_data       # -> my_data/<files under ./inputs>""")
    p.add_argument("local_path", help="local file or folder")
    p.add_argument("remote_dir", help="storage folder to upload into")
    _region(p)

    p = add("rm", ["remove"], "remove files or folders from storage", run_rm)
    p.add_argument("paths", nargs="*", help="storage paths to remove")
    p.add_argument("-y", "--yes", dest="confirm", action="store_true",
                   help="do not ask for confirmation")
    p.add_argument("-a", "--all", action="store_true",
                   help="remove everything, in every region")
    _region(p, "; ignored with --all")

    p = add("cp", ["copy"], "copy a file or folder inside storage (server side)", run_cp)
    p.add_argument("source", help="storage path to copy")
    p.add_argument("target", help="destination storage path")
    _region(p)
    _wait(p)

    p = add("zip-ls", [], "list the members of a zip stored in storage", run_zip_ls, """\
        examples:
          storagefs zip-ls TASK/output.zip artifacts --recursive""")
    p.add_argument("path", help="storage path of the .zip")
    p.add_argument("zip_relative_path", nargs="?", default="",
                   help="folder inside the archive (default: its root)")
    p.add_argument("--recursive", action="store_true", help="list everything below the folder")
    _region(p)

    add("size", [], "show the storage used and its monthly cost", run_size)

    p = add("export", [], "export a stored file to an S3 bucket (multipart, server side)",
            run_export, """\
        Needs boto3 (pip install 'storagefs[aws]'), AWS credentials and region.
        examples:
          storagefs export TASK/output.zip --bucket-name my-bucket --wait""")
    p.add_argument("path_to_export", help="storage path of the file to export")
    p.add_argument("--export-to", type=storage.ExportDestination,
                   choices=list(storage.ExportDestination),
                   default=storage.ExportDestination.AWS_S3,
                   help="destination service (default: %(default)s)")
    p.add_argument("--bucket-name", required=True, help="destination bucket")
    p.add_argument("--file-name", help="object name in the bucket (default: the file's name)")
    p.add_argument("--part-size", type=int, default=128,
                   help="part size in MiB, at least 5 (default: %(default)s)")
    _region(p)
    _wait(p)


def _with_client(args: argparse.Namespace, run) -> int:
    """Typed config from the arguments, one client for the command, then the command."""
    config = ClientConfig.from_env(api_url=args.api_url, api_key=args.api_key)
    with StorageClient(config) as client, storage.using(client, progress=not args.quiet):
        return run(args)


def run_ls(args: argparse.Namespace) -> int:
    storage.listdir(path=args.path, region=args.region,
                    max_results=None if args.all else args.max_results,
                    order_by=args.order_by, sort_order=args.sort_order,
                    recursive=args.sizes)
    return EXIT_OK


def run_download(args: argparse.Namespace) -> int:
    with overwriting(args.overwrite):
        path = storage.download(remote_path=args.remote_path, local_dir=args.local_dir,
                                decompress=args.decompress, region=args.region)
    print(f"Downloaded {args.remote_path} to {path}")
    return EXIT_OK


def run_upload(args: argparse.Namespace) -> int:
    storage.upload(args.local_path, args.remote_dir, args.region)
    print(f"Uploaded {args.local_path} to {args.remote_dir}")
    return EXIT_OK


def _confirm(paths: list[str], everything: bool) -> bool:
    if everything:
        print("You are about to remove ALL the contents of your remote storage space.")
    else:
        print("You are about to remove the following paths from your remote storage space:")
        for path in paths:
            print(f"- {path}")
    print("Are you sure you want to proceed (y/[N])? ", end="", flush=True)
    try:
        answer = sys.stdin.readline()
    except (OSError, ValueError):
        answer = ""
    if not answer.endswith("\n"):
        print()
    return answer.strip().lower() in ("y", "yes")


def run_rm(args: argparse.Namespace) -> int:
    if not args.paths and not args.all:
        print("storagefs rm: error: name at least one path, or --all", file=sys.stderr)
        return EXIT_USAGE
    if not args.confirm and not _confirm(args.paths, args.all):
        print("Nothing removed.", file=sys.stderr)
        return EXIT_ERROR
    if args.all:
        entries = storage.listdir(max_results=None, region="all", print_results=False)
        targets = [(e["name"], e["region"]) for e in entries]
    else:
        targets = [(path, args.region) for path in args.paths]
    failed = 0
    for path, region in targets:
        try:
            storage.remove(remote_path=path, region=region)
            print(f"Removed {path}")
        except StorageError as exc:  # report each path, go on with the others
            print(f"storagefs: error: {exc}", file=sys.stderr)
            failed += 1
    return EXIT_ERROR if failed else EXIT_OK


def _report(op: storage.StorageOperation | None, wait: bool, what: str) -> int:
    if op is None:
        print(f"{what}: requested")
        return EXIT_OK
    status = op.wait(poll_s=1) if wait else op.status
    detail = f" ({op.error_message})" if op.error_message else ""
    print(f"{what}: {status}{detail} [operation {op.id}]")
    return EXIT_ERROR if status == "FAILED" else EXIT_OK


def run_cp(args: argparse.Namespace) -> int:
    op = storage.copy(args.source, args.target, args.region)
    return _report(op, args.wait, f"copy {args.source} -> {args.target}")


def run_zip_ls(args: argparse.Namespace) -> int:
    info = storage.get_zip_contents(args.path, args.zip_relative_path, args.recursive,
                                    args.region)
    rows = [[f.name, bytes_formatter(f.size), bytes_formatter(f.compressed_size),
             None if f.name.endswith("/") or f.compress_type is None
             else codecs.method_name(f.compress_type),
             f.creation_time.strftime("%Y-%m-%d %H:%M:%S") if f.creation_time else None]
            for f in info.files]
    print(table(rows, ["Name", "Size", "Compressed", "Method", "Modified"]))
    print(f"Archive size: {bytes_formatter(info.size)}; {len(info.files)} entries.")
    return EXIT_OK


def run_size(args: argparse.Namespace) -> int:
    storage.get_space_used()
    return EXIT_OK


def run_export(args: argparse.Namespace) -> int:
    op = storage.export(path_to_export=args.path_to_export, export_to=args.export_to,
                        bucket_name=args.bucket_name, file_name=args.file_name,
                        part_size=args.part_size, region=args.region)
    return _report(op, args.wait, f"export {args.path_to_export}")
