"""Test archives built by the real producers, plus hand-crafted odd and hostile ones.

Every builder writes into a given directory and returns ``(path, files)`` where ``files`` maps
each member name to its original bytes (directories are not in ``files``). Content is
deterministic: seeded random bytes mixed with compressible text, so compressed sizes are stable
from run to run. Builders that need an external tool check for it first and raise
``MissingTool`` with the package to install.

The producers mirror docs/protocol.md §4.4: 7-Zip (file or streamed to stdout, which writes data
descriptors), the stream-zip library (ZIP_64 members, explicit directory entries), Python's
zipfile, plus Debian's Info-ZIP ``zip``.
"""

from __future__ import annotations

import bz2
import datetime as dt
import io
import lzma
import os
import random
import shutil
import stat
import struct
import subprocess
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

Files = dict[str, bytes]
Built = tuple[Path, Files]

SAMPLE_UTF8_NAME = "artifacts/résumé ü.txt"


class MissingTool(RuntimeError):
    """A producer needed by a test is not installed."""


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingTool(f"'{name}' is not installed (Debian package: {package})")
    return path


# ------------------------------------------------------------------------------ content


def text_bytes(seed: int, size: int) -> bytes:
    """Compressible log-like text."""
    rng = random.Random(seed)
    words = ["step", "residual", "converged", "pressure", "velocity", "iteration", "dt=", "0.001"]
    lines = []
    total = 0
    while total < size:
        line = f"{rng.randrange(10**6):07d} " + " ".join(rng.choice(words) for _ in range(8))
        lines.append(line)
        total += len(line) + 1
    return ("\n".join(lines) + "\n").encode()[:size]


def mixed_bytes(seed: int, size: int) -> bytes:
    """Alternating runs of random bytes and text: exercises both stored and Huffman blocks."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        run = rng.randrange(512, 8192)
        out += rng.randbytes(run) if rng.random() < 0.5 else text_bytes(rng.randrange(1 << 30), run)
    return bytes(out[:size])


def sample_files() -> Files:
    """A small task output tree, as the task runner would zip it (docs/protocol.md §4.4)."""
    return {
        "artifacts/stdout.txt": text_bytes(1, 40_000),
        "artifacts/stderr.txt": b"warning: x\n",
        "artifacts/sub/data.bin": mixed_bytes(2, 100_000),
        SAMPLE_UTF8_NAME: "é à ü 日本\n".encode() * 50,
        "artifacts/empty.txt": b"",
    }


def directories_of(names: list[str]) -> list[str]:
    """Every parent directory ('a/', 'a/b/') of the names, in first-seen order."""
    seen: dict[str, None] = {}
    for name in names:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            seen.setdefault("/".join(parts[:i]) + "/", None)
    return list(seen)


def zip_bytes(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    """A small archive, in memory."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


