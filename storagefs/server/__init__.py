"""The reference storage server: the Inductiva storage protocol over a local folder."""

from __future__ import annotations

from ..config import ServerConfig


def serve(config: ServerConfig) -> None:
    """Run until interrupted; uvicorn handles SIGINT/SIGTERM with a graceful shutdown."""
    import uvicorn

    from .app import create_app

    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="warning",
                access_log=False, timeout_graceful_shutdown=5)
