"""The central directory of a ZIP archive, read without reading the archive.

The server answers ``/storage/zip-contents`` and ``/storage/zip-file-range`` from this index. It
reads the tail of the file (the end-of-central-directory record, EOCD, lies within the last
64 KiB + 22 bytes), the ZIP64 records just before it when present, and the central directory (CD)
itself, in ``CD_CHUNK`` pieces; local headers are read later, in windows (``data_starts``).
Member data is never read, so a multi-GiB ``output.zip`` costs a few reads.

Archives of millions of members: the index is a set of arrays in archive order (about 50 bytes
a member) plus the names joined in one ``bytes``, and the central directory is parsed without a
Python loop over its entries (``_scan_fast``: split at the header signature, check every
candidate's length against its header at once, cut each field out with strided slices); only
entries that need it (non-ASCII names, zip64 values, Unicode Path fields) take the entry-by-entry
parser, which also takes any chunk the bulk scan cannot prove. Names are sorted once, so a
folder's contents are one contiguous run of names found by binary search: a folder listing
never materialises the tree. 1,000,000 members index in about the time ``unzip -l`` lists them.

Why a hand parser rather than ``zipfile``: on Python 3.11 ``zipfile`` ignores the Info-ZIP Unicode
Path field (0x7075), builds every ``ZipInfo`` before a limit could be checked, and raises
``BadZipFile``/``struct.error``/``ValueError``/``OverflowError`` at random on hostile input. Here
every defect is a ``CorruptArchive`` (or ``TooLarge`` for a limit) with a one-line message, the
entry count and CD size are checked against the limits before anything is built, and memory stays
proportional to the members.

Field layouts are quoted from PKWARE's APPNOTE.TXT 6.3.10 (section numbers in comments).

Decisions on names (the server returns names; the mount sanitizes what it shows):
- Names are kept as written: no backslash conversion, no stripping. A NUL truncates a name, as
  ``zipfile`` does.
- Decoding: UTF-8 when flag bit 11 is set; else the Info-ZIP Unicode Path field (version 1 and a
  CRC-32 matching the raw name, otherwise ignored); else UTF-8 if the name is valid UTF-8 and the
  archive was made on a non-DOS host (Debian's ``zip`` writes UTF-8 names with no flag; ``unzip``
  and 7-Zip show them as UTF-8); else cp437. Invalid UTF-8 under bit 11 falls back to cp437, so
  every name is a valid ``str``.
- Listings (``list()``, ``entries()``) use *normalized* names: empty and ``.``
  components are dropped (``/abs/x`` and ``a//b`` list as ``abs/x`` and ``a/b``). Names with a
  ``..`` component, or nothing left after normalizing, are left out of listings; ``member()``
  still finds them by their exact name. Every name ``list()`` returns is reachable as
  ``member(prefix + name)``.
- Duplicate (normalized) names: the later entry wins, as with ``unzip``; ``list()`` shows the name
  once, at the position of its first occurrence. A file ``x`` and a directory ``x/`` are distinct.
"""

from __future__ import annotations

import datetime as _dt
import functools
import mmap
import operator
import re
import struct
import sys
import zlib
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from itertools import accumulate, compress, count, islice, repeat
from typing import BinaryIO, Callable, Iterator, Sequence

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
_LFH_LENGTHS = struct.Struct("<4s22xHH")  # the signature, name and extra lengths

_ZIP64_EXTRA = 0x0001
_UNICODE_PATH_EXTRA = 0x7075
_FLAG_UTF8 = 0x800
# "version made by" upper byte (4.4.2.2): hosts whose names are in an OEM code page.
_DOS_HOSTS = frozenset({0, 6, 11, 14})  # MS-DOS/FAT, HPFS, NTFS, VFAT
_MAX_SIZE = (1 << 63) - 1  # sizes must fit an off_t and a JSON int64

# Local headers closer together than this are read in one piece, up to the window's size: a
# gap costs less to read than another request (on an object store, another ranged GET).
HEADER_GAP = 64 << 10
HEADER_WINDOW = 4 << 20

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


