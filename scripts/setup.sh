#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test permaproxy:
# the build dependencies (scripts/setup-build.sh, all the demo needs), then
# PostgreSQL (the database suites run against a throwaway cluster, see
# scripts/postgres.sh), Debian's Chromium with a font and playwright-core (the
# admin page's browser test, tests/admin_ui) and, with --with-garage, the
# Garage S3 server used by the S3 tests. Idempotent and quiet when everything
# is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/apt.sh
. scripts/lib/apt.sh

scripts/setup-build.sh

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
# The admin page's browser test drives Debian's Chromium (never a browser
# downloaded by a test tool) through playwright-core, run by node (>= 20).
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
apt_install setup "${missing[@]}"

# playwright-core, pinned by tests/admin_ui/package-lock.json. It downloads no
# browser: the test points it at /usr/bin/chromium.
if [ ! -f tests/admin_ui/node_modules/playwright-core/package.json ]; then
  echo "setup: installing playwright-core for tests/admin_ui" >&2
  (cd tests/admin_ui && npm ci --no-audit --no-fund --loglevel=error)
fi

if [ "${1:-}" = "--with-garage" ]; then
  scripts/install-garage.sh
fi
