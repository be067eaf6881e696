"""Raw deflate for the mount's reader: fast sequential passes that leave resumable checkpoints.

``IndexedInflater`` drives zlib-ng's own C API (exported by python-zlib-ng's extension module)
through ``ctypes``, or the system's libz when zlib-ng is not installed. Nothing else in CPython
gives what random access into deflate needs: a *checkpoint* that can be kept anywhere (memory,
disk) is zran.c's: the bit position of a deflate block boundary and the 32 KiB of output before
it; resuming is ``inflatePrime`` (the few bits of the boundary's byte) and
``inflateSetDictionary`` (the window). CPython's ``zlib`` has neither, nor ``Z_BLOCK`` to stop
at a boundary.

Options weighed, measured on a 300 MiB member of CSV floats zipped by ``7zz -tzip -mx=1``
(process CPU time of a whole inflate in 1 MiB outputs, three runs):

- zlib-ng ``_ZlibDecompressor`` (the previous sequential inflater): 0.87-0.90 s, no copy.
- zlib-ng ``decompressobj`` (copyable: in-memory snapshots only): 1.13-1.14 s, +30%.
- zlib-ng's ``zng_inflate`` through ctypes into the output ``bytes`` itself, ``Z_NO_FLUSH``:
  0.87-0.93 s: as fast (the call releases the GIL too); filling each 1 MiB block whole from
  the input (``fill``: nothing to join) 0.85 s. ``Z_BLOCK`` on every call: 1.07-1.10 s (each
  return costs ~30 us; 6,309 blocks). So this inflater runs with ``Z_NO_FLUSH`` and switches
  to ``Z_BLOCK`` only in the ``margin`` before a checkpoint is due: with ``fill``, a
  checkpoint every 4 MiB costs +3% of the inflate alone (0.93 s), every MiB +12%; through
  the mount, ``cat`` of the member took the daemon the same CPU time as before (1.8 s).
- Finding boundaries by hand and resuming with a crafted byte-aligned prefix fed to a
  ``decompressobj(zdict=window)`` (empty fixed/dynamic blocks whose bit lengths line the real
  bits up) works without ctypes, but finding a boundary needs Huffman decoding in Python.
- indexed_gzip (made for gzip files, not members inside a ZIP), rapidgzip (a large C++ wheel
  with its own parallel decoder and index format) and python-isal: not measured here; each
  would be a new dependency for what four entry points of zlib itself do.

The default keeps working without any of it: when neither library can be loaded,
``available`` is False and the reader decodes deflate with ``codecs.DeflateDecoder`` and its
in-memory copies, as before. A checkpoint is only ever used for the member version it was
made from (the reader's job), and the data decoded from it is CRC-checked as any other.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import zlib
from dataclasses import dataclass
from typing import Any, Callable

from .. import protocol
from ..errors import CorruptArchive
from . import codecs

log = logging.getLogger(__name__)

WINDOW = 32 * 1024  # deflate's largest distance: what a checkpoint keeps of the output
_Z_OK, _Z_STREAM_END, _Z_BUF_ERROR = 0, 1, -5
_Z_NO_FLUSH, _Z_BLOCK = 0, 5
_MOST = 1 << 30  # input or output given to one call: zlib's avail_in/avail_out are 32 bits


@dataclass(frozen=True)
class Checkpoint:
    """Where inflating can start again: output offset ``out`` of the member is a deflate block
    boundary; the compressed data goes on at byte ``in_pos`` after ``bits`` bits (0-7, value
    ``prime``) of the byte before it; ``window`` is the output before ``out`` (32 KiB, less
    near the start)."""

    out: int
    in_pos: int
    bits: int
    prime: int
    window: bytes

    def __post_init__(self) -> None:
        if not (0 <= self.bits <= 7 and 0 <= self.prime < (1 << self.bits) and
                0 <= self.in_pos and 0 <= self.out and len(self.window) <= WINDOW and
                (self.bits == 0 or self.in_pos > 0)):
            raise ValueError("invalid deflate checkpoint")


class _ZngStream(ctypes.Structure):
    """zlib-ng's ``zng_stream`` (its ``adler`` is 32 bits)."""

    _fields_ = [("next_in", ctypes.c_void_p), ("avail_in", ctypes.c_uint32),
                ("total_in", ctypes.c_size_t), ("next_out", ctypes.c_void_p),
                ("avail_out", ctypes.c_uint32), ("total_out", ctypes.c_size_t),
                ("msg", ctypes.c_char_p), ("state", ctypes.c_void_p),
                ("zalloc", ctypes.c_void_p), ("zfree", ctypes.c_void_p),
                ("opaque", ctypes.c_void_p), ("data_type", ctypes.c_int),
                ("adler", ctypes.c_uint32), ("reserved", ctypes.c_ulong)]


