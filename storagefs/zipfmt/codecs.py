"""Decoders for the compressed data of ZIP members, fed incrementally, and a CRC-32 check.

Used by ``storage.download`` (a member fetched with one ranged GET) and by the mount's reader
(a member read piece by piece, possibly resumed from a snapshot). The API is small on purpose::

    decoder = make_decoder(method)          # UnsupportedMethod if this build cannot decode it
    check = Crc32Check(expected_crc, expected_size, name)
    for chunk in compressed_chunks:
        data = decoder.decompress(chunk)    # or decompress(chunk, max_length) with needs_input
        check.update(data)
    check.update(decoder.flush())           # CorruptArchive if the stream is cut short
    check.verify()                          # CorruptArchive on a size or CRC-32 mismatch

``decode_chunks`` and ``decompress_bytes`` do that loop for the common cases.

Methods (APPNOTE 4.4.5): 0 stored, 8 deflate, 9 Deflate64 (``zipfile-deflate64``), 12 bzip2,
14 LZMA, 95 xz, and 93 zstd (also the legacy id 20) when the ``zstandard`` package is installed.

``max_length`` bounds the output of one call, so a reader can cap memory against archives
that expand a few bytes into gigabytes: while ``needs_input`` is False the decoder still holds
output for earlier input, and ``decompress(b"", max_length)`` drains it. Only deflate and stored
decoders can be copied (``can_copy``/``copy()``): CPython's ``zlib`` supports it and the reader
uses it to keep snapshots for random access (``checkpoint()``: a copy without the input it
holds, which is given again from that offset).

Deflate and CRC-32 use python-zlib-ng (``storagefs[speed]``) when it is installed: the same API,
about twice as fast to inflate and several times faster at CRC-32; the stdlib ``zlib`` otherwise.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from types import ModuleType
from typing import Callable, Iterable, Iterator, Union

from .. import protocol
from ..errors import CorruptArchive, UnsupportedMethod

fast_zlib: ModuleType
try:  # same API as zlib (decompressobj, copy, crc32), faster; optional
    from zlib_ng import zlib_ng as fast_zlib
except ImportError:  # pragma: no cover - depends on the extras installed
    fast_zlib = zlib

__all__ = [
    "Decoder",
    "Crc32Check",
    "CorruptArchive",
    "UnsupportedMethod",
    "make_decoder",
    "is_supported",
    "supported_methods",
    "method_name",
    "decode_chunks",
    "decompress_bytes",
]

# What a decoder accepts as input: the mount's reader hands it slices of fetched bytes.
BytesLike = Union[bytes, bytearray, memoryview]

METHOD_NAMES = {
    protocol.STORED: "stored",
    protocol.DEFLATED: "deflate",
    protocol.DEFLATE64: "Deflate64",
    protocol.BZIP2: "bzip2",
    protocol.LZMA: "LZMA",
    protocol.ZSTD_LEGACY: "zstd",
    protocol.ZSTD: "zstd",
    protocol.XZ: "xz",
}


def method_name(method: int) -> str:
    """A readable name for a ZIP method number: 'deflate', or 'method 99' when unknown."""
    return METHOD_NAMES.get(method, f"method {method}")


class Decoder:
    """Incremental decoder of one member's compressed bytes.

    Subclasses implement ``_decode(data, max_length)`` and may override ``flush`` and ``copy``.
    The base class keeps output that a codec without a native output bound produced beyond
    ``max_length``.
    """

    method: int = -1
    can_copy: bool = False

    def __init__(self) -> None:
        self._pending = b""
        self._finished = False  # flush() was called

    @property
    def name(self) -> str:
        return method_name(self.method)

    @property
    def needs_input(self) -> bool:
        """False while output for input already given is still held back by ``max_length``."""
        return not self._pending and self._codec_needs_input()

    @property
    def eof(self) -> bool:
        """Whether the codec has seen the end marker of its stream (stored/LZMA may have none)."""
        return False

    def decompress(self, data: BytesLike, max_length: int = -1) -> bytes:
        """Decode ``data`` and return what it yields, at most ``max_length`` bytes if >= 0."""
        if self._finished:
            raise ValueError("decompress() after flush()")
        if self._pending:
            # Output is still held back: new input is decoded after it, without a bound
            # (callers that honour needs_input only pass b"" here).
            out = self._pending + (self._decode(bytes(data), -1) if data else b"")
            self._pending = b""
        else:
            out = self._decode(bytes(data), max_length)
        return self._bound(out, max_length)

    def flush(self) -> bytes:
        """No more input: return all output still held; CorruptArchive if cut short."""
        out = self._pending + self._decode(b"", -1)
        while not self._codec_needs_input():
            more = self._decode(b"", -1)
            if not more:
                break
            out += more
        self._pending = b""
        out += self._finish()
        self._finished = True
        return out

    def copy(self) -> "Decoder":
        """An independent decoder in the same state (only when ``can_copy``)."""
        raise NotImplementedError(f"{self.name} decoder state cannot be copied")

    def checkpoint(self) -> tuple["Decoder", int]:
        """A copy that holds no input, and how many input bytes this one holds (only when
        ``can_copy``; see ``DeflateDecoder.checkpoint``)."""
        raise NotImplementedError(f"{self.name} decoder state cannot be copied")

    # -- for subclasses --------------------------------------------------------------------
    def _decode(self, data: bytes, max_length: int) -> bytes:
        raise NotImplementedError

    def _codec_needs_input(self) -> bool:
        return True

    def _finish(self) -> bytes:
        return b""

    def _bound(self, out: bytes, max_length: int) -> bytes:
        if 0 <= max_length < len(out):
            self._pending = out[max_length:]
            return out[:max_length]
        return out


class StoredDecoder(Decoder):
    method = protocol.STORED
    can_copy = True

    def _decode(self, data: bytes, max_length: int) -> bytes:
        return data

    def copy(self) -> "StoredDecoder":
        twin = StoredDecoder()
        twin._pending = self._pending
        return twin


class DeflateDecoder(Decoder):
    """Raw deflate (no zlib header), with native output bounding and copyable state."""

    method = protocol.DEFLATED
    can_copy = True

    def __init__(self) -> None:
        super().__init__()
        self._obj = fast_zlib.decompressobj(-zlib.MAX_WBITS)
        self._tail = b""

    @property
    def eof(self) -> bool:
        return self._obj.eof

    def _codec_needs_input(self) -> bool:
        return not self._tail

    def _decode(self, data: bytes, max_length: int) -> bytes:
        if self._obj.eof:
            self._tail = b""
            return b""  # bytes after the end of the stream are ignored, as zipfile does
        if max_length == 0:  # zlib reads 0 as "no limit"
            self._tail += data
            return b""
        try:
            out = self._obj.decompress(self._tail + data, max(max_length, 0))
        except fast_zlib.error as exc:
            raise CorruptArchive(f"{self.name} data is corrupt: {exc}") from None
        self._tail = self._obj.unconsumed_tail
        return out

    def _finish(self) -> bytes:
        if not self._obj.eof:
            try:
                self._obj.flush()
            except fast_zlib.error:
                pass
            raise CorruptArchive(f"{self.name} data is truncated (no end of stream)")
        return b""

    def copy(self) -> "DeflateDecoder":
        twin = DeflateDecoder()
        twin._obj = self._obj.copy()
        twin._tail = self._tail
        twin._pending = self._pending
        return twin

    def checkpoint(self) -> tuple["DeflateDecoder", int]:
        """A copy that holds no input, and how many input bytes this one holds: the copy goes
        on from the input offset that many bytes before what was given so far (about 40 KB,
        where ``copy()`` would also keep up to a whole chunk of input)."""
        twin = DeflateDecoder()
        twin._obj = self._obj.copy()
        twin._pending = self._pending
        return twin, len(self._tail)


class _EofStreamDecoder(Decoder):
    """A codec object with ``decompress(data)`` and ``eof``; output bound by the base class."""

    require_eof = True

    def __init__(self, obj) -> None:
        super().__init__()
        self._obj = obj

    @property
    def eof(self) -> bool:
        return bool(getattr(self._obj, "eof", False))

    def _decode(self, data: bytes, max_length: int) -> bytes:
        if not data or self.eof:
            return b""
        try:
            return self._obj.decompress(data)
        except Exception as exc:  # each codec raises its own type; all mean corrupt data
            raise CorruptArchive(f"{self.name} data is corrupt: {exc}") from None

    def _finish(self) -> bytes:
        if self.require_eof and not self.eof:
            raise CorruptArchive(f"{self.name} data is truncated (no end of stream)")
        return b""


class Deflate64Decoder(_EofStreamDecoder):
    method = protocol.DEFLATE64

    def __init__(self) -> None:
        try:
            from zipfile_deflate64 import deflate64
        except ImportError:  # pragma: no cover - a dependency of the package
            raise UnsupportedMethod("Deflate64 needs the zipfile-deflate64 package") from None
        super().__init__(deflate64.Deflate64())


class _NativeBoundDecoder(Decoder):
    """bz2/lzma objects: ``decompress(data, max_length)``, ``needs_input``, ``eof``."""

    require_eof = True

    def __init__(self, obj) -> None:
        super().__init__()
        self._obj = obj

    @property
    def eof(self) -> bool:
        return self._obj.eof

    def _codec_needs_input(self) -> bool:
        return self._obj.eof or self._obj.needs_input

    def _decode(self, data: bytes, max_length: int) -> bytes:
        if self._obj.eof:
            return b""
        if not data and self._obj.needs_input:
            return b""
        try:
            return self._obj.decompress(data, max_length)
        except (OSError, EOFError, ValueError, lzma.LZMAError) as exc:
            raise CorruptArchive(f"{self.name} data is corrupt: {exc}") from None

    def _finish(self) -> bytes:
        if self.require_eof and not self._obj.eof:
            raise CorruptArchive(f"{self.name} data is truncated (no end of stream)")
        return b""


class Bzip2Decoder(_NativeBoundDecoder):
    method = protocol.BZIP2

    def __init__(self) -> None:
        super().__init__(bz2.BZ2Decompressor())


class XzDecoder(_NativeBoundDecoder):
    method = protocol.XZ

    def __init__(self) -> None:
        super().__init__(lzma.LZMADecompressor(lzma.FORMAT_XZ))


# The parser of LZMA1 properties that ``zipfile`` uses too: private in CPython's ``lzma``,
# hence absent from its type stubs.
_lzma_filter_properties: Callable[[int, bytes], dict] = getattr(lzma, "_decode_filter_properties")


class LzmaDecoder(Decoder):
    """ZIP's LZMA (method 14): a 4-byte header (version, properties length), the LZMA1
    properties, then a raw LZMA1 stream, whose end marker is optional (flag bit 1), so the
    end is known from the member's size rather than from the stream."""

    method = protocol.LZMA

    def __init__(self) -> None:
        super().__init__()
        self._header = b""
        self._inner: _NativeBoundDecoder | None = None

    @property
    def eof(self) -> bool:
        return self._inner is not None and self._inner.eof

    def _codec_needs_input(self) -> bool:
        return self._inner is None or self._inner._codec_needs_input()

    def _decode(self, data: bytes, max_length: int) -> bytes:
        if self._inner is None:
            self._header += data
            if len(self._header) < 4:
                return b""
            (props_len,) = struct.unpack("<H", self._header[2:4])
            if len(self._header) < 4 + props_len:
                return b""
            props = self._header[4:4 + props_len]
            data = self._header[4 + props_len:]
            self._header = b""
            try:
                filters = [_lzma_filter_properties(lzma.FILTER_LZMA1, props)]
                obj = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters)
            except (lzma.LZMAError, ValueError) as exc:
                raise CorruptArchive(f"LZMA properties are invalid: {exc}") from None
            self._inner = _NativeBoundDecoder(obj)
            self._inner.method = self.method
            self._inner.require_eof = False
        return self._inner._decode(data, max_length)

    def _finish(self) -> bytes:
        if self._inner is None and self._header:
            raise CorruptArchive("LZMA data is truncated (incomplete header)")
        return b""


