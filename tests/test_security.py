"""What the server and the mount refuse, beyond test_server's route-by-route checks.

- Every storage path parameter of every route, given ``..`` (raw or percent-encoded), an
  absolute path, or a symlink out of the root, is refused or stays inside the root; nothing
  outside is read, listed, copied in or deleted.
- A hypothesis run over the server's own OpenAPI description: every operation with hostile and
  random parameters answers with a status below 500 and a JSON ``detail`` on errors.
- Upload from URL refuses loopback, private, link-local and disguised local addresses.
- A mount is private to the user who made it unless ``-o allow_other`` is given.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import zipfile
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mountharness import force_unmount, require_fuse, storagefs
from serverharness import start_server

KEY = "test-key.123"
MARKER = "TOP-SECRET-CONTENT"
NOBODY = 65534


# -- traversal in every path parameter ----------------------------------------------------------

# (method, route, the parameter that names a storage path, other parameters)
PATH_PARAMETERS = [
    ("GET", "/storage/contents", "path", {}),
    ("GET", "/storage/contents/paginated", "path", {}),
    ("GET", "/storage/zip-contents", "path", {}),
    ("GET", "/storage/zip-file-range", "path", {"filename": "a.txt"}),
    ("GET", "/storage/signed-urls", "paths", {"operation": "download"}),
    ("GET", "/storage/signed-urls", "paths", {"operation": "upload"}),
    ("DELETE", "/storage/", "path", {}),
    ("POST", "/storage/copy", "source", {"target": "copied"}),
    ("POST", "/storage/copy", "target", {"source": "inside/a.txt"}),
]


@pytest.fixture(scope="module")
def jail(tmp_path_factory):
    """A server whose root has an archive, a file, and symlinks to a folder outside it."""
    base = tmp_path_factory.mktemp("jail")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(MARKER)
    with zipfile.ZipFile(outside / "secret.zip", "w") as zf:
        zf.writestr("a.txt", MARKER)
        zf.writestr("hidden-member-name.txt", "x")
    root = base / "root"
    (root / "inside").mkdir(parents=True)
    (root / "inside" / "a.txt").write_text("inside")
    (root / "link-dir").symlink_to(outside)
    (root / "inside" / "link.txt").symlink_to(outside / "secret.txt")
    (root / "inside" / "link.zip").symlink_to(outside / "secret.zip")
    server = start_server(root, base)
    yield server, outside
    server.stop()
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt", "secret.zip"]
    assert (outside / "secret.txt").read_text() == MARKER


HOSTILE_PATHS = {
    "dotdot": "../outside/secret.txt",
    "dotdot-deep": "inside/../../outside/secret.txt",
    "dotdot-folder": "..",
    "absolute": "/etc/passwd",
    "symlink-file": "inside/link.txt",
    "symlink-dir": "link-dir/secret.txt",
    "symlink-dir-itself": "link-dir",
    "symlink-zip": "inside/link.zip",
    "nul": "inside/a.txt\x00../../x",
    "backslash": "..\\outside\\secret.txt",
}


@pytest.mark.parametrize("method,route,param,others", PATH_PARAMETERS,
                         ids=[f"{m} {r} {p}" for m, r, p, o in PATH_PARAMETERS])
@pytest.mark.parametrize("how", ["raw", "encoded"])
def test_no_path_parameter_leaves_the_root(jail, method, route, param, others, how, figures):
    server, outside = jail
    for label, path in HOSTILE_PATHS.items():
        if how == "raw":
            query = {**others, param: path}
            response = requests.request(method, server.url + route, params=query,
                                        headers={"X-API-Key": KEY}, timeout=30)
        else:  # every byte of the path percent-encoded, dots and slashes included
            encoded = "".join(f"%{b:02X}" for b in path.encode())
            rest = "&".join(f"{k}={quote(v, safe='')}" for k, v in others.items())
            url = f"{server.url}{route}?{param}={encoded}" + (f"&{rest}" if rest else "")
            response = requests.request(method, url, headers={"X-API-Key": KEY}, timeout=30)
        figures["hostile path parameters tried (server)"] += 1
        assert response.status_code < 500, (label, response.status_code, response.text)
        body = response.text
        assert MARKER not in body and "hidden-member-name" not in body, (label, body[:300])
        if response.status_code >= 400:
            assert "detail" in response.json()
        elif label == "backslash" or label == "absolute":
            continue  # a legal name inside the root ('..\\outside\\...', 'etc/passwd')
        else:
            # only the harmless readings succeed: a listing of nothing outside the root
            assert method == "GET" and "contents" in route, (label, response.status_code, body)
    assert (outside / "secret.txt").read_text() == MARKER
    assert not (server.root / "copied").exists() or \
        (server.root / "copied").read_text() == "inside"


def test_upload_from_url_target_stays_in_the_root(make_server, tmp_path):
    """The URL is checked first, so the target path is tried on a server that allows
    private URLs (the fetch goes to a closed port on 127.0.0.1)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    srv = make_server("--allow-private-urls")
    (srv.root / "link-dir").symlink_to(outside)
    (srv.root / "inside").mkdir()
    (srv.root / "inside" / "link.txt").symlink_to(outside / "secret.txt")
    (srv.root / "inside" / "link.zip").symlink_to(outside / "secret.zip")
    for label, path in HOSTILE_PATHS.items():
        response = requests.post(srv.url + "/storage/input_remote", timeout=30,
                                 params={"url": "http://127.0.0.1:9/x", "path": path},
                                 headers={"X-API-Key": KEY})
        assert response.status_code < 500, (label, response.text)
        if label not in ("absolute", "backslash"):
            assert response.status_code in (400, 403, 404, 409), (label, response.text)
    assert list(outside.iterdir()) == []  # the links' targets were never created


