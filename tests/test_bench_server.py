"""``scripts/bench.py --rows server --quick``: the server row runs on its own (no corpus, no
mount) and fills every figure, ours and nginx's, from real ``ab`` runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_server_row_fills_its_table(tmp_path):
    if shutil.which("ab") is None or (shutil.which("nginx") is None
                                      and not Path("/usr/sbin/nginx").exists()):
        pytest.skip("needs ab and nginx (make bench installs them)")
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--quick",
                             "--rows", "server", "--json", str(out)],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    table = report["table"]
    assert {line["row"] for line in table} == {"8"}
    for line in table:
        assert isinstance(line["storagefs"], (int, float)), line
        assert line["pass"] in ((True, False) if line["target"] else (None,)), line
    server = report["results"]["storagefs"]["server"]
    assert server["workers"] >= 1
    for key in ("ranges_1", "ranges_32", "nginx_ranges_1", "zip_contents_32", "contents_32"):
        assert server[key]["errors"] == 0, (key, server["runs"][key])
    assert "nginx" in result.stdout and "server row:" in result.stdout
