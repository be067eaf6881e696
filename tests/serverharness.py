"""The reference server for tests: ``start_server`` runs ``storagefs serve`` as a subprocess on
127.0.0.1 and waits until it answers; ``ServerHandle`` reads its metrics and stops it.

``free_port``, ``wait_until_answers``, ``stop_process`` and ``read_metrics`` are also what the
S3 stores here and the bench scripts (``scripts/bench*.py``, which put tests/ on sys.path) start,
stop and read their processes with: one way to do it, not a copy in each."""

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


def _log_end(log: Path, chars: int = 4000) -> str:
    """The end of a process's log, for an error (a bench's log may hold many runs)."""
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError as e:
        return f"(no log: {e})"


def wait_until_answers(process: subprocess.Popen, url: str, log: Path, timeout: float = 30,
                       what: str = "server", any_status: bool = False) -> None:
    """Poll ``url`` until it answers with 2xx (with ``any_status``: with anything, since an S3
    store may refuse a request without credentials): a process listens a while after Popen
    returns. Raises with the end of ``log`` if the process ends first, or if ``timeout``
    seconds pass (the process is then killed, not left behind)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} ({log}):\n"
                               f"{_log_end(log)}")
        try:
            answer = requests.get(url, timeout=5)
            if answer.ok or any_status:
                return
        except requests.RequestException:  # not listening yet, or still importing
            pass
        time.sleep(0.05)
    process.kill()
    process.wait(10)
    raise RuntimeError(f"{what} did not start within {timeout:g} s ({log}):\n{_log_end(log)}")


def read_metrics(url: str) -> dict[str, float]:
    """A server's /metrics as {'name{labels}': value}: what tests and benches count a client's
    requests and the bytes it had read with."""
    text = requests.get(url + "/metrics", timeout=10).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


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
        return read_metrics(self.url)

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
    wait_until_answers(process, url + "/version", log)
    return ServerHandle(url, api_key, root, process, log)


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
