"""The central directory of a ZIP archive, read without reading the archive.

The server answers ``/storage/zip-contents`` and ``/storage/zip-file-range`` from this index. It
reads the tail of the file (the end-of-central-directory record, EOCD, lies within the last
64 KiB + 22 bytes), the ZIP64 records just before it when present, and the central directory (CD)
itself; one local header is read later per ``data_offset`` call. Member data is never read, so a
multi-GiB ``output.zip`` costs a few reads.

Why a hand parser rather than ``zipfile``: on Python 3.11 ``zipfile`` ignores the Info-ZIP Unicode
Path field (0x7075), builds every ``ZipInfo`` before a limit could be checked, and raises
``BadZipFile``/``struct.error``/``ValueError``/``OverflowError`` at random on hostile input. Here
every defect is a ``CorruptArchive`` (or ``TooLarge`` for a limit) with a one-line message, the
entry count and CD size are checked against the limits before anything is built, and memory stays
proportional to the CD.

Field layouts are quoted from PKWARE's APPNOTE.TXT 6.3.10 (section numbers in comments).

Decisions on names (the server returns names; the mount sanitizes what it shows):
- Names are kept as written: no backslash conversion, no stripping. A NUL truncates a name, as
  ``zipfile`` does.
- Decoding: UTF-8 when flag bit 11 is set; else the Info-ZIP Unicode Path field (version 1 and a
  CRC-32 matching the raw name, otherwise ignored); else UTF-8 if the name is valid UTF-8 and the
  archive was made on a non-DOS host (Debian's ``zip`` writes UTF-8 names with no flag; ``unzip``
  and 7-Zip show them as UTF-8); else cp437. Invalid UTF-8 under bit 11 falls back to cp437, so
  every name is a valid ``str``.
- The directory tree used by ``list()`` is built from *normalized* names: empty and ``.``
  components are dropped (``/abs/x`` and ``a//b`` list as ``abs/x`` and ``a/b``). Names with a
  ``..`` component, or nothing left after normalizing, are left out of listings; ``member()``
  still finds them by their exact name. Every name ``list()`` returns is reachable as
  ``member(prefix + name)``.
- Duplicate (normalized) names: the later entry wins, as with ``unzip``; ``list()`` shows the name
  once, at the position of its first occurrence. A file ``x`` and a directory ``x/`` are distinct.
"""

from __future__ import annotations

import datetime as _dt
import io
import mmap
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import CorruptArchive, NotFound, TooLarge
from ..gcpause import gc_paused
from ..protocol import zip_dir_prefix

# 4.3.16 End of central directory record, 22 bytes + comment:
#   signature 0x06054b50, number of this disk (2), disk where the CD starts (2),
#   CD entries on this disk (2), total CD entries (2), CD size (4), CD offset (4),
#   comment length (2)
_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIG = b"PK\x05\x06"
_MAX_COMMENT = 0xFFFF

# 4.3.15 Zip64 end of central directory locator, 20 bytes, immediately before the EOCD:
#   signature 0x07064b50, disk with the zip64 EOCD (4), its offset (8), total number of disks (4)
_LOCATOR = struct.Struct("<4sLQL")
_LOCATOR_SIG = b"PK\x06\x07"

# 4.3.14 Zip64 end of central directory record, 56 bytes + extensible data:
#   signature 0x06064b50, size of the rest of the record (8) -- "should not include the leading
#   12 bytes" --, version made by (2), version needed (2), this disk (4), CD start disk (4),
#   entries on this disk (8), total entries (8), CD size (8), CD offset (8)
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_EOCD64_SIG = b"PK\x06\x06"

# 4.3.12 Central directory file header, 46 bytes + name + extra + comment:
#   signature 0x02014b50, version made by (2), version needed (2), flags (2), method (2),
#   DOS time (2), DOS date (2), CRC-32 (4), compressed size (4), uncompressed size (4),
#   name length (2), extra length (2), comment length (2), disk number start (2),
#   internal attributes (2), external attributes (4), local header offset (4)
_CDH = struct.Struct("<4s6H3L5H2L")
_CDH_SIG = b"PK\x01\x02"
# 4.3.13 Digital signature, may follow the last CD header and is counted in the CD size.
_DIGSIG_SIG = b"PK\x05\x05"

# 4.3.7 Local file header, 30 bytes + name + extra: signature 0x04034b50, version needed (2),
#   flags (2), method (2), DOS time (2), DOS date (2), CRC-32 (4), compressed size (4),
#   uncompressed size (4), name length (2), extra length (2). With flag bit 3 (data descriptor)
#   the CRC and sizes here are zero; the CD has the real ones.
_LFH = struct.Struct("<4s5H3L2H")
_LFH_SIG = b"PK\x03\x04"

