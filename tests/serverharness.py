"""The reference server for tests: ``start_server`` runs ``storagefs serve`` as a subprocess on
127.0.0.1 and waits until it answers; ``ServerHandle`` reads its metrics and stops it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

KEY = {"X-API-Key": "test-key.123"}  # the header of the key start_server gives by default


def stop_process(process: subprocess.Popen) -> None:
    """Terminate, and kill what does not end within 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


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
        stop_process(self.process)


def start_server(root: Path, log_dir: Path, *extra: str, api_key: str = "test-key.123",
                 port: int | None = None) -> ServerHandle:
    """``port``: a given one, e.g. to restart a server where its clients expect it."""
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = log_dir / f"server-{port}.log"
    where = () if "--store" in extra else (str(root),)  # a bucket instead of the folder
    cmd = [sys.executable, "-m", "storagefs", "serve", *where, "--host", "127.0.0.1",
           "--port", str(port), "--api-key", api_key,
           *(() if "--workers" in extra else ("--workers", "1")), *extra]
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


def put_tree(root: Path, files: dict[str, bytes]) -> None:
    """Files written straight into a server's root, as if uploaded."""
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def signed(server, operation: str, *paths: str, **params) -> list[str]:
    """Signed URLs from a server, asserted to be given."""
    query = {"operation": operation, "paths": list(paths), **params}
    r = server.get("/storage/signed-urls", params=query)
    assert r.status_code == 200, r.text
    return r.json()
