#!/usr/bin/env bash
# One-command benchmark of the metadata database (issue 12).
#
#   benches/db.sh              10k, 100k and 1M rows on SQLite and Postgres
#                              (start-up, RSS, GET on a memory miss, generate
#                              overhead), then the bucket requests of an idle
#                              replica against the previous release (16a30fb)
#                              and the first start on an old 10k-image store
#   benches/db.sh --quick      10k and 100k rows, 3 starts, one 3 s GET run,
#                              a 130 s idle window
#   benches/db.sh --no-build   use the existing target/release/permaproxy
#   benches/db.sh --old-bin P  use P as the 16a30fb build instead of building
#                              one under target/dbbench-old/
#   benches/db.sh --help       every option of benches/db/bench.py
#
# Installs wrk, PostgreSQL (server and psql) and cmake with apt-get when they
# are missing, and Garage with scripts/install-garage.sh (several minutes,
# once). Builds this version and 16a30fb in release mode (16a30fb from
# `git archive` into target/dbbench-old/, kept as a build cache). A full run
# waits (up to 15 minutes) for the 1-minute load to fall below --max-load.
# Postgres (scripts/postgres.sh) and Garage (scripts/garage.sh) run in a temp
# dir that is removed at the end, with everything else the run started.
# The report is printed and written to benches/results/db-latest.md (raw
# numbers in db-latest.json).
set -euo pipefail
cd "$(dirname "$0")/.."

OLD_REV=16a30fb
# The report names the command as given (bench.py only sees what is passed on).
export DBBENCH_COMMAND="benches/db.sh${*:+ $*}"
build=1
old_bin=""
max_load=1.5
quick=0
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0 ;;
    --old-bin) old_bin="$2"; shift ;;
    --max-load) max_load="$2"; shift ;;
    --quick) quick=1; args+=("$1") ;;
    -h|--help) exec python3 benches/db/bench.py --help ;;
    *) args+=("$1") ;;
  esac
  shift
done

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

missing=()
have wrk || missing+=(wrk)
have psql || missing+=(postgresql-client)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
have cmake || missing+=(cmake)
if [ ${#missing[@]} -gt 0 ]; then
  echo "db.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # The postgresql package may start a system cluster on :5432; the
  # benchmark never uses it (scripts/postgres.sh makes its own).
  $sudo apt-get install -y -qq "${missing[@]}" >&2
fi
command -v python3 >/dev/null || { echo "db.sh: python3 is required" >&2; exit 2; }
scripts/install-garage.sh >&2

if [ "$build" -eq 1 ]; then
  echo "db.sh: cargo build --release" >&2
  cargo build --release >&2
fi

if [ -z "$old_bin" ]; then
  old_dir="target/dbbench-old"
  old_bin="$old_dir/target/release/permaproxy"
  if [ ! -x "$old_bin" ]; then
    echo "db.sh: building the previous release $OLD_REV in $old_dir (once)" >&2
    rm -rf "$old_dir/src-tree"
    mkdir -p "$old_dir/src-tree"
    git archive "$OLD_REV" | tar -x -C "$old_dir/src-tree"
    (cd "$old_dir/src-tree" && CARGO_TARGET_DIR="$PWD/../target" cargo build --release >&2)
  fi
fi

# A shared machine skews every wall-clock number: wait for a calm moment
# (quick runs do not wait), and let the report say what the load was.
if [ "$quick" -eq 0 ]; then
  deadline=$((SECONDS + 900))
  while awk -v max="$max_load" '{ exit !($1 > max) }' /proc/loadavg && [ $SECONDS -lt $deadline ]; do
    echo "db.sh: load average $(cut -d' ' -f1-3 /proc/loadavg) is above $max_load; waiting" >&2
    sleep 30
  done
fi

exec python3 benches/db/bench.py --old-bin "$old_bin" ${args[@]+"${args[@]}"}
