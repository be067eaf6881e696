"""Typed configuration: frozen dataclasses with documented defaults, built once at the edge.

The CLI and the library turn arguments, environment variables and the config file into these
objects; nothing below reads the environment itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_API_URL = "https://api.inductiva.ai"
API_URL_ENV = "INDUCTIVA_API_URL"
API_KEY_ENV = "INDUCTIVA_API_KEY"
# The official client's key file; storagefs reads it too so one login serves both.
API_KEY_FILE = Path("~/.inductiva/api_key")
CONFIG_FILE_ENV = "STORAGEFS_CONFIG"
CONFIG_FILE = Path("~/.config/storagefs/config.ini")


@dataclass(frozen=True)
class ServerConfig:
    """How ``storagefs serve`` exposes one folder as one user's storage."""

    root: Path
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: tuple[str, ...] = ()
    region: str = "local"
    provider_id: str = "LOCAL"
    # Base URL put in signed URLs; None derives it from each request's Host.
    public_url: str | None = None
    # HMAC key for signed URLs; None picks a random one per start (old URLs then stop working).
    signing_key: bytes | None = None
    signed_url_ttl_s: int = 6 * 3600
    # upload_from_url may fetch from loopback/private addresses only when this is set.
    allow_private_urls: bool = False
    fetch_timeout_s: float = 60.0
    # Bounds on hostile archives.
    max_zip_entries: int = 1_000_000
    max_central_directory_bytes: int = 256 * 1024 * 1024
    zip_index_cache_entries: int = 64
    price_per_gib_month: float = 0.0
    # A copy that finishes within this time is answered as done; longer ones keep running.
    sync_wait_s: float = 10.0


@dataclass(frozen=True)
class ClientConfig:
    """Where the storage API is and how patiently to talk to it."""

    api_url: str = DEFAULT_API_URL
    api_key: str | None = None
    region: str | None = None
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    retries: int = 5
    backoff_factor: float = 0.3
    pool_size: int = 16
    transfer_workers: int = 8

    @classmethod
    def from_env(cls, **overrides) -> "ClientConfig":
        """Arguments win over the environment, which wins over the config file and key file."""
        values: dict = {}
        values.update(_read_config_file())
        if os.environ.get(API_URL_ENV):
            values["api_url"] = os.environ[API_URL_ENV]
        if os.environ.get(API_KEY_ENV):
            values["api_key"] = os.environ[API_KEY_ENV]
        if not values.get("api_key"):
            key_file = API_KEY_FILE.expanduser()
            if key_file.is_file():
                values["api_key"] = key_file.read_text().strip() or None
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["api_url"] = str(values.get("api_url", DEFAULT_API_URL)).rstrip("/")
        return cls(**values)


def _read_config_file() -> dict:
    """``[storagefs]`` section of the config file: api_url, api_key, region, timeouts."""
    import configparser

    path = Path(os.environ.get(CONFIG_FILE_ENV) or CONFIG_FILE).expanduser()
    if not path.is_file():
        return {}
    parser = configparser.ConfigParser()
    parser.read(path)
    if not parser.has_section("storagefs"):
        return {}
    section = parser["storagefs"]
    values: dict = {}
    for key in ("api_url", "api_key", "region"):
        if section.get(key):
            values[key] = section.get(key)
    for key in ("connect_timeout_s", "read_timeout_s", "backoff_factor"):
        if section.get(key):
            values[key] = section.getfloat(key)
    for key in ("retries", "pool_size", "transfer_workers"):
        if section.get(key):
            values[key] = section.getint(key)
    return values
