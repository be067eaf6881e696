"""The HTTP routes of the reference server (docs/protocol.md §3), on FastAPI.

Routes only parse, call the store, the ZIP index or the operations, and shape JSON. Every
``StorageError`` becomes ``{"detail": "..."}`` with its status in one handler; anything else is
logged and answered as a 500 without a traceback.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import uuid
from typing import Annotated, BinaryIO, Callable, Iterator, Literal

import anyio
import anyio.from_thread
import anyio.to_thread
from fastapi import APIRouter, Body, Depends, FastAPI, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__, protocol
from ..config import ServerConfig
from ..errors import AuthenticationError, InvalidRequest, NotFound, StorageError
from .indexcache import IndexCache
from .listingcache import CachedListings, ListingCache
from .metrics import Metrics, MetricsMiddleware
from .objectreads import ObjectReads
from .operations import FolderRecords, Operations, Records, remove_stale_runs
from .remote import check_outbound_url, export_multipart, fetch_into
from .s3store import BucketRecords, S3Location, S3Store
from .signing import OBJECT_PREFIX, Signer
from .store import RESERVED, Entry, LocalStore, Store, plan_copy
from .zipindex import ZipIndex, data_offset
from .ziplisting import ArchiveOpener, Listing, zip_listing

log = logging.getLogger(__name__)

# The official client glues 'artifacts' and a sub-folder together ('artifactssub', §4.3).
_GLUED_PREFIX = re.compile(r"^/*(artifacts|sim_dir)([^/].*)$")


_UPLOAD_BATCH = 1024 * 1024
# Accepted on every storage endpoint; this server has one region and ignores the provider.
Region = Annotated[str | None, Query()]
Provider = Annotated[str | None, Query()]
# The listing parameters (defaults at each route); per_page goes past the official client's 100.
SortBy = Annotated[Literal["creation_time", "size", "name"], Query()]
Order = Annotated[Literal["asc", "desc"], Query()]
Page = Annotated[int, Query(ge=1)]
PerPage = Annotated[int, Query(ge=1, le=1000)]


class _FileResponse(FileResponse):
    chunk_size = 1024 * 1024  # fewer round trips through the thread pool for large reads


class UploadPart(BaseModel):
    part_number: int = Field(ge=1)
    part_url: str = Field(min_length=1)


class MultiPartExport(BaseModel):
    path: str
    parts_size: int = Field(ge=1)
    upload_parts: list[UploadPart] = Field(min_length=1)
    complete_multipart_url: str = Field(min_length=1)


class OperationUpdate(BaseModel):
    operation_id: str
    status: Literal["RUNNING", "OK", "FAILED"]
    error_message: str | None = None


def open_store(config: ServerConfig) -> Store:
    """The storage ``config`` names: its bucket (``--store``), else its folder."""
    if config.store:
        return S3Store(S3Location.parse(config.store, config.s3_endpoint_url, config.s3_region))
    return LocalStore(config.root)


class NoListingCache:
    """Stands in for ``ListingCache`` on a bucket: another replica may change what a listing
    shows at any time, so every listing asks the store."""

    def validator(self, route: str, path: str) -> None:
        return None

    def put(self, route: str, query: bytes, path: str, validator: object, body: bytes) -> None:
        return None


class StorageService:
    """What the routes need, wired once per app: store, signer, ZIP index cache, operations."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.store: Store = open_store(config)
        # The folder store, when it is one: the server's own object URLs and fast paths.
        self.local = self.store if isinstance(self.store, LocalStore) else None
        self.signer = Signer(config.signing_key, config.signed_url_ttl_s)
        self.zips = IndexCache(config.zip_index_cache_entries, config.max_zip_entries,
                               config.max_central_directory_bytes, config.zip_index_cache_bytes,
                               folder=None if self.local is None
                               else self.local.root / RESERVED / "zipindex")
        shared: Records
        self.listings: ListingCache | NoListingCache
        if self.local is not None:
            # One folder per start, shared by the worker processes forked from this one.
            runs = self.local.root / RESERVED / "operations"
            remove_stale_runs(runs)
            self.listings = ListingCache(self.local)
            shared = FolderRecords(runs / f"{os.getpid()}-{uuid.uuid4().hex}")
        else:
            assert isinstance(self.store, S3Store)
            self.listings = NoListingCache()
            shared = BucketRecords(self.store)  # every replica on the bucket sees every record
        self.operations = Operations(shared=shared)
        if not config.api_keys:
            raise ValueError("the server needs at least one API key")
        self.keys = tuple(k.encode() for k in config.api_keys)

    # -- auth and regions ----------------------------------------------------------------

    def authenticate(self, key: str | None) -> None:
        if not key:
            raise AuthenticationError("missing API key", hint="send it in the X-API-Key header")
        if not any(hmac.compare_digest(key.encode(), k) for k in self.keys):
            raise AuthenticationError("invalid API key", hint="check INDUCTIVA_API_KEY")

    def check_region(self, region: str | None, allow_all: bool = False) -> None:
        if region is None or region == self.config.region or (allow_all and region == "all"):
            return
        raise NotFound(f"unknown region {region!r}; this server has {self.config.region!r}")

    def signed_url(self, base_url: str, path: str, operation: str) -> str:
        """The store's own presigned URL, or the server's (a folder's bytes pass through it,
        and a bucket's uploads with ``uploads_through_server``)."""
        if operation == protocol.OPERATION_UPLOAD and self.config.uploads_through_server:
            return self.signer.url(base_url, path, operation)
        return (self.store.presign(path, operation, self.config.signed_url_ttl_s)
                or self.signer.url(base_url, path, operation))

    def local_store(self) -> LocalStore:
        """The folder store, for the server's own object URLs; a bucket's objects are read and
        written through the store's URLs, never these."""
        if self.local is None:
            raise NotFound("this server hands out the store's own URLs; ask "
                           "/storage/signed-urls for one")
        return self.local

    # -- listings ------------------------------------------------------------------------

    def storage_file(self, entry: Entry, name: str, with_totals: bool) -> protocol.StorageFile:
        size, mtime = entry.size, entry.mtime
        if entry.is_directory:
            size, mtime = self.store.folder_totals(entry.path) if with_totals else (None, None)
        return protocol.StorageFile(name=name, size_bytes=size, creation_time=mtime,
                                    is_directory=entry.is_directory,
                                    provider_id=self.config.provider_id, region=self.config.region)

    def listing(self, path: str, sort_by: str, order: str, recursive: bool, page: int,
                per_page: int) -> tuple[int, list[protocol.StorageFile]]:
        entry = self.store.entry(path)
        if entry.is_directory:
            files = [self.storage_file(e, e.name, recursive)
                     for e in self.store.children(entry.path)]
        else:
            files = [self.storage_file(entry, entry.name, recursive)]
        files = _sorted(files, sort_by, order)
        return len(files), files[(page - 1) * per_page: page * per_page]

    # -- archives ------------------------------------------------------------------------

    def archive(self, path: str) -> tuple[ArchiveOpener, ZipIndex]:
        """The archive's index and a way to open its bytes: routes read local headers through
        the opener and never learn where the archive is kept."""
        entry = self.store.entry(path)
        if entry.is_directory:
            raise InvalidRequest(f"is a folder, not a file: {entry.path}")
        if not entry.path.lower().endswith(".zip"):
            raise InvalidRequest(f"not a .zip archive: {entry.path}")
        store = self.store

        def opener() -> BinaryIO:
            return store.open_entry(entry)

        local = store.local_path(entry)
        if local is not None:
            return opener, self.zips.get(local)
        size = entry.size or 0  # the bytes are elsewhere: the index is read by ranged GETs
        return opener, self.zips.get_from(entry.path, (entry.version, size), size, opener)

    def zip_listing(self, path: str, zip_relative_path: str, recursive: bool) -> Listing:
        """The ``ZipListing`` JSON: a dict, or for a long listing its text in pieces."""
        opener, index = self.archive(path)
        glued = _GLUED_PREFIX.match(zip_relative_path or "")
        if glued and index.count_under(zip_relative_path) == 0:
            zip_relative_path = f"{glued[1]}/{glued[2]}"
        return zip_listing(index, opener, zip_relative_path, recursive)

    def zip_range(self, path: str, filename: str, zip_relative_path: str) -> protocol.ZipRange:
        opener, index = self.archive(path)
        name = protocol.clean_path(filename)
        try:
            member = index.member(protocol.zip_dir_prefix(zip_relative_path) + name)
        except NotFound:
            glued = _GLUED_PREFIX.match(zip_relative_path or "")
            if not glued:
                raise
            member = index.member(f"{glued[1]}/{glued[2]}/{name}")
        if member.name.endswith("/"):
            raise InvalidRequest(f"{member.name} is a folder inside the archive, not a file")
        with opener() as handle:
            start = data_offset(handle, member, index.size)
        return protocol.ZipRange(range_start=start, range_end=start + member.compressed_size - 1,
                                 compress_type=member.compress_type)


