"""A server that cannot be reached: one line, within about two seconds, no urllib3 chatter.

A refused connection or a name that does not resolve will not change within seconds, so neither
is asked again; a connection reset before the answer may be gone on the next try and is, without
a word on stderr. Run as a user runs the command: ``python -m storagefs`` as a subprocess.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from faultproxy import FaultProxy
from serverharness import free_port
from storagefs.client import StorageClient
from storagefs.config import ClientConfig
from storagefs.errors import Timeout, TransferError

UNRESOLVABLE = "http://storagefs-test.invalid"  # .invalid never resolves (RFC 2606)


def run_cli(*args: str, url: str, key: str = "k") -> tuple[subprocess.CompletedProcess, float]:
    environ = {**os.environ, "INDUCTIVA_API_URL": url, "INDUCTIVA_API_KEY": key,
               "STORAGEFS_CONFIG": os.devnull}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "storagefs", *args], capture_output=True,
                            text=True, env=environ, timeout=120)
    return result, time.monotonic() - started


@pytest.mark.parametrize("url,says", [
    (f"http://127.0.0.1:{free_port()}", "connection refused"),
    (UNRESOLVABLE, "unknown host"),
])
def test_ls_against_an_unreachable_server_is_one_line_at_once(url, says):
    result, elapsed = run_cli("ls", url=url)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("storagefs: error: ") and says in result.stderr
    assert "WARNING" not in result.stderr and "Retrying" not in result.stderr
    assert elapsed < 4.0, f"{elapsed:.1f} s, process start included"


@pytest.mark.parametrize("url", [f"http://127.0.0.1:{free_port()}", UNRESOLVABLE])
def test_the_library_gives_up_on_an_unreachable_server_at_once(url):
    """With the default retries: the version check and the call do not each wait."""
    with StorageClient(ClientConfig(api_url=url, api_key="k")) as client:
        started = time.monotonic()
        with pytest.raises(TransferError):
            client.space_used()
        assert time.monotonic() - started < 1.5


def test_a_reset_before_the_answer_is_retried_without_a_warning(server, unique):
    (server.root / unique).mkdir()
    (server.root / unique / "a.txt").write_bytes(b"a")
    with FaultProxy(server.url) as proxy:
        proxy.drop(count=1, path="^/storage/contents")
        result, _ = run_cli("ls", unique, url=proxy.url, key=server.api_key)
        assert proxy.injected["drop"] == 1
    assert result.returncode == 0, result.stderr
    assert "a.txt" in result.stdout
    assert result.stderr == ""


def test_a_server_back_after_a_503_burst_is_waited_for(server, unique):
    (server.root / unique).mkdir()
    (server.root / unique / "b.txt").write_bytes(b"b")
    with FaultProxy(server.url) as proxy:
        proxy.status(503, count=2, path="^/storage/contents")
        result, _ = run_cli("ls", unique, url=proxy.url, key=server.api_key)
    assert result.returncode == 0 and "b.txt" in result.stdout
    assert result.stderr == ""


def test_a_stalled_version_check_is_not_followed_by_the_call():
    """The version check, asked first, gives up after its own timeout (and one retry); the call
    the user made is not then sent to wait as long again."""
    accepted: list[socket.socket] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"

        def accept() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                accepted.append(conn)  # never answered

        threading.Thread(target=accept, daemon=True).start()
        config = ClientConfig(api_url=url, api_key="k", read_timeout_s=0.3, backoff_factor=0.01)
        with StorageClient(config) as client:
            started = time.monotonic()
            with pytest.raises(Timeout):
                client.space_used()
            elapsed = time.monotonic() - started
        for conn in accepted:
            conn.close()
    assert len(accepted) == 2, "the check and its one retry, not the call after them"
    assert elapsed < 1.5
