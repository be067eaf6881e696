"""Shared fixtures: the real reference server, started as a subprocess on 127.0.0.1."""

from __future__ import annotations

import collections
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerHandle:
    """A running ``storagefs serve``: its URL, key and folder, plus a way to read /metrics."""

    url: str
    api_key: str
    root: Path
    process: subprocess.Popen
    log: Path

    def get(self, path: str, **kwargs) -> requests.Response:
        headers = {"X-API-Key": self.api_key, **kwargs.pop("headers", {})}
        return requests.get(self.url + path, headers=headers, timeout=30, **kwargs)

    def metrics(self) -> dict[str, float]:
        """Prometheus samples as {'name{labels}': value}."""
        text = requests.get(self.url + "/metrics", timeout=10).text
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_server(root: Path, log_dir: Path, *extra: str, api_key: str = "test-key.123",
                 port: int | None = None) -> ServerHandle:
    """``port``: a given one, e.g. to restart a server where its clients expect it."""
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = log_dir / f"server-{port}.log"
    cmd = [sys.executable, "-m", "storagefs", "serve", str(root), "--host", "127.0.0.1",
           "--port", str(port), "--api-key", api_key, *extra]
    process = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log.read_text()}")
        try:
            if requests.get(url + "/version", timeout=1).ok:
                return ServerHandle(url, api_key, root, process, log)
        except requests.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"server did not start: {log.read_text()}")


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[ServerHandle]:
    """One server for the session; tests keep to their own top-level folders in its root."""
    base = tmp_path_factory.mktemp("server")
    handle = start_server(base / "root", base)
    yield handle
    handle.stop()


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


def require_fuse() -> None:
    """Skip without FUSE, unless STORAGEFS_REQUIRE_FUSE=1 (CI), where a missing FUSE fails."""
    problems = []
    if not os.path.exists("/dev/fuse"):
        problems.append("/dev/fuse is missing")
    if not any(Path(d, "fusermount").exists() or Path(d, "fusermount3").exists()
               for d in os.environ.get("PATH", "").split(os.pathsep)):
        problems.append("fusermount is not installed")
    if problems:
        message = "FUSE unavailable: " + ", ".join(problems)
        if os.environ.get("STORAGEFS_REQUIRE_FUSE") == "1":
            pytest.fail(message)
        pytest.skip(message)


# -- figures: what the reliability tests injected, tried and verified ----------------------------

FIGURES: collections.Counter = collections.Counter()


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
