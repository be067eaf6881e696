"""``scripts/bench.py --quick`` end to end: a real server, real mounts, one well-formed table.

Only the shape is checked (every row measured, numbers where numbers belong, a pass/fail for
each row with a target); the targets themselves are for the full corpus, not this smoke run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mountharness import require_fuse

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_quick_produces_a_table(tmp_path):
    require_fuse()
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--quick",
                             "--peer", "none", "--json", str(out)],
                            capture_output=True, text=True, timeout=180, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "failed" not in result.stderr, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["quick"] is True and report["commit"]
    table = report["table"]
    assert {line["row"] for line in table} == {str(n) for n in range(1, 8)}
    for line in table:
        assert isinstance(line["storagefs"], (int, float)), line
        if line["target"]:
            assert line["pass"] in (True, False), line
        else:
            assert line["pass"] is None, line
    ls = report["results"]["storagefs"]["ls"]
    assert ls["files_listed"] == ls["expected_files"]  # the listing is complete
    # The printed table: a header, then one line per figure, then the notes.
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("row"))
    assert "storagefs" in lines[header] and "target" in lines[header]
    assert sum(1 for line in lines[header:] if line.rstrip().endswith(("PASS", "FAIL"))) == \
        sum(1 for line in table if line["target"])
