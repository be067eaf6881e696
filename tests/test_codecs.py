"""ZIP member decoders: every method, any chunking, bounded output, truncation and CRC checks."""

from __future__ import annotations

import bz2
import io
import lzma
import random
import shutil
import struct
import subprocess
import zipfile
import zlib

import pytest
from hypothesis import given, settings, strategies as st

from storagefs import protocol
from storagefs.zipfmt import codecs
from storagefs.errors import CorruptArchive, UnsupportedMethod

PAYLOAD = (b"time step 42: pressure 1.0132e5 velocity 3.2 \n" * 3000
           + bytes(random.Random(7).randrange(256) for _ in range(20000)))


def raw_member(archive: bytes, info: zipfile.ZipInfo) -> bytes:
    """The compressed bytes of a member, located through its local header."""
    offset = info.header_offset
    name_len, extra_len = struct.unpack("<HH", archive[offset + 26:offset + 30])
    start = offset + 30 + name_len + extra_len
    return archive[start:start + info.compress_size]


def python_zip(method: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        zf.writestr("data.bin", PAYLOAD)
    return buf.getvalue()


def chunked(data: bytes, size: int):
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def decode_member(archive: bytes, chunk: int = 4096) -> bytes:
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        info = zf.infolist()[0]
    raw = raw_member(archive, info)
    return b"".join(codecs.decode_chunks(info.compress_type, chunked(raw, chunk),
                                         crc32=info.CRC, size=info.file_size, name=info.filename))


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                                    zipfile.ZIP_LZMA])
@pytest.mark.parametrize("chunk", [1 << 20, 4096, 7])
def test_python_zipfile_methods(method, chunk):
    if chunk == 7 and method == zipfile.ZIP_BZIP2:
        chunk = 97  # bzip2 is slow one tiny chunk at a time; still many chunks
    assert decode_member(python_zip(method), chunk) == PAYLOAD


@pytest.mark.skipif(shutil.which("7zz") is None, reason="7zz not installed")
def test_deflate64_from_7zz(tmp_path):
    (tmp_path / "data.bin").write_bytes(PAYLOAD)
    subprocess.run(["7zz", "a", "-tzip", "-mm=Deflate64", "-bd", "-bso0", str(tmp_path / "a.zip"),
                    "data.bin"], cwd=tmp_path, check=True)
    archive = (tmp_path / "a.zip").read_bytes()
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        assert zf.infolist()[0].compress_type == protocol.DEFLATE64
    assert decode_member(archive, 1000) == PAYLOAD


def test_xz_and_zstd_streams():
    xz = lzma.compress(PAYLOAD, format=lzma.FORMAT_XZ)
    assert codecs.decompress_bytes(protocol.XZ, xz, crc32=zlib.crc32(PAYLOAD)) == PAYLOAD
    zstandard = pytest.importorskip("zstandard")
    frame = zstandard.ZstdCompressor().compress(PAYLOAD)
    for method in (protocol.ZSTD, protocol.ZSTD_LEGACY):
        out = b"".join(codecs.decode_chunks(method, chunked(frame, 333), size=len(PAYLOAD)))
        assert out == PAYLOAD
    # Two frames back to back decode as one member.
    two = frame + zstandard.ZstdCompressor().compress(b"tail")
    assert codecs.decompress_bytes(protocol.ZSTD, two) == PAYLOAD + b"tail"
    with pytest.raises(CorruptArchive, match="truncated"):
        codecs.decompress_bytes(protocol.ZSTD, frame[:-5])


def test_lzma_header_split_across_chunks():
    # The 4-byte header and 5 bytes of properties arrive over several calls.
    assert decode_member(python_zip(zipfile.ZIP_LZMA), 3) == PAYLOAD


@pytest.mark.parametrize("method", [protocol.STORED, protocol.DEFLATED, protocol.BZIP2,
                                    protocol.LZMA, protocol.XZ, protocol.DEFLATE64])
def test_max_length_bounds_every_call(method, tmp_path):
    if method == protocol.XZ:
        raw = lzma.compress(PAYLOAD, format=lzma.FORMAT_XZ)
    elif method == protocol.DEFLATE64:
        if shutil.which("7zz") is None:
            pytest.skip("7zz not installed")
        (tmp_path / "d").write_bytes(PAYLOAD)
        subprocess.run(["7zz", "a", "-tzip", "-mm=Deflate64", "-bd", "-bso0", "a.zip", "d"],
                       cwd=tmp_path, check=True)
        archive = (tmp_path / "a.zip").read_bytes()
        with zipfile.ZipFile(io.BytesIO(archive)) as zf:
            raw = raw_member(archive, zf.infolist()[0])
    else:
        archive = python_zip(method)
        with zipfile.ZipFile(io.BytesIO(archive)) as zf:
            raw = raw_member(archive, zf.infolist()[0])
    decoder = codecs.make_decoder(method)
    pieces = chunked(raw, 50_000)
    out = []
    while pieces or not decoder.needs_input:
        data = pieces.pop(0) if decoder.needs_input else b""
        got = decoder.decompress(data, 1000)
        assert len(got) <= 1000
        out.append(got)
    out.append(decoder.flush())
    assert b"".join(out) == PAYLOAD


