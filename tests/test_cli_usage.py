"""The command line as a Unix user meets it: run as a process (``python -m storagefs``, what the
console script runs) against the real server; options anywhere, pipes, Ctrl-C, help, messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import unicodedata
import zipfile
from pathlib import Path

import pytest

from storagefs import storage
from storagefs.client import StorageClient
from storagefs.config import ClientConfig
from storagefs.errors import AuthenticationError

import archives

VERBS = ["ls", "download", "upload", "rm", "cp", "zip-ls", "size", "export"]


@pytest.fixture
def environ(server, tmp_path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return {**os.environ, "INDUCTIVA_API_URL": server.url, "INDUCTIVA_API_KEY": server.api_key,
            "STORAGEFS_CONFIG": str(tmp_path / "absent.ini"), "HOME": str(home),
            "COLUMNS": "100"}


def sfs(environ: dict[str, str], *argv: str, cwd: Path | None = None,
        **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "storagefs", *argv], capture_output=True,
                          text=True, env=environ, cwd=cwd, timeout=60, **kwargs)


def write(root: Path, files: dict[str, bytes], mtimes: dict[str, float] | None = None) -> None:
    """Files straight into the server's folder, with chosen modification times."""
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for name, when in (mtimes or {}).items():
        os.utime(root / name, (when, when))


def zip_bytes(members: dict[str, bytes]) -> bytes:
    return archives.zip_bytes(members, zipfile.ZIP_DEFLATED)  # deflated, as tasks write them


def names(stdout: str) -> list[str]:
    """The NAME column of a listing table."""
    lines = stdout.strip("\n").splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("NAME"))
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows.append(line.split()[0])
    return rows


# -- 1: folders carry a time and the sort orders hold for them ------------------------------------

def test_ls_sorts_folders_by_time_and_size(server, environ, unique):
    now = time.time()
    write(server.root, {f"{unique}/old/a.bin": b"a" * 10, f"{unique}/new/b.bin": b"b" * 3000,
                        f"{unique}/mid.bin": b"m" * 500},
          {f"{unique}/old/a.bin": now - 3000, f"{unique}/new/b.bin": now - 10,
           f"{unique}/mid.bin": now - 1000})
    result = sfs(environ, "ls", unique)
    assert result.returncode == 0, result.stderr
    assert names(result.stdout) == ["new/", "mid.bin", "old/"]
    assert "n/a" not in result.stdout
    result = sfs(environ, "ls", unique, "-o", "size", "-s", "asc")
    assert names(result.stdout) == ["old/", "mid.bin", "new/"]
    result = sfs(environ, "ls", unique, "-m", "1")
    assert names(result.stdout) == ["new/"]

    with storage.using(StorageClient(ClientConfig(api_url=server.url, api_key=server.api_key)),
                       progress=False):
        entries = storage.listdir(unique, print_results=False)
    assert [e["name"] for e in entries] == ["new/", "mid.bin", "old/"]
    assert all(e["creation_time"] is not None for e in entries)


# -- 6, 7: options anywhere, the verb's usage, -r/-R ----------------------------------------------

def test_options_between_positionals(server, environ, unique, tmp_path):
    write(server.root, {f"{unique}/output.zip": zip_bytes(
        {"artifacts/plots/p.txt": b"plot", "artifacts/log.txt": b"log"})})
    result = sfs(environ, "download", f"{unique}/output.zip", "--decompress", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / unique / "output" / "plots" / "p.txt").exists()  # the SDK way
    result = sfs(environ, "zip-ls", f"{unique}/output.zip", "--recursive", "artifacts")
    assert result.returncode == 0, result.stderr
    assert "plots/p.txt" in result.stdout


@pytest.mark.parametrize("verb", VERBS)
def test_a_usage_error_shows_the_verbs_usage(environ, verb):
    result = sfs(environ, verb, "--no-such-option")
    assert result.returncode == 2
    assert result.stderr.startswith(f"usage: storagefs {verb} ")
    assert f"storagefs {verb}: error: " in result.stderr


def test_r_means_recursive_and_region_has_no_letter(server, environ, unique):
    write(server.root, {f"{unique}/a/x.txt": b"x", f"{unique}/b/y.txt": b"y",
                        f"{unique}/o.zip": zip_bytes({"d/e/f.txt": b"f"})})
    assert sfs(environ, "rm", "-r", "-y", f"{unique}/a").returncode == 0
    assert sfs(environ, "rm", "-R", "-y", f"{unique}/b").returncode == 0
    assert not (server.root / unique / "a").exists() and not (server.root / unique / "b").exists()
    result = sfs(environ, "zip-ls", "-r", f"{unique}/o.zip")
    assert result.returncode == 0 and "d/e/f.txt" in result.stdout
    for verb in VERBS:
        text = sfs(environ, verb, "--help").stdout
        assert "-r REGION" not in text and "-r, --region" not in text


