"""Operations the server runs on its own (export, copy, upload from URL), followed to the end.

The reference server answers these requests with an operation, which
``StorageOperation.wait()`` polls; an answer that is not one becomes None.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any, Optional

from .. import protocol
from ..client import StorageClient
from ..errors import InvalidRequest
from .defaults import get_client

logger = logging.getLogger(__package__)  # the library logs under one name, "storagefs.storage"


class StorageOperation:
    """A storage operation running remotely (export, copy, upload from URL)."""

    def __init__(self, api: StorageClient | None, id_: str) -> None:
        self._api = api
        self.id = id_
        self._name: Optional[str] = None
        self._status: Optional[str] = None
        self._attributes: dict = {}
        self._start_time: Optional[datetime.datetime] = None
        self._end_time: Optional[datetime.datetime] = None
        self._error_message: Optional[str] = None

    def __repr__(self) -> str:
        return f"StorageOperation(id={self.id!r}, name={self._name!r}, status={self._status!r})"

    def _update_from_api_response(self, response: Any) -> None:
        if isinstance(response, dict):
            response = protocol.Operation.from_json(response)
        self._name = response.name
        self._status = response.status
        self._attributes = dict(response.attributes)
        self._start_time = response.start_time
        self._end_time = response.end_time
        self._error_message = response.error_message

    @classmethod
    def from_api_response(cls, api: StorageClient | None, response: Any) -> "StorageOperation":
        """From the JSON object (or ``protocol.Operation``) the API answered with."""
        op_id = response["id"] if isinstance(response, dict) else response.id
        op = cls(api, op_id)
        op._update_from_api_response(response)
        return op

    @property
    def client(self) -> StorageClient:
        return self._api if self._api is not None else get_client()

    name = property(lambda self: self._name)
    status = property(lambda self: self._status)
    attributes = property(lambda self: dict(self._attributes))
    start_time = property(lambda self: self._start_time)
    end_time = property(lambda self: self._end_time)
    error_message = property(lambda self: self._error_message)

    def _refresh(self) -> None:
        self._update_from_api_response(self.client.operation(self.id))

    def wait(self, poll_s: int = 2) -> str:
        """Poll every ``poll_s`` seconds until the operation ends; returns 'OK' or 'FAILED'."""
        if self._status is None:
            self._refresh()
        while self._status == "RUNNING":
            time.sleep(poll_s)
            self._refresh()
        if self._status == "FAILED":
            logger.error("Operation failed: %s", self._error_message)
        else:
            logger.info("Operation completed successfully.")
        assert self._status is not None  # _refresh() always sets it
        return self._status


def operation_or_none(client: StorageClient, answer: Any) -> Optional[StorageOperation]:
    """The answer as a StorageOperation when it is one (the reference server returns them)."""
    if isinstance(answer, dict) and {"id", "status", "name"} <= answer.keys():
        try:
            return StorageOperation.from_api_response(client, answer)
        except InvalidRequest:
            return None
    return None