def test_signed_urls_never_serve_through_a_symlink(jail):
    server, _ = jail
    for path in ("inside/link.txt", "link-dir/secret.txt", "inside/link.zip"):
        url = f"{server.url}/-/{quote(path)}?op=download&expires=9999999999&sig=" + "0" * 64
        response = requests.get(url, timeout=10)
        assert response.status_code == 403 and MARKER not in response.text


def test_signature_with_non_ascii_characters_is_refused_not_a_crash(jail):
    """Found by the fuzzer below: hmac.compare_digest raised TypeError, answered 500."""
    server, _ = jail
    for sig in ("\x80", "é" * 64, "%ED%A0%80"):
        response = requests.get(f"{server.url}/-/inside/a.txt",
                                params={"op": "download", "expires": "9999999999", "sig": sig},
                                timeout=10)
        assert response.status_code == 403, response.text


# -- the server's OpenAPI, fuzzed --------------------------------------------------------------

HOSTILE_TEXT = st.sampled_from([
    "", "/", "..", "../..", "a/../../b", "%2e%2e/%2e%2e", "/etc/passwd", "\x00", "a\x00b",
    "\\..\\..\\x", "a//b", "./.", "inside/a.txt", "inside/link.zip", "link-dir", "x.zip",
    "é日本", "\ud800".encode("utf-8", "surrogatepass").decode("latin-1"), "a" * 5000,
    "-1", "0", "99999999999999999999999", "true", "null", "[]", "{}", "%", "%%", "%ZZ",
    "http://127.0.0.1:9/x", "file:///etc/passwd", "http://[::1]/", "gopher://x",
])
ANY_TEXT = st.one_of(HOSTILE_TEXT, st.text(max_size=40))


def _value(schema: dict):
    kinds = schema.get("anyOf") or [schema]
    strategies = []
    for kind in kinds:
        typ = kind.get("type")
        if "enum" in kind:
            strategies.append(st.sampled_from(kind["enum"]))
        if typ == "integer":
            strategies.append(st.integers(-2**70, 2**70).map(str))
        elif typ == "boolean":
            strategies.append(st.sampled_from(["true", "false", "TRUE", "1", "yes", "maybe"]))
        elif typ == "array":
            strategies.append(st.lists(ANY_TEXT, max_size=4))
    strategies.append(ANY_TEXT)
    return st.one_of(strategies)


def _json_body(schema_ref: dict | None, components: dict):
    junk = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                        lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
    if not schema_ref:
        return junk
    name = schema_ref.get("$ref", "").rsplit("/", 1)[-1]
    props = components.get(name, {}).get("properties", {})
    plausible = st.fixed_dictionaries({key: st.one_of(junk, ANY_TEXT, st.integers(-5, 10**12))
                                       for key in props})
    return st.one_of(plausible, junk)


