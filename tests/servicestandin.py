"""A stand-in for the Inductiva service: the reference server behind a proxy that behaves as the
real service does wherever the two differ.

The real service is an API in front of Google Cloud Storage. Read from the official SDK
(0.18.12), it differs from the reference server in ways a client must survive:

- ``zip-contents`` carries no ``crc32``, its ``range_start`` may be computed from the central
  directory alone (header offset + 30 + *central* name length + *central* extra length, which
  is wrong wherever the local extra field differs), and its ``size`` may be the uncompressed
  total rather than the archive's byte length;
- object URLs are GCS V4 URLs: errors come as XML, an expired URL is a ``400`` with an
  ``ExpiredToken`` body, a URL signed for GET refuses HEAD, and a ranged GET may come back as a
  ``200`` with ``Content-Range`` (or, from a server that ignores ``Range``, the whole object);
- a folder's signed URLs are expanded by raw prefix (``mydata`` also gives ``mydata2/...``);
- there is no ``/metrics``.

``ServiceStandIn(upstream_url, ...)`` listens on 127.0.0.1 and forwards to the reference server
with the ``Host`` header unchanged, so the signed URLs the server hands out point at the
stand-in too. Each quirk is a switch; the defaults are the service as we understand it.
``offset_error`` shifts every listed ``range_start`` by that many bytes (or by what it returns
for the member's name), for clients that must prove offsets before trusting them:
``WRONG_OFFSETS`` gives each member its own error between -8 and +8, never 0. ``requests``
counts what clients asked, by kind.
"""

from __future__ import annotations

import collections
import http.client
import io
import json
import re
import threading
import zipfile
import zlib
from typing import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from faultproxy import read_body

OBJECT_PREFIX = "/-/"
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
               "trailer", "upgrade", "proxy-authenticate", "proxy-authorization",
               "content-length"}
_CHUNK = 64 * 1024
_LOCAL_HEADER = 30
_UTF8_NAMES = 0x800
_ISSUE = "x-standin-issue"  # added to each URL handed out, taken off before forwarding


def WRONG_OFFSETS(name: str) -> int:
    """A listing error of -8..-1 or 1..8 bytes, fixed per member name."""
    error = zlib.crc32(name.encode()) % 16 - 8
    return error if error < 0 else error + 1


def gcs_error(code: str, message: str) -> bytes:
    """An error body as Google Cloud Storage writes it for signed URLs."""
    return (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
            f"<Message>{message}</Message></Error>").encode()


