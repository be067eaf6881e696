"""Transfers run side by side on the client's pool, where the first failure stops the rest."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any, Callable

from ..client import StorageClient


class Cancelled(Exception):
    """Raised by a job that saw the cancel event: another job failed first."""


def run_parallel(client: StorageClient, jobs: list[Callable[..., Any]]) -> list:
    """Runs jobs on the client's transfer pool; the first failure cancels the others.

    Each job is called with one argument, the cancel event (lambdas binding their loop values
    as defaults, hence the loose type).
    """
    if not jobs:
        return []
    cancel = threading.Event()
    workers = max(1, min(client.config.transfer_workers, len(jobs)))
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="transfer") as pool:
        futures = [pool.submit(job, cancel) for job in jobs]
        try:
            concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
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
