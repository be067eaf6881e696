"""Long-running server work (copy, upload from URL, export) as pollable operations.

Work runs on a small thread pool; its state is an immutable ``protocol.Operation`` replaced on
every change, so readers never see a half-updated record. Finished records are kept up to a
bound, oldest dropped first.

With several server processes (``serve --workers``) a poll may reach a process other than the
one running the work, so each record is also written, atomically, as JSON in a folder the
processes share (the server's state folder, one sub-folder per start): a process answers for an
operation it does not hold from that file. Progress is written at most every half second,
status changes at once.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..errors import NotFound, StorageError
from ..protocol import Operation

log = logging.getLogger(__name__)

PROGRESS_WRITE_S = 0.5
Work = Callable[[Callable[[dict], None]], dict | None]
"""A job: called with ``report(attributes)`` for progress; returns final attributes."""


def remove_stale_runs(parent: Path) -> None:
    """Drop the shared records of earlier starts whose process (the folder's prefix) is gone."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        pid = name.split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(parent / name, ignore_errors=True)
        except OSError:
            pass  # alive, someone else's


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Operations:
    """The operations of one server, newest last, at most ``keep`` of them."""

    def __init__(self, workers: int = 4, keep: int = 1000, shared: Path | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="operation")
        # In start order, the oldest dropped first. Not a cachetools.FIFOCache: that moves a
        # key to the end when its value is replaced, and every progress report replaces one.
        self._ops: OrderedDict[str, Operation] = OrderedDict()
        self._done: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._keep = keep
        self._shared = shared
        self._written: dict[str, float] = {}  # when each record was last written
        if shared is not None:
            shared.mkdir(parents=True, exist_ok=True)

    # -- the shared copies ---------------------------------------------------------------

    def _write(self, op: Operation, progress: bool = False) -> None:
        if self._shared is None:
            return
        now = time.monotonic()
        if progress and now - self._written.get(op.id, 0.0) < PROGRESS_WRITE_S:
            return
        self._written[op.id] = now
        target = self._shared / f"{op.id}.json"
        staged = self._shared / f".{op.id}.{os.getpid()}.{threading.get_ident()}"
        try:
            # Private: an upload-from-URL record holds the URL, which may carry a token.
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(op.to_json()))
            os.replace(staged, target)
        except OSError as exc:  # the state folder is full or gone: polls elsewhere may miss it
            log.warning("cannot record operation %s: %s", op.id, exc)

    def _read(self, op_id: str) -> Operation | None:
        if self._shared is None or not op_id.isalnum():
            return None
        try:
            return Operation.from_json(json.loads((self._shared / f"{op_id}.json").read_text()))
        except (OSError, ValueError, StorageError):
            return None

    def _forget(self, op_id: str) -> None:
        self._written.pop(op_id, None)
        if self._shared is not None:
            (self._shared / f"{op_id}.json").unlink(missing_ok=True)

    def _all_shared(self) -> list[Operation]:
        if self._shared is None:
            return []
        found = []
        for name in os.listdir(self._shared):
            if name.endswith(".json") and not name.startswith("."):
                op = self._read(name[:-5])
                if op is not None:
                    found.append(op)
        return found

    def start(self, name: str, attributes: dict, work: Work) -> Operation:
        op = Operation(id=uuid.uuid4().hex, name=name, status="RUNNING",
                       attributes=dict(attributes), start_time=_now())
        with self._lock:
            self._ops[op.id] = op
            self._done[op.id] = threading.Event()
            while len(self._ops) > self._keep:
                old_id, _ = self._ops.popitem(last=False)
                self._done.pop(old_id, None)
                self._forget(old_id)
            self._write(op)
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
                op = self._ops[op_id] = replace(op, attributes={**op.attributes, **attributes})
                self._write(op, progress=True)

    def update(self, op_id: str, status: str, error: str | None,
               attributes: dict | None = None) -> Operation:
        with self._lock:
            held = op = self._ops.get(op_id)
            if op is None:
                op = self._read(op_id)  # another process's: its shared record is updated
            if op is None:
                raise NotFound(f"no such operation: {op_id}")
            ended = None if status == "RUNNING" else _now()
            op = replace(op, status=status, error_message=error, end_time=ended,
                         attributes={**op.attributes, **(attributes or {})})
            if held is not None:
                self._ops[op_id] = op
                if ended:
                    self._done[op_id].set()
            self._write(op)
            return op

    def get(self, op_id: str) -> Operation:
        with self._lock:
            op = self._ops.get(op_id)
        if op is None:
            op = self._read(op_id)
        if op is None:
            raise NotFound(f"no such operation: {op_id}")
        return op

    def wait(self, op_id: str, timeout_s: float) -> Operation:
        event = self._done.get(op_id)
        if event is not None:
            event.wait(timeout_s)
        return self.get(op_id)

    def page(self, page: int, per_page: int) -> list[Operation]:
        """Newest first, this process's and the others' alike."""
        with self._lock:
            held = list(self._ops.values())
        if self._shared is not None:
            merged = {op.id: op for op in self._all_shared()}
            merged.update((op.id, op) for op in held)
            held = sorted(merged.values(), key=lambda op: op.start_time or _now())
        ops = list(reversed(held))
        return ops[(page - 1) * per_page: page * per_page]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
