"""The default client and output settings that every function of the library uses.

One client, built on first use from ``ClientConfig.from_env()``, replaceable for the whole
process (``configure``, ``set_client``) or for a block (``using``).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import Any, Iterator

from ..client import StorageClient
from ..config import ClientConfig


class _Defaults:
    """The one place module-level functions get their client and output settings from."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.client: StorageClient | None = None
        # None: bars only when stderr is a terminal (logs get no carriage-return frames).
        self.progress: bool | None = None


_defaults = _Defaults()


def get_client() -> StorageClient:
    """The client the module functions use; built from the environment on first use."""
    with _defaults.lock:
        if _defaults.client is None:
            _defaults.client = StorageClient(ClientConfig.from_env())
        return _defaults.client


def set_client(client: StorageClient | None) -> None:
    """Use ``client`` from now on (``None``: build a new one from the environment when needed)."""
    with _defaults.lock:
        _defaults.client = client


def configure(api_url: str | None = None, api_key: str | None = None, region: str | None = None,
              progress: bool | None = None, **options: Any) -> StorageClient:
    """Point the module functions at an API; unset values come from the environment.

    ``options`` are other ``ClientConfig`` fields (timeouts, retries, transfer_workers, ...).
    ``progress=False`` hides the progress bars, ``True`` draws them even when stderr is not a
    terminal; by default they are drawn on a terminal only.
    """
    client = StorageClient(ClientConfig.from_env(source="configure()", api_url=api_url,
                                                 api_key=api_key, region=region, **options))
    with _defaults.lock:
        old, _defaults.client = _defaults.client, client
        if progress is not None:
            _defaults.progress = progress
    if old is not None:
        old.close()
    return client


@contextlib.contextmanager
def using(client: StorageClient, progress: bool | None = None) -> Iterator[StorageClient]:
    """Within the block, the module functions use ``client`` (and the progress setting)."""
    with _defaults.lock:
        saved = _defaults.client, _defaults.progress
        _defaults.client = client
        if progress is not None:
            _defaults.progress = progress
    try:
        yield client
    finally:
        with _defaults.lock:
            _defaults.client, _defaults.progress = saved


def progress_shown() -> bool:
    """Whether transfers draw progress bars: as set by ``configure``/``using``, else only when
    stderr is a terminal."""
    if _defaults.progress is not None:
        return _defaults.progress
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
