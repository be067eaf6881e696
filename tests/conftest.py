"""Shared fixtures: the real reference server, started as a subprocess on 127.0.0.1, and the
session's reliability figures."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Iterator

import pytest

from figures import FIGURES
from serverharness import ServerHandle, start_server
from servicestandin import WRONG_OFFSETS, ServiceStandIn


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[ServerHandle]:
    """One server for the session; tests keep to their own top-level folders in its root."""
    base = tmp_path_factory.mktemp("server")
    handle = start_server(base / "root", base)
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
def make_server(tmp_path) -> Iterator:
    """A factory for servers with their own root and options, stopped after the test."""
    started: list[ServerHandle] = []

    def factory(*extra: str, root: Path | None = None, api_key: str = "test-key.123",
                port: int | None = None) -> ServerHandle:
        handle = start_server(root or tmp_path / f"root{len(started)}", tmp_path, *extra,
                              api_key=api_key, port=port)
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
