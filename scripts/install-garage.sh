#!/usr/bin/env bash
# Install the Garage S3 server used by the integration tests (scripts/garage.sh).
# Idempotent: a cargo build of garage takes several minutes, so never redo it
# when a binary is already reachable.
set -euo pipefail

# Pinned so CI and local runs exercise the same server (CLI syntax and config
# keys changed between Garage major versions).
GARAGE_VERSION="2.5.0"

if existing="$(command -v garage 2>/dev/null)"; then
  echo "install-garage: garage already on PATH at ${existing} ($("${existing}" --version 2>/dev/null | head -n1 || echo 'version unknown')); nothing to do"
  exit 0
fi
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin/garage"
if [[ -x "${cargo_bin}" ]]; then
  echo "install-garage: garage already installed at ${cargo_bin} ($("${cargo_bin}" --version 2>/dev/null | head -n1 || echo 'version unknown')); nothing to do"
  exit 0
fi

command -v cargo >/dev/null 2>&1 || { echo "install-garage: cargo not found; install a Rust toolchain first" >&2; exit 1; }
# --locked: use garage's own Cargo.lock, otherwise newer transitive crates can break the build.
# --quiet keeps CI logs short; failures still print the compiler errors.
cargo install garage --version "${GARAGE_VERSION}" --locked --quiet
echo "install-garage: installed garage ${GARAGE_VERSION} to ${cargo_bin}"
