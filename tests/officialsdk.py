"""The official ``inductiva`` client, installed once into a virtualenv of its own under
``.compat/`` at the repository root (kept between runs).

It pins dependencies of its own that must not leak into ours. The compatibility test runs it
against our server; the storage tests read its ``storage`` module for the names, signatures
and defaults ``storagefs.storage`` must match.
"""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

CLIENT_VERSION = "0.18.12"
COMPAT_DIR = Path(__file__).resolve().parent.parent / ".compat"


def official_client_python() -> Path:
    """The virtualenv's python, with the client installed first if it is not yet."""
    python = COMPAT_DIR / "venv" / "bin" / "python"
    stamp = COMPAT_DIR / f"inductiva-{CLIENT_VERSION}.installed"
    if not stamp.exists():
        venv.create(COMPAT_DIR / "venv", with_pip=True, clear=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                        f"inductiva=={CLIENT_VERSION}"], check=True, timeout=600)
        stamp.touch()
    return python


def installed_sdk_file(relative: str) -> Path | None:
    """A file of the installed ``inductiva`` package (e.g. ``storage/storage.py``), if any."""
    found = sorted(COMPAT_DIR.glob(f"venv/lib/python*/site-packages/inductiva/{relative}"))
    return found[-1] if found else None
