"""The reference storage server: the Inductiva storage protocol over a local folder."""

from __future__ import annotations

import ctypes
import os
import select
import signal
import socket
import sys
from typing import TYPE_CHECKING, Callable

from ..config import ServerConfig

if TYPE_CHECKING:
    from starlette.types import ASGIApp


def serve(config: ServerConfig) -> None:
    """Run on ``config.host:config.port`` until interrupted."""
    run(prepare(config), config)


def prepare(config: ServerConfig) -> ASGIApp:
    """The application over ``config.root``; makes the root and the server's state in it, so
    an ``OSError`` here means the folder cannot be served, before anything listens."""
    from .app import create_app, with_fast_paths

    return with_fast_paths(create_app(config))


def run(app: ASGIApp, config: ServerConfig, listener: socket.socket | None = None,
        on_listening: Callable[[], None] | None = None) -> None:
    """Serve ``app`` until interrupted; uvicorn handles SIGINT/SIGTERM with a graceful shutdown.

    ``listener``: a socket already bound (``storagefs serve`` checks the port with it, so the
    port checked is the port served); without one uvicorn binds ``config.host:config.port``.
    ``on_listening`` is called once the server accepts connections, not before."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started and on_listening is not None:
                on_listening()

    settings = uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                              access_log=False, timeout_graceful_shutdown=5)
    Server(settings).run(sockets=None if listener is None else [listener])


def run_workers(app: ASGIApp, config: ServerConfig, listener: socket.socket, workers: int,
                on_listening: Callable[[], None] | None = None) -> int:
    """Serve ``app`` from ``workers`` forked processes sharing ``listener``; returns an exit code.

    The kernel spreads connections over the processes accepting on the one socket. Each worker
    has its own copy of the app (caches and counters per process); the signing key is the
    config's, so a URL signed by one worker is accepted by all. SIGINT or SIGTERM to this
    process stops every worker gracefully (SIGTERM, once); a worker that dies stops the rest.
    ``on_listening`` is called once every worker accepts connections."""
    ready_read, ready_write = os.pipe()
    children: list[int] = []
    parent = os.getpid()
    # Held back until the parent's handlers are in place: a stop between two forks is not lost.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # a worker: serve, then leave without running the parent's cleanup
            code = 0
            try:
                _end_with_parent(parent)
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                os.close(ready_read)

                def ready() -> None:
                    os.write(ready_write, b".")

                run(app, config, listener, on_listening=ready)
            except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it stopped on
                pass
            except BaseException:  # a worker must never return into the parent
                import traceback
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children.append(pid)
    os.close(ready_write)
    return _supervise(children, ready_read, on_listening, mask)


def _end_with_parent(parent: int) -> None:
    """A worker ends with the process that started it, even one killed with SIGKILL (Linux's
    PR_SET_PDEATHSIG), instead of holding the port as an orphan."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # already gone before the line above
        os._exit(0)


_PR_SET_PDEATHSIG = 1


def _supervise(children: list[int], ready: int, on_listening: Callable[[], None] | None,
               mask: set[int | signal.Signals]) -> int:
    alive = set(children)
    stopping = False

    def stop(signum: int = signal.SIGTERM, frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in alive:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    failed = False

    def reap(block: bool) -> None:
        """Collect ended workers (one when ``block``); one that ends by itself stops the rest."""
        nonlocal failed
        while alive:
            pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            if pid == 0:
                return
            if pid not in alive:
                continue
            alive.discard(pid)
            # uvicorn ends on the signal it stopped on: killed by it is a clean stop
            code = os.waitstatus_to_exitcode(status)
            if not stopping:
                how = f"exit status {code}" if code >= 0 else f"signal {-code}"
                print(f"storagefs serve: worker {pid} ended by itself ({how}); stopping the "
                      "server, see its output above", file=sys.stderr, flush=True)
            if code > 0 or not stopping:
                failed = True
                stop()
            if block:
                return

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    try:
        started = 0
        while started < len(children) and not stopping:
            if select.select([ready], [], [], 0.2)[0]:
                got = os.read(ready, len(children) - started)
                if not got:  # no worker holds its end any more
                    break
                started += len(got)
            reap(block=False)  # a worker that fails to start must not leave us waiting
        os.close(ready)
        if started == len(children) and not stopping and on_listening is not None:
            on_listening()
        while alive:
            reap(block=True)
        return 1 if failed else 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
