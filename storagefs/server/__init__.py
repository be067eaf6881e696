"""The reference storage server: the Inductiva storage protocol over a local folder."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Callable

from ..config import ServerConfig

if TYPE_CHECKING:
    from fastapi import FastAPI


def serve(config: ServerConfig) -> None:
    """Run on ``config.host:config.port`` until interrupted."""
    run(prepare(config), config)


def prepare(config: ServerConfig) -> FastAPI:
    """The application over ``config.root``; makes the root and the server's state in it, so
    an ``OSError`` here means the folder cannot be served, before anything listens."""
    from .app import create_app

    return create_app(config)


def run(app: FastAPI, config: ServerConfig, listener: socket.socket | None = None,
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
