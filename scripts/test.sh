#!/usr/bin/env bash
# Runs every test: unit tests, property tests, integration tests against
# real loopback servers (a stand-in Studio API, a stand-in Replicate host, a
# real Garage S3 server), the admin page in a real headless Chromium
# (tests/admin_ui), and the benches in test mode, first with the
# embedded SQLite database, then again with the database suites on a real
# PostgreSQL cluster (a test matrix). Installs what is missing first.
#
#   scripts/test.sh                # everything, both databases
#   scripts/test.sh --sqlite-only  # skip the Postgres pass
set -euo pipefail
cd "$(dirname "$0")/.."
postgres=yes
if [ "${1:-}" = "--sqlite-only" ]; then
  postgres=no
  shift
fi
scripts/setup.sh --with-garage
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

echo "== tests with SQLite ==" >&2
cargo test --all-targets "$@"

[ "$postgres" = yes ] || exit 0
pgdir="$(mktemp -d)"
trap 'scripts/postgres.sh stop "$pgdir"; rm -rf "$pgdir"' EXIT
PERMAPROXY_TEST_POSTGRES_URL="$(scripts/postgres.sh start "$pgdir")"
export PERMAPROXY_TEST_POSTGRES_URL
echo "== tests with PostgreSQL ($PERMAPROXY_TEST_POSTGRES_URL) ==" >&2
# The suites that keep metadata; the pure property tests and the benches
# do not touch a database and ran above.
cargo test --lib --test core --test reliability --test lifecycle --test operations \
  --test user_ids --test s3 --test webhooks --test signing --test variants --test admin_ui "$@"
