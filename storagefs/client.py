"""The storage API over HTTP: one ``requests.Session``, timeouts, retries, typed errors.

``StorageClient`` speaks the endpoints of docs/protocol.md §3 and nothing more: it builds query
strings the way the official client does (values percent-encoded with ``/`` kept, booleans as
``true``/``false``, ``None`` left out), turns JSON answers into ``protocol`` objects and every
failure into a ``StorageError`` whose text is one line. No ``requests`` exception escapes this
module.

Retries are urllib3's ``Retry`` on the session's adapters, only for what may recover within
seconds: 429/5xx answers for idempotent methods (POSTs on 429 and 503 only, the two statuses that
say the work was not started), a connection dropped before the answer, a connect that timed out
(once each). A refused connection, a name that does not resolve or a network that cannot be
reached fails at once: asking again within seconds gets the same answer, and a user waiting on
``storagefs ls`` wants it now. urllib3's "Retrying" warnings go to this module's debug log: the
outcome is what the user needs, the retries only with ``--debug``.
Signed-URL transfers share the session (and its pools) but never carry the API key.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from typing import Any, BinaryIO, Callable, Iterator
from urllib.parse import quote, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from . import __version__, protocol
from .config import API_KEY_ENV, ClientConfig
from .gcpause import gc_paused
from .errors import (AuthenticationError, InvalidRequest, PermissionDenied,
                     RangeNotSatisfiable, ServerError, StorageError, Timeout, TransferError,
                     error_for_status)

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER_MAX = 30.0  # seconds; as backoff_max
# Statuses that promise the request was not acted on, so even a POST may be sent again.
_SAFE_FOR_POST = frozenset({429, 503})
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_CHUNK = 256 * 1024
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
# Google Cloud Storage answers an expired V4 signed URL with 400 and this code in an XML body.
_EXPIRED_TOKEN = "<Code>ExpiredToken</Code>"
# API URLs whose /version-check was asked in this process (the SDK asks once, on import).
# A lock per URL, held while its check runs: concurrent first calls wait for its answer.
_VERSION_CHECKED: set[str] = set()
_VERSION_LOCKS: dict[str, threading.Lock] = {}
_VERSION_LOCK = threading.Lock()
KEY_HINT = f"check {API_KEY_ENV}, the api_key setting or --api-key"


class _Retry(Retry):
    """``Retry`` that also resends POSTs answered 429/503 (the server did not start them) and
    gives up at once on a connection that could not be made (refused, unknown host, no route)."""

    def increment(self, method: str | None = None, url: str | None = None,
                  response: Any = None, error: Exception | None = None, _pool: Any = None,
                  _stacktrace: Any = None) -> "_Retry":
        # NewConnectionError: refused, name not resolved, no route (a connect that timed out
        # is a ConnectTimeoutError only, and is retried like a dropped connection).
        if isinstance(error, urllib3.exceptions.NewConnectionError):
            raise urllib3.exceptions.MaxRetryError(_pool, url, error) from error
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def parse_retry_after(self, retry_after: str) -> float:
        """A server's ``Retry-After``, but at most ``RETRY_AFTER_MAX`` seconds: a FUSE read or
        a listing must not wait hours on one header (urllib3 would honour up to six)."""
        return min(super().parse_retry_after(retry_after), RETRY_AFTER_MAX)

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if method.upper() == "POST" and status_code in _SAFE_FOR_POST:
            return bool(self.total)
        return super().is_retry(method, status_code, has_retry_after)


class _Session(requests.Session):
    """A session that drops the API key, like ``Authorization``, on a redirect to another host."""

    def rebuild_auth(self, prepared_request: requests.PreparedRequest,
                     response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)
        if self.should_strip_auth(response.request.url, prepared_request.url):
            prepared_request.headers.pop(protocol.API_KEY_HEADER, None)


class _RetryToDebug(logging.Filter):
    """urllib3's "Retrying (...) after connection broken by ..." warnings, which would put a
    line per retry before the one-line outcome, go to this module's debug log instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and str(record.msg).startswith("Retrying"):
            log.debug("%s", record.getMessage())
            return False
        return True