# -- 11: a closed pipe ends quietly ---------------------------------------------------------------

@pytest.mark.parametrize("argv", [["ls", "{unique}"], ["zip-ls", "{unique}/o.zip"], ["size"],
                                  ["--help"]])
def test_a_closed_pipe_is_silent(server, environ, unique, argv):
    write(server.root, {f"{unique}/f{i:03}.txt": b"x" for i in range(50)})
    write(server.root, {f"{unique}/o.zip": zip_bytes({f"m{i}.txt": b"m" for i in range(50)})})
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "storagefs",
                                 *[a.format(unique=unique) for a in argv]],
                                stdout=write_end, stderr=subprocess.PIPE, text=True,
                                env=environ, timeout=60)
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 128 + signal.SIGPIPE


# -- 12: zip-ls of a folder that is not there; both path forms ------------------------------------

def test_zip_ls_missing_folder_and_path_form(server, environ, unique):
    write(server.root, {f"{unique}/output.zip": zip_bytes(
        {"artifacts/plots/p.txt": b"plot", "artifacts/log.txt": b"log", "empty/": b""})})
    result = sfs(environ, "zip-ls", f"{unique}/output.zip", "nope")
    assert result.returncode == 1
    assert result.stderr.startswith("storagefs: error: ") and result.stderr.count("\n") == 1
    assert "nope" in result.stderr
    assert sfs(environ, "zip-ls", f"{unique}/output.zip/nope").returncode == 1
    result = sfs(environ, "zip-ls", f"{unique}/output.zip/artifacts")
    assert result.returncode == 0, result.stderr
    assert sorted(names(result.stdout)) == ["log.txt", "plots/"] and "2 entries" in result.stdout
    result = sfs(environ, "zip-ls", f"{unique}/output.zip/artifacts", "plots")
    assert names(result.stdout) == ["p.txt"] and "1 entry." in result.stdout
    result = sfs(environ, "zip-ls", f"{unique}/output.zip", "empty")
    assert result.returncode == 0 and "0 entries" in result.stdout


# -- 13: help and messages ------------------------------------------------------------------------

def test_storagefs_alone_prints_help(environ):
    result = sfs(environ)
    assert result.returncode == 2
    assert result.stdout.startswith("usage: storagefs ") and "commands:" in result.stdout
    assert "storagefs COMMAND --help" in result.stdout


@pytest.mark.parametrize("verb", [*VERBS, "serve", "mount", "umount"])
def test_every_verb_has_examples_and_one_spelling(environ, verb):
    text = sfs(environ, verb, "--help").stdout
    assert "example" in text
    if "--api-url" in text:
        assert "--api-url URL" in text and "--api-key KEY" in text
    if verb in VERBS:
        connection = text.split("connection:")[1].split("\n\n")[0]
        assert "--quiet" not in connection
    if verb == "umount":
        assert "mountpoint  " in text and "the folder" in text


def test_mount_helper_arguments_have_help(capsys):
    from storagefs.mount.command import fstab
    with pytest.raises(SystemExit):
        fstab.mount_helper(["--help"])
    text = capsys.readouterr().out
    for argument in ("source", "mountpoint"):
        line = next(x for x in text.splitlines() if x.strip().startswith(argument + " "))
        assert len(line.split()) > 2, line


def test_connection_options_before_the_verb(server, environ, unique):
    write(server.root, {f"{unique}/a.txt": b"a"})
    bare = {k: v for k, v in environ.items() if not k.startswith("INDUCTIVA_")}
    result = sfs(bare, "--api-url", server.url, "--api-key", server.api_key, "ls", unique)
    assert result.returncode == 0, result.stderr
    assert "a.txt" in result.stdout


def test_a_refused_key_names_where_it_came_from(server, environ, tmp_path, unique):
    bare = {k: v for k, v in environ.items() if not k.startswith("INDUCTIVA_")}
    bare["INDUCTIVA_API_URL"] = server.url
    result = sfs(bare, "ls", "--api-key", "wrong.key")
    assert result.returncode == 1 and "--api-key" in result.stderr
    assert result.stderr.count("\n") == 1
    result = sfs({**bare, "INDUCTIVA_API_KEY": "wrong.key"}, "ls")
    assert "INDUCTIVA_API_KEY" in result.stderr
    config = tmp_path / "c.ini"
    config.write_text("[storagefs]\napi_key = wrong.key\n")
    result = sfs({**bare, "STORAGEFS_CONFIG": str(config)}, "ls")
    assert str(config) in result.stderr and "INDUCTIVA_API_KEY" not in result.stderr
    key_file = Path(bare["HOME"]) / ".inductiva" / "api_key"
    key_file.parent.mkdir()
    key_file.write_text("wrong.key\n")
    result = sfs(bare, "ls")
    assert "~/.inductiva/api_key" in result.stderr and "INDUCTIVA_API_KEY" not in result.stderr

    storage.configure(api_url=server.url, api_key="wrong.key", progress=False)
    try:
        with pytest.raises(AuthenticationError, match=r"configure\(\)"):
            storage.listdir(print_results=False)
    finally:
        storage.set_client(None)