def _sorted(files: list[protocol.StorageFile], sort_by: str,
            order: str) -> list[protocol.StorageFile]:
    """Sort the whole listing; entries without the key (folders) go last either way."""
    key = {"name": lambda f: f.name, "size": lambda f: f.size_bytes,
           "creation_time": lambda f: f.creation_time}[sort_by]
    present = [f for f in files if key(f) is not None]
    missing = sorted((f for f in files if key(f) is None), key=lambda f: f.name)
    present.sort(key=lambda f: (key(f), f.name), reverse=(order == "desc"))
    return present + missing


def create_app(config: ServerConfig) -> FastAPI:
    service = StorageService(config)
    metrics = Metrics()
    app = FastAPI(title="storagefs reference server", version=__version__,
                  docs_url=None, redoc_url=None)
    app.state.service = service

    def authenticated(x_api_key: Annotated[str | None, Header()] = None) -> None:
        service.authenticate(x_api_key)

    api = APIRouter(dependencies=[Depends(authenticated)])

    @app.exception_handler(StorageError)
    async def storage_error(request: Request, exc: StorageError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.http_status)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal server error: {type(exc).__name__}"},
                            status_code=500)

    # -- unauthenticated -----------------------------------------------------------------

    @app.get("/version-check")
    def version_check(client_version: str = "") -> dict:
        return {"is_valid": True, "client_version": client_version,
                "server_version": __version__, "min_supported_client_version": None}

    @app.get("/version")
    def version() -> dict:
        return {"version": __version__, "min_supported_client_version": None}

    @app.get("/metrics")
    def metrics_text() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    # -- account (what `import inductiva` asks for) --------------------------------------

    @api.get("/users/info")
    def user_info() -> dict:
        return {"email": "local@storagefs", "username": "local", "tier": "self-hosted",
                "total_available_credits": 0, "terms_and_conditions_decision": "accepted",
                "registration_ts": "2025-01-01T00:00:00Z", "costs_fee_percentage": 0,
                "terminate_resources_credits_threshold": 0}

    @api.get("/users/quotas")
    def user_quotas() -> dict:
        return {}

    # -- listings ------------------------------------------------------------------------

    def _contents(path: str, sort_by: str, order: str, recursive: bool, page: int,
                  per_page: int, region: str | None) -> tuple[int, list[protocol.StorageFile]]:
        service.check_region(region, allow_all=True)
        return service.listing(path or "", sort_by, order, recursive, page, per_page)

    @api.get(protocol.CONTENTS)
    def contents(request: Request, path: str = "", sort_by: SortBy = "creation_time",
                 order: Order = "desc", recursive: bool = False, page: Page = 1,
                 per_page: PerPage = 100, path_filter: str | None = None, region: Region = None,
                 provider_id: Provider = None) -> Response:
        # Taken before the listing: a change meanwhile makes the stored answer stale, not wrong.
        validator = None if recursive else service.listings.validator(protocol.CONTENTS, path)
        total, files = _contents(path, sort_by, order, recursive, page, per_page, region)
        return _stored(request, path, validator, {
            "total_files": total, "available_regions": [config.region],
            "contents": [f.to_json() for f in files]})

    def _stored(request: Request, path: str, validator: tuple | None, data: dict) -> Response:
        """The answer, kept for ``CachedListings`` while ``validator`` holds."""
        response = JSONResponse(data)
        service.listings.put(request.scope["path"], request.scope.get("query_string", b""), path,
                             validator, bytes(response.body))
        return response

    @api.get(protocol.CONTENTS_PAGINATED)
    def contents_paginated(path: str = "", sort_by: SortBy = "creation_time",
                           order: Order = "desc", recursive: bool = False, page: Page = 1,
                           per_page: PerPage = 100, path_filter: str | None = None,
                           region: Region = None, provider_id: Provider = None) -> dict:
        total, files = _contents(path, sort_by, order, recursive, page, per_page, region)
        by_name = {}
        for f in files:
            data = f.to_json()
            by_name[data.pop("name")] = data
        return {"total_files": total, "available_regions": [config.region], "contents": by_name}

    @api.get(protocol.ZIP_CONTENTS)
    def zip_contents(request: Request, path: str, zip_relative_path: str = "",
                     recursive: bool = True, region: Region = None,
                     provider_id: Provider = None) -> Response:
        service.check_region(region)
        validator = service.listings.validator(protocol.ZIP_CONTENTS, path)
        listing = service.zip_listing(path, zip_relative_path, recursive)
        if not isinstance(listing, dict):  # too long to build whole: streamed, not stored
            return StreamingResponse(listing, media_type="application/json")
        # A JSONResponse skips FastAPI's re-encoding, which costs seconds on 1e5 entries.
        return _stored(request, path, validator, listing)

    @api.get(protocol.ZIP_FILE_RANGE)
    def zip_file_range(filename: str, path: str, zip_relative_path: str = "",
                       region: Region = None, provider_id: Provider = None) -> dict:
        service.check_region(region)
        return service.zip_range(path, filename, zip_relative_path).to_json()

    @api.get(protocol.SIZE)
    def size() -> int:
        return service.store.total_size()

    @api.get(protocol.COST)
    def cost() -> dict:
        gib = service.store.total_size() / 1024**3
        return {"estimated_monthly_cost": round(gib * config.price_per_gib_month, 6),
                "currency": "USD"}

    # -- signed URLs and the objects behind them ----------------------------------------

    @api.get(protocol.SIGNED_URLS)
    def signed_urls(request: Request, operation: Literal["upload", "download"],
                    paths: Annotated[list[str], Query(min_length=1)],
                    region: Region = None, provider_id: Provider = None) -> list[str]:
        service.check_region(region)
        base = config.public_url or str(request.base_url)
        if operation == protocol.OPERATION_UPLOAD:
            targets = []
            for path in paths:
                clean = protocol.clean_path(path)
                if not clean or protocol.names_directory(path):
                    raise InvalidRequest(f"upload needs a file path, not a folder: {path!r}")
                targets.append(service.store.check_path(clean))
        else:
            targets = [f.path for path in paths for f in service.store.iter_files(path)]
        return [service.signed_url(base, target, operation) for target in targets]

    def _verified(request: Request, path: str, op: str, expires: str, sig: str) -> str:
        service.signer.verify(request.method, path, op, expires, sig)
        return path

    @app.api_route(OBJECT_PREFIX + "{path:path}", methods=["GET", "HEAD"])
    def read_object(request: Request, path: str, op: str = "", expires: str = "",
                    sig: str = "") -> Response:
        _verified(request, path, op, expires, sig)
        local, entry = service.local_store().open_file(path)
        return _FileResponse(local, media_type="application/octet-stream",
                             headers={"x-content-length": str(entry.size)})

    @app.put(OBJECT_PREFIX + "{path:path}")
    async def write_object(request: Request, path: str, op: str = "", expires: str = "",
                           sig: str = "") -> Response:
        _verified(request, path, op, expires, sig)
        try:
            if service.local is not None:
                written = await _store_stream(service.local, path, request)
            else:
                written = await _relay_stream(service.store, path, request)
        except ClientDisconnect:
            log.info("upload of %s abandoned by the client; nothing stored", path)
            return Response(status_code=400)
        metrics.object_write_bytes.inc(written)
        return JSONResponse({"path": protocol.clean_path(path), "size": written},
                            headers={"x-goog-stored-content-length": str(written)})

    # -- changes -------------------------------------------------------------------------

    @api.delete(protocol.REMOVE)
    def remove(path: str = "", region: Region = None, provider_id: Provider = None) -> dict:
        service.check_region(region)
        return {"path": protocol.clean_path(path), "deleted_files": service.store.remove(path)}

    @api.post(protocol.COPY)
    def copy(source: str, target: str, region: Region = None, provider_id: Provider = None) -> dict:
        service.check_region(region)
        plan = plan_copy(service.store, source, target)

        def work(report: Callable[[dict], None]) -> dict:
            done = 0
            for src, dst, size in plan:
                done += service.store.copy_file(src, dst)
                report({"bytes_copied": done})
            return {"files": len(plan), "bytes_copied": done}

        op = service.operations.start("copy", {"source": source, "target": target,
                                               "files": len(plan)}, work)
        return service.operations.wait(op.id, config.sync_wait_s).to_json()

    @api.post(protocol.INPUT_REMOTE)
    def input_remote(url: Annotated[str, Query(min_length=1)], path: str,
                     region: Region = None, provider_id: Provider = None) -> dict:
        service.check_region(region)
        check_outbound_url(url, config.allow_private_urls)
        clean = protocol.clean_path(path)
        if not clean or protocol.names_directory(path):
            raise InvalidRequest(f"upload from URL needs a file path, not a folder: {path!r}")
        service.store.check_path(clean)

        def work(report: Callable[[dict], None]) -> dict:
            return fetch_into(service.store, clean, url, allow_private=config.allow_private_urls,
                              timeout_s=config.fetch_timeout_s, report=report)

        return service.operations.start("input_remote", {"url": url, "path": clean}, work).to_json()

    @api.post(protocol.EXPORT_MULTIPART)
    def export(body: MultiPartExport, region: Region = None, provider_id: Provider = None) -> dict:
        service.check_region(region)
        service.store.open_read(body.path)[1].close()  # fail now, not later, when it is missing
        for url in {p.part_url for p in body.upload_parts} | {body.complete_multipart_url}:
            check_outbound_url(url, config.allow_private_urls)
        parts = [(p.part_number, p.part_url) for p in body.upload_parts]

        def work(report: Callable[[dict], None]) -> dict:
            return export_multipart(service.store, body.path, body.parts_size, parts,
                                    body.complete_multipart_url,
                                    allow_private=config.allow_private_urls,
                                    timeout_s=config.fetch_timeout_s, report=report)

        attributes = {"path": protocol.clean_path(body.path), "parts": len(parts)}
        return service.operations.start("export", attributes, work).to_json()

    @api.get(protocol.OPERATIONS)
    def operations(page: int = Query(1, ge=1),
                   per_page: int = Query(50, ge=1, le=50)) -> list[dict]:
        return [op.to_json() for op in service.operations.page(page, per_page)]

    @api.get(protocol.OPERATIONS + "/{operation_id}")
    def operation(operation_id: str) -> dict:
        return service.operations.get(operation_id).to_json()

    @api.post(protocol.UPDATE_OPERATION_STATUS)
    def update_operation(body: OperationUpdate = Body()) -> dict:
        op = service.operations.update(body.operation_id, body.status, body.error_message)
        return op.to_json()

    def bucket() -> dict:
        return {"provider_id": config.provider_id, "name": service.store.name,
                "region": config.region, "is_internal": False}

    @api.get(protocol.DEFAULT_BUCKET)
    def default_bucket() -> dict:
        return bucket()

    @api.get(protocol.LIST_BUCKETS)
    def list_buckets() -> list[dict]:
        return [bucket()]

    app.include_router(api)
    known = frozenset(value for name, value in vars(protocol).items()
                      if name.isupper() and isinstance(value, str) and value.startswith("/"))
    known |= {"/version", "/metrics", "/users/info", "/users/quotas"}
    app.add_middleware(MetricsMiddleware, metrics=metrics, known_paths=known)
    app.add_middleware(CollapseSlashes)
    app.state.metrics = metrics
    return app


