#!/usr/bin/env bash
# Runs every test: unit tests, integration tests against real loopback
# servers (stand-in Studio API, stand-in Replicate host, a real Garage S3
# server), and the benches in test mode. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --with-garage
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cargo test --all-targets "$@"
