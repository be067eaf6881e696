"""One exception tree for the whole project.

Every error is a ``StorageError``, which is an ``OSError`` carrying a real errno, so the FUSE
boundary turns any of them into the right errno in one place and ``except FileNotFoundError``
still catches ``NotFound``. The HTTP status of each class is what the server answers with and what
the client maps back from.
"""

from __future__ import annotations

import errno as _errno

# The exit status of every command: success, an error (one line on stderr), a usage error.
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class StorageError(OSError):
    """Root of all storagefs errors; ``str()`` is one line that says what went wrong."""

    errno_code: int = _errno.EIO
    http_status: int = 500

    def __init__(self, message: str = "", *, hint: str | None = None) -> None:
        super().__init__(self.errno_code, message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def __reduce__(self):  # keep the message when pickled across processes
        return (type(self), (self.message,), {"hint": self.hint})


class InvalidRequest(StorageError, ValueError):
    """A parameter or path the other side cannot accept."""

    errno_code = _errno.EINVAL
    http_status = 400


class AuthenticationError(StorageError, PermissionError):
    """The API key is missing or wrong."""

    errno_code = _errno.EACCES
    http_status = 401


class PermissionDenied(StorageError, PermissionError):
    """Authenticated, but not allowed (for example an expired or altered signed URL)."""

    errno_code = _errno.EACCES
    http_status = 403


class NotFound(StorageError, FileNotFoundError):
    errno_code = _errno.ENOENT
    http_status = 404


class Conflict(StorageError):
    """The path exists with another type (a file where a folder is needed, or the reverse)."""

    errno_code = _errno.EEXIST
    http_status = 409


class TooLarge(StorageError):
    """A bounded resource (entries in an archive, a central directory) exceeded its limit."""

    errno_code = _errno.EFBIG
    http_status = 413


class RangeNotSatisfiable(StorageError):
    errno_code = _errno.EINVAL
    http_status = 416


class CorruptArchive(StorageError):
    """An archive's structure is damaged or hostile, or a member fails its CRC-32."""

    errno_code = _errno.EIO
    http_status = 422


class UnsupportedMethod(StorageError):
    """A ZIP compression method this build cannot decode."""

    errno_code = _errno.EOPNOTSUPP
    http_status = 422


class ServerError(StorageError):
    """The server failed (5xx) after retries."""

    errno_code = _errno.EIO
    http_status = 500


class NotADirectory(StorageError, NotADirectoryError):
    """A path inside the mount names a file where a folder is needed."""

    errno_code = _errno.ENOTDIR
    http_status = 400


class IsADirectory(StorageError, IsADirectoryError):
    """A path inside the mount names a folder where a file is needed."""

    errno_code = _errno.EISDIR
    http_status = 400


class TransferError(StorageError, ConnectionError):
    """The network failed: refused, reset, or a body cut short."""

    errno_code = _errno.EIO
    http_status = 502


class Timeout(TransferError, TimeoutError):
    errno_code = _errno.ETIMEDOUT
    http_status = 504


_BY_STATUS: dict[int, type[StorageError]] = {
    400: InvalidRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    416: RangeNotSatisfiable,
    422: InvalidRequest,
}


def error_for_status(status: int, message: str) -> StorageError:
    """The exception a client raises for an HTTP error status."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else InvalidRequest
    return cls(message)
