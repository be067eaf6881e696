"""The SDK's data types and names, as ``inductiva.storage`` defines them.

Callers compare, construct and catch these; their fields, order and base classes are the
SDK's, so code written for the SDK keeps working.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from enum import Enum
from typing import List, Optional

from ..errors import NotFound

TASK_OUTPUT_ZIP = "output.zip"
TASK_INPUT_ZIP = "input.zip"
ARTIFACTS_DIRNAME = "artifacts"
INPUT_DIRNAME = "sim_dir"


@dataclass
class ZipFileInfo:
    """Represents information about a file within a ZIP archive."""
    name: str
    size: Optional[int]
    compressed_size: Optional[int]
    range_start: Optional[int]
    creation_time: Optional[datetime.datetime]
    compress_type: Optional[int]


@dataclass
class ZipArchiveInfo:
    """Represents the total ZIP size and file contents of a ZIP archive."""
    size: int
    files: List[ZipFileInfo]


@dataclass
class ZipFileRange:
    """The byte range of a file's compressed data within a ZIP archive (end inclusive)."""
    range_start: int
    range_end: int
    compress_type: Optional[int] = None


class ExportDestination(Enum):
    AWS_S3 = "aws-s3"

    def __str__(self) -> str:
        return self.value


class MemberNotFound(NotFound, ValueError):
    """A file named inside a zip is not in it (a ValueError too, as in the SDK)."""
