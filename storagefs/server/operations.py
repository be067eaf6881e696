"""Long-running server work (copy, upload from URL, export) as pollable operations.

Work runs on a small thread pool; its state is an immutable ``protocol.Operation`` replaced on
every change, so readers never see a half-updated record. Finished records are kept up to a
bound, oldest dropped first.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Callable

from ..errors import NotFound
from ..protocol import Operation

log = logging.getLogger(__name__)

Work = Callable[[Callable[[dict], None]], dict | None]
"""A job: called with ``report(attributes)`` for progress; returns final attributes."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Operations:
    """The operations of one server, newest last, at most ``keep`` of them."""

    def __init__(self, workers: int = 4, keep: int = 1000) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="operation")
        # In start order, the oldest dropped first. Not a cachetools.FIFOCache: that moves a
        # key to the end when its value is replaced, and every progress report replaces one.
        self._ops: OrderedDict[str, Operation] = OrderedDict()
        self._done: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._keep = keep

    def start(self, name: str, attributes: dict, work: Work) -> Operation:
        op = Operation(id=uuid.uuid4().hex, name=name, status="RUNNING",
                       attributes=dict(attributes), start_time=_now())
        with self._lock:
            self._ops[op.id] = op
            self._done[op.id] = threading.Event()
            while len(self._ops) > self._keep:
                old_id, _ = self._ops.popitem(last=False)
                self._done.pop(old_id, None)
        self._pool.submit(self._run, op.id, work)
        return op

    def _run(self, op_id: str, work: Work) -> None:
        try:
            final = work(lambda attrs: self._merge(op_id, attrs))
            self.update(op_id, "OK", None, final or {})
        except Exception as exc:  # the operation records why; the server goes on
            log.warning("operation %s failed: %s", op_id, exc)
            self.update(op_id, "FAILED", str(exc) or type(exc).__name__, {})

    def _merge(self, op_id: str, attributes: dict) -> None:
        with self._lock:
            op = self._ops.get(op_id)
            if op is not None:
                self._ops[op_id] = replace(op, attributes={**op.attributes, **attributes})

    def update(self, op_id: str, status: str, error: str | None,
               attributes: dict | None = None) -> Operation:
        with self._lock:
            op = self._ops.get(op_id)
            if op is None:
                raise NotFound(f"no such operation: {op_id}")
            ended = None if status == "RUNNING" else _now()
            op = replace(op, status=status, error_message=error, end_time=ended,
                         attributes={**op.attributes, **(attributes or {})})
            self._ops[op_id] = op
            if ended:
                self._done[op_id].set()
            return op

    def get(self, op_id: str) -> Operation:
        with self._lock:
            op = self._ops.get(op_id)
        if op is None:
            raise NotFound(f"no such operation: {op_id}")
        return op

    def wait(self, op_id: str, timeout_s: float) -> Operation:
        event = self._done.get(op_id)
        if event is not None:
            event.wait(timeout_s)
        return self.get(op_id)

    def page(self, page: int, per_page: int) -> list[Operation]:
        """Newest first."""
        with self._lock:
            ops = list(reversed(self._ops.values()))
        return ops[(page - 1) * per_page: page * per_page]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