def write_tree(root: Path, files: Files) -> Path:
    """Write the files under ``root`` (created); returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def _fresh(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    if target.exists():
        target.unlink()
    return target


def _run(cmd: list[str], cwd: Path, stdout=subprocess.DEVNULL) -> None:
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    result = subprocess.run(cmd, cwd=cwd, stdout=stdout, stderr=subprocess.PIPE, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): "
                           f"{result.stderr.decode(errors='replace')[-2000:]}")


# ------------------------------------------------------------------------------ producers


def build_zip_cli(directory: Path, files: Files | None = None, *, method: str = "deflate",
                  name: str = "cli.zip") -> Built:
    """Info-ZIP ``zip -r`` from inside the source folder (directory entries included)."""
    require_tool("zip", "zip")
    files = sample_files() if files is None else files
    level = {"deflate": "-1", "store": "-0"}[method]
    src = write_tree(directory / f"src-{name}", files)
    target = _fresh(directory, name)
    _run(["zip", "-r", "-q", level, str(target), "."], cwd=src)
    return target, files


def build_7zz(directory: Path, files: Files | None = None, *, method: str = "Deflate",
              streamed: bool = False, name: str | None = None) -> Built:
    """7-Zip as the task runner runs it: ``7zz a -tzip -mx=1 [-so -an] *`` in the source folder.

    ``streamed`` writes to stdout, so 7-Zip cannot seek back and emits data descriptors. 7-Zip
    refuses to stream stored (``Copy``) members (E_NOTIMPL), so that combination is refused here.
    """
    require_tool("7zz", "7zip")
    if streamed and method == "Copy":
        raise ValueError("7-Zip cannot stream stored members to stdout (-mm=Copy -so: E_NOTIMPL)")
    files = sample_files() if files is None else files
    name = name or f"7zz-{method}-{'stream' if streamed else 'file'}.zip"
    src = write_tree(directory / f"src-{name}", files)
    target = _fresh(directory, name)
    options = ["-tzip", f"-mm={method}", "-mx=1", "-mmt=on"]
    if streamed:
        with target.open("wb") as out:
            _run(["7zz", "a", *options, "-so", "-an", "*"], cwd=src, stdout=out)
    else:
        _run(["7zz", "a", *options, str(target), "*"], cwd=src)
    return target, files


def build_stream_zip(directory: Path, files: Files | None = None, *,
                     name: str = "stream.zip") -> Built:
    """stream-zip as the task runner uses it: ZIP_64 members, deflate level 1, explicit dirs."""
    try:
        from stream_zip import ZIP_64, stream_zip
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingTool("the 'stream-zip' package is not installed (pip install stream-zip)") \
            from exc
    files = sample_files() if files is None else files
    when = dt.datetime(2025, 3, 4, 5, 6, 8)
    members = []
    for dirname in directories_of(list(files)):
        members.append((dirname, when, stat.S_IFDIR | 0o755, ZIP_64, ()))
    for member, data in files.items():
        members.append((member, when, stat.S_IFREG | 0o644, ZIP_64, (data,)))
    target = _fresh(directory, name)
    chunks = stream_zip(members, get_compressobj=lambda: zlib.compressobj(1, zlib.DEFLATED, -15))
    with target.open("wb") as out:
        for chunk in chunks:
            out.write(chunk)
    return target, files


PYZIP_METHODS = {"store": zipfile.ZIP_STORED, "deflate": zipfile.ZIP_DEFLATED,
                 "bzip2": zipfile.ZIP_BZIP2, "lzma": zipfile.ZIP_LZMA}


def build_pyzip(directory: Path, files: Files | None = None, method: str = "deflate", *,
                dir_entries: bool = True, comment: bytes = b"", name: str | None = None) -> Built:
    """Python's zipfile (the task runner's non-streamed fallback: deflate level 1, dirs)."""
    files = sample_files() if files is None else files
    target = _fresh(directory, name or f"py-{method}.zip")
    level = 1 if method == "deflate" else None
    with zipfile.ZipFile(target, "w", PYZIP_METHODS[method], compresslevel=level) as zf:
        if dir_entries:
            for dirname in directories_of(list(files)):
                zf.writestr(zipfile.ZipInfo(dirname, (2025, 1, 2, 3, 4, 6)), b"")
        for member, data in files.items():
            zf.writestr(zipfile.ZipInfo(member, (2025, 1, 2, 3, 4, 6)), data,
                        compress_type=PYZIP_METHODS[method])
        zf.comment = comment
    return target, files


def build_prepended(directory: Path, files: Files | None = None, *, adjusted: bool = False,
                    prefix: bytes | None = None, name: str | None = None) -> Built:
    """A self-extractor: a stub before the archive. Unadjusted (``cat stub a.zip``) offsets are
    relative to the archive; ``adjusted`` runs ``zip -A`` so they become absolute."""
    source, files = build_pyzip(directory, files, "deflate", name=f"inner-{name or 'sfx'}.zip")
    if prefix is None:
        prefix = b"#!/bin/sh\nexit 0\n" + random.Random(7).randbytes(3000)
    target = _fresh(directory, name or f"sfx-{'adjusted' if adjusted else 'raw'}.zip")
    target.write_bytes(prefix + source.read_bytes())
    if adjusted:
        require_tool("zip", "zip")
        _run(["zip", "-q", "-A", str(target)], cwd=directory)
    return target, files


def build_many_entries(directory: Path, count: int = 70_000, *, name: str = "many.zip") -> Built:
    """More than 65535 empty members, so zipfile writes zip64 end records (fast: ~1 s)."""
    target = _fresh(directory, name)
    files = {f"d{i // 1000:03d}/f{i:06d}": b"" for i in range(count)}
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:
        for member in files:
            zf.writestr(member, b"")
    return target, files


# ------------------------------------------------------------------------------ hand-made


@dataclass
class RawEntry:
    """One member for ``write_raw_zip``; ``name`` is the raw name field, data already encoded."""

    name: bytes
    data: bytes = b""
    method: int = 0
    flags: int = 0
    size: int | None = None  # uncompressed size; defaults to len(data) (right for stored)
    crc: int | None = None
    made_by: int = (3 << 8) | 20  # Unix, 2.0
    extra: bytes = b""  # extra fields for both headers
    cd_extra: bytes | None = None  # override for the central header only
    descriptor: bool = False  # flag bit 3: zeros in the local header, sizes after the data
    local_name: bytes | None = None  # a different name in the local header


@dataclass
class RawLayout:
    """Where ``write_raw_zip`` put things, for tests that then corrupt them."""

    header_offsets: list[int] = field(default_factory=list)
    data_offsets: list[int] = field(default_factory=list)
    cd_offset: int = 0
    cd_size: int = 0
    eocd_offset: int = 0
    size: int = 0


def write_raw_zip(path: Path, entries: list[RawEntry], *, zip64: bool = False, gap: int = 0,
                  comment: bytes = b"", prepend: bytes = b"") -> RawLayout:
    """A ZIP written field by field (APPNOTE 4.3), for layouts no producer makes on demand.

    ``zip64`` writes 0xFFFFFFFF sentinels with zip64 extra fields in the central directory and
    zip64 end records. ``gap`` leaves a sparse hole before the first member (offsets account for
    it), to get offsets above 4 GiB cheaply. ``prepend`` goes before the archive *without*
    adjusting offsets, like ``cat stub a.zip``.
    """
    layout = RawLayout()
    with path.open("wb") as f:
        f.write(prepend)
        base = len(prepend)
        f.seek(base + gap)
        central = bytearray()
        for entry in entries:
            offset = f.tell() - base
            layout.header_offsets.append(offset + base)
            crc = zlib.crc32(entry.data) if entry.crc is None else entry.crc
            size = len(entry.data) if entry.size is None else entry.size
            flags = entry.flags | (0x8 if entry.descriptor else 0)
            local_name = entry.name if entry.local_name is None else entry.local_name
            local_sizes = (0, 0, 0) if entry.descriptor else (crc, len(entry.data), size)
            f.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, flags, entry.method, 0x6000,
                                0x5A21, *local_sizes, len(local_name), len(entry.extra)))
            f.write(local_name + entry.extra)
            layout.data_offsets.append(f.tell())
            f.write(entry.data)
            if entry.descriptor:
                f.write(struct.pack("<4s3L", b"PK\x07\x08", crc, len(entry.data), size))
            central += _central_header(entry, flags, crc, size, offset, zip64)
        cd_offset = f.tell() - base
        f.write(central)
        layout.cd_offset, layout.cd_size = cd_offset + base, len(central)
        if zip64:
            eocd64_offset = f.tell() - base
            f.write(struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, len(entries),
                                len(entries), len(central), cd_offset))
            f.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, eocd64_offset, 1))
        layout.eocd_offset = f.tell()
        count = 0xFFFF if zip64 else len(entries) & 0xFFFF
        cd_fields = (0xFFFFFFFF, 0xFFFFFFFF) if zip64 else (len(central), cd_offset)
        f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, *cd_fields,
                            len(comment)))
        f.write(comment)
        layout.size = f.tell()
    return layout


def _central_header(entry: RawEntry, flags: int, crc: int, size: int, offset: int,
                    zip64: bool) -> bytes:
    extra = entry.extra if entry.cd_extra is None else entry.cd_extra
    sizes = (len(entry.data), size, offset)
    if zip64:
        extra = struct.pack("<HH3Q", 1, 24, size, len(entry.data), offset) + extra
        sizes = (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    header = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", entry.made_by, 20, flags, entry.method,
                         0x6000, 0x5A21, crc, sizes[0], sizes[1], len(entry.name), len(extra), 0,
                         0, 0, 0, sizes[2])
    return header + entry.name + extra


def unicode_path_extra(raw_name: bytes, unicode_name: str, *, crc: int | None = None) -> bytes:
    """Info-ZIP Unicode Path field 0x7075: version 1, CRC-32 of the raw name, UTF-8 name."""
    body = struct.pack("<BL", 1, zlib.crc32(raw_name) if crc is None else crc)
    body += unicode_name.encode()
    return struct.pack("<HH", 0x7075, len(body)) + body


def build_legacy_names(directory: Path, *, name: str = "legacy.zip") -> tuple[Path, dict[str, str]]:
    """Names without the UTF-8 flag, as older Windows tools write them.

    Returns the path and {expected decoded name: what it tests}. All entries are stored, with
    data equal to the expected name encoded in UTF-8.
    """
    dos = (0 << 8) | 20
    cases = [
        # cp437 bytes from a DOS host: decoded as cp437
        ("legacy/café.txt", RawEntry("legacy/café.txt".encode("cp437"), made_by=dos), "cp437"),
        # raw cp437 name with a correct Unicode Path field: the field wins
        ("legacy/naïve π.txt", RawEntry(b"legacy/na?ve ?.txt", made_by=dos,
                                        extra=unicode_path_extra(b"legacy/na?ve ?.txt",
                                                                 "legacy/naïve π.txt")),
         "0x7075"),
        # a stale Unicode Path field (CRC of another name): ignored, cp437 used
        ("legacy/Ç.txt", RawEntry("legacy/Ç.txt".encode("cp437"), made_by=dos,
                                  extra=unicode_path_extra(b"other", "legacy/WRONG.txt")),
         "stale 0x7075"),
        # a Unix-made archive with UTF-8 bytes and no flag (Debian zip): UTF-8
        ("legacy/ünïx.txt", RawEntry("legacy/ünïx.txt".encode()), "unflagged utf-8"),
        # flag 11 set: UTF-8
        ("legacy/flagged ß.txt", RawEntry("legacy/flagged ß.txt".encode(), flags=0x800), "flag 11"),
    ]
    entries = []
    for expected, entry, _ in cases:
        entry.data = expected.encode()
        entries.append(entry)
    target = _fresh(directory, name)
    write_raw_zip(target, entries)
    return target, {expected: why for expected, _, why in cases}


def build_commented(directory: Path, files: Files | None = None, *,
                    name: str = "commented.zip") -> Built:
    """A long archive comment that itself contains a fake end-of-central-directory signature."""
    fake = b"PK\x05\x06" + b"\x00" * 16 + b"\x05\x00"
    comment = (b"archive comment " * 2000)[:30_000] + fake + b"tail"
    return build_pyzip(directory, files, "deflate", comment=comment, name=name)


HOSTILE_LABELS = (
    "empty", "tiny", "no-eocd", "truncated-half", "truncated-eocd", "truncated-cd",
    "cd-offset-past-end", "cd-size-past-end", "cd-size-too-small", "count-too-high",
    "count-65535", "count-too-low", "local-offset-past-end", "name-length-overrun",
    "bad-cd-signature", "compressed-size-absurd", "zip64-sentinel-no-extra",
    "zip64-million", "zip64-2e60", "zip64-huge-cd",
)


def hostile_archives(directory: Path) -> dict[str, Path]:
    """Damaged and lying archives (keyed by ``HOSTILE_LABELS``), each to be refused promptly."""
    directory.mkdir(parents=True, exist_ok=True)
    good, _ = build_pyzip(directory, {"a.txt": b"hello" * 100, "b/c.txt": b"x" * 10},
                          "deflate", name="good-base.zip")
    base = good.read_bytes()
    eocd = base.rfind(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack_from("<LL", base, eocd + 12)
    cases: dict[str, bytes] = {
        "empty": b"",
        "tiny": b"PK\x03\x04",
        "no-eocd": base[:eocd] + b"\x00" * 22,
        "truncated-half": base[: len(base) // 2],
        "truncated-eocd": base[:-5],
        "truncated-cd": base[:cd_offset + 10] + base[eocd:],
        "cd-offset-past-end": _patch(base, eocd + 16, "<L", len(base) * 10),
        "cd-size-past-end": _patch(base, eocd + 12, "<L", 0x7FFFFFFF),
        "cd-size-too-small": _patch(base, eocd + 12, "<L", cd_size - 10),
        "count-too-high": _patch(_patch(base, eocd + 8, "<H", 4), eocd + 10, "<H", 4),
        "count-65535": _patch(_patch(base, eocd + 8, "<H", 0xFFFF), eocd + 10, "<H", 0xFFFF),
        "count-too-low": _patch(_patch(base, eocd + 8, "<H", 1), eocd + 10, "<H", 1),
        "local-offset-past-end": _patch(base, cd_offset + 42, "<L", len(base) + 1000),
        "name-length-overrun": _patch(base, cd_offset + 28, "<H", 0xFFFF),
        "bad-cd-signature": base[:cd_offset] + b"XX" + base[cd_offset + 2:],
        "compressed-size-absurd": _patch(base, cd_offset + 20, "<L", 0xFFFFFFF0),
        "zip64-sentinel-no-extra": _patch(base, cd_offset + 20, "<L", 0xFFFFFFFF),
    }
    paths = {label: directory / f"hostile-{label}.zip" for label in cases}
    for label, data in cases.items():
        paths[label].write_bytes(data)
    paths.update(_zip64_liars(directory))
    assert tuple(paths) == HOSTILE_LABELS, "keep HOSTILE_LABELS in step with the cases"
    return paths


def _patch(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def _zip64_liars(directory: Path) -> dict[str, Path]:
    """zip64 end records that claim a million or 2**60 entries, or a 2**62-byte CD."""
    out = {}
    for label, entries, cd_size in (("zip64-million", 1_000_000, None),
                                    ("zip64-2e60", 1 << 60, None),
                                    ("zip64-huge-cd", None, 1 << 62)):
        path = directory / f"hostile-{label}.zip"
        layout = write_raw_zip(path, [RawEntry(b"x.txt", b"data")], zip64=True)
        data = bytearray(path.read_bytes())
        eocd64 = layout.cd_offset + layout.cd_size
        if entries is not None:
            struct.pack_into("<QQ", data, eocd64 + 24, entries, entries)
        if cd_size is not None:
            struct.pack_into("<Q", data, eocd64 + 40, cd_size)
        path.write_bytes(bytes(data))
        out[label] = path
    return out


# ------------------------------------------------------------------------------ decoding


def decompress(method: int, raw: bytes, size: int | None = None) -> bytes:
    """Independent decoding of one member's compressed bytes by ZIP method number."""
    if method == 0:
        return raw
    if method == 8:
        inflater = zlib.decompressobj(-15)
        return inflater.decompress(raw) + inflater.flush()
    if method == 9:
        from zipfile_deflate64.deflate64 import Deflate64

        return Deflate64().decompress(raw)
    if method == 12:
        return bz2.decompress(raw)
    if method == 14:
        # APPNOTE 5.8.8: version (2), properties size (2), LZMA properties, then raw LZMA1 data
        props_len = struct.unpack_from("<H", raw, 2)[0]
        props = raw[4:4 + props_len]
        lzma_filter = lzma._decode_filter_properties(lzma.FILTER_LZMA1, props)  # noqa: SLF001
        decoder = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma_filter])
        return decoder.decompress(raw[4 + props_len:], max_length=size if size is not None else -1)
    raise ValueError(f"no test decoder for method {method}")


def read_local_data_offset(f: io.BufferedIOBase | io.BytesIO, header_offset: int) -> int:
    """The data offset computed the long way, for cross-checking: parse the local header."""
    f.seek(header_offset)
    header = f.read(30)
    signature, name_len, extra_len = header[:4], *struct.unpack_from("<HH", header, 26)
    if signature != b"PK\x03\x04":
        raise ValueError(f"no local header at {header_offset}")
    return header_offset + 30 + name_len + extra_len
