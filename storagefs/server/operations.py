"""Long-running server work (copy, upload from URL, export) as pollable operations.

Work runs on a small thread pool; its state is an immutable ``protocol.Operation`` replaced on
every change, so readers never see a half-updated record. Finished records are kept up to a
bound, oldest dropped first.

With several server processes (``serve --workers``, or replicas of a server on one bucket) a
poll may reach a process other than the one running the work, so each record is also written
as JSON where the processes share it (``Records``): a folder in the server's state folder (one
sub-folder per start), or objects under the bucket's reserved prefix (``s3store``). A process
answers for an operation it does not hold from that copy. Progress is written at most every
half second, status changes at once.
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
from typing import Callable, Protocol

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


class Records(Protocol):
    """Where the processes of one server share operation records, as JSON text by id."""

    def put(self, op_id: str, text: str) -> None:
        """Store a record whole (a reader never sees half of one); OSError when it cannot."""
        ...

    def get(self, op_id: str) -> str | None:
        ...

    def delete(self, op_id: str) -> None:
        ...

    def recent(self, limit: int) -> list[str]:
        """Up to ``limit`` records, the most recently written first."""
        ...


class FolderRecords:
    """Records as files in a folder; private, since an upload-from-URL record holds the URL,
    which may carry a token."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def put(self, op_id: str, text: str) -> None:
        staged = self._folder / f".{op_id}.{os.getpid()}.{threading.get_ident()}"
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(staged, self._folder / f"{op_id}.json")

    def get(self, op_id: str) -> str | None:
        try:
            return (self._folder / f"{op_id}.json").read_text()
        except OSError:
            return None

    def delete(self, op_id: str) -> None:
        (self._folder / f"{op_id}.json").unlink(missing_ok=True)

    def recent(self, limit: int) -> list[str]:
        found = []
        for entry in os.scandir(self._folder):
            if entry.name.endswith(".json") and not entry.name.startswith("."):
                try:
                    found.append((entry.stat().st_mtime, entry.name[:-5]))
                except OSError:
                    continue
        found.sort(reverse=True)
        texts = (self.get(op_id) for _, op_id in found[:limit])
        return [text for text in texts if text is not None]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Operations:
    """The operations of one server, newest last, at most ``keep`` of them."""

    def __init__(self, workers: int = 4, keep: int = 1000, shared: Records | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="operation")
        # In start order, the oldest dropped first. Not a cachetools.FIFOCache: that moves a
        # key to the end when its value is replaced, and every progress report replaces one.
        self._ops: OrderedDict[str, Operation] = OrderedDict()
        self._done: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._keep = keep
        self._shared = shared
        self._written: dict[str, float] = {}  # when each record was last written

    # -- the shared copies ---------------------------------------------------------------

    def _write(self, op: Operation, progress: bool = False) -> None:
        if self._shared is None:
            return
        now = time.monotonic()
        if progress and now - self._written.get(op.id, 0.0) < PROGRESS_WRITE_S:
            return
        self._written[op.id] = now
        try:
            self._shared.put(op.id, json.dumps(op.to_json()))
        except Exception as exc:  # the shared place is full or gone: polls elsewhere may miss it
            log.warning("cannot record operation %s: %s", op.id, exc)

    def _read(self, op_id: str) -> Operation | None:
        if self._shared is None or not op_id.isalnum():
            return None
        try:
            text = self._shared.get(op_id)
            return None if text is None else Operation.from_json(json.loads(text))
        except (OSError, ValueError, StorageError):
            return None

    def _forget(self, op_id: str) -> None:
        self._written.pop(op_id, None)
        if self._shared is not None:
            try:
                self._shared.delete(op_id)
            except Exception as exc:
                log.warning("cannot remove the record of operation %s: %s", op_id, exc)

    def _recent_shared(self, limit: int) -> list[Operation]:
        if self._shared is None:
            return []
        found = []
        try:
            texts = self._shared.recent(limit)
        except Exception as exc:
            log.warning("cannot read the shared operation records: %s", exc)
            return []
        for text in texts:
            try:
                found.append(Operation.from_json(json.loads(text)))
            except (ValueError, StorageError):
                continue
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
            merged = {op.id: op for op in self._recent_shared(page * per_page)}
            merged.update((op.id, op) for op in held)
            held = sorted(merged.values(), key=lambda op: op.start_time or _now())
        ops = list(reversed(held))
        return ops[(page - 1) * per_page: page * per_page]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
