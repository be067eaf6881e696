"""HMAC-signed object URLs: opaque, expiring, bound to one operation and one path.

A URL looks like ``{base}/-/{percent-encoded storage path}?op=download&expires=T&sig=HEX``.
The storage path sits verbatim in the URL path because the official client derives local file
names from it (docs/protocol.md §3.5); the one-character ``-`` segment before it is unlikely to
contain a user's path, since the client looks for the first occurrence of the requested path.
A ``download`` URL serves GET and HEAD, an ``upload`` URL serves PUT; changing the path, the
operation or the expiry breaks the signature.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Callable
from urllib.parse import quote

from ..errors import PermissionDenied
from ..protocol import OPERATION_DOWNLOAD, OPERATION_UPLOAD

OBJECT_PREFIX = "/-/"
METHODS = {OPERATION_DOWNLOAD: ("GET", "HEAD"), OPERATION_UPLOAD: ("PUT",)}


class Signer:
    def __init__(self, key: bytes | None, ttl_s: int, clock: Callable[[], float] = time.time):
        self._key = key or secrets.token_bytes(32)
        self.ttl_s = ttl_s
        self._clock = clock

    def _signature(self, operation: str, path: str, expires: int) -> str:
        message = f"{operation}\n{expires}\n{path}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def url(self, base_url: str, path: str, operation: str) -> str:
        expires = int(self._clock()) + self.ttl_s
        sig = self._signature(operation, path, expires)
        return (f"{base_url.rstrip('/')}{OBJECT_PREFIX}{quote(path, safe='/')}"
                f"?op={operation}&expires={expires}&sig={sig}")

    def verify(self, method: str, path: str, operation: str, expires: str, sig: str) -> None:
        """Raises PermissionDenied unless the URL was signed for this method, path and time."""
        if operation not in METHODS:
            raise PermissionDenied("signed URL names no valid operation")
        try:
            expires_at = int(expires)
        except ValueError:
            raise PermissionDenied("signed URL has a malformed expiry") from None
        # compare_digest refuses str with non-ASCII characters (TypeError): compare bytes
        if not hmac.compare_digest(self._signature(operation, path, expires_at).encode(),
                                   sig.encode("utf-8", "surrogateescape")):
            raise PermissionDenied("signed URL signature does not match")
        if method not in METHODS[operation]:
            raise PermissionDenied(f"signed URL for {operation} does not allow {method}")
        if expires_at < self._clock():
            raise PermissionDenied("signed URL has expired; ask for a new one")
