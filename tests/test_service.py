"""Against a stand-in for the Inductiva service (tests/servicestandin.py): what a member costs
to open when the listing's data offsets are right, and when they are wrong.

The listing's ``range_start`` is used only once the member's local header proves it, and the
proof rides on the GET that fetches the member's first bytes: a right offset costs no request
of its own, a wrong one exactly one ``zip-file-range``. Never a wrong byte either way.
"""

from __future__ import annotations

import pytest

from storagefs import storage
from storagefs.client import StorageClient
from storagefs.config import ClientConfig
from storagefs.mount.backend import CachedBackend, ClientBackend
from storagefs.mount.read import ReadContext
from storagefs.mount.vfs import VFS

import archives
from servicestandin import WRONG_OFFSETS, ServiceStandIn

PRODUCERS = {
    "zip-deflate": lambda d: archives.build_zip_cli(d, method="deflate"),
    "7zz-deflate-stream": lambda d: archives.build_7zz(d, method="Deflate", streamed=True),
    "stream-zip": lambda d: archives.build_stream_zip(d),
    "py-store": lambda d: archives.build_pyzip(d, method="store"),
}


@pytest.fixture(scope="module")
def stored(server, tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """{archive path: {member: bytes}} put in the server for this module."""
    build = tmp_path_factory.mktemp("service-archives")
    result = {}
    for producer, make in PRODUCERS.items():
        try:
            path, files = make(build / producer)
        except archives.MissingTool as exc:
            pytest.skip(str(exc))
        target = server.root / "service-tests" / producer / "output.zip"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
        result[f"service-tests/{producer}/output.zip"] = files
    return result


def open_every_member(url: str, api_key: str, stored: dict[str, dict[str, bytes]],
                      standin: ServiceStandIn) -> tuple[int, dict[str, int]]:
    """Reads every member through a fresh VFS; returns (members, requests by kind), counted
    after the listings so that only what opening and reading cost is left."""
    client = StorageClient(ClientConfig(api_url=url, api_key=api_key, retries=1))
    vfs = VFS(CachedBackend(ClientBackend(client)), context=ReadContext(64 << 20))
    try:
        for archive in stored:
            vfs.list(f"/{archive}")  # the listing and a signed URL, before counting
            vfs.backend.download_url(archive)
        standin.reset_counts()
        members = 0
        for archive, files in stored.items():
            for name, data in files.items():
                reader = vfs.open(f"/{archive}/{name}")
                try:
                    assert reader.read(0, len(data) + 1) == data, (archive, name)
                finally:
                    reader.close()
                members += 1
        return members, dict(standin.requests)
    finally:
        client.close()


def test_right_offsets_cost_no_request_and_wrong_ones_one(server, stored, figures):
    with ServiceStandIn(server.url, central_offsets=False) as right, \
            ServiceStandIn(server.url, offset_error=WRONG_OFFSETS) as wrong:
        members, right_counts = open_every_member(right.url, server.api_key, stored, right)
        same, wrong_counts = open_every_member(wrong.url, server.api_key, stored, wrong)
    assert same == members
    # Every member of these archives is under 128 KiB: one GET holds its header and its data.
    assert right_counts == {"GET object": members}, right_counts
    assert wrong_counts == {"GET object": members,
                            "GET /storage/zip-file-range": members}, wrong_counts
    figures["members opened via the service stand-in, offsets right: requests each"] = \
        sum(right_counts.values()) / members
    figures["members opened via the service stand-in, offsets wrong: requests each"] = \
        sum(wrong_counts.values()) / members


def test_expiring_urls_ignored_ranges_and_no_head(server, stored, tmp_path):
    """URLs that expire after two uses (400 ExpiredToken), a store that ignores Range (200 with
    the whole object) and refuses HEAD: the mount and the library renew and read through."""
    with ServiceStandIn(server.url, expire_after=2, ignore_range=True) as standin:
        members, counts = open_every_member(standin.url, server.api_key, stored, standin)
        assert counts.get("expired", 0) >= 1 and counts.get("GET /storage/signed-urls"), counts
        client = StorageClient(ClientConfig(api_url=standin.url, api_key=server.api_key))
        with client, storage.using(client, progress=False):
            for archive, files in stored.items():
                name, data = max(files.items(), key=lambda item: len(item[1]))
                got = storage.download(f"{archive}/{name}", str(tmp_path / "members"))
                assert open(got, "rb").read() == data
            archive = next(iter(stored))
            storage.download(archive, str(tmp_path / "whole"), decompress=False)
            assert (tmp_path / "whole" / archive).read_bytes() == \
                (server.root / archive).read_bytes()


def test_folder_download_keeps_to_the_folder_the_service_expands_by_prefix(service, server,
                                                                           tmp_path):
    """The service expands ``mydata`` by raw prefix (``mydata2/...`` too): the download keeps
    to the folder asked for, and the path is sent as typed (a trailing slash kept)."""
    for name, data in {"prefix-tests/mydata/a.txt": b"a", "prefix-tests/mydata/sub/b.txt": b"b",
                       "prefix-tests/mydata2/c.txt": b"c"}.items():
        (server.root / name).parent.mkdir(parents=True, exist_ok=True)
        (server.root / name).write_bytes(data)
    client = StorageClient(ClientConfig(api_url=service.url, api_key=server.api_key))
    with client, storage.using(client, progress=False):
        assert len(client.signed_urls(["prefix-tests/mydata"], "download")) == 3
        for typed in ("prefix-tests/mydata", "prefix-tests/mydata/"):
            dest = tmp_path / typed.replace("/", "_")
            storage.download(typed, str(dest))
            got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
            assert got == ["prefix-tests/mydata/a.txt", "prefix-tests/mydata/sub/b.txt"]
        assert service.requests["GET /storage/signed-urls"] >= 2


def test_a_listed_offset_of_zero_is_proven_too(server, tmp_path):
    """A listing that gives the local header's offset (0 for the first member) instead of the
    data's: nothing before the data to prove it, so zip-file-range is asked, for a stored
    member without crc32 too (whose size alone would have passed)."""
    data = b"first member, stored\n" * 50
    path, _ = archives.build_pyzip(tmp_path, {"first.txt": data, "second.txt": b"2"}, "store",
                                   name="zero.zip")
    (server.root / "zero-tests").mkdir(exist_ok=True)
    (server.root / "zero-tests" / "zero.zip").write_bytes(path.read_bytes())
    with open(path, "rb") as handle:
        start = archives.read_local_data_offset(handle, 0)

    def to_header(name: str) -> int:
        return -start if name == "first.txt" else 0

    with ServiceStandIn(server.url, central_offsets=False, offset_error=to_header) as standin:
        client = StorageClient(ClientConfig(api_url=standin.url, api_key=server.api_key))
        with client, storage.using(client, progress=False):
            got = storage.download("zero-tests/zero.zip/first.txt", str(tmp_path / "dl"))
            assert open(got, "rb").read() == data
        assert standin.requests["GET /storage/zip-file-range"] == 1
        vfs = VFS(CachedBackend(ClientBackend(StorageClient(ClientConfig(
            api_url=standin.url, api_key=server.api_key)))))
        reader = vfs.open("/zero-tests/zero.zip/first.txt")
        try:
            assert reader.read(0, len(data) + 1) == data
        finally:
            reader.close()
