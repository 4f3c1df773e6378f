#!/usr/bin/env bash
# Installs the reference tools that `peershare-bench --refs` compares peershare with
# (docs/PERFORMANCE.md, "Compared with other tools") into one cache directory:
#
#   $CACHE/bin/sendme                         sendme, from crates.io (cargo install --locked)
#   $CACHE/venv/bin/wormhole                  magic-wormhole, from PyPI, in a venv
#   $CACHE/venv/bin/twist                     the local mailbox and transit relay servers
#                                             (magic-wormhole-mailbox-server,
#                                             magic-wormhole-transit-relay)
#
# Usage: tools/install_refs.sh [CACHE]   (default: $PEERSHARE_REFS or ~/.cache/peershare-refs)
#
# Idempotent: a tool that is already there is left alone (delete the directory, or set
# FORCE=1, to reinstall). Optional for the project: CI does not run it (sendme takes
# several minutes to build on 2 cores); the bench skips the reference rows without it.
set -euo pipefail

CACHE="${1:-${PEERSHARE_REFS:-$HOME/.cache/peershare-refs}}"
SENDME_VERSION="${SENDME_VERSION:-0.37.1}"
WORMHOLE_VERSION="${WORMHOLE_VERSION:-0.24.0}"
MAILBOX_VERSION="${MAILBOX_VERSION:-0.8.0}"
TRANSIT_VERSION="${TRANSIT_VERSION:-0.5.0}"
mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"

if [ -x "$CACHE/bin/sendme" ] && [ "${FORCE:-0}" != 1 ]; then
    echo "sendme: already installed ($("$CACHE/bin/sendme" --version 2>/dev/null || echo '?'))"
else
    echo "sendme: cargo install sendme@$SENDME_VERSION --locked (several minutes) …"
    # A target directory of its own inside the cache, so that the project's target/ is
    # not touched; removed once the binary is installed.
    CARGO_TARGET_DIR="$CACHE/build" cargo install "sendme@$SENDME_VERSION" --locked \
        --root "$CACHE" ${FORCE:+--force}
    rm -rf "$CACHE/build"
fi

if [ -x "$CACHE/venv/bin/wormhole" ] && [ -x "$CACHE/venv/bin/twist" ] \
    && "$CACHE/venv/bin/python" -c 'import wormhole_mailbox_server, wormhole_transit_relay' \
        >/dev/null 2>&1 && [ "${FORCE:-0}" != 1 ]; then
    echo "magic-wormhole: already installed ($("$CACHE/venv/bin/wormhole" --version 2>/dev/null || echo '?'))"
else
    echo "magic-wormhole: venv and pip install …"
    [ -x "$CACHE/venv/bin/python" ] || python3 -m venv "$CACHE/venv"
    "$CACHE/venv/bin/python" -m pip install --quiet --upgrade pip
    "$CACHE/venv/bin/python" -m pip install --quiet \
        "magic-wormhole==$WORMHOLE_VERSION" \
        "magic-wormhole-mailbox-server==$MAILBOX_VERSION" \
        "magic-wormhole-transit-relay==$TRANSIT_VERSION"
fi

echo "reference tools in $CACHE:"
echo "  sendme:   $CACHE/bin/sendme"
echo "  wormhole: $CACHE/venv/bin/wormhole (servers: $CACHE/venv/bin/twist)"