@pytest.fixture(scope="module")
def openapi(jail):
    server, _ = jail
    spec = requests.get(server.url + "/openapi.json", timeout=10).json()
    operations = []
    for route, methods in spec["paths"].items():
        for method, op in methods.items():
            operations.append((method.upper(), route, op))
    assert len(operations) >= 18
    return spec, operations


def test_openapi_operations_never_answer_5xx(jail, openapi, figures):
    server, _ = jail
    spec, operations = openapi
    components = spec.get("components", {}).get("schemas", {})
    tried = {"n": 0}

    @st.composite
    def requests_for(draw):
        method, route, op = draw(st.sampled_from(operations))
        params, path = {}, route
        for parameter in op.get("parameters", []):
            if parameter["in"] == "header":
                continue
            value = draw(_value(parameter.get("schema", {})))
            if parameter["in"] == "path":
                path = path.replace("{" + parameter["name"] + "}", quote(str(value), safe=""))
            elif draw(st.integers(0, 9)) > 0:  # sometimes a parameter is left out
                params[parameter["name"]] = value
        if draw(st.booleans()):
            params[draw(st.sampled_from(["extra", "path", "page"]))] = draw(ANY_TEXT)
        body = None
        if "requestBody" in op:
            content = op["requestBody"].get("content", {}).get("application/json", {})
            body = draw(_json_body(content.get("schema"), components))
        return method, path, params, body

    @settings(max_examples=400, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(requests_for())
    def run(request):
        method, path, params, body = request
        response = requests.request(method, server.url + path, params=params, json=body,
                                    headers={"X-API-Key": KEY}, timeout=30,
                                    allow_redirects=False)
        tried["n"] += 1
        assert response.status_code < 500, (method, path, params, body, response.text[:500])
        if response.status_code >= 400 and method != "HEAD":
            assert "detail" in response.json(), response.text[:300]

    run()
    figures["OpenAPI requests fuzzed, none answered 5xx (server)"] += tried["n"]


def test_object_urls_fuzzed_never_answer_5xx(jail, figures):
    server, _ = jail
    count = 0

    @settings(max_examples=150, deadline=None, database=None)
    @given(st.text(max_size=30), st.sampled_from(["download", "upload", "", "x"]),
           st.one_of(st.integers(-2**70, 2**70).map(str), ANY_TEXT),
           st.one_of(st.text(alphabet="0123456789abcdef", max_size=70), ANY_TEXT),
           st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE"]))
    def run(path, op, expires, sig, method):
        nonlocal count
        url = f"{server.url}/-/{quote(path)}"
        response = requests.request(method, url, params={"op": op, "expires": expires,
                                                         "sig": sig}, data=b"x", timeout=30)
        count += 1
        assert response.status_code < 500, (method, path, response.text[:300])
        assert not 200 <= response.status_code < 300, (method, path)  # no valid signature

    run()
    figures["signed-URL requests fuzzed, none answered 5xx (server)"] += count


# -- upload from URL: no way to the inside --------------------------------------------------------

@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x", "http://127.1/x", "http://2130706433/x", "http://0x7f000001/x",
    "http://0.0.0.0/x", "http://localhost/x", "http://[::1]/x", "http://[::ffff:127.0.0.1]/x",
    "http://10.0.0.1/x", "http://172.16.5.4/x", "http://192.168.1.1/x",
    "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/x", "http://100.64.0.1/x",
])
def test_upload_from_url_cannot_reach_inside_addresses(server, url, unique):
    r = requests.post(server.url + "/storage/input_remote",
                      params={"url": url, "path": f"{unique}/x"}, headers={"X-API-Key": KEY},
                      timeout=30)
    assert r.status_code in (400, 403), (url, r.status_code, r.text)
    assert not (server.root / unique / "x").exists()


# -- a mount is its user's ------------------------------------------------------------------------