class ZstdDecoder(Decoder):
    """Zstandard frames, one after another (``read_across_frames`` done by hand)."""

    method = protocol.ZSTD

    def __init__(self, method: int = protocol.ZSTD) -> None:
        try:
            import zstandard
        except ImportError:
            raise UnsupportedMethod(
                "zstd members need the zstandard package (pip install 'storagefs[zstd]')"
            ) from None
        super().__init__()
        self.method = method
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._error = zstandard.ZstdError
        self._started = False  # some input was given to the current frame

    @property
    def eof(self) -> bool:
        return bool(self._obj.eof)

    def _decode(self, data: bytes, max_length: int) -> bytes:
        out = []
        while data:
            if self._obj.eof:
                self._obj = self._dctx.decompressobj()
            try:
                out.append(self._obj.decompress(data))
            except self._error as exc:
                raise CorruptArchive(f"zstd data is corrupt: {exc}") from None
            self._started = True
            data = self._obj.unused_data if self._obj.eof else b""
        return b"".join(out)

    def _finish(self) -> bytes:
        if self._started and not self._obj.eof:
            raise CorruptArchive("zstd data is truncated (no end of frame)")
        return b""


_FACTORIES: dict[int, Callable[[], Decoder]] = {
    protocol.STORED: StoredDecoder,
    protocol.DEFLATED: DeflateDecoder,
    protocol.DEFLATE64: Deflate64Decoder,
    protocol.BZIP2: Bzip2Decoder,
    protocol.LZMA: LzmaDecoder,
    protocol.XZ: XzDecoder,
    protocol.ZSTD: lambda: ZstdDecoder(protocol.ZSTD),
    protocol.ZSTD_LEGACY: lambda: ZstdDecoder(protocol.ZSTD_LEGACY),
}