_RETRY_TO_DEBUG = _RetryToDebug()


def make_session(config: ClientConfig) -> requests.Session:
    """A session with pooled connections and urllib3 retries with exponential backoff."""
    urllib3_log = logging.getLogger("urllib3.connectionpool")
    if _RETRY_TO_DEBUG not in urllib3_log.filters:
        urllib3_log.addFilter(_RETRY_TO_DEBUG)
    retry = _Retry(
        total=config.retries,
        # A connect that timed out or a read error (a timeout, already a long wait, or a
        # connection dropped before the answer): once more is worth it, more only multiplies
        # the wait on a stalled server. A connection refused is not retried (``_Retry``).
        connect=min(config.retries, 1),
        read=min(config.retries, 1),
        status=config.retries,
        other=0,
        backoff_factor=config.backoff_factor,
        backoff_max=30,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=_IDEMPOTENT,
        respect_retry_after_header=True,
        raise_on_status=False,  # the last answer comes back and is mapped to a typed error
        raise_on_redirect=False,
    )
    session = _Session()
    adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=config.pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({
        "User-Agent": f"storagefs/{__version__}",
        "Accept-Encoding": "identity",  # byte ranges must mean bytes of the object
    })
    return session


def encode_query(params: list[tuple[str, Any]]) -> str:
    """``key=value&...`` in the given order, as the official client encodes it (§1.4)."""
    parts = []
    for key, value in params:
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if isinstance(item, bool):
                item = "true" if item else "false"
            parts.append(f"{key}={quote(str(item), safe='/')}")
    return "&".join(parts)


def _detail(response: requests.Response) -> str:
    """The server's explanation in one line: FastAPI ``detail``, or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        text = (response.text or "").strip()
        if text.startswith("<"):  # an XML or HTML error page: keep its message if any
            found = re.search(r"<Message>(.*?)</Message>", text, re.S)
            text = found.group(1) if found else ""
        return " ".join(text.split())[:300] or (response.reason or f"HTTP {response.status_code}")
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI validation errors
        items = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(x) for x in item.get("loc", ()) if x not in ("query", "body"))
                items.append(f"{where}: {item.get('msg', '')}" if where else str(item.get("msg")))
            else:
                items.append(str(item))
        detail = "; ".join(items)
    return " ".join(str(detail).split())[:300]


def _describe(url: str) -> str:
    """A URL without its query string: signatures stay out of error messages and logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what it wraps (``args[0]``, ``reason``), and so on down."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        inner = getattr(current, "reason", None)
        if not isinstance(inner, BaseException):
            args = current.args
            inner = args[0] if args and isinstance(args[0], BaseException) else None
        current = inner


def _identity(response: requests.Response) -> tuple[str | None, str | None]:
    """What tells one version of an object from another: its ETag and its total size."""
    found = _content_range(response)
    total = found.group(3) if found else response.headers.get("Content-Length")
    return response.headers.get("ETag"), total


def _content_range(response: requests.Response) -> re.Match | None:
    return _CONTENT_RANGE.match(response.headers.get("Content-Range", "").strip())


def _wrap_transport(exc: requests.RequestException, what: str) -> StorageError:
    causes = list(_causes(exc))
    # urllib3's NewConnectionError subclasses ConnectTimeoutError: a refusal is no timeout.
    refused = any(isinstance(e, urllib3.exceptions.NewConnectionError) for e in causes)
    if not refused and any(isinstance(e, (requests.Timeout, urllib3.exceptions.TimeoutError,
                                          TimeoutError)) for e in causes):
        return Timeout(f"{what}: timed out")
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema)):
        return InvalidRequest(f"{what}: invalid URL ({exc})")
    if isinstance(exc, requests.exceptions.RetryError):
        return ServerError(f"{what}: gave up after retries")
    unresolved = next((e for e in causes
                       if isinstance(e, urllib3.exceptions.NameResolutionError)), None)
    if unresolved is not None:
        return TransferError(f"{what}: unknown host {unresolved.conn.host!r}",
                             hint="check the URL's host name and the network")
    deepest = causes[-1]  # MaxRetryError -> NewConnectionError, ProtocolError -> ...
    reason = deepest.args[0] if deepest.args and isinstance(deepest.args[0], str) else deepest
    text = " ".join(str(reason).split())
    text = re.sub(r"^(<[^>]*>|\w+\(host=[^)]*\)):\s*", "", text)  # drop the connection's repr
    if isinstance(exc, requests.ConnectionError) and "refused" in text.lower():
        return TransferError(f"{what}: connection refused",
                             hint="check that the server is running and the URL's port")
    return TransferError(f"{what}: {text[:200]}")