class ServiceStandIn:
    def __init__(self, upstream: str, *, central_offsets: bool = True,
                 offset_error: int | Callable[[str], int] = 0,
                 strip_crc32: bool = True, uncompressed_size: bool = True,
                 expire_after: int | None = None, range_status: int = 200,
                 ignore_range: bool = False, refuse_head: bool = True,
                 raw_prefix: bool = True) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.central_offsets = central_offsets
        self.offset_error = offset_error
        self.strip_crc32 = strip_crc32
        self.uncompressed_size = uncompressed_size
        self.expire_after = expire_after
        self.range_status = range_status
        self.ignore_range = ignore_range
        self.refuse_head = refuse_head
        self.raw_prefix = raw_prefix
        self.requests: collections.Counter = collections.Counter()
        self._uses: collections.Counter = collections.Counter()
        self._issued = 0
        self._central: dict[tuple, dict[str, int]] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name=f"standin-{self.port}")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "ServiceStandIn":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def count(self, kind: str) -> None:
        with self._lock:
            self.requests[kind] += 1

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- talking to the reference server ----------------------------------------------------------

    def forward(self, method: str, target: str, headers: dict[str, str], body: bytes = b""
                ) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
        conn = http.client.HTTPConnection(*self._upstream, timeout=60)
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            if name.lower() not in _HOP_BY_HOP:
                conn.putheader(name, value)
        if body or method in ("POST", "PUT"):
            conn.putheader("Content-Length", str(len(body)))
        conn.putheader("Connection", "close")
        conn.endheaders(body or None)
        return conn.getresponse(), conn

    def api_json(self, target: str, headers: dict[str, str]) -> tuple[int, object]:
        response, conn = self.forward("GET", target, headers)
        try:
            return response.status, json.loads(response.read() or b"null")
        finally:
            conn.close()

    def central_offsets_of(self, zip_path: str, headers: dict[str, str]) -> dict[str, int]:
        """Member name -> the offset the central directory alone suggests for its data."""
        status, urls = self.api_json(
            "/storage/signed-urls?" + urlencode({"operation": "download", "paths": zip_path}),
            headers)
        if status != 200 or not urls:
            return {}
        url = urlsplit(urls[0])
        remote = _RangedFile(self, url.path + (f"?{url.query}" if url.query else ""),
                             headers.get("Host", "127.0.0.1"))
        key = (zip_path, remote.size, remote.etag)
        with self._lock:
            known = self._central.get(key)
        if known is not None:
            return known
        offsets = {}
        with zipfile.ZipFile(remote) as archive:  # reads the end records and the directory
            for info in archive.infolist():
                raw = info.orig_filename.encode(
                    "utf-8" if info.flag_bits & _UTF8_NAMES else "cp437", "surrogateescape")
                offsets[info.filename] = (info.header_offset + _LOCAL_HEADER + len(raw)
                                          + len(info.extra))
        with self._lock:
            self._central[key] = offsets
        return offsets

    # -- what the service does differently --------------------------------------------------------

    def zip_contents(self, h: "_Handler", query: dict[str, str]) -> None:
        status, body = self.api_json(h.path, dict(h.headers.items()))
        if status != 200 or not isinstance(body, dict):
            return h.reply(status, json.dumps(body).encode())
        prefix = query.get("zip_relative_path", "").strip("/")
        prefix = f"{prefix}/" if prefix else ""
        central = (self.central_offsets_of(query.get("path", ""), dict(h.headers.items()))
                   if self.central_offsets else {})
        total = 0
        for entry in body.get("contents") or []:
            if self.strip_crc32:
                entry.pop("crc32", None)
            if entry.get("name", "").endswith("/") or entry.get("range_start") is None:
                continue
            total += int(entry.get("size") or 0)
            offset = central.get(prefix + entry["name"], entry["range_start"])
            error = self.offset_error
            entry["range_start"] = offset + (error(prefix + entry["name"]) if callable(error)
                                             else error)
        if self.uncompressed_size:
            body["size"] = total
        h.reply(200, json.dumps(body).encode())

    def signed_urls(self, h: "_Handler", query: list[tuple[str, str]]) -> None:
        headers = dict(h.headers.items())
        status, urls = self.api_json(h.path, headers)
        download = dict(query).get("operation") == "download"
        if status != 200 or not isinstance(urls, list):
            return h.reply(status, json.dumps(urls).encode())
        for name, path in query if download and self.raw_prefix else ():
            if name != "paths" or path.endswith("/"):
                continue
            parent, _, base = path.strip("/").rpartition("/")
            listing_status, listing = self.api_json(
                "/storage/contents?" + urlencode({"path": f"{parent}/" if parent else "/",
                                                  "per_page": 100}), headers)
            if listing_status != 200 or not isinstance(listing, dict):
                continue
            for item in listing.get("contents") or []:
                sibling = item["name"].rstrip("/")
                if sibling != base and sibling.startswith(base):
                    full = f"{parent}/{sibling}" if parent else sibling
                    more_status, more = self.api_json("/storage/signed-urls?" + urlencode(
                        {"operation": "download", "paths": full}), headers)
                    if more_status == 200 and isinstance(more, list):
                        urls.extend(more)
        h.reply(200, json.dumps([self._issue(url) for url in urls]).encode())

    def _issue(self, url: str) -> str:
        """Each URL handed out is a new one, as a new signature is: expiry counts its uses."""
        with self._lock:
            self._issued += 1
            number = self._issued
        return f"{url}&{_ISSUE}={number}" if "?" in url else f"{url}?{_ISSUE}={number}"

    def object_request(self, h: "_Handler") -> None:
        kind = "upload" if h.command == "PUT" else "object"
        self.count(f"{h.command} {kind}")
        if h.command == "HEAD" and self.refuse_head:
            return h.reply(403, gcs_error("SignatureDoesNotMatch", "The request signature we "
                                          "calculated does not match the signature you "
                                          "provided."), "application/xml")
        with self._lock:
            self._uses[h.path] += 1
            uses = self._uses[h.path]
        target = re.sub(rf"[?&]{_ISSUE}=\d+$", "", h.path)  # the reference server's own URL
        if self.expire_after is not None and uses > self.expire_after:
            self.count("expired")
            return h.reply(400, gcs_error("ExpiredToken", "The provided token has expired."),
                           "application/xml")
        headers = dict(h.headers.items())
        if self.ignore_range:
            headers = {k: v for k, v in headers.items() if k.lower() != "range"}
        response, conn = self.forward(h.command, target, headers, h.read_body())
        try:
            if response.status >= 400:
                code = {403: "AccessDenied", 404: "NoSuchKey"}.get(response.status, "Error")
                response.read()
                return h.reply(response.status, gcs_error(code, response.reason),
                               "application/xml")
            status = response.status
            if status == 206 and self.range_status == 200:
                status = 200
            h.relay(status, response)
        finally:
            conn.close()


