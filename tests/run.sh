#!/usr/bin/env bash
# The whole test suite in one command, on a fresh Debian machine as root.
# Every test talks to real processes over real sockets and files; each test
# starts what it needs on free ports and stops it when done.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real peers the tests run against, from Debian, installed when missing.
missing=()
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
# Independent clients (paho-mqtt) for the Python suite.
python3 -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt

# Rust: unit, property and integration tests (this also builds the binary).
cargo test --workspace

bin="${CARGO_TARGET_DIR:-target}/debug/tidewire"

# Python: the same binary against independent clients.
TIDEWIRE_BIN="$bin" python3 -m pytest -q tests/python

# Browser: the dashboard in headless Chromium (playwright-core from npm);
# screenshots land in target/browser/.
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
TIDEWIRE_BIN="$bin" SCREENSHOT_DIR=target/browser node tests/browser/dashboard.test.mjs