def test_a_url_without_scheme_says_what_to_write(environ):
    result = sfs(environ, "--api-url", "127.0.0.1:9", "ls")
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "http://127.0.0.1:9" in result.stderr and "--api-url" in result.stderr
    result = sfs({**environ, "INDUCTIVA_API_URL": "localhost:9"}, "size")
    assert "http://localhost:9" in result.stderr and "INDUCTIVA_API_URL" in result.stderr


# -- 14: progress only on a terminal, or when asked; units for small totals -----------------------

def test_progress_only_on_a_terminal_or_when_asked(environ, tmp_path, unique):
    for name in ("f.bin", "g.bin", "h.bin"):  # each new: a file already there is skipped
        (tmp_path / name).write_bytes(b"z" * 500)
    result = sfs(environ, "upload", str(tmp_path / "f.bin"), unique)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    result = sfs(environ, "upload", "--progress", str(tmp_path / "g.bin"), unique)
    assert result.returncode == 0, result.stderr
    assert "500B/500B" in result.stderr
    result = sfs(environ, "--no-progress", "upload", "--progress", "-q", str(tmp_path / "h.bin"),
                 unique)
    assert result.stderr == ""


# -- 15: plurals, wide characters, the footer only when asked -------------------------------------

def test_ls_plurals_widths_and_footer(server, environ, unique):
    write(server.root, {f"{unique}/one/数据文件.txt": b"x" * 10, f"{unique}/one/ab.txt": b"y"})
    result = sfs(environ, "ls", f"{unique}/one")
    assert result.returncode == 0, result.stderr
    assert "2 files" in result.stdout and "(s)" not in result.stdout
    assert "Total storage size" not in result.stdout

    def width(text: str) -> int:
        return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)

    rows = [line for line in result.stdout.splitlines() if ".txt" in line]
    columns = {width(line[:line.index("LOCAL")]) for line in rows}
    assert len(columns) == 1, rows
    result = sfs(environ, "ls", unique)
    assert "1 folder" in result.stdout and "folders" not in result.stdout
    result = sfs(environ, "ls", unique, "--usage")
    assert "Total storage size used across all regions:" in result.stdout


# -- 10: Ctrl-C -----------------------------------------------------------------------------------

def test_ctrl_c_at_a_prompt_says_interrupted(environ, unique):
    process = subprocess.Popen([sys.executable, "-m", "storagefs", "rm", f"{unique}/x"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=environ)
    assert process.stdout is not None
    process.stdout.read1(1)  # the prompt has begun
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert err.decode() == "storagefs: interrupted\n"
    assert out.decode().endswith("\n")


def test_ctrl_c_while_parsing_arguments(monkeypatch, capsys):
    """Early on (building the parser imports most of the program): no traceback either."""
    from storagefs import cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["ls"]) == 130
    assert capsys.readouterr().err == "storagefs: interrupted\n"


def test_ctrl_c_once_running_has_no_traceback(environ):
    """Once Python has started (its own start-up, before any of our code, is not ours)."""
    process = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "storagefs", "ls",
                                "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=environ)
    assert process.stderr is not None
    for line in process.stderr:  # -X importtime: one line per module imported
        if b"storagefs.config" in line:
            break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert "Traceback" not in err.decode()
    assert process.returncode in (0, 130)


def test_ctrl_c_ends_an_open_progress_line_first(server, environ, monkeypatch, capsys):
    """A bar drawn (--progress) when Ctrl-C comes: its line is ended, then "interrupted"."""
    from storagefs import cli
    from storagefs.storage import cli as storage_cli
    from storagefs.storage.progress import progress_bar

    def transfer(args):
        bar = progress_bar("Downloading", 1000)
        bar.update(400)
        raise KeyboardInterrupt

    for name in ("INDUCTIVA_API_URL", "INDUCTIVA_API_KEY", "STORAGEFS_CONFIG"):
        monkeypatch.setenv(name, environ[name])
    monkeypatch.setattr(storage_cli, "run_size", transfer)
    assert cli.main(["size", "--progress"]) == 130
    err = capsys.readouterr().err
    assert "400B/1.00kB" in err
    assert err.endswith("\nstoragefs: interrupted\n") and "\n\n" not in err
