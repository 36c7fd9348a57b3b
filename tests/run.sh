#!/usr/bin/env bash
# The whole test suite in one command, on a fresh Debian machine as root.
# Every test talks to real processes over real sockets and files; each test
# starts what it needs on free ports and stops it when done.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --locked
