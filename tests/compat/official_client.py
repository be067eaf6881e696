"""Runs inside a virtualenv holding the official ``inductiva`` client, against our server.

Usage: python official_client.py WORKDIR. Prints one JSON object with what each call returned,
for tests/test_compat_inductiva.py to check. Any exception fails the run (exit status 1).
"""

import json
import os
import sys
from pathlib import Path

work = Path(sys.argv[1])
os.chdir(work)

from inductiva import storage  # noqa: E402  (reads INDUCTIVA_API_URL at import)

result = {}

# upload: a folder, then a single file, and an archive we later copy to output.zip
storage.upload(str(work / "upload" / "mydata"), "compat/mydata")
storage.upload(str(work / "upload" / "single.txt"), "compat")
storage.upload(str(work / "upload" / "archive.zip"), "compat/task1")
storage.copy("compat/task1/archive.zip", "compat/task1/output.zip")

listing = storage.listdir("compat", max_results=None, print_results=True)
result["listdir"] = [{"name": e["name"], "size": e["size"]} for e in listing]
recursive = storage.listdir("compat", max_results=None, recursive=True, print_results=False)
result["listdir_recursive"] = [{"name": e["name"], "size": e["size"]} for e in recursive]
result["listdir_max2"] = len(storage.listdir("compat/mydata", max_results=2, print_results=False))

zip_path = "compat/task1/output.zip"
for key, zrp, rec in [("zip_root", "", False), ("zip_artifacts", "artifacts", False),
                      ("zip_artifacts_slash", "artifacts/", False), ("zip_recursive", "", True)]:
    info = storage.get_zip_contents(zip_path, zrp, recursive=rec)
    result[key] = {"size": info.size, "files": sorted(f.name for f in info.files)}
    if key == "zip_artifacts":
        result["zip_entries"] = {f.name: [f.size, f.compressed_size, f.range_start, f.compress_type]
                                 for f in info.files}

ranges = {}
for name in ("stdout.txt", "stored.bin"):
    r = storage.storage.get_file_range(zip_path, "artifacts", name)  # not re-exported in 0.18.12
    ranges[name] = [r.range_start, r.range_end]
result["ranges"] = ranges

storage.download("compat/mydata", "dl")
result["downloaded_folder"] = sorted(str(p.relative_to(work / "dl"))
                                     for p in (work / "dl").rglob("*") if p.is_file())
storage.download("compat/task1/output.zip/stdout.txt", "dl_member")
storage.download("compat/task1/output.zip/stored.bin", "dl_member")
storage.download("compat/task1/output.zip/sub/nested.txt", "dl_member")
result["downloaded_members"] = sorted(str(p.relative_to(work / "dl_member"))
                                      for p in (work / "dl_member").rglob("*") if p.is_file())
storage.download("compat/task1/output.zip", "dl_zip")
result["downloaded_zip"] = sorted(str(p.relative_to(work / "dl_zip"))
                                  for p in (work / "dl_zip").rglob("*") if p.is_file())

result["space_used_gib"] = storage.get_space_used()
storage.remove("compat/single.txt")
storage.remove("compat/task1")
result["after_remove"] = sorted(e["name"] for e in storage.listdir("compat", print_results=False))
print("RESULT " + json.dumps(result))
