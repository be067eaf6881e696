"""The official ``inductiva`` client, unchanged, against our server (docs/protocol.md §6).

The client is installed into a virtualenv of its own under ``.compat/`` (kept between runs):
it pins dependencies of its own that must not leak into ours.
"""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from officialsdk import official_client_python

pytestmark = pytest.mark.compat


def make_fixture(work: Path) -> dict[str, bytes]:
    upload = work / "upload"
    files = {"mydata/a.txt": b"alpha\n" * 100, "mydata/sub/b.txt": b"beta\n",
             "mydata/with space.txt": b"space\n", "single.txt": b"single\n"}
    for name, data in files.items():
        (upload / name).parent.mkdir(parents=True, exist_ok=True)
        (upload / name).write_bytes(data)
    members = {"artifacts/stdout.txt": b"step 1 ok\n" * 5000,
               "artifacts/stored.bin": os.urandom(777),
               "artifacts/sub/nested.txt": b"nested\n" * 30}
    with zipfile.ZipFile(upload / "archive.zip", "w") as zf:
        zf.writestr("artifacts/", b"")
        zf.writestr("artifacts/stdout.txt", members["artifacts/stdout.txt"], zipfile.ZIP_DEFLATED)
        zf.writestr("artifacts/stored.bin", members["artifacts/stored.bin"], zipfile.ZIP_STORED)
        zf.writestr("artifacts/sub/nested.txt", members["artifacts/sub/nested.txt"],
                    zipfile.ZIP_DEFLATED)
    return members


def client_env(server, home: Path, **extra: str) -> dict[str, str]:
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDUCTIVA_")}
    env.update(HOME=str(home), INDUCTIVA_API_URL=server.url, INDUCTIVA_API_KEY=server.api_key,
               INDUCTIVA_DISABLE_IMPORT_INFO="true", **extra)
    return env


def test_import_with_account_info(make_server, tmp_path):
    """Without INDUCTIVA_DISABLE_IMPORT_INFO the import also asks /users/info and /users/quotas."""
    python = official_client_python()
    srv = make_server()
    env = client_env(srv, tmp_path / "home")
    del env["INDUCTIVA_DISABLE_IMPORT_INFO"]
    run = subprocess.run([str(python), "-c", "import inductiva"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr


def test_official_client_storage_calls(make_server, tmp_path):
    python = official_client_python()
    srv = make_server()
    work = tmp_path / "work"
    work.mkdir()
    members = make_fixture(work)
    script = Path(__file__).parent / "compat" / "official_client.py"
    run = subprocess.run([str(python), str(script), str(work)],
                         env=client_env(srv, tmp_path / "home"),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    line = [text for text in run.stdout.splitlines() if text.startswith("RESULT ")][0]
    result = json.loads(line[len("RESULT "):])

    assert {e["name"] for e in result["listdir"]} == {"mydata/", "task1/", "single.txt"}
    sizes = {e["name"]: e["size"] for e in result["listdir_recursive"]}
    assert sizes["mydata/"] == 600 + 5 + 6 and sizes["single.txt"] == 7
    assert result["listdir_max2"] == 2
    assert "mydata/" in run.stdout
    assert "You have storage in the following regions: local" in run.stdout

    zip_size = (work / "upload" / "archive.zip").stat().st_size
    assert result["zip_root"] == {"size": zip_size, "files": ["artifacts/"]}
    assert result["zip_artifacts"]["files"] == ["stdout.txt", "stored.bin", "sub/"]
    assert result["zip_artifacts_slash"] == result["zip_artifacts"]
    assert "artifacts/sub/nested.txt" in result["zip_recursive"]["files"]

    # ranges agree with the local archive's own local headers
    archive = work / "upload" / "archive.zip"
    with zipfile.ZipFile(archive) as zf, open(archive, "rb") as f:
        for name, (start, end) in result["ranges"].items():
            info = zf.getinfo("artifacts/" + name)
            f.seek(info.header_offset + 26)
            name_len = int.from_bytes(f.read(2), "little")
            extra_len = int.from_bytes(f.read(2), "little")
            assert start == info.header_offset + 30 + name_len + extra_len
            assert end == start + info.compress_size - 1
            assert result["zip_entries"][name][2] == start

    assert result["downloaded_folder"] == ["compat/mydata/a.txt", "compat/mydata/sub/b.txt",
                                           "compat/mydata/with space.txt"]
    assert (work / "dl/compat/mydata/a.txt").read_bytes() == b"alpha\n" * 100
    out = work / "dl_member/compat/task1/output"
    assert (out / "stdout.txt").read_bytes() == members["artifacts/stdout.txt"]
    assert (out / "stored.bin").read_bytes() == members["artifacts/stored.bin"]
    # nested members need the server's shim for the client's glued prefix ('artifactssub')
    assert (out / "sub/nested.txt").read_bytes() == members["artifacts/sub/nested.txt"]
    # a whole output.zip is extracted (its artifacts/ folder) and the zip removed
    extracted = work / "dl_zip/compat/task1/output"
    assert (extracted / "stdout.txt").read_bytes() == members["artifacts/stdout.txt"]
    assert not (work / "dl_zip/compat/task1/output.zip").exists()

    assert isinstance(result["space_used_gib"], float)
    assert result["after_remove"] == ["mydata/"]
    assert not (srv.root / "compat/task1").exists()