def test_deflate_truncated_and_trailing_bytes():
    raw = zlib.compressobj(6, zlib.DEFLATED, -15)
    stream = raw.compress(PAYLOAD) + raw.flush()
    with pytest.raises(CorruptArchive, match="truncated"):
        codecs.decompress_bytes(protocol.DEFLATED, stream[:-1])
    # Bytes past the end of the stream are ignored, as zipfile ignores them.
    assert codecs.decompress_bytes(protocol.DEFLATED, stream + b"junk") == PAYLOAD
    with pytest.raises(CorruptArchive, match="corrupt"):
        codecs.decompress_bytes(protocol.DEFLATED, b"\xff" * 100)


def test_bzip2_truncated():
    data = bz2.compress(PAYLOAD)
    with pytest.raises(CorruptArchive):
        codecs.decompress_bytes(protocol.BZIP2, data[: len(data) // 2])


def test_crc_and_size_checks():
    assert codecs.decompress_bytes(0, b"abc", crc32=zlib.crc32(b"abc"), size=3) == b"abc"
    with pytest.raises(CorruptArchive, match="CRC-32"):
        codecs.decompress_bytes(0, b"abc", crc32=zlib.crc32(b"abd"))
    with pytest.raises(CorruptArchive, match="expected 4"):
        codecs.decompress_bytes(0, b"abc", size=4)
    with pytest.raises(CorruptArchive, match="longer"):
        codecs.decompress_bytes(0, b"abcde", size=4, name="m.txt")
    check = codecs.Crc32Check(zlib.crc32(b"ab"), 2)
    check.update(b"a")
    twin = check.copy()
    twin.update(b"b")
    twin.verify()
    assert check.size == 1


def test_unsupported_method():
    with pytest.raises(UnsupportedMethod, match="99"):
        codecs.make_decoder(99)
    assert not codecs.is_supported(99)
    assert {0, 8, 9, 12, 14, 95} <= set(codecs.supported_methods())
    assert codecs.method_name(8) == "deflate" and codecs.method_name(99) == "method 99"
    assert isinstance(UnsupportedMethod("x"), OSError)


def test_deflate_copy_resumes_independently():
    raw = zlib.compressobj(6, zlib.DEFLATED, -15)
    stream = raw.compress(PAYLOAD) + raw.flush()
    decoder = codecs.make_decoder(protocol.DEFLATED)
    assert decoder.can_copy
    head = decoder.decompress(stream[:5000])
    snapshot = decoder.copy()
    rest = decoder.decompress(stream[5000:]) + decoder.flush()
    again = snapshot.decompress(stream[5000:]) + snapshot.flush()
    assert head + rest == PAYLOAD and rest == again
    assert not codecs.make_decoder(protocol.BZIP2).can_copy
    with pytest.raises(NotImplementedError):
        codecs.make_decoder(protocol.BZIP2).copy()


def test_decompress_after_flush_is_an_error():
    decoder = codecs.make_decoder(0)
    decoder.flush()
    with pytest.raises(ValueError):
        decoder.decompress(b"x")


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=5000), cuts=st.lists(st.integers(1, 700), max_size=20),
       level=st.integers(0, 9))
def test_deflate_any_chunking(data, cuts, level):
    comp = zlib.compressobj(level, zlib.DEFLATED, -15)
    stream = comp.compress(data) + comp.flush()
    pieces, pos = [], 0
    for cut in cuts:
        pieces.append(stream[pos:pos + cut])
        pos += cut
    pieces.append(stream[pos:])
    out = b"".join(codecs.decode_chunks(8, pieces, crc32=zlib.crc32(data), size=len(data)))
    assert out == data


def test_empty_members():
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=method) as zf:
            zf.writestr("empty", b"")
        archive = buf.getvalue()
        with zipfile.ZipFile(io.BytesIO(archive)) as zf:
            info = zf.infolist()[0]
        raw = raw_member(archive, info)
        assert codecs.decompress_bytes(method, raw, crc32=info.CRC, size=0) == b""
