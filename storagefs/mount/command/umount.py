"""``storagefs umount``: unmount with fusermount (or umount as root), also a stale mount whose
process is gone, and wait until the kernel agrees."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ...errors import EXIT_ERROR, EXIT_OK


def umount(path: Path, lazy: bool = False, wait: float = 10.0) -> int:
    stale = False
    try:
        os.stat(path)
    except FileNotFoundError:
        print(f"storagefs umount: {path} does not exist", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        stale = exc.errno == errno.ENOTCONN
    if not stale and not os.path.ismount(path):
        print(f"storagefs umount: {path} is not mounted", file=sys.stderr)
        return EXIT_ERROR
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool:
        cmd = [tool, "-u"] + (["-z"] if lazy else []) + [str(path)]
    elif os.geteuid() == 0:
        cmd = ["umount"] + (["-l"] if lazy else []) + [str(path)]
    else:
        print("storagefs umount: fusermount is missing (install it: apt-get install fuse3)",
              file=sys.stderr)
        return EXIT_ERROR
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        detail = " ".join((result.stderr or result.stdout).split()) or f"{cmd[0]} failed"
        hint = ""
        if "busy" in detail.lower():
            hint = (f" (close the programs using it, see 'fuser -vm {path}', "
                    "or use storagefs umount --lazy)")
        print(f"storagefs umount: {detail}{hint}", file=sys.stderr)
        return EXIT_ERROR
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            if not os.path.ismount(path):
                break
        except OSError:
            pass
        time.sleep(0.05)
    return EXIT_OK
