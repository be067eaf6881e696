"""The storage verbs of the command line, mirroring ``inductiva storage``.

Each verb is argparse -> ``ClientConfig`` -> one call into ``storage``; errors travel up as
``StorageError`` to the one handler in ``cli.main`` (one line, exit 1; ``--debug`` shows the
traceback; Ctrl-C and a closed pipe end there too). Usage errors exit 2 through argparse, with
the verb's usage. ``ls`` prints its own summary; ``storage.listdir`` keeps the SDK's text.
"""

from __future__ import annotations

import argparse
import sys
import textwrap

from .. import storage
from ..client import StorageClient
from ..config import ClientConfig
from ..errors import EXIT_ERROR, EXIT_OK, StorageError
from ..zipfmt import codecs
from .formatting import bytes_formatter, plural, table
from .listing import list_entries, listing_table, zip_folder_contents
from .members import split_zip_path
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
    output = common.add_argument_group("output")
    output.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="draw progress bars (default: only when stderr is a terminal)")
    output.add_argument("-q", "--quiet", dest="progress", action="store_const", const=False,
                        help="no progress bars (as --no-progress)")
    output.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="log details and show tracebacks")
    return common


def _region(parser: argparse.ArgumentParser, extra: str = "") -> None:
    parser.add_argument("--region", default=None,
                        help="storage region (default: the user's default region)" + extra)


def _recursive_habit(parser: argparse.ArgumentParser, what: str) -> None:
    """``-r``/``-R`` as a Unix user types them; harmless where folders are whole anyway."""
    parser.add_argument("-r", "-R", "--recursive", action="store_true",
                        help=f"accepted for habit: {what}")


def _wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true",
                        help="wait for the server-side operation to finish")


