"""Prometheus counters of what the server answered, so a user or a benchmark sees exactly what a
client fetched: requests and body bytes per endpoint, and object reads (signed URLs) apart.

Counting happens in a pure ASGI middleware on the bytes actually sent, so ranged reads, HEADs
and streamed bodies are all counted as they went out. Each app has its own registry, so several
servers can live in one process (tests).

With several worker processes (``serve --workers``), ``PROMETHEUS_MULTIPROC_DIR`` is set before
this module is first imported: prometheus_client then keeps each process's values in a file
there, and ``/metrics`` sums the files, so any worker answers for all of them.
"""

from __future__ import annotations

import os

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter,
                               disable_created_metrics, generate_latest)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .signing import OBJECT_PREFIX

disable_created_metrics()  # '*_created' timestamps double the output and tell a reader nothing

_KNOWN_PREFIXES = ("/storage/operations/",)
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def endpoint_label(path: str, known: frozenset[str]) -> str:
    """A bounded label: the route for API calls, 'object' for signed URLs, 'other' otherwise."""
    if path.startswith(OBJECT_PREFIX):
        return "object"
    if path in known:
        return path
    for prefix in _KNOWN_PREFIXES:
        if path.startswith(prefix):
            return prefix + "{id}"
    return "other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("storagefs_requests", "HTTP requests answered",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.bytes = Counter("storagefs_response_bytes", "Response body bytes sent",
                             ["endpoint", "method"], registry=self.registry)
        self.object_reads = Counter("storagefs_object_reads",
                                    "GET requests on signed download URLs, by kind",
                                    ["kind"], registry=self.registry)
        self.object_read_bytes = Counter("storagefs_object_read_bytes",
                                         "Body bytes sent for signed download URLs",
                                         registry=self.registry)
        self.object_write_bytes = Counter("storagefs_object_write_bytes",
                                          "Bytes stored through signed upload URLs",
                                          registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        shared = os.environ.get(MULTIPROCESS_ENV)
        if shared:
            every_process = CollectorRegistry()
            MultiProcessCollector(every_process, path=shared)
            return generate_latest(every_process), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, known_paths: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.known = known_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        label = endpoint_label(scope["path"], self.known)
        method = scope["method"]
        is_range = any(k == b"range" for k, _ in scope.get("headers", ()))
        status, sent = "500", 0

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = str(message["status"])
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.requests.labels(label, method, status).inc()
            self.metrics.bytes.labels(label, method).inc(sent)
            if label == "object" and method == "GET":
                self.metrics.object_reads.labels("range" if is_range else "whole").inc()
                self.metrics.object_read_bytes.inc(sent)