_ZIP64_EXTRA = 0x0001
_UNICODE_PATH_EXTRA = 0x7075
_FLAG_UTF8 = 0x800
# "version made by" upper byte (4.4.2.2): hosts whose names are in an OEM code page.
_DOS_HOSTS = frozenset({0, 6, 11, 14})  # MS-DOS/FAT, HPFS, NTFS, VFAT
_MAX_SIZE = (1 << 63) - 1  # sizes must fit an off_t and a JSON int64

DosTime = tuple[int, int, int, int, int, int]
"""(year, month, day, hour, minute, second) as written; not always a valid date."""


@dataclass(frozen=True, slots=True)
class Member:
    """One central-directory entry; offsets are absolute in the file as stored."""

    name: str
    size: int
    compressed_size: int
    compress_type: int
    header_offset: int
    crc: int
    flags: int
    date_time: DosTime

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")

    @property
    def modified(self) -> _dt.datetime | None:
        """The DOS timestamp as a UTC datetime, or None when it is not a valid date."""
        try:
            return _dt.datetime(*self.date_time, tzinfo=_dt.timezone.utc)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class _Tail:
    """What the end records say, with ``shift`` = bytes prepended to the archive."""

    entries: int
    cd_offset: int
    cd_size: int
    shift: int
    zip64: bool


class ZipIndex:
    """A parsed central directory with a directory tree for listings."""

    def __init__(self, size: int, members: list[Member]) -> None:
        self.size = size
        self._entries: list[tuple[str, Member | None]] = []  # normalized name, member
        self._position: dict[str, int] = {}  # normalized name -> index in _entries
        self._children: dict[str, list[int]] = {"": []}  # dir prefix -> indices of children
        self._unlisted: dict[str, Member] = {}  # exact names left out of the tree
        for member in members:
            self._add(member)

    def __len__(self) -> int:
        """Number of distinct listed names, implied directories included."""
        return len(self._entries)

    @property
    def members(self) -> list[Member]:
        """Every reachable member, duplicates resolved: listed ones in archive order, then the
        unlisted ones (names with '..' or nothing but slashes and dots)."""
        listed = [m for _, m in self._entries if m is not None]
        return listed + list(self._unlisted.values())

    def _add(self, member: Member) -> None:
        parts = _normalize(member.name)
        if parts is None:
            self._unlisted[member.name] = member
            return
        is_dir = member.name.endswith("/")
        parent = "/".join(parts[:-1]) + "/" if len(parts) > 1 else ""
        if parent not in self._children:  # a folder not seen yet: place each level above
            parent = ""
            for part in parts[:-1]:
                name = parent + part + "/"
                self._place(parent, name, None)
                parent = name
        self._place(parent, parent + parts[-1] + ("/" if is_dir else ""), member)

    def _place(self, parent: str, name: str, member: Member | None) -> None:
        """Insert a name once; a real entry replaces an implied one or an earlier duplicate."""
        index = self._position.get(name)
        if index is None:
            self._position[name] = len(self._entries)
            self._children[parent].append(len(self._entries))
            self._entries.append((name, member))
            if name.endswith("/"):
                self._children.setdefault(name, [])
        elif member is not None:
            self._entries[index] = (name, member)

    def _descendants(self, prefix: str) -> list[int]:
        found: list[int] = []
        stack = [prefix]
        while stack:
            for index in self._children[stack.pop()]:
                found.append(index)
                name = self._entries[index][0]
                if name.endswith("/"):
                    stack.append(name)
        return found

    def list(self, zip_relative_path: str, recursive: bool) -> list[tuple[str, Member | None]]:
        """Entries under a directory with names relative to it; ``Member`` None when implied."""
        prefix = zip_dir_prefix(zip_relative_path)
        if prefix not in self._children:
            return []
        if recursive:
            indices = sorted(self._descendants(prefix))
        else:
            indices = self._children[prefix]
        cut = len(prefix)
        return [(self._entries[i][0][cut:], self._entries[i][1]) for i in indices]

    def member(self, path: str) -> Member:
        """The entry named ``path`` (exactly, or after normalizing slashes and ``.``)."""
        found = self._unlisted.get(path)
        if found is not None:
            return found
        parts = _normalize(path)
        if parts:
            index = self._position.get("/".join(parts) + ("/" if path.endswith("/") else ""))
            if index is not None:
                member = self._entries[index][1]
                if member is not None:
                    return member
                raise NotFound(f"{path!r} is a directory with no entry of its own in the archive")
        raise NotFound(f"no member {path!r} in the archive")