class StorageClient:
    """The Inductiva storage API (docs/protocol.md §3) for one user, over one pooled session."""

    def __init__(self, config: ClientConfig | None = None,
                 session: requests.Session | None = None) -> None:
        self.config = config or ClientConfig.from_env()
        self.session = session or make_session(self.config)
        self._owns_session = session is None
        self.timeout = (self.config.connect_timeout_s, self.config.read_timeout_s)

    # -- plumbing --------------------------------------------------------------------------

    def close(self) -> None:
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> "StorageClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StorageClient({self.config.api_url!r})"

    def _region(self, region: str | None) -> str | None:
        return region if region is not None else self.config.region

    def _api(self, method: str, endpoint: str, params: list[tuple[str, Any]] | None = None,
             json_body: Any = None, accept: tuple[int, ...] | None = None) -> Any:
        """One API call: the key header, a timeout, retries, JSON back or a typed error."""
        if not self.config.api_key:
            raise AuthenticationError("no API key given", hint=f"set {API_KEY_ENV} or api_key")
        what = f"{method} {endpoint}"
        self._check_version_once(what)
        query = encode_query(params or [])
        url = self.config.api_url + endpoint + (f"?{query}" if query else "")
        headers = {protocol.API_KEY_HEADER: self.config.api_key, "Accept": "application/json"}
        try:
            response = self.session.request(method, url, headers=headers, json=json_body,
                                            timeout=self.timeout)
        except requests.RequestException as exc:
            raise _wrap_transport(exc, f"{what} ({self.config.api_url})") from None
        ok = response.status_code in accept if accept else 200 <= response.status_code < 300
        if not ok:
            if response.status_code == 401 and self.config.api_key_source:
                raise AuthenticationError(
                    f"the API key from {self.config.api_key_source} was refused "
                    f"({what}: HTTP 401)", hint="check the key there")
            raise self._api_error(response, what)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "no content type")
            raise ServerError(f"{what}: the answer is not JSON ({kind})") from None

    def _check_version_once(self, what: str) -> None:
        """``GET /version-check`` once per API URL and process, as the official client does.

        A 406 means the service no longer speaks this protocol: an error, since every answer
        after it could be misread. Any other answer is only a warning. A server that cannot be
        reached fails ``what``, the call the user made, at once (asking again would only
        double the wait)."""
        api_url = self.config.api_url
        if api_url in _VERSION_CHECKED:
            return
        with _VERSION_LOCK:
            lock = _VERSION_LOCKS.setdefault(api_url, threading.Lock())
        with lock:
            if api_url in _VERSION_CHECKED:  # answered while this call waited
                return
            self._ask_version(what)
            _VERSION_CHECKED.add(api_url)

    def _ask_version(self, what: str) -> None:
        url = (f"{self.config.api_url}{protocol.VERSION_CHECK}?"
               f"{encode_query([('client_version', protocol.SDK_VERSION)])}")
        try:
            response = self.session.get(url, timeout=self.timeout)
        except requests.RequestException as exc:
            raise _wrap_transport(exc, f"{what} ({self.config.api_url})") from None
        if response.status_code == 406:
            raise InvalidRequest(
                f"the storage service at {self.config.api_url} no longer supports this client "
                f"(it speaks the protocol of inductiva {protocol.SDK_VERSION})",
                hint="upgrade storagefs")
        if not 200 <= response.status_code < 300:
            log.warning("version check: %s", self._api_error(response, "GET /version-check"))

    @staticmethod
    def _api_error(response: requests.Response, what: str) -> StorageError:
        status, detail = response.status_code, _detail(response)
        message = f"{detail} ({what}: HTTP {status})"
        hint = None if API_KEY_ENV in detail else KEY_HINT
        if status == 401:
            return AuthenticationError(message, hint=hint)
        if status == 403:
            return PermissionDenied(message, hint=hint)
        if 300 <= status < 400:
            return ServerError(f"unexpected redirect to {response.headers.get('Location')} "
                               f"({what}: HTTP {status}); check the API URL")
        return error_for_status(status, message)

    def _object_error(self, response: requests.Response, method: str, url: str) -> StorageError:
        what = f"{method} {_describe(url)}"
        status, detail = response.status_code, _detail(response)
        message = f"{detail} ({what}: HTTP {status})"
        if status in (401, 403) or (status == 400 and _EXPIRED_TOKEN in response.text):
            return PermissionDenied(message, hint="the signed URL expired or was refused; "
                                    "ask for a new one")
        return error_for_status(status, message)

    @staticmethod
    def _parse(kind: Callable[[Any], Any], data: Any, what: str) -> Any:
        try:
            return kind(data)
        except InvalidRequest as exc:
            raise ServerError(f"{what}: malformed answer: {exc}") from None

    # -- listings --------------------------------------------------------------------------

    def contents(self, path: str = "/", *, sort_by: str = "creation_time", order: str = "desc",
                 recursive: bool = False, page: int = 1, per_page: int = protocol.MAX_PER_PAGE,
                 region: str | None = None) -> protocol.StorageContents:
        """One page of ``GET /storage/contents`` (``recursive`` = sizes of sub-folders)."""
        if sort_by not in protocol.SORT_KEYS:
            raise InvalidRequest(f"sort_by must be one of {', '.join(protocol.SORT_KEYS)}")
        if order not in protocol.ORDERS:
            raise InvalidRequest("order must be 'asc' or 'desc'")
        if not 1 <= per_page <= protocol.MAX_PER_PAGE or page < 1:
            raise InvalidRequest(f"page must be >= 1 and per_page in 1..{protocol.MAX_PER_PAGE}")
        data = self._api("GET", protocol.CONTENTS, [
            ("sort_by", sort_by), ("order", order), ("recursive", bool(recursive)),
            ("page", page), ("per_page", per_page), ("path", path),
            ("region", self._region(region))])
        return self._parse(protocol.StorageContents.from_json, data, "GET /storage/contents")

    def iter_contents(self, path: str = "/", *, sort_by: str = "creation_time",
                      order: str = "desc", recursive: bool = False,
                      per_page: int = protocol.MAX_PER_PAGE, limit: int | None = None,
                      region: str | None = None) -> Iterator[protocol.StorageFile]:
        """Every entry of a listing, page after page, up to ``limit`` entries."""
        page, remaining = 1, limit
        while remaining is None or remaining > 0:
            size = per_page if remaining is None else min(per_page, remaining)
            result = self.contents(path, sort_by=sort_by, order=order, recursive=recursive,
                                   page=page, per_page=size, region=region)
            yield from result.contents
            if remaining is not None:
                remaining -= len(result.contents)
            if len(result.contents) < size:
                return
            page += 1

    def zip_contents(self, path: str, zip_relative_path: str = "", recursive: bool = False,
                     region: str | None = None) -> protocol.ZipListing:
        data = self._api("GET", protocol.ZIP_CONTENTS, [
            ("zip_relative_path", zip_relative_path), ("recursive", bool(recursive)),
            ("path", path), ("region", self._region(region))])
        with gc_paused():  # 1e4 entries or more: see storagefs.gcpause
            return self._parse(protocol.ZipListing.from_json, data, "GET /storage/zip-contents")

    def zip_file_range(self, path: str, filename: str, zip_relative_path: str = "",
                       region: str | None = None) -> protocol.ZipRange:
        data = self._api("GET", protocol.ZIP_FILE_RANGE, [
            ("filename", filename), ("zip_relative_path", zip_relative_path), ("path", path),
            ("region", self._region(region))])
        rng = self._parse(protocol.ZipRange.from_json, data, "GET /storage/zip-file-range")
        if rng.range_start < 0 or rng.range_end < rng.range_start - 1:
            raise ServerError(f"zip-file-range: invalid range {rng.range_start}-{rng.range_end}")
        return rng

    def signed_urls(self, paths: list[str], operation: str,
                    region: str | None = None) -> list[str]:
        """Presigned URLs: one per path for uploads, one per file under each path for downloads."""
        if operation not in (protocol.OPERATION_UPLOAD, protocol.OPERATION_DOWNLOAD):
            raise InvalidRequest("operation must be 'upload' or 'download'")
        if isinstance(paths, str):
            paths = [paths]
        if not paths:
            return []
        data = self._api("GET", protocol.SIGNED_URLS, [
            ("operation", operation), ("paths", list(paths)), ("region", self._region(region))],
            accept=(200,))
        if not isinstance(data, list) or not all(u is None or isinstance(u, str) for u in data):
            raise ServerError("GET /storage/signed-urls: expected a JSON list of URLs")
        if operation == protocol.OPERATION_DOWNLOAD:
            data = [url for url in data if url]  # the service lists objects it cannot sign as null
        elif None in data:
            raise ServerError("GET /storage/signed-urls: no upload URL for some paths")
        if operation == protocol.OPERATION_UPLOAD and len(data) != len(paths):
            raise ServerError(f"GET /storage/signed-urls: {len(data)} URLs for {len(paths)} paths")
        return data

    # -- account ---------------------------------------------------------------------------

    def space_used(self) -> int:
        """Bytes stored across all regions."""
        data = self._api("GET", protocol.SIZE)
        if not isinstance(data, (int, float)) or isinstance(data, bool) or data < 0:
            raise ServerError(f"GET /storage/size: expected a number of bytes, got {data!r}")
        return int(data)

    def cost(self) -> dict:
        """``{"estimated_monthly_cost": float, "currency": "USD"}``."""
        data = self._api("GET", protocol.COST)
        value = data.get("estimated_monthly_cost") if isinstance(data, dict) else None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ServerError("GET /storage/cost: estimated_monthly_cost is not a number")
        return {"estimated_monthly_cost": float(value), "currency": data.get("currency") or "USD"}

    # -- changes ---------------------------------------------------------------------------

    def remove(self, path: str, region: str | None = None) -> Any:
        return self._api("DELETE", protocol.REMOVE,
                         [("path", path), ("region", self._region(region))])

    def copy(self, source: str, target: str, region: str | None = None) -> Any:
        return self._api("POST", protocol.COPY, [("source", source), ("target", target),
                                                 ("region", self._region(region))])

    def input_remote(self, url: str, path: str, region: str | None = None) -> Any:
        if not url:
            raise InvalidRequest("the URL to fetch is empty")
        return self._api("POST", protocol.INPUT_REMOTE, [("url", url), ("path", path),
                                                         ("region", self._region(region))])

    def export_multipart(self, path: str, parts_size: int, upload_parts: list[dict],
                         complete_multipart_url: str, region: str | None = None) -> Any:
        body = {"path": path, "parts_size": int(parts_size),
                "upload_parts": [{"part_number": int(p["part_number"]),
                                  "part_url": str(p["part_url"])} for p in upload_parts],
                "complete_multipart_url": complete_multipart_url}
        return self._api("POST", protocol.EXPORT_MULTIPART,
                         [("region", self._region(region))], json_body=body)

    def operation(self, operation_id: str) -> protocol.Operation:
        data = self._api("GET", f"{protocol.OPERATIONS}/{quote(operation_id, safe='')}")
        return self._parse(protocol.Operation.from_json, data, "GET /storage/operations")

    def operations(self, page: int = 1, per_page: int = 50) -> list[protocol.Operation]:
        data = self._api("GET", protocol.OPERATIONS, [("page", page), ("per_page", per_page)])
        if not isinstance(data, list):
            raise ServerError("GET /storage/operations: expected a JSON list")
        return [self._parse(protocol.Operation.from_json, item, "GET /storage/operations")
                for item in data]

    # -- objects behind signed URLs -----------------------------------------------------------

    def _object(self, method: str, url: str, **kwargs) -> requests.Response:
        try:
            return self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise _wrap_transport(exc, f"{method} {_describe(url)}") from None

    def object_size(self, url: str) -> int:
        """Size of the object behind a download URL.

        Asked with a ranged GET of its first byte, not a HEAD: a URL signed for GET (a GCS or S3
        V4 URL) refuses HEAD. An empty object answers 416 with ``bytes */0``; a server that
        ignores ``Range`` answers 200 with the whole length (the body is not read).
        """
        response = self._object("GET", url, headers={"Range": "bytes=0-0"}, stream=True)
        try:
            found = re.match(r"^bytes (?:\d+-\d+|\*)/(\d+)$",
                             response.headers.get("Content-Range", "").strip())
            if response.status_code in (200, 206, 416) and found:
                return int(found.group(1))
            if response.status_code == 416:  # some stores send no Content-Range: nothing there
                return 0
            length = response.headers.get("Content-Length")
            if response.status_code == 200 and length is not None and length.isdigit():
                return int(length)
            if response.status_code >= 400:
                raise self._object_error(response, "GET", url)
            raise ServerError(f"GET {_describe(url)}: no size in the answer to a ranged GET")
        finally:
            response.close()

    def read_range(self, url: str, start: int, end_inclusive: int) -> bytes:
        """Bytes ``start..end_inclusive`` of an object (206, Content-Range and length checked).

        Shorter only when the object ends before ``end_inclusive`` (the server clamps the
        range, as HTTP allows); a start at or past the end raises RangeNotSatisfiable.
        """
        if end_inclusive < start:
            return b""
        with self.stream(url, start, end_inclusive) as chunks:
            return b"".join(chunks)

    @contextlib.contextmanager
    def stream(self, url: str, start: int = 0, end_inclusive: int | None = None,
               chunk_size: int = _CHUNK) -> Iterator[Iterator[bytes]]:
        """The object's bytes from ``start`` (to ``end_inclusive``) as an iterator of chunks.

        A ranged request must come back with a matching Content-Range (206, or 200 as some
        stores answer); a server may clamp an end beyond the object to its last byte. A server
        that ignores ``Range`` (200, the whole object) is read through: the bytes before
        ``start`` are skipped as they arrive and the body is closed after ``end_inclusive``.
        A body that breaks off (reset, stall past the read timeout, cut short) is resumed where
        it stopped with a ranged request, up to ``retries`` times (a stall only once at one
        place), as long as the object's ETag and size stay the same; after that the iterator
        raises the TransferError (or Timeout).
        """
        current: list[requests.Response] = []
        try:
            response, expected, skip = self._open(url, start, end_inclusive)
            current.append(response)
            yield self._resuming(current, url, start, end_inclusive, expected, skip, chunk_size)
        finally:
            for response in current:
                response.close()

    def _open(self, url: str, start: int,
              end_inclusive: int | None) -> tuple[requests.Response, int | None, int]:
        """A GET of the object from ``start``, checked: the answer, the bytes it promises from
        ``start`` on, and how many bytes of its body come before ``start``."""
        ranged = start > 0 or end_inclusive is not None
        headers = {}
        if ranged:
            headers["Range"] = f"bytes={start}-{'' if end_inclusive is None else end_inclusive}"
        response = self._object("GET", url, headers=headers, stream=True)
        try:
            if response.status_code == 416:
                raise RangeNotSatisfiable(f"range {headers['Range'][6:]} is outside the object "
                                          f"({_describe(url)})")
            if response.status_code not in ((206, 200) if ranged else (200,)):
                raise self._object_error(response, "GET", url)
            if ranged and response.status_code == 200 and not _content_range(response):
                return response, self._whole_body_length(response, start, end_inclusive), start
            expected = self._expected_length(response, url, start, end_inclusive, ranged)
            return response, expected, 0
        except BaseException:
            response.close()
            raise

    def _resuming(self, current: list[requests.Response], url: str, start: int,
                  end_inclusive: int | None, expected: int | None, skip: int,
                  chunk_size: int) -> Iterator[bytes]:
        """Chunks of ``current[0]``; a broken body is asked for again from where it stopped.

        ``skip`` bytes of a body that starts before ``start`` are dropped; a body longer than
        ``expected`` (a server that ignored ``Range``) is cut there."""
        identity = _identity(current[0])
        received, resumes, stalled_at = 0, 0, -1
        while True:
            error: StorageError
            try:
                for chunk in current[0].iter_content(chunk_size):
                    if skip:
                        dropped = min(skip, len(chunk))
                        skip -= dropped
                        chunk = chunk[dropped:]
                    if expected is not None and received + len(chunk) >= expected:
                        chunk = chunk[:expected - received]
                        received += len(chunk)
                        if chunk:
                            yield chunk
                        return
                    if chunk:
                        received += len(chunk)
                        yield chunk
                if expected is None or received >= expected:
                    return
                error = TransferError(f"GET {_describe(url)}: body ended after {received} of "
                                      f"{expected} bytes")
            except requests.RequestException as exc:
                error = _wrap_transport(exc, f"GET {_describe(url)}")
            if expected is None or resumes >= self.config.retries:
                raise error
            if isinstance(error, Timeout):
                if received == stalled_at:
                    raise error  # stalled twice at one place: waiting more will not help
                stalled_at = received
            resumes += 1
            time.sleep(min(self.config.backoff_factor * (2 ** (resumes - 1)), 5.0))
            log.info("%s; resuming at byte %d", error, start + received)
            current[0].close()
            response, expected_now, skip = self._open(url, start + received, end_inclusive)
            current[0] = response
            if expected is not None and expected_now is not None:
                expected = received + expected_now
            if _identity(response) != identity:
                raise TransferError(f"GET {_describe(url)}: the object changed while it was "
                                    "read")

    @staticmethod
    def _whole_body_length(response: requests.Response, start: int,
                           end_inclusive: int | None) -> int | None:
        """Bytes from ``start`` that a whole-object answer holds, up to ``end_inclusive``."""
        length = response.headers.get("Content-Length")
        if not (length and length.isdigit()):
            return None if end_inclusive is None else end_inclusive - start + 1
        available = max(0, int(length) - start)
        return available if end_inclusive is None else min(available, end_inclusive - start + 1)

    @staticmethod
    def _expected_length(response: requests.Response, url: str, start: int,
                         end_inclusive: int | None, ranged: bool) -> int | None:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        if not ranged:
            return expected
        found = _content_range(response)
        if not found:
            raise TransferError(f"GET {_describe(url)}: {response.status_code} without a valid "
                                "Content-Range")
        got_start, got_end = int(found.group(1)), int(found.group(2))
        if got_start != start or (end_inclusive is not None and got_end > end_inclusive):
            raise TransferError(f"GET {_describe(url)}: asked for bytes {start}-"
                                f"{'' if end_inclusive is None else end_inclusive}, "
                                f"got {got_start}-{got_end}")
        if expected is not None and expected != got_end - got_start + 1:
            raise TransferError(f"GET {_describe(url)}: Content-Length does not match the range")
        return got_end - got_start + 1

    def put_file(self, url: str, fileobj: BinaryIO, size: int | None = None) -> None:
        """Stream a file object to an upload URL (Content-Length from ``size`` or the file)."""
        headers = {"Content-Type": "application/octet-stream"}
        body: Any = fileobj
        if size == 0:
            body = b""  # requests would announce an empty stream as chunked
        elif size is not None:
            headers["Content-Length"] = str(size)
        response = self._object("PUT", url, data=body, headers=headers)
        try:
            if not 200 <= response.status_code < 300:
                raise self._object_error(response, "PUT", url)
        finally:
            response.close()

    def version(self) -> dict:
        """``GET /version`` (no key needed): the server's version."""
        try:
            response = self.session.get(self.config.api_url + "/version", timeout=self.timeout)
        except requests.RequestException as exc:
            raise _wrap_transport(exc, f"GET /version ({self.config.api_url})") from None
        if response.status_code != 200:
            raise self._api_error(response, "GET /version")
        try:
            return response.json()
        except ValueError:
            raise ServerError("GET /version: the answer is not JSON") from None


__all__ = ["StorageClient", "make_session", "encode_query", "RETRY_STATUSES"]
