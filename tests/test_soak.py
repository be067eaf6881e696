"""The soak test, short: 32 readers and 4 writers for ~10 s on a real mount (``make soak`` runs
60 s)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mountharness import require_fuse

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "soak.py"


@pytest.mark.slow
def test_soak_32_readers_nothing_lost(tmp_path, figures):
    require_fuse()
    out = tmp_path / "soak.json"
    result = subprocess.run([sys.executable, str(SCRIPT), "--duration", "10", "--readers", "32",
                             "--writers", "4", "--json", str(out)], capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    found = json.loads(out.read_text())
    assert found["problems"] == []
    assert found["mismatches"] == 0 and found["errors"] == 0
    assert found["whole_files_verified"] > 0 and found["ranges_verified"] > 0
    assert found["files_written"] > 0 and found["saved_by_rename"] > 0
    figures["soak (10 s, 32 readers): bytes verified"] += found["bytes_verified"]
    figures["soak (10 s, 32 readers): files and ranges verified"] += (
        found["whole_files_verified"] + found["ranges_verified"])
    figures["soak (10 s, 32 readers): files written and compared"] += found["files_written"]
    figures["soak (10 s, 32 readers): mismatches + errors"] += found["mismatches"] + found["errors"]
    figures["soak (10 s, 32 readers): mount peak RSS (MiB)"] = found["peak_rss_bytes"] >> 20
    figures["soak (10 s, 32 readers): mount RSS budget (MiB)"] = found["rss_budget_bytes"] >> 20
