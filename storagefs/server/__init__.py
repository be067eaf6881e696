"""The reference storage server: the Inductiva storage protocol over a local folder."""

from __future__ import annotations

import socket
from typing import Callable

from ..config import ServerConfig


def serve(config: ServerConfig, listener: socket.socket | None = None,
          on_listening: Callable[[], None] | None = None) -> None:
    """Run until interrupted; uvicorn handles SIGINT/SIGTERM with a graceful shutdown.

    ``listener``: a socket already bound (``serve`` checks the port with it, so the port checked
    is the port served); without one uvicorn binds ``config.host:config.port``.
    ``on_listening`` is called once the server accepts connections, not before."""
    import uvicorn

    from .app import create_app

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started and on_listening is not None:
                on_listening()

    settings = uvicorn.Config(create_app(config), host=config.host, port=config.port,
                              log_level="warning", access_log=False,
                              timeout_graceful_shutdown=5)
    Server(settings).run(sockets=None if listener is None else [listener])