def _as_nobody(*cmd: str) -> subprocess.CompletedProcess:
    def drop() -> None:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    return subprocess.run(list(cmd), capture_output=True, text=True, errors="replace",
                          timeout=30, preexec_fn=drop)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_mount_is_private_unless_allow_other(server, unique, figures):
    require_fuse()
    (server.root / unique).mkdir(parents=True, exist_ok=True)
    (server.root / unique / "f.txt").write_bytes(b"for my eyes\n")
    base = Path(tempfile.mkdtemp(prefix="storagefs-private-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)  # others can reach the mount point, not necessarily inside
        for allow_other in (False, True):
            mountpoint = base / f"m{int(allow_other)}"
            mountpoint.mkdir()
            extra = ["-o", "allow_other"] if allow_other else []
            result = storagefs("mount", str(mountpoint), "--api-url", server.url,
                               "--api-key", server.api_key, *extra)
            assert result.returncode == 0, result.stderr
            try:
                target = mountpoint / unique / "f.txt"
                assert target.read_bytes() == b"for my eyes\n"  # the owner reads
                listing = _as_nobody("ls", str(mountpoint))
                reading = _as_nobody("cat", str(target))
                if allow_other:
                    assert reading.returncode == 0 and reading.stdout == "for my eyes\n"
                    assert unique in listing.stdout
                else:
                    assert listing.returncode != 0 and "Permission denied" in listing.stderr
                    assert reading.returncode != 0 and "Permission denied" in reading.stderr
                    figures["other users refused by a private mount"] += 2
            finally:
                force_unmount(mountpoint)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_mount_shows_files_read_only(server, unique):
    """Mode bits say what the mount allows: nobody may write, whatever -o umask says."""
    require_fuse()
    (server.root / unique).mkdir(parents=True, exist_ok=True)
    (server.root / unique / "f.txt").write_bytes(b"x")
    base = Path(tempfile.mkdtemp(prefix="storagefs-ro-"))
    try:
        result = storagefs("mount", str(base), "--api-url", server.url, "--api-key",
                           server.api_key)
        assert result.returncode == 0, result.stderr
        try:
            mode = os.stat(base / unique / "f.txt").st_mode
            assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
            options = [line.split()[3] for line in Path("/proc/mounts").read_text().splitlines()
                       if line.split()[1] == str(base)]
            assert options and "ro" in options[0].split(","), options
        finally:
            force_unmount(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_disk_cache_is_private(server, unique, tmp_path, figures):
    """What a private mount fetched must not be readable, or replaceable, by other users
    through its --cache-dir."""
    require_fuse()
    (server.root / unique).mkdir(parents=True, exist_ok=True)
    (server.root / unique / "f.txt").write_bytes(b"cached secret\n" * 1000)
    base = Path(tempfile.mkdtemp(prefix="storagefs-cache-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        cache, mountpoint = base / "cache", base / "mnt"
        cache.mkdir(mode=0o755)  # as `mkdir` leaves it
        mountpoint.mkdir()
        result = storagefs("mount", str(mountpoint), "--api-url", server.url, "--api-key",
                           server.api_key, "--cache-dir", str(cache))
        assert result.returncode == 0, result.stderr
        try:
            assert (mountpoint / unique / "f.txt").read_bytes() == b"cached secret\n" * 1000
        finally:
            force_unmount(mountpoint)
        cached = [p for p in cache.rglob("*") if p.is_file()]
        assert cached, "nothing was written to the cache folder"
        assert not os.stat(cache).st_mode & 0o077, oct(os.stat(cache).st_mode)
        for path in cached:
            reading = _as_nobody("cat", str(path))
            assert reading.returncode != 0 and "cached secret" not in reading.stdout
        listing = _as_nobody("ls", "-R", str(cache))
        assert listing.returncode != 0
        figures["cache files kept from other users"] += len(cached)

        # A cache folder that belongs to someone else is refused, not used.
        foreign = base / "foreign"
        foreign.mkdir(mode=0o777)
        os.chown(foreign, NOBODY, NOBODY)
        result = storagefs("mount", str(mountpoint), "--api-url", server.url, "--api-key",
                           server.api_key, "--cache-dir", str(foreign))
        try:
            assert result.returncode == 1, result.stderr
            assert "cache folder" in result.stderr and len(result.stderr.splitlines()) == 1
        finally:
            force_unmount(mountpoint)
    finally:
        shutil.rmtree(base, ignore_errors=True)
