#!/usr/bin/env bash
# Starts permaproxy in demo mode: a stand-in Studio API and a stand-in
# Replicate file host on loopback, and a walk through the whole flow.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-build.sh
exec cargo run --release --quiet -- demo "$@"