class _RangedFile(io.RawIOBase):
    """An object on the reference server as a seekable file, read by ranged GETs."""

    def __init__(self, standin: ServiceStandIn, target: str, host: str) -> None:
        self._standin, self._target, self._host = standin, target, host
        self._pos = 0
        headers, _ = self._get(0, 0)
        self.size = int((headers.get("content-range") or "/0").rsplit("/", 1)[1])
        self.etag = headers.get("etag", "")

    def _get(self, start: int, end: int) -> tuple[dict[str, str], bytes]:
        response, conn = self._standin.forward(
            "GET", self._target, {"Host": self._host, "Range": f"bytes={start}-{end}"})
        try:
            return {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self._pos + size)
        if end <= self._pos:
            return b""
        data = self._get(self._pos, end - 1)[1]
        self._pos += len(data)
        return data


def _handler_for(standin: ServiceStandIn) -> type:
    class Handler(_Handler):
        proxy = standin
    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: ServiceStandIn

    def _any(self) -> None:
        self.close_connection = True
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = parse_qsl(split.query, keep_blank_values=True)
        if split.path.startswith(OBJECT_PREFIX):
            return self.proxy.object_request(self)
        self.proxy.count(f"{self.command} {path}")
        if path == "/metrics":
            return self.reply(404, b'{"detail": "Not Found"}')
        if path == "/storage/zip-contents" and self.command == "GET":
            return self.proxy.zip_contents(self, dict(query))
        if path == "/storage/signed-urls" and self.command == "GET":
            return self.proxy.signed_urls(self, query)
        response, conn = self.proxy.forward(self.command, self.path, dict(self.headers.items()),
                                            self.read_body())
        try:
            self.relay(response.status, response)
        finally:
            conn.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _any

    def read_body(self) -> bytes:
        return read_body(self)

    def reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def relay(self, status: int, response: http.client.HTTPResponse) -> None:
        length = response.getheader("Content-Length")
        self.send_response_only(status, http.client.responses.get(status, ""))
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        buffered = None
        if length is None and self.command != "HEAD":
            buffered = response.read()
            length = str(len(buffered))
        if length is not None:
            self.send_header("Content-Length", length)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        if buffered is not None:
            self.wfile.write(buffered)
            return
        try:
            while chunk := response.read(_CHUNK):
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client had what it wanted (a store that ignores Range sends it all)

    def log_message(self, *args) -> None:
        pass
