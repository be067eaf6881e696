"""ZIP format knowledge shared by the library and the mount: codecs, local headers, inflating.

Nothing here talks to the network: code that needs bytes of an archive takes a ``Fetch``, so
it works the same over ranged GETs, a disk cache or bytes in a test.
"""

from __future__ import annotations

from typing import Callable

# ``fetch(start, end) -> bytes``: bytes ``[start, end)`` of one stored object (a plain file or
# a whole ZIP archive), absolute half-open offsets.
Fetch = Callable[[int, int], bytes]
