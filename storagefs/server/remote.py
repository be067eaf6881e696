"""Outbound HTTP the server makes for a user: upload from a URL, multipart export to S3.

Both would let a caller make the server reach addresses the caller cannot (SSRF), so every URL,
and every redirect hop, must be http(s) to a public address unless the server was started with
``--allow-private-urls``. (A host name that resolves differently between the check and the
connection could still slip through; binding the connection to the checked address would close
that gap.)
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Callable
from urllib.parse import urljoin, urlsplit
from xml.sax.saxutils import escape

import requests

from ..errors import InvalidRequest, PermissionDenied, TransferError
from .store import Store

CHUNK = 1024 * 1024
MAX_REDIRECTS = 5


def check_outbound_url(url: str, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        scheme = parts.scheme or "none"
        raise InvalidRequest(f"only http and https URLs are allowed, not {scheme!r}")
    if not parts.hostname:
        raise InvalidRequest(f"URL has no host: {url}")
    if allow_private:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise InvalidRequest(f"cannot resolve host {parts.hostname!r}") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if not address.is_global:
            raise PermissionDenied(
                f"refusing to fetch from non-public address {address} ({parts.hostname}); "
                "start the server with --allow-private-urls to allow it")


def fetch_into(store: Store, path: str, url: str, *, allow_private: bool,
               timeout_s: float, report: Callable[[dict], None]) -> dict:
    """GET ``url`` (following checked redirects) and store the body atomically at ``path``."""
    with requests.Session() as session:
        for _ in range(MAX_REDIRECTS + 1):
            check_outbound_url(url, allow_private)
            try:
                response = session.get(url, stream=True, allow_redirects=False, timeout=timeout_s)
            except requests.RequestException as exc:
                raise TransferError(f"fetching {url} failed: {exc}") from None
            if response.is_redirect:
                url = urljoin(url, response.headers["Location"])
                response.close()
                continue
            break
        else:
            raise TransferError(f"too many redirects fetching {url}")
        with response:
            if response.status_code != 200:
                raise TransferError(f"fetching {url} answered HTTP {response.status_code}")
            received = 0

            def chunks():
                nonlocal received
                try:
                    for chunk in response.iter_content(CHUNK):
                        received += len(chunk)
                        report({"bytes": received})
                        yield chunk
                except requests.RequestException as exc:
                    raise TransferError(f"fetching {url} broke off: {exc}") from None

            written = store.write(path, chunks())
    return {"bytes": written, "path": path}


def export_multipart(store: Store, path: str, parts_size: int, parts: list[tuple[int, str]],
                     complete_url: str, *, allow_private: bool, timeout_s: float,
                     report: Callable[[dict], None]) -> dict:
    """PUT each part to its presigned URL, then POST the completion (docs/protocol.md §5)."""
    for url in {url for _, url in parts} | {complete_url}:
        check_outbound_url(url, allow_private)
    entry, handle = store.open_read(path)
    size = entry.size or 0
    etags: list[tuple[int, str]] = []
    with handle, requests.Session() as session:
        for number, url in sorted(parts):
            start = (number - 1) * parts_size
            if start >= size and not (number == 1 and size == 0):
                raise InvalidRequest(f"part {number} starts past the end of {path} ({size} bytes)")
            handle.seek(start)
            body = handle.read(min(parts_size, size - start))
            response = _send(session, "PUT", url, body, timeout_s)
            etag = response.headers.get("ETag")
            if not etag:
                raise TransferError(f"part {number} upload returned no ETag")
            etags.append((number, etag))
            report({"parts_done": len(etags), "bytes_sent": start + len(body)})
        xml = "<CompleteMultipartUpload>" + "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{escape(tag)}</ETag></Part>"
            for n, tag in etags) + "</CompleteMultipartUpload>"
        response = _send(session, "POST", complete_url, xml.encode(), timeout_s)
        if b"<Error>" in response.content:  # S3 may report failure inside a 200
            raise TransferError(f"completing the export failed: {response.text[:300]}")
    return {"parts": len(etags), "bytes": size}


def _send(session: requests.Session, method: str, url: str, body: bytes,
          timeout_s: float) -> requests.Response:
    try:
        response = session.request(method, url, data=body, timeout=timeout_s)
    except requests.RequestException as exc:
        raise TransferError(f"{method} {urlsplit(url).netloc} failed: {exc}") from None
    if response.status_code != 200:
        raise TransferError(f"{method} {urlsplit(url).netloc} answered HTTP "
                            f"{response.status_code}: {response.text[:200]}")
    return response
