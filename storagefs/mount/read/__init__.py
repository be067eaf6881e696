"""The mount's read engine: an open file's byte ranges -> bytes, decoded lazily and verified.

Readers see their object only through ``fetch(start, end) -> bytes``, absolute half-open
offsets in the stored object (a plain file, or the whole ZIP archive), so their tests need
nothing but bytes. A read is cut from blocks of decoded data kept in one memory budget shared
by every open file of the mount (``ReadContext``: the ``BlockCache``, the decode and fetch
thread pools, what is known about each member); a miss starts a decode job in a worker, which
decodes ahead of sequential readers while the next compressed ranges are fetched, and random
access starts from inflater snapshots rather than the member's start. A member read through
its end is checked (size, CRC-32) before its last block goes out, and a bad one is refused to
every handle. ``DiskCache`` can keep fetched ranges on disk across mounts. The numbers behind
all this are in ``tuning.ReadTuning``; each module's docstring explains its part.
"""

from .context import ReadContext
from .diskcache import DiskCache
from .reader import FileReader, MemberReader, RangeReader
from .tuning import ReadTuning

__all__ = ["DiskCache", "FileReader", "MemberReader", "RangeReader", "ReadContext", "ReadTuning"]
