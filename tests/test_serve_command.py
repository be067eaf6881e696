"""``storagefs serve`` as a user runs it: every argument checked before anything starts, each
fault one line on stderr (exit 2 for a usage error, 1 for the rest), and the URL printed only
once the server listens, with the port it listens on."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from serverharness import free_port


def serve(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``storagefs serve ...`` expected to end by itself (a refused start)."""
    return subprocess.run([sys.executable, "-m", "storagefs", "serve", *args],
                          capture_output=True, text=True, timeout=timeout)


def assert_refused(result: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert result.returncode == code, result
    assert result.stdout == "", "nothing announced before the server runs"
    assert "Traceback" not in result.stderr
    if code == 2:
        assert result.stderr.startswith("usage: storagefs serve "), result.stderr
        message = result.stderr.splitlines()[-1]
    else:
        assert result.stderr.count("\n") == 1, result.stderr
        message = result.stderr
    assert message.startswith("storagefs serve: "), result.stderr
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("port", ["80000", "65536", "-1", "http", "8000.5"])
def test_a_port_out_of_range_is_a_usage_error(tmp_path, port):
    result = serve(str(tmp_path / "root"), "--port", port)
    assert_refused(result, 2, "--port", "0 to 65535")
    assert not (tmp_path / "root").exists(), "nothing made before the arguments are checked"


@pytest.mark.parametrize("option,value,says", [
    ("--url-ttl", "0", "--url-ttl"),
    ("--url-ttl", "-5", "--url-ttl"),
    ("--public-url", "example.org:9000", "--public-url"),
])
def test_other_bad_values_are_usage_errors(tmp_path, option, value, says):
    assert_refused(serve(str(tmp_path / "root"), option, value), 2, says)


def test_a_port_in_use_is_one_line_and_nothing_is_printed_before(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve(str(tmp_path / "root"), "--port", str(port), "--api-key", "k")
    assert_refused(result, 1, f"127.0.0.1:{port}", "in use", "--port")


def test_a_host_that_cannot_be_listened_on_is_one_line(tmp_path):
    result = serve(str(tmp_path / "root"), "--host", "no-such-host.invalid", "--api-key", "k")
    assert_refused(result, 1, "no-such-host.invalid", "--host")


def test_a_file_as_the_folder_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    assert_refused(serve(str(tmp_path / "file"), "--api-key", "k"), 1, "not a folder",
                   str(tmp_path / "file"))
    assert_refused(serve(str(tmp_path / "file" / "sub"), "--api-key", "k"), 1,
                   "cannot create", str(tmp_path / "file" / "sub"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_folder_that_cannot_be_written_is_one_line(tmp_path):
    root = tmp_path / "ro"
    root.mkdir(mode=0o555)
    assert_refused(serve(str(root), "--api-key", "k"), 1, "cannot write", str(root))


def test_an_unreadable_or_empty_signing_key_file_is_one_line(tmp_path):
    missing = tmp_path / "missing.key"
    assert_refused(serve(str(tmp_path / "root"), "--signing-key-file", str(missing)), 1,
                   "--signing-key-file", str(missing))
    empty = tmp_path / "empty.key"
    empty.write_bytes(b"\n")
    assert_refused(serve(str(tmp_path / "root"), "--signing-key-file", str(empty)), 1,
                   "--signing-key-file", "empty")
    assert_refused(serve(str(tmp_path / "root"), "--signing-key-file", str(tmp_path)), 1,
                   "--signing-key-file")
    assert not (tmp_path / "root").exists()


def start(*args: str) -> tuple[subprocess.Popen, str]:
    """A serve that runs: the process and the last line it printed before listening."""
    process = subprocess.Popen([sys.executable, "-m", "storagefs", "serve", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    while line.startswith("storagefs serve: generated API key"):
        line = process.stdout.readline()
    return process, line


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(10)


@pytest.mark.parametrize("port", [None, "0"])
def test_the_url_is_printed_once_the_server_listens(tmp_path, port):
    """The URL line comes when a request to it is answered; port 0 picks a free port."""
    wanted = free_port() if port is None else 0
    process, line = start(str(tmp_path / "root"), "--port", str(wanted), "--api-key", "k")
    try:
        assert line.startswith("storagefs serve: "), line
        url = line.split(" on ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        if wanted:
            assert url.endswith(f":{wanted}")
        assert int(url.rsplit(":", 1)[1]) > 0
        response = requests.get(url + "/storage/size", headers={"X-API-Key": "k"}, timeout=10)
        assert response.status_code == 200
        assert Path(tmp_path / "root").is_dir()
    finally:
        stop(process)


def test_a_root_whose_server_state_cannot_be_made_is_one_line(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / ".storagefs").write_text("not a folder")
    assert_refused(serve(str(root), "--port", "0"), 1, "cannot serve", str(root))


def worker_pids(pid: int) -> set[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in children.read_text().split()} if children.exists() else set()


@pytest.mark.parametrize("signum", ["terminate", "interrupt"])
def test_workers_share_the_port_and_the_signing_key(tmp_path, signum):
    """Two processes on one port: the API answers, a URL signed by either is read by both (many
    requests over fresh connections reach both), and one signal stops them all."""
    import signal as signals

    (tmp_path / "root" / "d").mkdir(parents=True)
    (tmp_path / "root" / "d" / "f.bin").write_bytes(b"w" * 5000)
    process, line = start(str(tmp_path / "root"), "--port", "0", "--api-key", "k",
                          "--workers", "2")
    try:
        url = line.split(" on ", 1)[1].split()[0]
        workers = worker_pids(process.pid)
        assert len(workers) == 2, workers
        signed = []
        for _ in range(10):
            r = requests.get(url + "/storage/signed-urls", headers={"X-API-Key": "k"},
                             params={"operation": "download", "paths": "d/f.bin"}, timeout=10)
            assert r.status_code == 200, r.text
            signed.append(r.json()[0])
        for link in signed:
            for _ in range(10):  # requests.get opens a new connection each time
                r = requests.get(link, headers={"Range": "bytes=10-19"}, timeout=10)
                assert r.status_code == 206 and r.content == b"w" * 10
        counted = {}
        for line in requests.get(url + "/metrics", timeout=10).text.splitlines():
            if line.startswith("storagefs_object_reads_total"):
                name, _, value = line.rpartition(" ")
                counted[name] = float(value)
        assert counted['storagefs_object_reads_total{kind="range"}'] == 100, "every worker's"
        listing = requests.get(url + "/storage/contents", headers={"X-API-Key": "k"},
                               params={"path": "d"}, timeout=10)
        assert [e["name"] for e in listing.json()["contents"]] == ["f.bin"]
        op = requests.post(url + "/storage/copy", headers={"X-API-Key": "k"},
                           params={"source": "d/f.bin", "target": "e/f.bin"}, timeout=30).json()
        for _ in range(10):  # whichever process answers knows the operation
            r = requests.get(url + f"/storage/operations/{op['id']}", headers={"X-API-Key": "k"},
                             timeout=10)
            assert r.status_code == 200 and r.json()["status"] == "OK", r.text
            ops = requests.get(url + "/storage/operations", headers={"X-API-Key": "k"},
                               timeout=10).json()
            assert [o["id"] for o in ops] == [op["id"]]
    finally:
        if signum == "interrupt":
            process.send_signal(signals.SIGINT)
        else:
            process.terminate()
        assert process.wait(15) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or \
            "zombie" in Path(f"/proc/{pid}/status").read_text(), "a worker outlived the server"
    assert "Traceback" not in (process.stderr.read() if process.stderr else "")


def test_workers_must_be_a_positive_number(tmp_path):
    assert_refused(serve(str(tmp_path / "root"), "--workers", "0"), 2, "--workers")


def test_a_worker_that_dies_stops_the_server_with_one_line(tmp_path):
    import signal as signals

    process, line = start(str(tmp_path / "root"), "--port", "0", "--api-key", "k",
                          "--workers", "2")
    try:
        workers = sorted(worker_pids(process.pid))
        assert len(workers) == 2, line
        os.kill(workers[0], signals.SIGKILL)
        assert process.wait(15) == 1
    finally:
        if process.poll() is None:
            stop(process)
    err = process.stderr.read() if process.stderr else ""
    assert f"worker {workers[0]} ended by itself (signal 9)" in err, err
    assert "Traceback" not in err
    assert not Path(f"/proc/{workers[1]}").exists() or \
        "zombie" in Path(f"/proc/{workers[1]}/status").read_text()