class _ZStream(ctypes.Structure):
    """zlib's ``z_stream`` (``uInt`` is ``unsigned int``, ``uLong`` the platform's long: 32
    bits on Windows, where ``total_in`` is not a ``size_t``)."""

    _fields_ = [("next_in", ctypes.c_void_p), ("avail_in", ctypes.c_uint),
                ("total_in", ctypes.c_ulong), ("next_out", ctypes.c_void_p),
                ("avail_out", ctypes.c_uint), ("total_out", ctypes.c_ulong),
                ("msg", ctypes.c_char_p), ("state", ctypes.c_void_p),
                ("zalloc", ctypes.c_void_p), ("zfree", ctypes.c_void_p),
                ("opaque", ctypes.c_void_p), ("data_type", ctypes.c_int),
                ("adler", ctypes.c_ulong), ("reserved", ctypes.c_ulong)]


class _PyBuffer(ctypes.Structure):
    """CPython's ``Py_buffer``: the address of the input without copying it."""

    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p),
                ("len", ctypes.c_ssize_t), ("itemsize", ctypes.c_ssize_t),
                ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p),
                ("strides", ctypes.c_void_p), ("suboffsets", ctypes.c_void_p),
                ("internal", ctypes.c_void_p)]


_api = ctypes.pythonapi
_new_bytes = _api.PyBytes_FromStringAndSize
_new_bytes.restype, _new_bytes.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_ssize_t]
_bytes_address = _api.PyBytes_AsString
_bytes_address.restype, _bytes_address.argtypes = ctypes.c_void_p, [ctypes.py_object]
_get_buffer = _api.PyObject_GetBuffer
_get_buffer.restype = ctypes.c_int
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_release_buffer = _api.PyBuffer_Release
_release_buffer.restype, _release_buffer.argtypes = None, [ctypes.POINTER(_PyBuffer)]


class _Binding:
    """The five inflate entry points of one zlib build."""

    def __init__(self, name: str, lib: ctypes.CDLL, prefix: str, stream: type,
                 init: Callable[[Any], int]) -> None:
        self.name = name
        self.stream = stream
        self.init = init
        ptr, vp, u32 = ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32
        sig = {"inflate": [ptr, ctypes.c_int], "inflateEnd": [ptr],
               "inflatePrime": [ptr, ctypes.c_int, ctypes.c_int],
               "inflateSetDictionary": [ptr, vp, u32],
               "inflateGetDictionary": [ptr, vp, ctypes.POINTER(u32)]}
        for fn, args in sig.items():
            f = getattr(lib, prefix + fn)
            f.argtypes, f.restype = args, ctypes.c_int
            setattr(self, fn, f)

    inflate: Any
    inflateEnd: Any
    inflatePrime: Any
    inflateSetDictionary: Any
    inflateGetDictionary: Any


