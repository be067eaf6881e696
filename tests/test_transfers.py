"""Transfers as a Unix user expects them: names and modes kept, folders inside zips, no silent
overwrite, resumable folder transfers, member progress in the bytes the user gets."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest

import archives
from storagefs import storage
from storagefs.client import StorageClient
from storagefs.config import ClientConfig
from storagefs.errors import Conflict, CorruptArchive
from storagefs.storage import members
from storagefs.storage.extraction import extract_zip


@pytest.fixture
def client(server):
    c = StorageClient(ClientConfig(api_url=server.url, api_key=server.api_key,
                                   transfer_workers=1))
    with storage.using(c, progress=False):
        yield c
    c.close()


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def put(client: StorageClient, files: dict[str, bytes]) -> None:
    urls = client.signed_urls(list(files), "upload")
    for url, data in zip(urls, files.values()):
        client.put_file(url, io.BytesIO(data), len(data))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def task_zip(path: Path, files: dict[str, bytes], executable: tuple[str, ...] = ()) -> bytes:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 2, 3, 4, 6))
            info.create_system = 3
            info.external_attr = (0o100755 if name in executable else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return path.read_bytes()


# -- output.zip uploads -------------------------------------------------------------------------

def test_a_folder_holding_output_zip_uploads(client, unique, tmp_path):
    src = archives.write_tree(tmp_path / "task1", {"output.zip": b"PK\x05\x06" + bytes(18),
                                                   "stdout.txt": b"out"})
    storage.upload(str(src), f"{unique}/task1")
    listed = {e["name"] for e in storage.listdir(f"{unique}/task1", print_results=False)}
    assert listed == {"output.zip", "stdout.txt"}
    storage.upload(str(src / "output.zip"), f"{unique}/single")
    assert [e["name"] for e in storage.listdir(f"{unique}/single", print_results=False)] == \
        ["output.zip"]


# -- modes --------------------------------------------------------------------------------------

def test_downloaded_and_extracted_files_get_the_modes_cp_and_unzip_give(client, unique, tmp_path,
                                                                        umask022):
    data = task_zip(tmp_path / "o.zip", {"artifacts/run.sh": b"#!/bin/sh\n",
                                         "artifacts/plain.txt": b"plain"},
                    executable=("artifacts/run.sh",))
    put(client, {f"{unique}/f.txt": b"file", f"{unique}/t/output.zip": data})
    got = Path(storage.download(f"{unique}/f.txt", str(tmp_path / "a")))
    assert mode(got) == 0o644
    member = Path(storage.download(f"{unique}/t/output.zip/plain.txt", str(tmp_path / "b")))
    assert mode(member) == 0o644
    out = Path(storage.download(f"{unique}/t/output.zip", str(tmp_path / "c")))
    assert mode(out / "plain.txt") == 0o644
    assert mode(out / "run.sh") == 0o755
    os.umask(0o077)
    extract_zip(str(tmp_path / "o.zip"), str(tmp_path / "d"))
    assert mode(tmp_path / "d" / "artifacts" / "plain.txt") == 0o600
    assert mode(tmp_path / "d" / "artifacts" / "run.sh") == 0o700


# -- a folder inside a zip ----------------------------------------------------------------------

PLOTS = {"artifacts/plots/a.png": os.urandom(3000), "artifacts/plots/sub/b.png": b"b" * 5000,
         "artifacts/plots/sub/empty.txt": b"", "artifacts/other.txt": b"other"}


def test_a_folder_inside_a_zip_downloads_its_members(client, unique, tmp_path):
    put(client, {f"{unique}/output.zip": task_zip(tmp_path / "o.zip", PLOTS)})
    dest = tmp_path / "dl"
    got = storage.download(f"{unique}/output.zip/plots", str(dest))
    assert Path(got) == dest / unique / "output" / "plots"
    assert (dest / unique / "output" / "plots" / "a.png").read_bytes() == \
        PLOTS["artifacts/plots/a.png"]
    assert (dest / unique / "output" / "plots" / "sub" / "b.png").read_bytes() == b"b" * 5000
    assert (dest / unique / "output" / "plots" / "sub" / "empty.txt").read_bytes() == b""
    assert not (dest / unique / "output" / "other.txt").exists()
    exact = storage.download(f"{unique}/output.zip/artifacts/plots", str(dest))
    assert Path(exact) == dest / unique / "output" / "artifacts" / "plots"
    assert (Path(exact) / "sub" / "b.png").read_bytes() == b"b" * 5000


def test_a_damaged_member_in_a_zip_folder_fails_its_crc(client, unique, tmp_path):
    data = b"x" * 20_000
    raw = zlib.compress(data)[2:-4]
    archives.write_raw_zip(tmp_path / "bad.zip", [
        archives.RawEntry(name=b"dir/", data=b""),
        archives.RawEntry(name=b"dir/bad.txt", data=raw, method=8, size=len(data),
                          crc=zlib.crc32(data) ^ 1)])
    put(client, {f"{unique}/bad.zip": (tmp_path / "bad.zip").read_bytes()})
    with pytest.raises(CorruptArchive, match="CRC-32"):
        storage.download(f"{unique}/bad.zip/dir", str(tmp_path / "dl"))
    assert not (tmp_path / "dl" / unique / "bad" / "dir" / "bad.txt").exists()


# -- names and existing files -------------------------------------------------------------------

def test_names_are_kept_where_the_local_file_system_allows_them(client, unique, tmp_path):
    names = ["weird #%?&+.txt", 'we:ird<>|"*.txt', "back\\slash.txt",
             "長" * 84]  # 252 bytes: the temporary name must still fit in 255
    put(client, {f"{unique}/n/{name}": name.encode() for name in names})
    storage.download(f"{unique}/n", str(tmp_path))
    for name in names:
        assert (tmp_path / unique / "n" / name).read_bytes() == name.encode()


def test_a_different_local_file_is_not_overwritten_unless_asked(client, unique, tmp_path):
    put(client, {f"{unique}/d/a.txt": b"stored", f"{unique}/d/b.txt": b"bbbb",
                 f"{unique}/output.zip": task_zip(tmp_path / "o.zip", PLOTS)})
    dest = tmp_path / "dl"
    storage.download(f"{unique}/d", str(dest))
    a = dest / unique / "d" / "a.txt"
    for edit in (b"edited", b"locally edited"):  # same size, then another size
        a.write_bytes(edit)
        with pytest.raises(Conflict, match="--overwrite"):
            storage.download(f"{unique}/d", str(dest))
        with pytest.raises(Conflict, match="--overwrite"):
            storage.download(f"{unique}/d/a.txt", str(dest))
        assert a.read_bytes() == edit
    from storagefs.storage.overwrite import overwriting
    with overwriting():
        storage.download(f"{unique}/d", str(dest))
    assert a.read_bytes() == b"stored"

    member = Path(storage.download(f"{unique}/output.zip/plots/a.png", str(dest)))
    inode = member.stat().st_ino
    storage.download(f"{unique}/output.zip/plots/a.png", str(dest))  # identical: skipped
    assert member.stat().st_ino == inode
    member.write_bytes(b"mine")
    with pytest.raises(Conflict, match="--overwrite"):
        storage.download(f"{unique}/output.zip/plots", str(dest))
    assert member.read_bytes() == b"mine"


def test_extraction_skips_identical_files_and_refuses_different_ones(tmp_path):
    task_zip(tmp_path / "o.zip", {"a.txt": b"aaa", "b.txt": b"bbb"})
    extract_zip(str(tmp_path / "o.zip"), str(tmp_path / "x"))
    inode = (tmp_path / "x" / "a.txt").stat().st_ino
    extract_zip(str(tmp_path / "o.zip"), str(tmp_path / "x"))
    assert (tmp_path / "x" / "a.txt").stat().st_ino == inode
    (tmp_path / "x" / "b.txt").write_bytes(b"BBB")
    with pytest.raises(Conflict, match="--overwrite"):
        extract_zip(str(tmp_path / "o.zip"), str(tmp_path / "x"))
    assert (tmp_path / "x" / "b.txt").read_bytes() == b"BBB"


def test_cli_download_overwrite_flag(server, unique, tmp_path):
    c = StorageClient(ClientConfig(api_url=server.url, api_key=server.api_key))
    put(c, {f"{unique}/f.txt": b"stored"})
    c.close()
    env = {**os.environ, "INDUCTIVA_API_URL": server.url, "INDUCTIVA_API_KEY": server.api_key,
           "STORAGEFS_CONFIG": str(tmp_path / "absent.ini"),
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    (tmp_path / unique).mkdir()
    (tmp_path / unique / "f.txt").write_bytes(b"mine!!")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "storagefs", "download", "-q", *args],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)

    refused = cli(f"{unique}/f.txt")
    assert refused.returncode == 1 and "--overwrite" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert (tmp_path / unique / "f.txt").read_bytes() == b"mine!!"
    done = cli(f"{unique}/f.txt", "--overwrite")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / unique / "f.txt").read_bytes() == b"stored"


# -- member progress ----------------------------------------------------------------------------

class Recorder:
    def __init__(self, total: int) -> None:
        self.total = total
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc) -> None:
        pass


def test_member_progress_counts_the_bytes_the_user_gets(client, unique, tmp_path, monkeypatch):
    bars: list[Recorder] = []

    def progress_bar(desc: str, total: int) -> Recorder:
        bars.append(Recorder(total))
        return bars[-1]

    monkeypatch.setattr(members, "progress_bar", progress_bar)
    text = b"compressible " * 40_000
    put(client, {f"{unique}/output.zip": task_zip(tmp_path / "o.zip", {"artifacts/t.txt": text})})
    storage.download(f"{unique}/output.zip/t.txt", str(tmp_path / "dl"))
    assert (bars[-1].total, bars[-1].n) == (len(text), len(text))

    raw = zlib.compress(text)[2:-4]
    archives.write_raw_zip(tmp_path / "bad.zip", [archives.RawEntry(
        name=b"bad.txt", data=raw, method=8, size=len(text), crc=zlib.crc32(text) ^ 1)])
    put(client, {f"{unique}/bad.zip": (tmp_path / "bad.zip").read_bytes()})
    with pytest.raises(CorruptArchive):
        storage.download(f"{unique}/bad.zip/bad.txt", str(tmp_path / "dl"))
    assert bars[-1].total == len(text) and bars[-1].n < len(text)


# -- interrupted folder transfers ---------------------------------------------------------------

def interrupt_after(monkeypatch, client: StorageClient, name: str, calls: int) -> list[str]:
    """Makes ``client.<name>`` raise KeyboardInterrupt on call number ``calls`` (from 1)."""
    original = getattr(client, name)
    seen: list[str] = []

    def wrapper(url, *args, **kwargs):
        seen.append(url)
        if len(seen) == calls:
            raise KeyboardInterrupt
        return original(url, *args, **kwargs)

    monkeypatch.setattr(client, name, wrapper)
    return seen


def test_an_interrupted_folder_upload_says_what_was_done_and_resumes(
        client, unique, tmp_path, monkeypatch):
    src = archives.write_tree(tmp_path / "src", {f"f{i:02}.txt": b"%02d" % i for i in range(8)})
    with monkeypatch.context() as m:
        interrupt_after(m, client, "put_file", 4)
        with pytest.raises(KeyboardInterrupt) as info:
            storage.upload(str(src), unique)
    notes = getattr(info.value, "__notes__", [])
    assert notes == ["3 of 8 files uploaded; run the same command again to resume "
                     "(files already there and identical are skipped)"]
    with monkeypatch.context() as m:
        interrupt_after(m, client, "put_file", 2)
        with pytest.raises(KeyboardInterrupt) as info:
            storage.upload(str(src), unique)
    assert info.value.__notes__[0].startswith("4 of 8 files uploaded;")
    with monkeypatch.context() as m:
        sent = interrupt_after(m, client, "put_file", 0)
        storage.upload(str(src), unique)
    assert len(sent) == 4
    # A local file changed after its upload is sent again, even at the same size.
    (src / "f00.txt").write_bytes(b"XX")
    future = os.path.getmtime(src / "f00.txt") + 5
    os.utime(src / "f00.txt", (future, future))
    with monkeypatch.context() as m:
        sent = interrupt_after(m, client, "put_file", 0)
        storage.upload(str(src), unique)
    assert len(sent) == 1


def test_an_interrupted_folder_download_says_what_was_done_and_resumes(
        client, unique, tmp_path, monkeypatch):
    put(client, {f"{unique}/f{i:02}.txt": b"%02d" % i for i in range(6)})
    dest = tmp_path / "dl"
    with monkeypatch.context() as m:
        original = client.stream
        seen = []

        @contextlib.contextmanager
        def stream(url, *args, **kwargs):
            seen.append(url)
            if len(seen) == 3:
                raise KeyboardInterrupt
            with original(url, *args, **kwargs) as chunks:
                yield chunks

        m.setattr(client, "stream", stream)
        with pytest.raises(KeyboardInterrupt) as info:
            storage.download(unique, str(dest))
    assert getattr(info.value, "__notes__", []) == [
        "2 of 6 files downloaded; run the same command again to resume "
        "(files already there and identical are skipped)"]
    first = {p.name: p.stat().st_ino for p in (dest / unique).iterdir()}
    assert len(first) == 2
    storage.download(unique, str(dest))
    assert sorted(p.name for p in (dest / unique).iterdir()) == [f"f{i:02}.txt" for i in range(6)]
    assert all((dest / unique / n).stat().st_ino == ino for n, ino in first.items())
