"""The storage verbs of the CLI against the real server: output, exit status, one-line errors."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile

import pytest

from storagefs import cli

VERBS = ["ls", "download", "upload", "rm", "cp", "zip-ls", "size", "export"]


@pytest.fixture
def env(server, monkeypatch, tmp_path):
    monkeypatch.setenv("INDUCTIVA_API_URL", server.url)
    monkeypatch.setenv("INDUCTIVA_API_KEY", server.api_key)
    monkeypatch.setenv("STORAGEFS_CONFIG", str(tmp_path / "absent.ini"))
    monkeypatch.chdir(tmp_path)
    return server


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("verb", VERBS)
def test_help_for_every_verb(verb, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([verb, "--help"])
    assert info.value.code == 0
    assert f"storagefs {verb}" in capsys.readouterr().out


def test_upload_ls_download_cp_rm(env, capsys, tmp_path, unique):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha")
    (src / "sub" / "b.txt").write_bytes(b"beta")
    code, out, _ = run(capsys, "upload", "-q", str(src), unique)
    assert code == 0 and "Uploaded" in out

    code, out, _ = run(capsys, "ls", unique, "-o", "name", "-s", "asc")
    assert code == 0
    assert out.splitlines()[1].split() == ["NAME", "SIZE", "CREATION", "TIME", "PROVIDER",
                                           "REGION"]
    assert "a.txt" in out and "sub/" in out and "Listed 1 folder and 1 file, by name." in out

    code, out, _ = run(capsys, "download", "-q", unique, "dl")
    assert code == 0
    assert (tmp_path / "dl" / unique / "sub" / "b.txt").read_bytes() == b"beta"

    code, out, _ = run(capsys, "cp", unique, f"{unique}-copy", "--wait")
    assert code == 0 and ": OK" in out
    code, out, _ = run(capsys, "rm", "-y", f"{unique}-copy")
    assert code == 0 and "Removed" in out
    code, _, err = run(capsys, "ls", f"{unique}-copy")
    assert code == 1 and err.startswith("storagefs: error: ") and err.count("\n") == 1


def test_zip_ls_and_member_download(env, capsys, tmp_path, unique):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("artifacts/stdout.txt", b"log line\n" * 500)
        zf.writestr("artifacts/sub/d.bin", os.urandom(1000))
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "output.zip").write_bytes(buf.getvalue())
    from storagefs.client import StorageClient
    from storagefs.config import ClientConfig
    with StorageClient(ClientConfig.from_env()) as client:
        url = client.signed_urls([f"{unique}/output.zip"], "upload")[0]
        with open(tmp_path / "t" / "output.zip", "rb") as handle:
            client.put_file(url, handle)

    code, out, _ = run(capsys, "zip-ls", f"{unique}/output.zip", "artifacts")
    assert code == 0 and "stdout.txt" in out and "deflate" in out and "sub/" in out
    code, out, _ = run(capsys, "download", "-q", f"{unique}/output.zip/stdout.txt")
    assert code == 0
    assert (tmp_path / unique / "output" / "stdout.txt").read_bytes() == b"log line\n" * 500
    code, out, _ = run(capsys, "download", "-q", "--decompress", f"{unique}/output.zip", "x")
    assert code == 0 and (tmp_path / "x" / unique / "output" / "sub" / "d.bin").exists()
    assert not (tmp_path / "x" / unique / "output.zip").exists()


def test_size_and_usage_errors(env, capsys):
    code, out, _ = run(capsys, "size")
    assert code == 0 and "Total storage size used across all regions:" in out
    with pytest.raises(SystemExit) as info:
        cli.main(["ls", "--max-results", "many"])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("usage: storagefs ls ")
    with pytest.raises(SystemExit) as info:
        cli.main(["rm"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: storagefs rm ") and "at least one path" in err


def test_rm_asks_first(env, capsys, monkeypatch, unique):
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    code, out, err = run(capsys, "rm", f"{unique}/x")
    assert code == 1 and "Are you sure" in out and "Nothing removed" in err


def test_errors_are_one_line_without_traceback(env, tmp_path):
    """As a real process: exit 1, one line on stderr, and --debug shows the traceback."""
    cmd = [sys.executable, "-m", "storagefs", "ls", "no-such-folder-anywhere"]
    environ = {**os.environ, "INDUCTIVA_API_URL": env.url, "INDUCTIVA_API_KEY": env.api_key}
    result = subprocess.run(cmd, capture_output=True, text=True, env=environ, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("storagefs: error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr

    bad = {**environ, "INDUCTIVA_API_KEY": "wrong.key"}
    result = subprocess.run(cmd[:4], capture_output=True, text=True, env=bad, timeout=60)
    assert result.returncode == 1 and "API key" in result.stderr

    result = subprocess.run([*cmd[:3], "--debug", *cmd[3:]], capture_output=True, text=True,
                            env=environ, timeout=60)
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_top_level_help_is_written_for_users(capsys, monkeypatch):
    """``storagefs --help``: what it is, the verbs by purpose, where to look next; one screen."""
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: storagefs ")
    assert "as a local drive" in out and "argparse" not in out and "main(argv)" not in out
    for group in ["serve ", "mount, umount ", f"{', '.join(VERBS)}\n"]:  # the verbs by purpose
        assert f"\n  {group}" in out
    for verb in ["serve", "mount", "umount", *VERBS]:
        assert f"\n    {verb} " in out
    assert "storagefs COMMAND --help" in out
    assert "INDUCTIVA_API_URL" in out and "INDUCTIVA_API_KEY" in out
    assert len(out.splitlines()) <= 40


def test_no_verb_prints_the_help_as_a_usage_error(capsys):
    """``storagefs`` alone: the help, to read or page, and exit 2 as a usage error, so that a
    script that lost its verb does not pass."""
    assert cli.main([]) == 2
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("usage: storagefs ") and "storagefs COMMAND --help" in out
