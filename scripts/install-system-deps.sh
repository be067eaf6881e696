#!/usr/bin/env bash
# Installs the Debian packages storagefs and its tests use, only when something is missing:
# FUSE (fusermount and libfuse.so.2 for fusepy), zip/unzip and 7-Zip (7zz, Debian's 7zip) to build
# test archives and the bench's task-runner archives (unzip -p is also the bench's floor), sqlite3
# and rsync (writers of the read-write mount tests).
# With --bench: also what the server row of scripts/bench.py uses, ab (apache2-utils) and nginx.
set -euo pipefail

missing=()
if [ "${1:-}" = "--bench" ]; then
    command -v ab >/dev/null 2>&1 || missing+=(apache2-utils)
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
fi
command -v fusermount3 >/dev/null 2>&1 || missing+=(fuse3)
ldconfig -p 2>/dev/null | grep -q 'libfuse\.so\.2' || missing+=(libfuse2)
command -v zip >/dev/null 2>&1 || missing+=(zip)
command -v unzip >/dev/null 2>&1 || missing+=(unzip)
command -v 7zz >/dev/null 2>&1 || missing+=(7zip)
command -v sqlite3 >/dev/null 2>&1 || missing+=(sqlite3)
command -v rsync >/dev/null 2>&1 || missing+=(rsync)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "Installing Debian packages: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=sudo
    else
        echo "error: need root to install ${missing[*]} (run: apt-get install ${missing[*]})" >&2
        exit 1
    fi
else
    SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# libfuse2 is named libfuse2t64 on newer Debian releases.
if ! $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null; then
    fallback=("${missing[@]/libfuse2/libfuse2t64}")
    $SUDO apt-get install -y -qq "${fallback[@]}" >/dev/null
fi