class _Columns:
    """Central-directory values in archive order, one array per field (about 48 bytes a member
    plus its name, against some 1.7 KB for a ``Member`` in dicts and lists)."""

    def __init__(self) -> None:
        self.offset = array("Q")  # local header offset, the prepended bytes included
        self.csize = array("Q")
        self.usize = array("Q")
        self.crc = array("I")
        self.dostime = array("I")  # DOS date << 16 | DOS time, as stored
        self.method = array("H")
        self.flags = array("H")
        self.extra_len = array("H")  # of the central header (for the data offset estimate)
        self.names: list[bytes] = []  # decoded names as UTF-8, as written
        self.cd_name_len: dict[int, int] = {}  # raw name lengths that differ from the UTF-8

    def __len__(self) -> int:
        return len(self.names)

    def append(self, member: Member, name_len: int, extra_len: int) -> None:
        self.offset.append(member.header_offset)
        self.csize.append(member.compressed_size)
        self.usize.append(member.size)
        self.crc.append(member.crc)
        year, month, day, hour, minute, second = member.date_time
        self.dostime.append(((year - 1980) << 25 | month << 21 | day << 16
                             | hour << 11 | minute << 5 | second // 2))
        self.method.append(member.compress_type)
        self.flags.append(member.flags)
        self.extra_len.append(extra_len)
        self.names.append(_utf8_bytes(member.name))
        if len(self.names[-1]) != name_len:
            self.cd_name_len[len(self.names) - 1] = name_len


class ZipIndex:
    """A parsed central directory, compact: arrays in archive order and the names sorted once.

    Folder listings come from the sorted names (a folder's members are one contiguous run of
    names sharing its prefix), so no tree is ever built: listing a folder costs its number of
    children times a binary search, whatever the archive's size. Members are materialised only
    when asked for.
    """

    def __init__(self, size: int, columns: _Columns) -> None:
        self.size = size
        self.count = len(columns)  # central-directory entries, duplicates and unlisted included
        names = columns.names
        self._offset, self._csize, self._usize = columns.offset, columns.csize, columns.usize
        self._crc, self._dostime = columns.crc, columns.dostime
        self._method, self._flags = columns.method, columns.flags
        self._extra_len, self._cd_name_len = columns.extra_len, columns.cd_name_len
        # Names joined with NUL (which no name holds): one scan in C finds the few that need
        # a look in Python, and the folder entries.
        text = b"\0".join(names) + b"\0"
        starts = array("Q", accumulate(map(operator.add, map(len, names), repeat(1)), initial=0))
        # Names that are not already in normal form: their listing key, or unlisted.
        self._keys: dict[int, bytes] = {}
        self._unlisted: dict[str, int] = {}  # exact name -> the last entry with it
        unlisted: set[int] = set()
        for i in _unusual_names(text, starts):
            name = names[i].decode("utf-8", "surrogatepass")
            parts = _normalize(name)
            if parts is None:
                self._unlisted[name] = i
                unlisted.add(i)
            else:
                self._keys[i] = _utf8_bytes("/".join(parts) + ("/" if name.endswith("/") else ""))
        folder_entries = [bisect_right(starts, m.start()) - 1 for m in _FOLDER.finditer(text)]
        keys = names if not self._keys else [self._keys.get(i, name) for i, name in
                                             enumerate(names)]
        listed = range(self.count) if not unlisted else [
            i for i in range(self.count) if i not in unlisted]
        # Stable: equal names keep archive order, so a run's last entry is the latest one.
        self._order = array("I", sorted(listed, key=keys.__getitem__))
        in_order = list(map(keys.__getitem__, self._order))
        self._winner: dict[int, int] = {}  # first entry of a duplicated name -> last entry
        self._shadowed: set[int] = set()  # the later entries of a duplicated name
        self._find_duplicates(in_order)
        del in_order
        # Explicit folder entries by key (the last one of a duplicated name wins).
        self._folders: dict[bytes, int] = {keys[i]: i for i in folder_entries if i not in unlisted}
        del keys
        # Name i is blob[base + starts[i]:base + starts[i + 1] - 1] (a mapped file has a base).
        self._blob: bytes | mmap.mmap = text
        self._starts = starts  # arrays here; memoryviews of the file once saved and mapped
        self._base = 0

    def _find_duplicates(self, in_order: list[bytes]) -> None:
        pairs = compress(count(), map(operator.eq, in_order, islice(in_order, 1, None)))
        run_start = run_end = -2
        for j in pairs:  # j and j + 1 hold the same name; consecutive j's form one run
            if j != run_end:
                self._close_run(run_start, run_end)
                run_start = j
            run_end = j + 1
        self._close_run(run_start, run_end)

    def _close_run(self, first: int, last: int) -> None:
        if first < 0:
            return
        run = self._order[first:last + 1]
        self._winner[run[0]] = run[-1]
        self._shadowed.update(run[1:])

    # -- sizes and names -------------------------------------------------------------------

    @property
    def nbytes(self) -> int:
        """Memory held, roughly: what the index cache counts against its budget."""
        arrays = (self._offset, self._csize, self._usize, self._crc, self._dostime, self._method,
                  self._flags, self._extra_len, self._order, self._starts)
        small = (len(self._keys) + len(self._unlisted) + len(self._winner) + len(self._folders)
                 + len(self._cd_name_len))
        return (len(self._blob) + sum(memoryview(a).nbytes for a in arrays)
                + 120 * (small + len(self._shadowed)) + 1024)

    def __len__(self) -> int:
        """Number of distinct listed names, implied directories included."""
        return sum(1 for _ in self._walk(b""))

    def _name(self, i: int) -> bytes:
        base = self._base
        return self._blob[base + self._starts[i]:base + self._starts[i + 1] - 1]

    def _key(self, i: int) -> bytes:
        """The normalized name entry ``i`` is listed under."""
        key = self._keys.get(i) if self._keys else None
        return self._name(i) if key is None else key

    def member_at(self, i: int) -> Member:
        when = self._dostime[i]
        return Member(name=self._name(i).decode("utf-8", "surrogatepass"), size=self._usize[i],
                      compressed_size=self._csize[i], compress_type=self._method[i],
                      header_offset=self._offset[i], crc=self._crc[i], flags=self._flags[i],
                      date_time=_dos_datetime(when >> 16, when & 0xFFFF))

    def fields(self, i: int) -> tuple[int, int, int, int, int]:
        """Entry ``i``'s size, compressed size, method, CRC-32 and DOS date << 16 | time."""
        return self._usize[i], self._csize[i], self._method[i], self._crc[i], self._dostime[i]

    @property
    def members(self) -> list[Member]:
        """Every reachable member, duplicates resolved: listed ones in archive order, then the
        unlisted ones (names with '..' or nothing but slashes and dots)."""
        listed = [self.member_at(i) for _, i in self._walk(b"") if i >= 0]
        return listed + [self.member_at(i) for i in self._unlisted.values()]

    # -- lookups -----------------------------------------------------------------------------

    def _range(self, prefix: bytes) -> tuple[int, int]:
        """Positions in the sorted order of the names starting with ``prefix`` ('' or 'a/')."""
        if not prefix:
            return 0, len(self._order)
        lo = bisect_left(self._order, prefix, key=self._key)
        # Every name starting with 'a/' sorts below 'a0' ('0' follows '/'), the rest not.
        return lo, bisect_left(self._order, prefix[:-1] + b"0", lo, key=self._key)

    def _find(self, key: bytes) -> int:
        """The entry listed as ``key`` (the latest of duplicates), or -1."""
        j = bisect_left(self._order, key, key=self._key)
        if j == len(self._order) or self._key(self._order[j]) != key:
            return -1
        i = self._order[j]
        return self._winner.get(i, i) if self._winner else i

    def count_under(self, zip_relative_path: str) -> int:
        """Entries below a folder, at any depth (an upper bound of a recursive listing's
        length, implied folders aside): two binary searches."""
        lo, hi = self._range(_utf8_bytes(zip_dir_prefix(zip_relative_path)))
        return hi - lo

    def entries(self, zip_relative_path: str, recursive: bool) -> Iterator[tuple[str, int]]:
        """(name relative to the folder, entry number or -1 for an implied folder), in
        archive order: a folder where its first member is (``list`` in numbers)."""
        prefix = _utf8_bytes(zip_dir_prefix(zip_relative_path))
        found = self._walk(prefix) if recursive else iter(self._children(prefix))
        for name, i in found:
            yield name.decode("utf-8", "surrogatepass"), i

    def _children(self, prefix: bytes) -> list[tuple[bytes, int]]:
        """Direct children: files, and each sub-folder once (explicit entry or implied)."""
        lo, hi = self._range(prefix)
        order, key, cut = self._order, self._key, len(prefix)
        found: list[tuple[int, bytes, int]] = []  # (first position in the archive, name, entry)
        j = lo
        while j < hi:
            i = order[j]
            name = key(i)
            rel = name[cut:]
            slash = rel.find(b"/")
            if not rel:  # the folder's own entry
                j += 1
                continue
            if slash < 0:  # a file, perhaps with later duplicates right after it
                end = j + 1
                while end < hi and key(order[end]) == name:
                    end += 1
                found.append((i, rel, order[end - 1]))
                j = end
                continue
            child = rel[:slash + 1]
            end = bisect_left(order, prefix + rel[:slash] + b"0", j, hi, key=key)
            entry = -1
            if slash == len(rel) - 1:  # the folder's own entry sorts before its contents
                k = j + 1
                while k < end and key(order[k]) == name:
                    k += 1
                entry = order[k - 1]
            found.append((min(order[j:end]), child, entry))
            j = end
        found.sort()
        return [(name, i) for _, name, i in found]

    def _walk(self, prefix: bytes) -> Iterator[tuple[bytes, int]]:
        """Everything below ``prefix`` in archive order, each folder once, before its first
        member; duplicates once, at the first place, as the latest entry."""
        lo, hi = self._range(prefix)
        key, cut = self._key, len(prefix)
        shadowed, winner, folders = self._shadowed, self._winner, self._folders
        emitted: set[bytes] = set()
        last_parent = b""
        for i in sorted(self._order[lo:hi]):
            if shadowed and i in shadowed:
                continue
            rel = key(i)[cut:]
            if not rel:
                continue
            top = rel.rfind(b"/", 0, len(rel) - 1)
            if top >= 0:
                parent = rel[:top + 1]
                if parent != last_parent:
                    last_parent = parent
                    if parent not in emitted:
                        slash = parent.find(b"/")
                        while slash >= 0:  # each level not listed yet, from the top down
                            folder = parent[:slash + 1]
                            if folder not in emitted:
                                emitted.add(folder)
                                yield folder, folders.get(prefix + folder, -1)
                            slash = parent.find(b"/", slash + 1)
            if rel[-1] == 0x2F:  # an explicit folder entry
                if rel in emitted:
                    continue
                emitted.add(rel)
                yield rel, folders.get(prefix + rel, i)
            else:
                yield rel, winner.get(i, i) if winner else i

    def member(self, path: str) -> Member:
        """The entry named ``path`` (exactly, or after normalizing slashes and ``.``)."""
        found = self._unlisted.get(path)
        if found is not None:
            return self.member_at(found)
        parts = _normalize(path)
        if parts:
            key = _utf8_bytes("/".join(parts) + ("/" if path.endswith("/") else ""))
            i = self._find(key)
            if i >= 0:
                return self.member_at(i)
            if key.endswith(b"/") and self._range(key)[1] > self._range(key)[0]:
                raise NotFound(f"{path!r} is a directory with no entry of its own in the archive")
        raise NotFound(f"no member {path!r} in the archive")

    # -- where member data starts --------------------------------------------------------

    def data_starts(self, f: BinaryIO, entries: Sequence[int], *,
                    estimate_isolated: bool = False) -> list[int]:
        """The data offset of each entry, from the local headers read in windows: neighbours
        less than ``HEADER_GAP`` apart are read together, up to ``HEADER_WINDOW`` bytes a read
        (a dense archive costs a few large reads, not one per member).

        ``estimate_isolated``: an entry alone in its window, whose neighbours in the directory
        are more than ``HEADER_GAP`` away too, gets the central directory's estimate (header
        offset + 30 + the central name and extra lengths) instead of a read of its own: exact
        for writers whose local extra field equals the central one, and what a client proves
        (``mount/memberstart.py``) before using it."""
        ordered = sorted(zip(map(self._offset.__getitem__, entries), range(len(entries))))
        starts = [0] * len(entries)
        for p, q in _windows([offset for offset, _ in ordered]):
            first = ordered[p][0]
            if estimate_isolated and q == p + 1 and self._isolated(entries[ordered[p][1]]):
                i = entries[ordered[p][1]]
                name_len = self._cd_name_len.get(i, self._starts[i + 1] - self._starts[i] - 1)
                estimate = first + _LFH.size + name_len + self._extra_len[i]
                if estimate + self._csize[i] <= self.size:
                    starts[ordered[p][1]] = estimate
                    continue
            last = ordered[q - 1][0]
            if last + _LFH.size > self.size:  # only for a size given wrong: say how
                i = entries[ordered[q - 1][1]]
                raise CorruptArchive(
                    f"member {self._name(i).decode('utf-8', 'replace')!r}: local header offset "
                    f"{last} is past the end of the {self.size}-byte archive")
            window = _read_at(f, first, last + _LFH.size - first, "local headers")
            group = ordered[p:q]
            found = self._window_starts(window, first, group, entries)
            if found is None:  # something is wrong: find which, and say so
                for offset, k in group:
                    i = entries[k]
                    starts[k] = _data_start_from(window, offset - first, offset, self._csize[i],
                                                 self.size, functools.partial(self._name, i))
            else:
                for (_, k), start in zip(group, found):
                    starts[k] = start
        return starts

    def _isolated(self, i: int) -> bool:
        """Whether entry ``i``'s local header lies more than ``HEADER_GAP`` from those of the
        entries before and after it in the directory (whatever a listing's batch holds)."""
        offset = self._offset[i]
        neighbours = [self._offset[j] for j in (i - 1, i + 1) if 0 <= j < self.count]
        return all(abs(offset - other) > HEADER_GAP for other in neighbours)

    def _window_starts(self, window: bytes, first: int, group: list[tuple[int, int]],
                       entries: Sequence[int]) -> list[int] | None:
        """The data offsets of the headers in one window, unpacked in bulk; None if any header
        is bad or its data runs past the archive's end."""
        offsets = [offset for offset, _ in group]
        fields = zip(*map(_LFH_LENGTHS.unpack_from, repeat(window),
                          map(operator.sub, offsets, repeat(first))))
        signatures, name_lens, extra_lens = fields
        if set(signatures) != {_LFH_SIG}:
            return None
        found = list(map(operator.add, map(operator.add, offsets, repeat(_LFH.size)),
                         map(operator.add, name_lens, extra_lens)))
        ends = map(operator.add, found, map(self._csize.__getitem__,
                                            map(entries.__getitem__, (k for _, k in group))))
        return found if max(ends) <= self.size else None

    # Last in the class: below this, ``list`` in an annotation would mean this method.
    def list(self, zip_relative_path: str, recursive: bool) -> list[tuple[str, Member | None]]:
        """Entries under a directory with names relative to it; ``Member`` None when implied."""
        return [(name, None if i < 0 else self.member_at(i))
                for name, i in self.entries(zip_relative_path, recursive)]


def _windows(offsets: list[int]) -> Iterator[tuple[int, int]]:
    """Runs [p, q) of sorted header offsets read together: split where two neighbours are more
    than ``HEADER_GAP`` apart, and where a run would exceed ``HEADER_WINDOW`` (found in bulk:
    the Python loop is per window, not per header)."""
    gaps = map(operator.gt, map(operator.sub, islice(offsets, 1, None), offsets),
               repeat(HEADER_GAP))
    cuts = [0, *map(operator.add, compress(count(), gaps), repeat(1)), len(offsets)]
    for p, end in zip(cuts, islice(cuts, 1, None)):
        while p < end:
            q = max(p + 1, bisect_right(offsets, offsets[p] + HEADER_WINDOW - _LFH.size, p, end))
            yield p, q
            p = q


def _utf8_bytes(name: str) -> bytes:
    return name.encode("utf-8", "surrogatepass")


# In names joined with NUL: a component that is empty, '.' or '..'; a name ending in '/'.
_ABNORMAL = re.compile(rb"(?:^|(?<=\0))[/\0]|//|(?:^|(?<=[\0/]))\.{1,2}(?=[\0/])")
_ABNORMAL_HINTS = (b"//", b"\0/", b"\0\0", b"/.", b"\0.")
_FOLDER = re.compile(rb"/\0")


def _unusual_names(text: bytes, starts: array) -> list[int]:
    """Entries whose name is not already in normal form, from the names joined with NUL
    (``starts``: where each begins): a scan in C, then a look at each match only."""
    if not (text.startswith((b"/", b"\0", b".")) or any(h in text for h in _ABNORMAL_HINTS)):
        return []
    found = {bisect_right(starts, match.start()) - 1 for match in _ABNORMAL.finditer(text)}
    return sorted(i for i in found if 0 <= i < len(starts) - 1)


def _normalize(name: str) -> list[str] | None:
    """Path components without empty or '.' parts; None when unlistable ('..' or nothing left)."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return parts


# ---------------------------------------------------------------------------------------------
# Reading


def read_index(f: BinaryIO, size: int, *, max_entries: int, max_cd_bytes: int) -> ZipIndex:
    """Parse the end records and the central directory of an archive of ``size`` bytes.

    The central directory is read in ``CD_CHUNK`` pieces (a ranged-GET file object makes one
    request of each), so memory follows the members, not the directory's size."""
    tail = _read_tail(f, size)
    if tail.entries > max_entries:
        raise TooLarge(
            f"archive claims {tail.entries} entries, more than the limit of {max_entries}")
    if tail.cd_size > max_cd_bytes:
        raise TooLarge(
            f"central directory is {tail.cd_size} bytes, more than the limit of {max_cd_bytes}")
    with gc_paused():
        columns = _scan_cd(f, tail, size, max_entries)
        return ZipIndex(size, columns)


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


CD_CHUNK = 8 << 20
_REST = _CDH.size - 4  # a central header after its signature
_HEAD = operator.itemgetter(slice(0, _REST))
_AFTER_HEAD = operator.itemgetter(slice(_REST, None))
_UNUSUAL_NAME = re.compile(rb"[\x00\x80-\xff]")
_UNICODE_PATH_ID = struct.pack("<H", _UNICODE_PATH_EXTRA)


def _scan_cd(f: BinaryIO, tail: _Tail, size: int, max_entries: int) -> _Columns:
    """Every central-directory entry, in archive order, read chunk by chunk."""
    columns = _Columns()
    start = tail.cd_offset + tail.shift
    carry = b""
    base = 0  # offset in the central directory of ``carry``'s first byte
    done = 0
    while True:
        take = min(CD_CHUNK, tail.cd_size - done)
        buffer = carry + _read_at(f, start + done, take, "central directory") if take else carry
        done += take
        final = done == tail.cd_size
        used = _scan_fast(buffer, tail.shift, size, columns)
        ended = False
        if used is None:
            used, ended = _scan_exact(buffer, base, start, final, tail.shift, size, columns)
        elif final:
            more, ended = _scan_exact(buffer[used:], base + used, start, True, tail.shift, size,
                                      columns)
            used += more
        if len(columns) > max_entries:
            raise TooLarge(f"archive has more than {max_entries} entries")
        if final or ended:
            break
        carry = buffer[used:]
        base += used
    _check_count(len(columns), tail)
    return columns


def _scan_exact(data: bytes, base: int, start: int, final: bool, shift: int, size: int,
                columns: _Columns) -> tuple[int, bool]:
    """Entries one by one from ``data`` (at ``base`` in the central directory): bytes used,
    and whether a digital signature ended the directory. Short of ``final`` an entry cut by
    the chunk's end is left for the next chunk."""
    pos = 0
    end = len(data)
    while pos < end:
        if data[pos:pos + 4] == _DIGSIG_SIG:
            return pos, True
        if end - pos < _CDH.size or data[pos:pos + 4] != _CDH_SIG:
            if not final and end - pos < _CDH.size:
                break
            raise CorruptArchive(f"bad central directory header at offset {start + base + pos}")
        name_len, extra_len, comment_len = struct.unpack_from("<3H", data, pos + 28)
        if pos + _CDH.size + name_len + extra_len + comment_len > end:
            if not final:
                break
            raise CorruptArchive(
                f"central directory entry at {base + pos} runs past the directory's end")
        member, next_pos = _parse_header(data, pos, shift, size)
        columns.append(member, name_len, extra_len)
        pos = next_pos
    return pos, False


def _scan_fast(data: bytes, shift: int, size: int, columns: _Columns) -> int | None:
    """The complete entries of ``data`` but the last, parsed with no Python loop over them;
    None when ``data`` is not a plain run of entries (a name or extra field holding a header
    signature, a digital signature, damage): ``_scan_exact`` then parses it.

    Splitting at the header signature gives candidate entries; they are the entries exactly
    when each one's length is what its own header says, which is checked for all at once. Each
    field is then cut out of the joined fixed parts with a strided slice. Entries that need
    more than the fixed fields (a name that is not plain ASCII, a zip64 value, a Unicode Path
    field) go through ``_parse_header`` one by one."""
    pieces = data.split(_CDH_SIG)
    if pieces[0]:
        return None
    pieces = pieces[1:-1]
    n = len(pieces)
    if n == 0:
        return 0
    lengths = list(map(len, pieces))
    if min(lengths) < _REST:
        return None
    head = b"".join(map(_HEAD, pieces))
    name_len, extra_len, comment_len = (_column(head, at, 2, "H") for at in (24, 26, 28))
    if set(map(operator.sub, lengths, map(operator.add, map(operator.add, name_len, extra_len),
                                          comment_len))) != {_REST}:
        return None
    offset, csize, usize = (_column(head, at, 4, "Q") for at in (38, 16, 20))
    if max(extra_len) or max(comment_len):
        cuts = map(slice, repeat(_REST), map(operator.add, name_len, repeat(_REST)))
        names: list[bytes] = list(map(operator.getitem, pieces, cuts))  # type: ignore[arg-type]
    else:
        names = list(map(_AFTER_HEAD, pieces))
    exact: set[int] = set()
    joined = b"".join(names)
    if not joined.isascii() or b"\0" in joined:
        ends = list(accumulate(map(len, names)))
        exact.update(bisect_right(ends, m.start()) for m in _UNUSUAL_NAME.finditer(joined))
    del joined
    for column in (offset, csize, usize):
        if max(column) == 0xFFFFFFFF:
            exact.update(compress(count(), map(operator.eq, column, repeat(0xFFFFFFFF))))
    if max(extra_len):
        extra_start = list(map(operator.add, name_len, repeat(_REST)))
        extras = map(operator.getitem, pieces,
                     map(slice, extra_start, map(operator.add, extra_start, extra_len)))
        exact.update(compress(count(), map(operator.contains, extras, repeat(_UNICODE_PATH_ID))))
    if shift:
        offset = array("Q", map(operator.add, offset, repeat(shift)))
    raw_name_len = {}  # where the UTF-8 name's length is not the raw name's
    if exact:
        where = list(accumulate(map(operator.add, lengths, repeat(4)), initial=0))
        for k in sorted(exact):
            member, _ = _parse_header(data, where[k], shift, size)
            offset[k], csize[k] = member.header_offset, member.compressed_size
            usize[k] = member.size
            names[k] = _utf8_bytes(member.name)
            if len(names[k]) != name_len[k]:
                raw_name_len[len(columns) + k] = name_len[k]
    if max(offset) + max(csize) + _LFH.size > size and (
            max(map(operator.add, offset, csize)) + _LFH.size > size):
        return None  # some member lies past the end: _scan_exact says which
    columns.cd_name_len.update(raw_name_len)
    columns.offset.extend(offset)
    columns.csize.extend(csize)
    columns.usize.extend(usize)
    columns.crc.extend(_column(head, 12, 4, "I"))
    columns.dostime.extend(_column(head, 8, 4, "I"))
    columns.method.extend(_column(head, 6, 2, "H"))
    columns.flags.extend(_column(head, 4, 2, "H"))
    columns.extra_len.extend(extra_len)
    columns.names.extend(names)
    return sum(lengths) + 4 * n


def _column(head: bytes, at: int, width: int, code: str) -> array:
    """One little-endian field of every entry (``width`` bytes at ``at`` in each ``_REST``-byte
    fixed part), widened to the array type ``code``."""
    column = array(code)
    step = column.itemsize
    raw = bytearray(len(head) // _REST * step)
    for byte in range(width):
        raw[byte::step] = head[at + byte::_REST]
    column.frombytes(raw)
    if sys.byteorder == "big":
        column.byteswap()
    return column


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


def _data_start(header: bytes, member: Member, size: int) -> int:
    return _data_start_from(header, 0, member.header_offset, member.compressed_size, size,
                            lambda: _utf8_bytes(member.name))


def _data_start_from(window: bytes, at: int, header_offset: int, compressed_size: int,
                     size: int, name: Callable[[], bytes]) -> int:
    """The data offset from the local header at ``at`` in ``window`` (``header_offset`` in the
    archive); ``name`` gives the member's name for a message."""
    sig, *_, name_len, extra_len = _LFH.unpack_from(window, at)
    if sig != _LFH_SIG:
        raise CorruptArchive(f"member {name().decode('utf-8', 'replace')!r}: no local header "
                             f"signature at offset {header_offset}")
    start = header_offset + _LFH.size + name_len + extra_len
    if start + compressed_size > size:
        raise CorruptArchive(f"member {name().decode('utf-8', 'replace')!r}: {compressed_size} "
                             f"compressed bytes at offset {start} run past the end of the "
                             f"{size}-byte archive")
    return start
