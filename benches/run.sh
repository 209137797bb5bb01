#!/usr/bin/env bash
# One-command load benchmark: permaproxy vs nginx (issue 6).
#
#   benches/run.sh              3 runs x 10 s per side, all rows (about 10 minutes)
#   benches/run.sh --quick      1 run x 3 s per side
#   benches/run.sh --nginx-only measure nginx only (no permaproxy build needed)
#   benches/run.sh --no-build   use the existing target/release/permaproxy
#   benches/run.sh --help       all harness options (--only, --workers, --runs, ...)
#
# A full run first waits (up to 15 minutes, polling every 30 s) for the 1-minute
# load average to drop below 1.5 (--max-load, --load-wait), and records the
# load next to the results: on a shared machine other work skews req/s.
#
# Installs nginx and wrk with apt-get when missing, builds the release binary,
# then runs benches/harness.py (Python 3 stdlib only). The table is printed and
# written to benches/results/latest.md.
#
# Besides the nginx comparison (issue 16): the 10 MB x100 rows also run a
# per-client probe (bytes each of 100 independent clients got, max/min), the
# "access log cost" row runs permaproxy against itself at RUST_LOG=info and
# warn, and the generation rows report peak RSS against 96 MB.
# A/B of two binaries on one row: python3 benches/ab.py OLD NEW --scenario NAME.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
args=()
for a in "$@"; do
  case "$a" in
    --no-build) build=0 ;;
    --nginx-only) build=0; args+=("$a") ;;
    -h|--help) build=0; args+=("$a") ;;
    *) args+=("$a") ;;
  esac
done

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

missing=()
have nginx || missing+=(nginx-light)
have wrk || missing+=(wrk)
# Pingora's build compiles zlib-ng from source and needs cmake.
[ "$build" -eq 0 ] || have cmake || missing+=(cmake)
if [ ${#missing[@]} -gt 0 ]; then
  echo "run.sh: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # nginx's package may start a system nginx on :80; the harness never uses it.
  $sudo apt-get install -y -qq "${missing[@]}" >&2
fi
command -v python3 >/dev/null || { echo "run.sh: python3 is required" >&2; exit 2; }

if [ "$build" -eq 1 ]; then
  echo "run.sh: cargo build --release" >&2
  cargo build --release >&2
fi

exec python3 benches/harness.py ${args[@]+"${args[@]}"}
