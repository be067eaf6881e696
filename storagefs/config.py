"""Typed configuration: frozen dataclasses with documented defaults, built once at the edge.

The CLI and the library turn arguments, environment variables and the config file into these
objects; nothing below reads the environment itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

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
    # s3://BUCKET[/PREFIX]: the storage is there instead of in ``root`` (server/s3store.py).
    store: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    # Upload URLs point at this server, which streams the bytes on into the bucket: for clients
    # that send chunked PUTs, which S3 refuses on its own URLs (411) and GCS accepts.
    uploads_through_server: bool = False
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
    # Bounds on hostile archives. An indexed archive holds about 50 bytes per member plus its
    # names (server/zipindex.py): measured for 1,000,000 members with 33-byte names, 80 MB
    # held and 275 MB at the peak of the parse (as long as ``unzip -l`` takes to list them),
    # so ten million are about 0.8 GB held and 2.8 GB while parsed, for about 30 s.
    max_zip_entries: int = 10_000_000
    max_central_directory_bytes: int = 1024 * 1024 * 1024
    # Indexes kept between requests: at most this many, and this much memory together.
    zip_index_cache_entries: int = 64
    zip_index_cache_bytes: int = 2 * 1024 * 1024 * 1024
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
    # Retries of 429/5xx answers; a timeout or a dropped connection is retried once at most,
    # a connection refused or a host that does not resolve not at all (client.make_session).
    retries: int = 5
    backoff_factor: float = 0.3
    pool_size: int = 16
    transfer_workers: int = 8
    # Where api_key came from ("--api-key", "INDUCTIVA_API_KEY", a file...), for messages.
    api_key_source: str | None = field(default=None, compare=False)

    @classmethod
    def from_env(cls, *, source: str = "options", **overrides) -> "ClientConfig":
        """Arguments win over the environment, which wins over the config file and key file.

        ``source`` says where the arguments came from: ``"options"`` (the command line's
        ``--api-key``...) or a name such as ``"configure()"``, so that a refused key or a bad
        URL is reported where it was set.
        """
        values: dict = {}
        sources: dict[str, str] = {}
        config_file = config_file_path()
        for name, value in _read_config_file(config_file).items():
            values[name], sources[name] = value, str(config_file)
        for name, env in (("api_url", API_URL_ENV), ("api_key", API_KEY_ENV)):
            if os.environ.get(env):
                values[name], sources[name] = os.environ[env], env
        if not values.get("api_key"):
            key_file = API_KEY_FILE.expanduser()
            if key_file.is_file():
                values["api_key"] = key_file.read_text().strip() or None
                sources["api_key"] = str(API_KEY_FILE)
        for name, value in overrides.items():
            if value is not None:
                values[name] = value
                sources[name] = "--" + name.replace("_", "-") if source == "options" else source
        api_url = str(values.get("api_url", DEFAULT_API_URL)).rstrip("/")
        values["api_url"] = checked_url(api_url, sources.get("api_url", "the default"))
        values["api_key_source"] = sources.get("api_key")
        return cls(**values)


def checked_url(url: str, source: str) -> str:
    """The API URL as given, or a one-line ``InvalidRequest`` that says what to write."""
    from .errors import InvalidRequest

    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc:
        return url
    if "://" not in url:
        raise InvalidRequest(f"the API URL {url!r} (from {source}) has no scheme: write "
                             f"https://{url} or http://{url}")
    raise InvalidRequest(f"the API URL {url!r} (from {source}) is not an http:// or https:// URL")


def config_file_path() -> Path:
    """The config file in force: ``$STORAGEFS_CONFIG``, else ``~/.config/storagefs/config.ini``."""
    return Path(os.environ.get(CONFIG_FILE_ENV) or CONFIG_FILE).expanduser()


def _read_config_file(path: Path) -> dict:
    """``[storagefs]`` section of the config file: api_url, api_key, region, timeouts."""
    import configparser

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