def with_fast_paths(app: FastAPI) -> ASGIApp:
    """``app`` behind the paths that answer the hot requests without the framework (whose
    own per-request work, even before any middleware, costs more than these answers): signed-URL
    reads, then stored listings; everything else, and every doubt, goes to ``app``."""
    service: StorageService = app.state.service
    metrics: Metrics = app.state.metrics
    if service.local is None or not isinstance(service.listings, ListingCache):
        return app  # a bucket: listings ask the store each time, its URLs carry the bytes
    listings = CachedListings(app, cache=service.listings, keys=service.keys, metrics=metrics)
    return ObjectReads(listings, signer=service.signer, store=service.local, metrics=metrics)


async def _store_stream(store: LocalStore, path: str, request: Request) -> int:
    """Write the request body atomically without holding it in memory.

    Chunks are gathered to about 1 MiB and written in a worker thread, so the event loop never
    blocks on the disk; a body cut short discards the temporary file and the old file stays.
    """
    writer = await anyio.to_thread.run_sync(store.writer, path)
    try:
        buffer = bytearray()
        async for chunk in request.stream():
            buffer += chunk
            if len(buffer) >= _UPLOAD_BATCH:
                await anyio.to_thread.run_sync(writer.write, bytes(buffer))
                buffer.clear()
        await anyio.to_thread.run_sync(writer.write, bytes(buffer))
        return await anyio.to_thread.run_sync(writer.commit)
    finally:
        writer.discard()


async def _relay_stream(store: Store, path: str, request: Request) -> int:
    """Pass the request body on to ``store.write`` (a multipart upload to a bucket) in about
    1 MiB batches, without holding it in memory; a body cut short stores nothing."""
    body = request.stream().__aiter__()

    async def next_batch() -> bytes | None:
        buffer = bytearray()
        while len(buffer) < _UPLOAD_BATCH:
            try:
                buffer += await body.__anext__()
            except StopAsyncIteration:
                break
        return bytes(buffer) if buffer else None

    def batches() -> Iterator[bytes]:
        while (batch := anyio.from_thread.run(next_batch)) is not None:
            yield batch

    return await anyio.to_thread.run_sync(store.write, path, batches())


class CollapseSlashes:
    """``//storage/...`` (a base URL with a trailing slash) means ``/storage/...``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "//" in scope["path"]:
            scope = dict(scope, path=re.sub("/{2,}", "/", scope["path"]))
        await self.app(scope, receive, send)
