"""Transfers run side by side on the client's pool, where the first failure stops the rest, and
an interrupted batch says how far it got and how to resume."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any, Callable, Optional

from ..client import StorageClient

RESUME_HINT = "run the same command again to resume (files already there and identical are " \
    "skipped)"


class Cancelled(Exception):
    """Raised by a job that saw the cancel event: another job failed first."""


def run_parallel(client: StorageClient, jobs: list[Callable[..., Any]],
                 done_word: Optional[str] = None, done_before: int = 0) -> list:
    """Runs jobs on the client's transfer pool; the first failure cancels the others.

    Each job is called with one argument, the cancel event (lambdas binding their loop values
    as defaults, hence the loose type). With ``done_word`` ("uploaded"), a failure or Ctrl-C
    in a batch of several files leaves one note on the exception (``__notes__``, shown under
    a traceback and by the command line): "23 of 300 files uploaded; run the same command
    again to resume (...)"; ``done_before`` files found already there count as done.
    """
    if not jobs:
        return []
    cancel = threading.Event()
    finished = [0]
    lock = threading.Lock()

    def counted(job: Callable[..., Any]) -> Any:
        try:
            result = job(cancel)
        except BaseException:
            cancel.set()  # at once: the worker must not start its next job meanwhile
            raise
        with lock:
            finished[0] += 1
        return result

    workers = max(1, min(client.config.transfer_workers, len(jobs)))
    try:
        with concurrent.futures.ThreadPoolExecutor(workers,
                                                   thread_name_prefix="transfer") as pool:
            futures = [pool.submit(counted, job) for job in jobs]
            try:
                concurrent.futures.wait(futures,
                                        return_when=concurrent.futures.FIRST_EXCEPTION)
            except BaseException:
                cancel.set()
                for future in futures:
                    future.cancel()
                raise
            raised = [f.exception() for f in futures if f.done() and not f.cancelled()]
            errors = [e for e in raised if e is not None and not isinstance(e, Cancelled)]
            if errors:
                cancel.set()
                for future in futures:
                    future.cancel()
                concurrent.futures.wait(futures)
                raise errors[0]
            return [f.result() for f in futures]
    except BaseException as exc:  # the pool has stopped: the count is final
        if done_word and done_before + len(jobs) > 1:
            # what BaseException.add_note does (3.11), written out for 3.10
            setattr(exc, "__notes__", [*getattr(exc, "__notes__", []),
                                       f"{done_before + finished[0]} of "
                                       f"{done_before + len(jobs)} files {done_word}; "
                                       f"{RESUME_HINT}"])
        raise