def make_decoder(method: int) -> Decoder:
    """A fresh decoder for ZIP compression ``method``; UnsupportedMethod if there is none."""
    factory = _FACTORIES.get(method)
    if factory is None:
        raise UnsupportedMethod(f"unsupported ZIP compression method {method}")
    return factory()


def is_supported(method: int) -> bool:
    """Whether ``make_decoder(method)`` works in this environment."""
    try:
        make_decoder(method)
    except UnsupportedMethod:
        return False
    return True


def supported_methods() -> list[int]:
    return sorted(m for m in _FACTORIES if is_supported(m))


class Crc32Check:
    """Running CRC-32 and size of decoded bytes, checked against the central directory.

    ``None`` for an expected value skips that check. ``update`` fails as soon as the data
    grows past the expected size, so a hostile member cannot make a reader write forever.
    """

    def __init__(self, expected_crc: int | None = None, expected_size: int | None = None,
                 name: str = "") -> None:
        self.expected_crc = expected_crc
        self.expected_size = expected_size
        self.name = name
        self.crc = 0
        self.size = 0

    def _label(self) -> str:
        return f"{self.name}: " if self.name else ""

    def update(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self.expected_size is not None and self.size > self.expected_size:
            raise CorruptArchive(
                f"{self._label()}member is longer than its recorded size {self.expected_size}")
        self.crc = fast_zlib.crc32(data, self.crc)

    def verify(self) -> None:
        if self.expected_size is not None and self.size != self.expected_size:
            raise CorruptArchive(f"{self._label()}member has {self.size} bytes, "
                                 f"expected {self.expected_size}")
        if self.expected_crc is not None and self.crc != self.expected_crc:
            raise CorruptArchive(f"{self._label()}CRC-32 mismatch: got {self.crc:08x}, "
                                 f"expected {self.expected_crc:08x}")

    def copy(self) -> "Crc32Check":
        twin = Crc32Check(self.expected_crc, self.expected_size, self.name)
        twin.crc, twin.size = self.crc, self.size
        return twin


def decode_chunks(method: int, chunks: Iterable[bytes], *, crc32: int | None = None,
                  size: int | None = None, name: str = "") -> Iterator[bytes]:
    """Decoded bytes of a member from its compressed chunks, verified at the end.

    The generator raises CorruptArchive before it ends if the stream is cut short or the size
    or CRC-32 (when given) do not match, so a caller that writes what it receives to a
    temporary file and renames it once the loop ends never publishes bad data.
    """
    decoder = make_decoder(method)
    check = Crc32Check(crc32, size, name)
    for chunk in chunks:
        out = decoder.decompress(chunk)
        if out:
            check.update(out)
            yield out
    tail = decoder.flush()
    check.update(tail)
    check.verify()
    if tail:
        yield tail


def decompress_bytes(method: int, data: bytes, *, crc32: int | None = None,
                     size: int | None = None, name: str = "") -> bytes:
    """All of a member at once (for small members and tests)."""
    return b"".join(decode_chunks(method, [data], crc32=crc32, size=size, name=name))