def _checked(name: str, lib: ctypes.CDLL, prefix: str, stream: type,
             header: bytes) -> _Binding | None:
    """The binding if the library takes streams laid out as ``stream``: its ``inflateInit2_``
    refuses a ``stream_size`` or a major version (``header``, the one the layout was copied
    from) other than its own, so a build that differs is never handed a wrong-sized struct."""
    init2 = getattr(lib, prefix + "inflateInit2_")
    init2.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    init2.restype = ctypes.c_int
    binding = _Binding(name, lib, prefix, stream,
                       lambda s: init2(ctypes.byref(s), -15, header, ctypes.sizeof(stream)))
    trial = stream()
    if binding.init(trial) != _Z_OK:
        log.warning("%s does not take the stream layout this reader knows: deflate is read "
                    "without checkpoints", name)
        return None
    binding.inflateEnd(ctypes.byref(trial))
    return binding


def _zlib_ng(stream: type = _ZngStream) -> _Binding | None:
    """zlib-ng's C API, exported by python-zlib-ng's extension module."""
    if codecs.fast_zlib is zlib:
        return None
    try:
        lib = ctypes.CDLL(codecs.fast_zlib.__file__)
        return _checked("zlib-ng", lib, "zng_", stream, b"2.3.3")  # zlib-ng.h 2.x, 104 bytes
    except (OSError, AttributeError, TypeError):
        return None