def add_commands(subparsers) -> None:
    """Registers ls, download, upload, rm, cp, zip-ls, size and export."""
    common = _connection_options()

    def add(name: str, aliases: list[str], help_text: str, run, epilog: str):
        parser = subparsers.add_parser(
            name, aliases=aliases, parents=[common], help=help_text,
            description=help_text[0].upper() + help_text[1:],
            epilog=textwrap.dedent(epilog),
            formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.set_defaults(run=lambda args: _with_client(args, run), verb_parser=parser)
        return parser

    p = add("ls", ["list"], "list a storage folder", run_ls, """\
        Folders show the size of everything under them and the time of their newest file.

        examples:
          storagefs ls                       # the 10 newest top-level folders
          storagefs ls my_data --all -o size # everything in my_data, largest first
          storagefs ls --usage               # ... and the storage used, with its cost""")
    p.add_argument("path", nargs="?", default="/", help="folder to list (default: the root)")
    p.add_argument("-m", "--max-results", type=int, default=10, metavar="N",
                   help="number of entries to show (default: %(default)s)")
    p.add_argument("-o", "--order-by", choices=["creation_time", "size", "name"],
                   default="creation_time", help="sort key (default: %(default)s)")
    p.add_argument("-s", "--sort-order", choices=["desc", "asc"],
                   help="sort order (default: asc by name, else desc)")
    p.add_argument("-r", "--reverse", action="store_true", help="reverse the sort order")
    p.add_argument("--all", action="store_true", help="list every entry, ignoring -m")
    p.add_argument("--usage", action="store_true",
                   help="then show the storage used across all regions and its monthly cost")
    p.add_argument("--sizes", action="store_true", help=argparse.SUPPRESS)  # always on now
    _region(p, "; 'all' lists every region")

    p = add("download", ["dl"], "download a file or folder, or one file inside a zip", run_download,
            """\
        examples:
          storagefs download my_data ./here            # -> ./here/my_data/...
          storagefs download TASK/output.zip/stdout.txt  # -> ./TASK/output/stdout.txt
          storagefs download TASK/output.zip/plots       # a folder inside the zip
          storagefs download TASK/output.zip --decompress""")
    p.add_argument("remote_path", help="storage path; may name a file or folder inside a .zip")
    p.add_argument("local_dir", nargs="?", default="",
                   help="local folder to download into (default: the current folder)")
    p.add_argument("--decompress", action="store_true",
                   help="extract downloaded .zip files (and remove them)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace local files that differ from the stored ones (default: refuse; "
                   "identical ones are always skipped)")
    _recursive_habit(p, "a folder is always downloaded whole")
    _region(p)

    p = add("upload", ["ul"], "upload a file or folder", run_upload, """\
        examples:
          storagefs upload results.csv my_data    # -> my_data/results.csv
          storagefs upload ./inputs my_data       # -> my_data/<files under ./inputs>""")
    p.add_argument("local_path", help="local file or folder")
    p.add_argument("remote_dir", help="storage folder to upload into")
    _recursive_habit(p, "a folder is always uploaded whole")
    _region(p)

    p = add("rm", ["remove"], "remove files or folders from storage", run_rm, """\
        examples:
          storagefs rm my_data/old.csv           # asks first
          storagefs rm -r -y task1 task2         # folders, without asking""")
    p.add_argument("paths", nargs="*", help="storage paths to remove")
    p.add_argument("-y", "--yes", dest="confirm", action="store_true",
                   help="do not ask for confirmation")
    p.add_argument("-a", "--all", action="store_true",
                   help="remove everything, in every region")
    _recursive_habit(p, "a folder is always removed with what it holds")
    _region(p, "; ignored with --all")

    p = add("cp", ["copy"], "copy a file or folder inside storage (server side)", run_cp, """\
        examples:
          storagefs cp task1 backups/task1 --wait  # a folder, waiting until it is done
          storagefs cp my_data/a.csv my_data/b.csv""")
    p.add_argument("source", help="storage path to copy")
    p.add_argument("target", help="destination storage path")
    _recursive_habit(p, "a folder is always copied whole")
    _region(p)
    _wait(p)

    p = add("zip-ls", [], "list the members of a zip stored in storage", run_zip_ls, """\
        examples:
          storagefs zip-ls TASK/output.zip                  # its top level
          storagefs zip-ls TASK/output.zip/artifacts -r     # everything under artifacts/
          storagefs zip-ls TASK/output.zip artifacts/plots  # the same folder form""")
    p.add_argument("path", help="storage path of the .zip, optionally followed by a folder "
                   "inside it (TASK/output.zip/artifacts)")
    p.add_argument("zip_relative_path", nargs="?", default="",
                   help="folder inside the archive (default: its root)")
    p.add_argument("-r", "-R", "--recursive", action="store_true",
                   help="list everything below the folder")
    _region(p)

    add("size", [], "show the storage used and its monthly cost", run_size, """\
        example:
          storagefs size""")

    p = add("export", [], "export a stored file to an S3 bucket (multipart, server side)",
            run_export, """\
        Needs boto3 (pip install 'storagefs[aws]'), AWS credentials and region.
        examples:
          storagefs export TASK/output.zip --bucket-name my-bucket --wait
          storagefs export my_data/big.h5 --bucket-name my-bucket --file-name runs/big.h5""")
    p.add_argument("path_to_export", help="storage path of the file to export")
    p.add_argument("--export-to", type=storage.ExportDestination,
                   choices=list(storage.ExportDestination),
                   default=storage.ExportDestination.AWS_S3,
                   help="destination service (default: %(default)s)")
    p.add_argument("--bucket-name", required=True, metavar="BUCKET", help="destination bucket")
    p.add_argument("--file-name", metavar="NAME",
                   help="object name in the bucket (default: the file's name)")
    p.add_argument("--part-size", type=int, default=128, metavar="MIB",
                   help="part size in MiB, at least 5 (default: %(default)s)")
    _region(p)
    _wait(p)


def _with_client(args: argparse.Namespace, run) -> int:
    """Typed config from the arguments, one client for the command, then the command."""
    config = ClientConfig.from_env(api_url=args.api_url, api_key=args.api_key)
    with StorageClient(config) as client, storage.using(client, progress=args.progress):
        return run(args)


def run_ls(args: argparse.Namespace) -> int:
    order = args.sort_order or ("asc" if args.order_by == "name" else "desc")
    if args.reverse:
        order = "asc" if order == "desc" else "desc"
    wanted = None if args.all else args.max_results
    listing = list_entries(args.path, args.region, wanted, args.order_by, order)
    print(listing_table(listing.entries))
    folders = sum(1 for e in listing.entries if e["name"].endswith("/"))
    files = len(listing.entries) - folders
    counts = [plural(n, word) for n, word in ((folders, "folder"), (files, "file")) if n]
    order_words = {("creation_time", "desc"): "newest first", ("creation_time", "asc"):
                   "oldest first", ("size", "desc"): "largest first", ("size", "asc"):
                   "smallest first", ("name", "asc"): "by name", ("name", "desc"):
                   "by name, reversed"}
    print(f"Listed {' and '.join(counts) or 'nothing'}, {order_words[args.order_by, order]}.")
    if wanted is not None and len(listing.entries) >= wanted:
        print("There may be more: -m N shows N entries, --all shows every one.")
    regions = ", ".join(listing.available_regions) or "none"
    here = f"Region: {listing.current_region}; " if listing.current_region else ""
    print(f"{here}You have storage in: {regions}.")
    if args.usage:
        storage.get_space_used()
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
    except KeyboardInterrupt:
        print()  # end the prompt's line before "interrupted"
        raise
    if not answer.endswith("\n"):
        print()
    return answer.strip().lower() in ("y", "yes")


def run_rm(args: argparse.Namespace) -> int:
    if not args.paths and not args.all:
        args.verb_parser.error("name at least one path, or --all")  # with rm's usage, exit 2
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
    path, inside = args.path, args.zip_relative_path
    split = split_zip_path(path)  # TASK/output.zip/artifacts, as download and the mount take it
    if split is not None:
        path, inside = split[0], "/".join(p for p in (split[1], inside) if p)
    info = zip_folder_contents(path, inside, args.recursive, args.region)
    rows = [[f.name, bytes_formatter(f.size), bytes_formatter(f.compressed_size),
             None if f.name.endswith("/") or f.compress_type is None
             else codecs.method_name(f.compress_type),
             f.creation_time.strftime("%Y-%m-%d %H:%M:%S") if f.creation_time else None]
            for f in info.files]
    print(table(rows, ["Name", "Size", "Compressed", "Method", "Modified"]))
    print(f"Archive size: {bytes_formatter(info.size)}; "
          f"{plural(len(info.files), 'entry', 'entries')}.")
    return EXIT_OK


def run_size(args: argparse.Namespace) -> int:
    storage.get_space_used()
    return EXIT_OK


def run_export(args: argparse.Namespace) -> int:
    op = storage.export(path_to_export=args.path_to_export, export_to=args.export_to,
                        bucket_name=args.bucket_name, file_name=args.file_name,
                        part_size=args.part_size, region=args.region)
    return _report(op, args.wait, f"export {args.path_to_export}")
