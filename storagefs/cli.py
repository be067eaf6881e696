"""The ``storagefs`` command: ``main(argv) -> int``.

Each verb is argparse -> typed config -> one call; the verbs of the mount and of the storage
library add themselves (``mount.command.arguments``, ``storage.cli``). Every way out ends here:
an error is one line on stderr and exit 1 (the traceback with ``--debug``), Ctrl-C is
"interrupted" and exit 130, a closed pipe on stdout is silence and exit 141, as in coreutils.
"""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_starting(signum, frame) -> None:
    """Ctrl-C while the program is still being imported: no traceback, exit 130."""
    print("storagefs: interrupted", file=sys.stderr)
    raise SystemExit(128 + signal.SIGINT)


def _started_as_the_command() -> bool:
    """Run as ``storagefs`` or ``python -m storagefs``, not imported by a program or a test."""
    argv0 = sys.argv[0] if sys.argv else ""
    return (os.path.basename(argv0) == "storagefs"
            or argv0.endswith(os.path.join("storagefs", "__main__.py")))


if _started_as_the_command() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _interrupted_while_starting)  # main() puts the default back

import argparse  # noqa: E402  (after the handler above, as everything below)
import io  # noqa: E402
import logging  # noqa: E402
import select  # noqa: E402

from . import __version__  # noqa: E402
from .config import (API_KEY_ENV, API_KEY_FILE, API_URL_ENV, CONFIG_FILE,  # noqa: E402
                     CONFIG_FILE_ENV, DEFAULT_API_URL)
from .errors import EXIT_ERROR, EXIT_USAGE, StorageError  # noqa: E402

DESCRIPTION = """\
Remote simulation storage (the Inductiva storage API) as a local drive.

  serve          serve a local folder or an S3 bucket as Inductiva-compatible
                 storage, for a first run, self-hosting or tests (storagefs[server])
  mount, umount  the storage as a folder (read-only unless --read-write) in which
                 every ZIP archive is a folder of its members, read on demand
  ls, download, upload, rm, cp, zip-ls, size, export
                 the Inductiva SDK's storage functions, as commands"""

EPILOG = f"""\
Run 'storagefs COMMAND --help' for the arguments of one command. Its connection and
output options (--api-url, --api-key, --progress, -q) may also come before COMMAND.

environment (for mount and the storage commands):
  {API_URL_ENV}  the storage API (default: {DEFAULT_API_URL})
  {API_KEY_ENV}  your API key (default: {API_KEY_FILE}, where the
                     inductiva client keeps it)
  --api-url and --api-key win over these; these win over the [storagefs] section
  of {CONFIG_FILE} (or of the file ${CONFIG_FILE_ENV} names)."""


class VerbParser(argparse.ArgumentParser):
    """A verb's parser: options anywhere among the positionals (``download A --decompress B``),
    and an unknown argument reported with this verb's usage, not the top-level one."""

    _parsing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._parsing:  # the intermixed parse calls back in, twice
            return super().parse_known_args(args, namespace)
        self._parsing = True
        try:
            parsed, extras = self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing = False
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


# Given before the verb they apply to it, unless the verb's own options say otherwise.
GLOBAL_OPTIONS = ("api_url", "api_key", "progress")


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """The connection and output options accepted before the verb (``storagefs --api-url URL
    ls``); each lands in ``global_NAME`` and is used where the verb did not set ``NAME``
    (a verb's own default would otherwise overwrite it)."""
    # Listed in each verb's help (and in EPILOG here), to keep this help to one screen.
    parser.add_argument("--api-url", dest="global_api_url", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--api-key", dest="global_api_key", metavar="KEY", help=argparse.SUPPRESS)
    parser.add_argument("--progress", dest="global_progress",
                        action=argparse.BooleanOptionalAction, default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("-q", "--quiet", dest="global_progress", action="store_const",
                        const=False, help=argparse.SUPPRESS)
    parser.add_argument("--debug", action="store_true", help="log details and show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storagefs", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"storagefs {__version__}")
    add_global_options(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands",
                                       parser_class=VerbParser)
    from .server.command import add_commands as add_serve  # serve
    add_serve(subparsers)
    from .mount.command.arguments import add_commands as add_mount_commands  # mount, umount
    add_mount_commands(subparsers)
    from .storage.cli import add_commands  # ls, download, upload, rm, cp, zip-ls, size, export
    add_commands(subparsers)
    return parser


EXIT_INTERRUPTED = 128 + signal.SIGINT  # as a shell reports a command ended by Ctrl-C
EXIT_PIPE = 128 + signal.SIGPIPE  # as coreutils end when the reader of their output is gone


def main(argv: list[str] | None = None) -> int:
    """Runs one command; every way out of it (error, Ctrl-C, closed pipe) ends here."""
    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        try:
            code = _main(argv)
        except SystemExit:  # --help, --version, usage errors: their text goes out first
            sys.stdout.flush()
            if _stdout_closed():  # argparse swallows the failed write itself
                _mute_stdout()
                return EXIT_PIPE
            raise
        sys.stdout.flush()
        return code
    except KeyboardInterrupt as exc:
        return _interrupted(exc)
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        _mute_stdout()
        return EXIT_PIPE


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # 'storagefs' alone: the help, as a usage error
        parser.print_help()
        return EXIT_USAGE
    for name in GLOBAL_OPTIONS:
        if getattr(args, name, None) is None:
            setattr(args, name, getattr(args, f"global_{name}"))
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except BrokenPipeError as exc:
        if _stdout_closed():
            raise
        return _error(args, exc)
    except OSError as exc:  # StorageError is one
        return _error(args, exc)


def _error(args: argparse.Namespace, exc: OSError) -> int:
    """One line on stderr, exit 1; the traceback with --debug."""
    if args.debug:
        raise exc
    if isinstance(exc, StorageError):
        print(f"storagefs: error: {exc}", file=sys.stderr)
    else:
        print(f"storagefs: error: {exc.strerror or exc}"
              f"{': ' + str(exc.filename) if exc.filename else ''}", file=sys.stderr)
    _print_notes(exc)
    return EXIT_ERROR


def _print_notes(exc: BaseException) -> None:
    """What a stopped folder transfer had done and how to resume, one line each."""
    for note in getattr(exc, "__notes__", ()):
        print(f"storagefs: {note}", file=sys.stderr)


def _interrupted(exc: KeyboardInterrupt) -> int:
    """Ctrl-C: an open progress line ended, then "interrupted" on its own line; exit 130."""
    progress = sys.modules.get("storagefs.storage.progress")
    try:
        if progress is not None:
            progress.end_open_line()
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    print("storagefs: interrupted", file=sys.stderr)
    _print_notes(exc)
    return EXIT_INTERRUPTED


def _stdout_closed() -> bool:
    """Whether the reader of stdout is gone (a pipe into ``head`` that has exited)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)  # POLLERR is reported whatever the mask
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False


def _mute_stdout() -> None:
    """What is still buffered for stdout goes nowhere, so that exiting writes no error."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