def _system_zlib(stream: type = _ZStream) -> _Binding | None:
    """The system's libz (the one CPython's own ``zlib`` module is linked with)."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("z") or "libz.so.1")
        return _checked("zlib", lib, "", stream, b"1.2.13")  # zlib.h 1.x, 112 bytes
    except (OSError, AttributeError, TypeError):
        return None


_binding = _zlib_ng() or _system_zlib()


class IndexedInflater(codecs.Decoder):
    """Raw deflate, as fast as zlib-ng goes, that can leave checkpoints and start from one.

    ``mark(at)`` asks for a checkpoint at the last block boundary at or before output offset
    ``at`` that lies within ``margin`` of it, else at the first one after it;
    ``take_checkpoint()`` hands it over once the output has got there. Offsets are the
    member's (a resumed inflater starts at its checkpoint's). Its output is allocated at the
    size asked for and written in place. Owned by one thread at a time.
    """

    available = _binding is not None
    library = _binding.name if _binding is not None else ""
    method = protocol.DEFLATED
    can_copy = False
    margin = 256 * 1024

    def __init__(self, start: Checkpoint | None = None) -> None:
        super().__init__()
        binding = _binding
        if binding is None:
            raise RuntimeError("no zlib library could be loaded for IndexedInflater")
        self._z = binding
        # Held through each zlib call on the state and by close(): a close from another
        # thread waits instead of freeing the state an inflate (GIL released) is using.
        self._busy = threading.RLock()
        self._s = binding.stream()
        self._sref = ctypes.byref(self._s)
        self._open = False
        if binding.init(self._s) != _Z_OK:
            raise MemoryError("inflateInit2 failed")
        self._open = True
        self._view = _PyBuffer()
        self._pinned = False
        self._eof = False
        self._full = False  # the last call filled its output: more may be pending
        self.out_pos = start.out if start else 0
        self._base_in = start.in_pos if start else 0  # member offset of the first byte fed
        self._mark: int | None = None
        self._candidate: Checkpoint | None = None
        self._ready: Checkpoint | None = None
        if start is not None:
            if start.bits and self._z.inflatePrime(self._sref, start.bits, start.prime) != _Z_OK:
                raise CorruptArchive("deflate checkpoint cannot be resumed")
            window = start.window
            if window and self._z.inflateSetDictionary(self._sref, window,
                                                       len(window)) != _Z_OK:
                raise CorruptArchive("deflate checkpoint cannot be resumed")

    # -- the Decoder surface --------------------------------------------------------------------

    @property
    def eof(self) -> bool:
        return self._eof

    @property
    def needs_input(self) -> bool:
        return self._eof or (not self._held() and not self._full)

    @property
    def in_pos(self) -> int:
        """Member offset of the next compressed byte not yet consumed."""
        return self._base_in + self._s.total_in

    def decompress(self, data: codecs.BytesLike, max_length: int = -1) -> bytes:
        if self._eof:
            self._unpin()
            return b""  # bytes after the end of the stream are ignored, as zipfile does
        if data:
            if self._held():
                raise ValueError("input given while earlier input is still held")
            self._pin(data)
        if max_length < 0:
            parts: list[bytes] = []
            while True:
                part = self._produce(256 * 1024)
                if not part:
                    return b"".join(parts)
                parts.append(part)
        return self._produce(max_length) if max_length else b""

    def flush(self) -> bytes:
        self._unpin()
        if not self._eof:
            raise CorruptArchive("deflate data is truncated (no end of stream)")
        return b""

    def fill(self, length: int, more: Callable[[], codecs.BytesLike | None]) -> bytes:
        """``length`` bytes of output, pulling input from ``more`` (None: no more) whenever
        the input runs out: one ``bytes`` written in place, never joined from pieces. Fewer
        only where the stream or the input ends."""
        if self._eof or length <= 0:
            return b""
        return self._produce(length, more)

    # -- checkpoints ----------------------------------------------------------------------------

    def mark(self, at: int) -> None:
        """Leave a checkpoint near output offset ``at`` (see the class notes)."""
        if at > self.out_pos:
            self._mark, self._candidate = at, None

    def take_checkpoint(self) -> Checkpoint | None:
        ready, self._ready = self._ready, None
        return ready

    # -- the engine ---------------------------------------------------------------------------

    def _produce(self, length: int,
                 more: Callable[[], codecs.BytesLike | None] | None = None) -> bytes:
        with self._busy:
            return self._produce_locked(length, more)

    def _produce_locked(self, length: int,
                        more: Callable[[], codecs.BytesLike | None] | None) -> bytes:
        if not self._open:  # zlib's state is freed: calling into it would crash the process
            raise ValueError("inflater used after close()")
        out = _new_bytes(None, length)
        address = _bytes_address(out)
        s, sref, inflate = self._s, self._sref, self._z.inflate
        filled = 0
        self._full = False
        while filled < length:
            limit, mode = min(length - filled, _MOST), _Z_NO_FLUSH
            mark = self._mark
            if mark is not None:
                zone = mark - self.margin
                if self.out_pos < zone:
                    limit = min(limit, zone - self.out_pos)
                else:
                    mode = _Z_BLOCK
                    if self.out_pos < mark:
                        limit = min(limit, mark - self.out_pos)
            s.next_out = address + filled
            s.avail_out = limit
            before_in = s.avail_in
            ret = inflate(sref, mode)
            made = limit - s.avail_out
            filled += made
            self.out_pos += made
            if ret == _Z_STREAM_END:
                self._eof = True
                self._unpin()
                break
            if ret not in (_Z_OK, _Z_BUF_ERROR):
                message = s.msg.decode(errors="replace") if s.msg else f"error {ret}"
                raise CorruptArchive(f"deflate data is corrupt: {message}")
            if mode == _Z_BLOCK:
                self._at_block_return()
            if s.avail_in == 0 and not self._feed_view():
                self._unpin()
                if made < limit:
                    piece = more() if more is not None else None
                    if not piece:
                        break  # more input needed
                    self._pin(piece)
            elif not made and before_in == s.avail_in and mode != _Z_BLOCK:
                raise CorruptArchive("deflate decoder stopped making progress")
        self._full = filled == length and not self._eof
        return out if filled == length else out[:filled]

    def _at_block_return(self) -> None:
        """In the zone before the mark: note each block boundary, settle at the mark."""
        mark = self._mark
        assert mark is not None
        flags = self._s.data_type
        boundary = bool(flags & 128) and not flags & 64
        if boundary:
            point = self._here(flags & 63)
            if point is not None:
                if point.out <= mark:
                    self._candidate = point
                else:  # none in the zone: the first one after the mark
                    self._ready, self._mark = point, None
                    return
        if self.out_pos >= mark and self._candidate is not None:
            self._ready, self._candidate, self._mark = self._candidate, None, None

    def _here(self, unused: int) -> Checkpoint | None:
        """A checkpoint at the current block boundary (``unused`` bits not decoded yet)."""
        s = self._s
        bit = 8 * (self._base_in + s.total_in) - unused
        byte, consumed = divmod(bit, 8)
        prime = 0
        if consumed:
            back = self._base_in + s.total_in - byte  # how far behind next_in that byte is
            if not self._pinned or back > s.next_in - self._view.buf:
                return None  # in an earlier input piece: no checkpoint here
            prime = ctypes.string_at(s.next_in - back, 1)[0] >> consumed
        size = ctypes.c_uint32(WINDOW)
        window = ctypes.create_string_buffer(WINDOW)
        if self._z.inflateGetDictionary(self._sref, window, ctypes.byref(size)) != _Z_OK:
            return None
        bits = 8 - consumed if consumed else 0
        return Checkpoint(self.out_pos, byte + 1 if consumed else byte, bits, prime,
                          window.raw[:size.value])

    def _pin(self, data: codecs.BytesLike) -> None:
        self._unpin()
        if _get_buffer(data, ctypes.byref(self._view), 0) != 0:  # PyBUF_SIMPLE
            raise TypeError("deflate input must be a contiguous bytes-like object")
        self._pinned = True
        self._s.next_in = self._view.buf
        self._s.avail_in = 0
        self._feed_view()

    def _held(self) -> int:
        """Input pinned and not consumed yet (given to zlib or still to be given)."""
        return self._view.len - (self._s.next_in - self._view.buf) if self._pinned else 0

    def _feed_view(self) -> bool:
        """Give zlib the next part of the pinned input, at most ``_MOST``: whether any."""
        held = self._held()
        self._s.avail_in = min(held, _MOST)
        return held > 0

    def _unpin(self) -> None:
        if self._pinned:
            self._s.next_in = None
            self._s.avail_in = 0
            _release_buffer(ctypes.byref(self._view))
            self._pinned = False

    def close(self) -> None:
        """Free zlib's state (also done when the inflater is collected)."""
        with self._busy:
            self._unpin()
            if self._open:
                self._z.inflateEnd(self._sref)
                self._open = False

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class FastInflater(codecs.Decoder):
    """Raw deflate for sequential passes through zlib-ng's ``_ZlibDecompressor``: used only when
    ``IndexedInflater`` cannot load a library; its state cannot be copied, so a stream that
    starts with it leaves no snapshots. ``decompress`` is its own whole (zlib-ng bounds the
    output itself), nothing is held back by the base class.
    """

    available = hasattr(codecs.fast_zlib, "_ZlibDecompressor")
    method = protocol.DEFLATED
    can_copy = False

    def __init__(self) -> None:
        super().__init__()
        self._obj = codecs.fast_zlib._ZlibDecompressor(-zlib.MAX_WBITS)

    @property
    def eof(self) -> bool:
        return self._obj.eof

    @property
    def needs_input(self) -> bool:
        return self._obj.eof or self._obj.needs_input

    def decompress(self, data: codecs.BytesLike, max_length: int = -1) -> bytes:
        if self._obj.eof:
            return b""  # bytes after the end of the stream are ignored, as zipfile does
        try:
            return self._obj.decompress(data, max_length)
        except codecs.fast_zlib.error as exc:
            raise CorruptArchive(f"deflate data is corrupt: {exc}") from None

    def flush(self) -> bytes:
        if not self._obj.eof:
            raise CorruptArchive("deflate data is truncated (no end of stream)")
        return b""
