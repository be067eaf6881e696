"""Shared fixtures: the real reference server, started as a subprocess on 127.0.0.1, and the
session's reliability figures.

``store`` says where the server keeps the storage: ``folder`` (its root), or a bucket of one of
two S3 implementations started on 127.0.0.1 (``moto``, ``rclone``: s3harness.py). It is
``folder`` everywhere except in the tests named in ``ON_EVERY_STORE``, which run once per store.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Callable, Iterator

import pytest

from figures import FIGURES
from s3harness import KINDS, S3Service, start_s3_server, start_store
from serverharness import ServerHandle, start_server
from servicestandin import WRONG_OFFSETS, ServiceStandIn

STORES = ("folder", *KINDS)
# Tests that run on every store: the official client, the library, the mount's reads.
ON_EVERY_STORE = {"test_compat_inductiva.py": {"test_official_client_storage_calls"},
                  "test_storage.py": None,  # all of them
                  "test_mount.py": {"test_every_member_compares_equal",
                                    "test_grep_and_cp_out_of_an_archive",
                                    "test_sqlite_database_inside_a_zip",
                                    "test_many_readers_at_once"}}
# A proxy in front of the server cuts no download when the store serves the bytes.
FOLDER_ONLY = {"test_interrupted_download_leaves_nothing_behind"}


def pytest_generate_tests(metafunc) -> None:
    names = ON_EVERY_STORE.get(metafunc.definition.path.name, set())
    uses_server = {"server", "make_server"} & set(metafunc.fixturenames)
    name = metafunc.function.__name__
    if uses_server and (names is None or name in names) and name not in FOLDER_ONLY:
        metafunc.parametrize("store", STORES, indirect=True, scope="session")


def pytest_collection_modifyitems(config, items) -> None:
    """On a bucket, clients read through the reference server only: the service stand-in
    proxies the server's own object URLs, which a bucket's presigned URLs replace."""
    kept = []
    for item in items:
        params = getattr(item, "callspec", None) and item.callspec.params
        if params and params.get("store", "folder") != "folder" and any(
                str(value).startswith("service") for value in params.values()):
            continue
        kept.append(item)
    items[:] = kept


@pytest.fixture(scope="session")
def store(request) -> str:
    """Where the servers keep the storage: 'folder', 'moto' or 'rclone'."""
    return getattr(request, "param", "folder")


@pytest.fixture(scope="session")
def s3_services(tmp_path_factory) -> Iterator[Callable[[str], S3Service]]:
    """The S3 stores of the session, each started when first asked for."""
    started: dict[str, S3Service] = {}
    base = tmp_path_factory.mktemp("s3")

    def get(kind: str) -> S3Service:
        if kind not in started:
            started[kind] = start_store(kind, base)
        return started[kind]

    yield get
    for service in started.values():
        service.stop()


def _start(store: str, s3_services, root: Path, log_dir: Path, *extra: str,
           **kwargs) -> ServerHandle:
    if store == "folder":
        return start_server(root, log_dir, *extra, **kwargs)
    root.mkdir(parents=True, exist_ok=True)
    return start_s3_server(s3_services(store), root, log_dir, *extra, **kwargs)


@pytest.fixture(scope="session")
def server(store, s3_services, tmp_path_factory) -> Iterator[ServerHandle]:
    """One server per store for the session; tests keep to their own top-level folders."""
    base = tmp_path_factory.mktemp("server")
    handle = _start(store, s3_services, base / "root", base)
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def service(server) -> Iterator[ServiceStandIn]:
    """The session's server behind a stand-in for the Inductiva service where the two differ
    (no crc32, offsets from the central directory, GCS-style signed URLs: servicestandin.py)."""
    with ServiceStandIn(server.url) as standin:
        yield standin


@pytest.fixture(scope="session")
def service_wrong_offsets(server) -> Iterator[ServiceStandIn]:
    """The stand-in with every listed data offset wrong by 1 to 8 bytes, either way."""
    with ServiceStandIn(server.url, offset_error=WRONG_OFFSETS) as standin:
        yield standin


@pytest.fixture
def make_server(store, s3_services, tmp_path) -> Iterator:
    """A factory for servers with their own root (or bucket prefix) and options, stopped after
    the test."""
    started: list[ServerHandle] = []

    def factory(*extra: str, root: Path | None = None, api_key: str = "test-key.123",
                port: int | None = None) -> ServerHandle:
        if store != "folder":  # the official client sends chunked PUTs, which S3 refuses
            extra = ("--uploads-through-server", *extra)
        handle = _start(store, s3_services, root or tmp_path / f"root{len(started)}", tmp_path,
                        *extra, api_key=api_key, port=port)
        started.append(handle)
        return handle

    yield factory
    for handle in started:
        handle.stop()


@pytest.fixture
def unique(request) -> str:
    """A top-level folder name no other test uses in the shared server."""
    return "t-" + request.node.name.replace("[", "-").replace("]", "").replace("/", "-")[:80]


@pytest.fixture
def figures() -> collections.Counter:
    """Add to the session's reliability figures (faults injected and survived, inputs tried,
    bytes verified, ...); they are printed at the end of the run."""
    return FIGURES


def pytest_terminal_summary(terminalreporter) -> None:
    if not FIGURES:
        return
    terminalreporter.write_sep("-", "reliability figures")
    for name in sorted(FIGURES):
        value = FIGURES[name]
        text = f"{value:.1f}" if isinstance(value, float) and not value.is_integer() else \
            f"{int(value):,}"
        terminalreporter.write_line(f"{name}: {text}")
