"""The bench's own checks: its parts measure what they say, and ``--quick`` makes one table.

The quick end-to-end run only checks the table's shape (every row measured, numbers where
numbers belong, a verdict for each line with a target); the targets are for the full corpus.
The parts are checked on their own: the task-runner archives are what the task runner makes,
the floors verify what they decode, the trivial file system shows the archive's whole tree,
and a row whose module is missing is reported, not dropped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest

from mountharness import require_fuse

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
sys.path.insert(0, str(SCRIPTS))

import benchfloors  # noqa: E402 - scripts/ is not a package
import benchrows  # noqa: E402
import taskarchives  # noqa: E402

MiB = 1 << 20


@pytest.fixture(scope="module")
def task_archives(tmp_path_factory):
    folder = tmp_path_factory.mktemp("task")
    seven, stream = folder / "seven.zip", folder / "stream.zip"
    taskarchives.build_7zip(seven, csv=2 * MiB, binary=MiB, log=10_000)
    taskarchives.build_stream_zip(stream, csv=2 * MiB, binary=MiB, log=10_000)
    return seven, stream


def test_task_archives_hold_poorly_compressible_numbers(task_archives):
    for archive in task_archives:
        with zipfile.ZipFile(archive) as zf:
            csv = zf.getinfo(taskarchives.CSV_MEMBER)
            binary = zf.getinfo(taskarchives.BIN_MEMBER)
            assert csv.compress_type == binary.compress_type == zipfile.ZIP_DEFLATED
            assert csv.file_size == 2 * MiB and binary.file_size == MiB
            assert 0.35 < csv.compress_size / csv.file_size < 0.6, archive  # CSV floats
            assert binary.compress_size / binary.file_size > 0.85, archive  # float64 noise
            head = zf.read(taskarchives.CSV_MEMBER)[:200].decode()
            assert head.startswith("step,time,") and "e-0" in head
            assert zf.testzip() is None


def test_stream_zip_archive_uses_data_descriptors(task_archives):
    _, stream = task_archives
    with zipfile.ZipFile(stream) as zf:
        assert all(info.flag_bits & 0x08 for info in zf.infolist())


def test_inflate_floor_checks_what_it_decodes(task_archives):
    seven, _ = task_archives
    data, info = benchfloors.compressed_bytes(seven, taskarchives.CSV_MEMBER)
    assert zlib.decompress(data, -15)[:5] == b"step,"
    wall, cpu = benchfloors.inflate(data, info.file_size, info.CRC)
    assert wall > 0 and cpu > 0
    with pytest.raises(RuntimeError, match="expected"):
        benchfloors.inflate(data, info.file_size, info.CRC ^ 1)


def test_floors_measure_unzip_and_inflate(task_archives):
    seven, _ = task_archives
    floors = benchfloors.measure(seven, taskarchives.CSV_MEMBER, 60, lambda: False)
    assert floors["size"] == 2 * MiB and floors["unzip_cold_s"] > 0 and floors["unzip_cpu_s"] > 0
    assert "zlib-ng" in floors["inflate"] and floors["inflate"]["zlib-ng"]["mb_s"] > 0


def test_missing_row_module_is_reported_not_dropped(monkeypatch, tmp_path):
    monkeypatch.setattr(benchrows, "SCRIPTS", tmp_path)
    lines = benchrows.run_row("seek", {"quick": True})
    assert len(lines) == 1 and lines[0].value is None
    assert lines[0].note.startswith("not available") and "bench_seek.py" in lines[0].note


def test_row_module_gets_the_arguments_it_names(monkeypatch, tmp_path):
    (tmp_path / "bench_seek.py").write_text(
        "def run(quick, work):\n"
        "    return [{'what': 'median', 'value': 3.0, 'unit': 'ms', 'target': '<= 20 ms',\n"
        "             'pass': True, 'work': str(work), 'quick': quick},\n"
        "            {'what': 'first read', 'value': None, 'target': '<= 50 ms',\n"
        "             'pass': False}]\n")
    (tmp_path / "bench_link.py").write_text("def run(**options):\n    raise OSError('boom')\n")
    monkeypatch.setattr(benchrows, "SCRIPTS", tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    seek = benchrows.run_row("seek", {"quick": True, "work": tmp_path, "timeout": 1.0})
    assert [(line.what, line.value, line.passed) for line in seek] == [
        ("median", 3.0, True), ("first read", None, False)]
    assert seek[1].note == "no figure"
    link = benchrows.run_row("link", {"quick": True})
    assert link[0].passed is False and "failed: OSError: boom" in link[0].note


def test_trivial_fs_shows_the_whole_tree(tmp_path):
    import trivialfs

    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("out/a/1.txt", b"x" * 5)
        zf.writestr("out/a/2.txt", b"")
        zf.writestr("out/b/", b"")
        zf.writestr("top.txt", b"yy")
    tree = trivialfs.Tree(archive)
    assert sorted(tree.children["/"]) == ["out", "top.txt"]
    assert sorted(tree.children["/out"]) == ["a", "b"]
    assert tree.children["/out/b"] == []
    assert tree.stats["/out/a/1.txt"]["st_size"] == 5
    fs = trivialfs.TrivialFS(tree)
    assert fs.read("/out/a/1.txt", 10, 2, 0) == bytes(3)
    assert trivialfs.TrivialFS.getxattr is None  # ENOSYS, as the mount: no call per file


@pytest.mark.slow
def test_bench_quick_produces_a_table(tmp_path):
    require_fuse()
    out = tmp_path / "bench.json"
    rows = "1,2,3,4,5,6,7,9,seek"
    result = subprocess.run([sys.executable, str(SCRIPTS / "bench.py"), "--quick",
                             "--peer", "none", "--rows", rows, "--json", str(out)],
                            capture_output=True, text=True, timeout=400, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "failed" not in result.stderr, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["quick"] is True and report["commit"]
    table = report["table"]
    assert {line["row"] for line in table} == set(rows.split(","))
    py_spy = Path(sys.executable).with_name("py-spy").exists() or shutil.which("py-spy")
    for line in table:
        if line["row"] == "seek" and line.get("storagefs_error"):
            assert line["storagefs_error"].startswith("not available")
            continue
        if "decode stage" in line["what"] and not py_spy:
            continue  # threads are named through py-spy (the bench extra)
        assert isinstance(line["storagefs"], (int, float)), line
        if line["target"]:
            assert line["pass"] in (True, False), line
        else:
            assert line["pass"] is None, line
    ls = report["results"]["storagefs"]["ls"]
    assert ls["files_listed"] == ls["expected_files"]  # the listing is complete
    assert ls["trivial"]["cold_s"] > 0 and ls["over_trivial"] > 0
    task = report["results"]["storagefs"]["task"]
    for archive in ("7zip", "stream"):
        assert task[archive]["floors"]["inflate"]["zlib-ng"]["mb_s"] > 0
        assert task[archive]["traffic"]["object_bytes"] > 0
    # The printed table: a header, then one line per figure with its target, then the notes.
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("row"))
    assert "storagefs" in lines[header] and "target" in lines[header]
    assert sum(1 for line in lines[header:] if line.rstrip().endswith(("PASS", "FAIL"))) == \
        sum(1 for line in table if line["target"] and line["pass"] is not None)