def _normalize(name: str) -> list[str] | None:
    """Path components without empty or '.' parts; None when unlistable ('..' or nothing left)."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return parts


# ---------------------------------------------------------------------------------------------
# Reading


def read_index(f: BinaryIO, size: int, *, max_entries: int, max_cd_bytes: int) -> ZipIndex:
    """Parse the end records and the central directory of an archive of ``size`` bytes."""
    tail = _read_tail(f, size)
    if tail.entries > max_entries:
        raise TooLarge(
            f"archive claims {tail.entries} entries, more than the limit of {max_entries}")
    if tail.cd_size > max_cd_bytes:
        raise TooLarge(
            f"central directory is {tail.cd_size} bytes, more than the limit of {max_cd_bytes}")
    start = tail.cd_offset + tail.shift
    data = _read_at(f, start, tail.cd_size, "central directory")
    with gc_paused():
        members = _parse_cd(data, tail, size, max_entries)
        return ZipIndex(size, members)


def _read_at(f: BinaryIO, offset: int, length: int, what: str) -> bytes:
    f.seek(offset)
    data = f.read(length)
    if len(data) != length:
        raise CorruptArchive(f"archive truncated: {what} at {offset} is cut short")
    return data


def _read_tail(f: BinaryIO, size: int) -> _Tail:
    """Locate the EOCD (and ZIP64 records) and work out where the CD really is."""
    if size < _EOCD.size:
        raise CorruptArchive(f"not a ZIP archive: only {size} bytes")
    tail_len = min(size, _EOCD.size + _MAX_COMMENT)
    tail_start = size - tail_len
    tail = _read_at(f, tail_start, tail_len, "end of archive")
    eocd_pos = tail_start + _find_eocd(tail)
    (_, _disk, _cd_disk, _disk_entries, entries, cd_size, cd_offset,
     _comment_len) = _EOCD.unpack_from(tail, eocd_pos - tail_start)
    end_of_cd = eocd_pos  # where the record following the CD really starts
    zip64 = False
    if eocd_pos >= _LOCATOR.size + _EOCD64.size:
        locator = _read_at(f, eocd_pos - _LOCATOR.size, _LOCATOR.size, "zip64 locator")
        if locator[:4] == _LOCATOR_SIG:
            zip64 = True
            end_of_cd, entries, cd_size, cd_offset = _read_zip64(
                f, eocd_pos - _LOCATOR.size, locator)
    shift = end_of_cd - (cd_offset + cd_size)
    if shift < 0:
        raise CorruptArchive(
            f"central directory (offset {cd_offset}, {cd_size} bytes) extends past its end "
            f"record at {end_of_cd}: truncated or bogus offsets")
    if entries * _CDH.size > cd_size:
        raise CorruptArchive(
            f"end record claims {entries} entries but the central directory has only "
            f"{cd_size} bytes")
    if shift and cd_size:
        shift = _confirm_shift(f, cd_offset, shift)
    return _Tail(entries, cd_offset, cd_size, shift, zip64)


def _find_eocd(tail: bytes) -> int:
    """Offset in ``tail`` of the EOCD: the last one whose comment ends the file exactly, else
    the last complete one (tolerating junk appended after the archive)."""
    fallback = -1
    pos = len(tail) - _EOCD.size
    while pos >= 0:
        pos = tail.rfind(_EOCD_SIG, 0, pos + 4)
        if pos < 0:
            break
        comment_len = struct.unpack_from("<H", tail, pos + 20)[0]
        if pos + _EOCD.size + comment_len == len(tail):
            return pos
        if fallback < 0:
            fallback = pos
        pos -= 1
    if fallback < 0:
        raise CorruptArchive("not a ZIP archive: no end of central directory record")
    return fallback


def _read_zip64(f: BinaryIO, locator_pos: int, locator: bytes) -> tuple[int, int, int, int]:
    """(real position of the zip64 EOCD, entries, CD size, CD offset) from the zip64 records.

    The zip64 EOCD normally sits right before the locator; the locator's own offset is tried
    second (it is wrong when data was prepended).
    """
    _, _disk, claimed, disks = _LOCATOR.unpack(locator)
    if disks > 1:
        raise CorruptArchive(f"multi-disk (split) ZIP archives are not supported ({disks} disks)")
    for pos in (locator_pos - _EOCD64.size, claimed):
        if not 0 <= pos <= locator_pos - _EOCD64.size:
            continue
        record = _read_at(f, pos, _EOCD64.size, "zip64 end record")
        sig, rest, _made, _need, _d, _cdd, _de, entries, cd_size, cd_offset = _EOCD64.unpack(record)
        if sig == _EOCD64_SIG and rest >= _EOCD64.size - 12 and pos + 12 + rest <= locator_pos:
            return pos, entries, cd_size, cd_offset
    raise CorruptArchive("zip64 locator points to no zip64 end of central directory record")


def _confirm_shift(f: BinaryIO, cd_offset: int, shift: int) -> int:
    """As Info-ZIP does: bytes before the archive if the CD is found shifted, else junk between
    the CD and the end record if the CD is where the end record says."""
    if _read_at(f, cd_offset + shift, 4, "central directory") == _CDH_SIG:
        return shift
    f.seek(cd_offset)
    if f.read(4) == _CDH_SIG:
        return 0
    raise CorruptArchive(f"no central directory at offset {cd_offset} (nor {cd_offset + shift})")


def _parse_cd(data: bytes, tail: _Tail, size: int, max_entries: int) -> list[Member]:
    members: list[Member] = []
    pos = 0
    end = len(data)
    while pos < end:
        if data[pos:pos + 4] == _DIGSIG_SIG:
            break
        if end - pos < _CDH.size or data[pos:pos + 4] != _CDH_SIG:
            raise CorruptArchive(
                f"bad central directory header at offset {tail.cd_offset + tail.shift + pos}")
        if len(members) >= max_entries:
            raise TooLarge(f"archive has more than {max_entries} entries")
        member, pos = _parse_header(data, pos, tail.shift, size)
        members.append(member)
    _check_count(len(members), tail)
    return members


def _check_count(found: int, tail: _Tail) -> None:
    """The CD must hold as many entries as the end record says; without zip64, Info-ZIP accepts
    a count that wrapped at 65536 (old writers with more entries than a 16-bit field holds)."""
    if found == tail.entries:
        return
    if not tail.zip64 and found > 0xFFFF and found & 0xFFFF == tail.entries:
        return
    raise CorruptArchive(
        f"central directory holds {found} entries but the end record says {tail.entries}")


def _parse_header(data: bytes, pos: int, shift: int, size: int) -> tuple[Member, int]:
    """One CD header at ``pos``; returns the member and the offset of the next header."""
    (_, made_by, _need, flags, method, dos_time, dos_date, crc, csize, usize,
     name_len, extra_len, comment_len, _disk, _iattr, _eattr, offset) = _CDH.unpack_from(data, pos)
    name_start = pos + _CDH.size
    extra_start = name_start + name_len
    next_pos = extra_start + extra_len + comment_len
    if next_pos > len(data):
        raise CorruptArchive(f"central directory entry at {pos} runs past the directory's end")
    raw_name = data[name_start:extra_start]
    extra = _extra_fields(data[extra_start:extra_start + extra_len]) if extra_len else {}
    if usize == 0xFFFFFFFF or csize == 0xFFFFFFFF or offset == 0xFFFFFFFF:
        usize, csize, offset = _zip64_values(extra.get(_ZIP64_EXTRA), usize, csize, offset,
                                             raw_name)
    unicode_field = extra.get(_UNICODE_PATH_EXTRA)
    if unicode_field is None and raw_name.isascii() and b"\x00" not in raw_name:
        name = raw_name.decode("ascii")  # what every branch of _decode_name gives
    else:
        name = _decode_name(raw_name, flags, made_by >> 8, unicode_field)
    header_offset = offset + shift
    if usize > _MAX_SIZE or csize > _MAX_SIZE or header_offset + _LFH.size + csize > size:
        raise CorruptArchive(
            f"member {name!r}: local header at {header_offset} with {csize} compressed bytes "
            f"lies past the end of the {size}-byte archive")
    member = Member(name=name, size=usize, compressed_size=csize, compress_type=method,
                    header_offset=header_offset, crc=crc, flags=flags,
                    date_time=_dos_datetime(dos_date, dos_time))
    return member, next_pos


def _extra_fields(extra: bytes) -> dict[int, bytes]:
    """4.5.1: a sequence of (header ID (2), data size (2), data). A field that overruns the
    extra block ends the parse (some writers pad with junk); the first of each ID wins."""
    fields: dict[int, bytes] = {}
    pos = 0
    while pos + 4 <= len(extra):
        field_id, length = struct.unpack_from("<HH", extra, pos)
        pos += 4
        if pos + length > len(extra):
            break
        fields.setdefault(field_id, extra[pos:pos + length])
        pos += length
    return fields


def _zip64_values(field: bytes | None, usize: int, csize: int, offset: int,
                  raw_name: bytes) -> tuple[int, int, int]:
    """4.5.3: the zip64 extra holds 8-byte values, in this order, only for the fields that are
    0xFFFFFFFF in the header: uncompressed size, compressed size, local header offset."""
    wanted = [value == 0xFFFFFFFF for value in (usize, csize, offset)]
    if not any(wanted):
        return usize, csize, offset
    if field is None:
        raise CorruptArchive(f"member {_printable(raw_name)}: 0xFFFFFFFF size or offset "
                             "without a zip64 extra field")
    values = [usize, csize, offset]
    pos = 0
    for i, needed in enumerate(wanted):
        if needed:
            if pos + 8 > len(field):
                raise CorruptArchive(f"member {_printable(raw_name)}: zip64 extra field too short")
            values[i] = struct.unpack_from("<Q", field, pos)[0]
            pos += 8
    return values[0], values[1], values[2]


def _decode_name(raw: bytes, flags: int, host: int, unicode_field: bytes | None) -> str:
    """See the module docstring for the order of preference."""
    name = None
    if flags & _FLAG_UTF8:
        name = _utf8(raw)
    elif unicode_field is not None:
        name = _unicode_path(raw, unicode_field)
    if name is None and host not in _DOS_HOSTS:
        name = _utf8(raw)
    if name is None:
        name = raw.decode("cp437")
    return name.split("\x00", 1)[0]


def _utf8(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _unicode_path(raw: bytes, field: bytes) -> str | None:
    """Info-ZIP Unicode Path Extra Field (APPNOTE 4.6.9): version (1) = 1, CRC-32 of the header's
    name field (4), UTF-8 name. A CRC mismatch means the name was changed by a tool that did not
    know this field, so the field is stale and ignored."""
    if len(field) < 5 or field[0] != 1:
        return None
    if struct.unpack_from("<L", field, 1)[0] != zlib.crc32(raw):
        return None
    return _utf8(field[5:])


def _dos_datetime(dos_date: int, dos_time: int) -> DosTime:
    """4.4.6: date = (year-1980)<<9 | month<<5 | day; time = hour<<11 | minute<<5 | seconds/2."""
    return ((dos_date >> 9) + 1980, (dos_date >> 5) & 0xF, dos_date & 0x1F,
            dos_time >> 11, (dos_time >> 5) & 0x3F, (dos_time & 0x1F) * 2)


def _printable(raw: bytes) -> str:
    return repr(raw.decode("utf-8", "replace")[:200])


def data_offset(f: BinaryIO, member: Member, size: int) -> int:
    """Offset of the member's first data byte, from its *local* header: local name and extra
    lengths often differ from the CD's (zip64 extras, streamed writers)."""
    if member.header_offset + _LFH.size > size:
        raise CorruptArchive(f"member {member.name!r}: local header offset {member.header_offset} "
                             f"is past the end of the {size}-byte archive")
    header = _read_at(f, member.header_offset, _LFH.size, f"local header of {member.name!r}")
    return _data_start(header, member, size)


def data_offsets(f: BinaryIO, members: list[Member], size: int) -> list[int]:
    """``data_offset`` of each member, the local headers read through one memory map (a listing
    of 1e5 members would otherwise cost 1e5 seeks and reads)."""
    try:
        view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError, io.UnsupportedOperation):  # empty, or not a real file
        return [data_offset(f, member, size) for member in members]
    with view:
        end = min(size, len(view))
        starts = []
        for member in members:
            offset = member.header_offset
            if offset + _LFH.size > end:  # past the end: data_offset says how
                starts.append(data_offset(f, member, size))
            else:
                starts.append(_data_start(view[offset:offset + _LFH.size], member, size))
        return starts


def _data_start(header: bytes, member: Member, size: int) -> int:
    sig, *_, name_len, extra_len = _LFH.unpack(header)
    if sig != _LFH_SIG:
        raise CorruptArchive(
            f"member {member.name!r}: no local header signature at offset {member.header_offset}")
    start = member.header_offset + _LFH.size + name_len + extra_len
    if start + member.compressed_size > size:
        raise CorruptArchive(f"member {member.name!r}: {member.compressed_size} compressed bytes "
                             f"at offset {start} run past the end of the {size}-byte archive")
    return start
