"""Reading storage without changing it: folder listings, zip listings and ranges, signed URLs,
and the space used with its cost; printed as the SDK prints them."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import List, Literal, Optional

from .. import protocol
from ..client import StorageClient
from ..errors import NotFound
from .defaults import get_client
from .formatting import bytes_formatter, currency_formatter, datetime_formatter, table
from .sdktypes import ZipArchiveInfo, ZipFileInfo, ZipFileRange


def _print_storage_size_and_cost(client: StorageClient) -> int:
    total = client.space_used()
    cost = client.cost()["estimated_monthly_cost"]
    print("\nTotal storage size used across all regions:")
    print(f"\tVolume: {bytes_formatter(total)}")
    print(f"\tCost: {currency_formatter(cost)}/month\n")
    return total


def get_space_used() -> float:
    """Prints the storage used across all regions and its monthly cost; returns GB (GiB)."""
    total = _print_storage_size_and_cost(get_client())
    return round(float(total) / (1024 ** 3), 3)


@dataclass
class Listing:
    """One folder's entries (the SDK's dicts), the region they were asked in, and the regions
    where the user has storage."""

    entries: list[dict]
    current_region: Optional[str]
    available_regions: list[str]


def list_entries(path: str = "/", region: Optional[str] = None,
                 max_results: Optional[int] = 10, order_by: str = "creation_time",
                 sort_order: str = "desc") -> Listing:
    """The listing behind ``listdir`` and ``storagefs ls``, sorted by the server.

    Sub-folders' sizes and times (the newest file under them) are always asked for
    (``recursive=true``, docs/protocol.md §3.1): without them folders have no time and no
    size, so a sort by either would put them last whatever they hold, and "the newest
    folders" would leave out the folder just written.
    """
    client = get_client()
    if len(path.split("/")) < 2:  # 'task1' names a folder; '' is the root (as the SDK sends)
        path += "/"
    entries: list[dict] = []
    limit = sys.maxsize if not max_results else max_results
    current_region = region
    available: list[str] = []
    page = 1
    while limit > 0:
        page_size = min(protocol.MAX_PER_PAGE, limit)
        result = client.contents(path, sort_by=order_by, order=sort_order, recursive=True,
                                 page=page, per_page=page_size, region=region)
        available = result.available_regions
        for item in result.contents:
            entries.append({
                "name": item.name,
                "size": round(float(item.size_bytes), 3) if item.size_bytes else None,
                "creation_time": item.creation_time,
                "provider": item.provider_id,
                "region": item.region,
            })
            if current_region is None:
                current_region = item.region
        page += 1
        limit -= len(result.contents)
        if len(result.contents) < page_size:
            break
    return Listing(entries, current_region, available)


def listing_table(entries: list[dict]) -> str:
    """The SDK's table of a listing."""
    rows = [[e["name"], bytes_formatter(e["size"]), datetime_formatter(e["creation_time"]),
             e["provider"], e["region"]] for e in entries]
    return table(rows, ["Name", "Size", "Creation Time", "Provider", "Region"])


def listdir(
    path: str = "/",
    region: Optional[str] = None,
    max_results: Optional[int] = 10,
    order_by: Literal["size", "creation_time"] = "creation_time",
    sort_order: Literal["asc", "desc"] = "desc",
    recursive: bool = False,
    print_results: bool = True,
) -> list[dict]:
    """List a storage folder: a list of dicts (name, size, creation_time, provider, region).

    ``max_results=None`` lists everything. Sub-folders always carry their size and time (the
    total under them and their newest file's), so that the sort orders hold for them too;
    ``recursive`` is kept for the SDK's signature. With ``print_results``, prints the SDK's
    table, the regions, and the storage used and its cost.
    """
    del recursive  # always on: see list_entries
    listing = list_entries(path, region, max_results, order_by, sort_order)
    if print_results:
        print(listing_table(listing.entries))
        print(f"Listed {len(listing.entries)} folder(s). Ordered by {order_by}.\n"
              "Use --max-results/-m to control the number of results displayed.")
        print("\nCurrent region(s):", listing.current_region)
        print("\nYou have storage in the following regions: "
              + ", ".join(listing.available_regions))
        _print_storage_size_and_cost(get_client())
    return listing.entries


def get_signed_urls(
    paths: List[str],
    operation: Literal["upload", "download"],
    region: Optional[str] = None,
) -> List[str]:
    """Presigned URLs to upload ``paths`` or download the files under them."""
    return get_client().signed_urls(list(paths), operation, region)


def get_zip_contents(
    path: str,
    zip_relative_path: str = "",
    recursive: bool = False,
    region: Optional[str] = None,
) -> ZipArchiveInfo:
    """The archive's size and the entries under ``zip_relative_path`` (names relative to it)."""
    listing = get_client().zip_contents(path, zip_relative_path, recursive, region)
    files = [ZipFileInfo(name=e.name, size=e.size, compressed_size=e.compressed_size,
                         range_start=e.range_start, creation_time=e.creation_time,
                         compress_type=e.compress_type) for e in listing.contents]
    return ZipArchiveInfo(size=listing.size, files=files)


def get_file_range(
    path: str,
    zip_relative_path: str = "",
    filename: str = "",
    region: Optional[str] = None,
) -> ZipFileRange:
    """Offsets of a member's compressed data in the archive (``range_end`` inclusive)."""
    rng = get_client().zip_file_range(path, filename, zip_relative_path, region)
    return ZipFileRange(range_start=rng.range_start, range_end=rng.range_end,
                        compress_type=rng.compress_type)


def zip_folder_contents(path: str, zip_relative_path: str = "", recursive: bool = False,
                        region: Optional[str] = None) -> ZipArchiveInfo:
    """``get_zip_contents`` that tells a missing folder from an empty one.

    The API answers both with no entries; a command line must say "not found" for the first.
    A member that is a file is listed as itself, as ``ls FILE`` does.
    """
    info = get_zip_contents(path, zip_relative_path, recursive, region)
    folder = zip_relative_path.strip("/")
    if info.files or not folder:
        return info
    parent, _, name = folder.rpartition("/")
    siblings = get_zip_contents(path, parent, False, region).files
    found = [f for f in siblings if f.name.rstrip("/") == name]
    if not found:
        raise NotFound(f"no {folder!r} in {path}",
                       hint=f"see 'storagefs zip-ls {path}{' ' + parent if parent else ''}'")
    if not found[0].name.endswith("/"):
        return ZipArchiveInfo(size=info.size, files=found)
    return info
