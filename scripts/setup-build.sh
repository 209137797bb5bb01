#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build permaproxy, and nothing
# more: cmake and pkg-config (Pingora builds zlib-ng from source), nasm
# (rav1e's assembly, for AVIF variants: about 3x faster encodes) and a C
# toolchain. A Rust toolchain is assumed (rustup.rs). scripts/demo.sh runs
# this; scripts/setup.sh runs it before installing what the tests need.
# Idempotent and quiet when everything is already there.
set -euo pipefail
# shellcheck source=lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v nasm >/dev/null 2>&1 || missing+=(nasm)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
apt_install setup-build "${missing[@]}"
