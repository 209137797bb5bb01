#!/usr/bin/env bash
# Brings compose.yaml up with Debian's podman-compose and checks it as a team
# would use it: two replicas behind one port (nginx), Postgres, Garage (S3)
# and Prometheus with the shipped alert rules, in front of stand-ins of
# Studio API and Replicate (scripts/compose/check.yaml).
#
#   - a generate call through replica 1 is rewritten to a hosted URL;
#   - once the source has expired, replica 2 and the shared port serve the
#     image's bytes (Postgres + Garage are really shared);
#   - Prometheus scrapes both replicas as job "permaproxy" and has the rules.
#
# Images that cannot be pulled here are stood in for under the same names,
# built from Debian packages (postgres, prometheus, nginx) and from the
# binary scripts/install-garage.sh makes (garage). Grafana is neither in
# Debian nor in any registry this machine reaches: it is checked only when a
# real grafana image is present, and skipped with a line saying so otherwise.
#
#   scripts/compose-check.sh          (root; leaves nothing running)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/container/lib.sh

PROJECT=permaproxy-check
FIXTURE=tests/fixtures/photo.png
GRAFANA_IMAGE="$(awk '/image: grafana\// {print $2; exit}' compose.yaml)"
started_all=$SECONDS

ensure_tools podman-compose curl python3
scripts/container/base-images.sh

work="$(mktemp -d)"
# podman-compose calls plain podman: the settings this machine needs (runc,
# cgroupfs, the limits the sandbox allows) go through its config file.
cat >"$work/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
export CONTAINERS_CONF="$work/containers.conf"
export PERMAPROXY_PORT="${PERMAPROXY_PORT:-$(free_port)}"
export PERMAPROXY_1_PORT="$(free_port)" PERMAPROXY_2_PORT="$(free_port)"
export PROMETHEUS_PORT="$(free_port)" STAND_INS_FILES_PORT="$(free_port)"
export PUBLIC_BASE_URL="http://127.0.0.1:$PERMAPROXY_PORT"
compose=(podman-compose -p "$PROJECT" -f compose.yaml -f scripts/compose/check.yaml)

cleanup() {
  "${compose[@]}" down -v >"$work/down.log" 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  for c in permaproxy-1 permaproxy-2 lb garage postgres prometheus; do
    echo "--- ${PROJECT}_${c}_1 (tail) ---" >&2
    podman logs --tail 15 "${PROJECT}_${c}_1" >&2 2>&1 || true
  done
  die "$*"
}

# --- images ----------------------------------------------------------------
build() { # IMAGE DOCKERFILE CONTEXT
  podman build --format docker "${RUN_LIMITS[@]}" -t "$1" -f "$2" "$3" >"$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log" >&2; die "building $1 failed"; }
}
stand_in() { # IMAGE DOCKERFILE CONTEXT: only when no real image is present
  podman image exists "$1" && return 0
  say "making a stand-in for $1"
  build "$1" "$2" "$3"
}
started=$SECONDS
say "building permaproxy:local from the Dockerfile"
build permaproxy:local Dockerfile .
stand_in docker.io/library/postgres:15-bookworm scripts/compose/postgres.Dockerfile scripts/compose
stand_in docker.io/library/nginx:stable-bookworm scripts/compose/nginx.Dockerfile scripts/compose
stand_in docker.io/prom/prometheus:v2.53.4 scripts/compose/prometheus.Dockerfile scripts/compose
if ! podman image exists docker.io/dxflrs/garage:v2.5.0; then
  garage_bin="$(command -v garage 2>/dev/null || echo "${CARGO_HOME:-$HOME/.cargo}/bin/garage")"
  [ -x "$garage_bin" ] || scripts/install-garage.sh
  mkdir -p "$work/garage" && cp "$garage_bin" "$work/garage/garage"
  cp scripts/compose/garage.Dockerfile "$work/garage/Dockerfile"
  stand_in docker.io/dxflrs/garage:v2.5.0 "$work/garage/Dockerfile" "$work/garage"
fi
mkdir -p "$work/stand-ins"
cp scripts/container/stand_ins.py "$FIXTURE" "$work/stand-ins/"
build localhost/permaproxy-stand-ins:check scripts/compose/stand-ins.Dockerfile "$work/stand-ins"
say "images ready ($((SECONDS - started)) s)"

# --- up --------------------------------------------------------------------
services=(lb prometheus)
if podman image exists "$GRAFANA_IMAGE"; then
  services+=(grafana)
else
  say "grafana: $GRAFANA_IMAGE cannot be had here (not in Debian, no registry); its service is not started"
fi
"${compose[@]}" down -v >/dev/null 2>&1 || true
started=$SECONDS
"${compose[@]}" up -d "${services[@]}" >"$work/up.log" 2>&1 \
  || { tail -30 "$work/up.log" >&2; fail "podman-compose up failed"; }
lb="http://127.0.0.1:$PERMAPROXY_PORT"
r1="http://127.0.0.1:$PERMAPROXY_1_PORT"
r2="http://127.0.0.1:$PERMAPROXY_2_PORT"
for u in "$r1" "$r2" "$lb"; do
  wait_for 120 curl -fsS "$u/__permaproxy/healthz" || fail "$u/__permaproxy/healthz did not answer"
done
say "up: both replicas and the shared port answer health ($((SECONDS - started)) s)"

# --- a generate through replica 1, the image from replica 2 ----------------
hosted="$(generate_hosted "$r1" compose-user "$PUBLIC_BASE_URL" "$work/generate.json")" \
  || fail "generate through replica 1 failed or was not rewritten"
path="${hosted#"$PUBLIC_BASE_URL"}"
curl -fsS "http://127.0.0.1:$STAND_INS_FILES_PORT/expire" >/dev/null
curl -fsS -o "$work/r2.png" "$r2$path" || fail "replica 2 did not serve $path"
cmp -s "$work/r2.png" "$FIXTURE" || fail "replica 2 served other bytes for $path"
curl -fsS -o "$work/lb.png" "$hosted" || fail "the shared port did not serve $hosted"
cmp -s "$work/lb.png" "$FIXTURE" || fail "the shared port served other bytes for $hosted"
say "generate through replica 1 -> $hosted; replica 2 and the shared port serve its bytes after the source expired"

# --- Prometheus --------------------------------------------------------------
prom="http://127.0.0.1:$PROMETHEUS_PORT"
up_count() {
  curl -fsS "$prom/api/v1/query" --data-urlencode 'query=sum(up{job="permaproxy"})' \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(int(float(r[0]["value"][1])) if r else 0)'
}
both_up() { [ "$(up_count 2>/dev/null)" = 2 ]; }
wait_for 90 both_up || fail "Prometheus does not see both replicas up"
curl -fsS "$prom/api/v1/rules" | grep -q '"PermaproxyDown"' || fail "Prometheus has not loaded conf/alerts.yml"
say "Prometheus scrapes both replicas (up == 2) and has the shipped alert rules"

if [[ " ${services[*]} " == *" grafana "* ]]; then
  wait_for 120 curl -fsS "http://127.0.0.1:${GRAFANA_PORT:-3030}/api/dashboards/uid/permaproxy" \
    || fail "Grafana does not serve the provisioned dashboard"
  say "Grafana serves the provisioned dashboard"
fi

say "passed in $((SECONDS - started_all)) s"
