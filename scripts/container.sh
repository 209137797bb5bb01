#!/usr/bin/env bash
# Builds the repository's real Dockerfile with podman and runs the image as
# Railway would, against loopback stand-ins of Studio API and Replicate:
#
#   - non-root (uid 10001), PORT set, a named volume at /data/images;
#   - /__permaproxy/healthz answers on the public port, and the image's
#     HEALTHCHECK (`permaproxy health`) passes;
#   - a generate call is rewritten to a hosted URL, whose bytes are the
#     source's, byte for byte (metadata stripping off), even once the
#     source has expired;
#   - SIGTERM (`podman stop`, docker's default 10 s) stops it cleanly in time;
#   - a new container on the same volume still serves the image.
#
# It prints the build time and the image size, and exits non-zero on any
# failure. Base images that cannot be pulled are made locally first
# (scripts/container/base-images.sh). Needs root, as CI has; installs
# podman, runc, debootstrap and curl with apt-get when missing.
#
#   scripts/container.sh            build, check, leave the image (permaproxy:ci)
#   scripts/container.sh --clean    also remove the image afterwards
#
# Nothing is left running: containers, the volume and the stand-ins go at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/container/lib.sh

IMAGE=localhost/permaproxy:ci
NAME=permaproxy-ci
VOLUME=permaproxy-ci-images
FIXTURE=tests/fixtures/photo.png
# docker stop's default: SIGTERM, then SIGKILL 10 s later. The image's
# SHUTDOWN_GRACE_SECS (8) is chosen to fit inside it.
STOP_TIMEOUT=10
clean=0
[ "${1:-}" = "--clean" ] && clean=1

ensure_tools curl python3
scripts/container/base-images.sh

work="$(mktemp -d)"
stand_ins_pid=""
cleanup() {
  "${PODMAN[@]}" rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
  "${PODMAN[@]}" volume rm -f "$VOLUME" >/dev/null 2>&1 || true
  [ -n "$stand_ins_pid" ] && kill "$stand_ins_pid" 2>/dev/null && wait "$stand_ins_pid" 2>/dev/null
  [ $clean = 1 ] && "${PODMAN[@]}" rmi -f "$IMAGE" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "--- container log (tail) ---" >&2
  "${PODMAN[@]}" logs --tail 40 "$NAME" >&2 2>&1 || true
  die "$*"
}

# --- build -----------------------------------------------------------------
say "building the Dockerfile (podman build; a cold build compiles every dependency)"
started=$SECONDS
# --format docker keeps HEALTHCHECK and STOPSIGNAL (OCI image configs have no
# HEALTHCHECK field).
"${PODMAN[@]}" build --format docker "${RUN_LIMITS[@]}" -t "$IMAGE" . >"$work/build.log" 2>&1 \
  || { tail -40 "$work/build.log" >&2; die "podman build failed"; }
build_secs=$((SECONDS - started))
size_bytes="$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")"
say "build time: ${build_secs} s; image size: $((size_bytes / 1000000)) MB ($IMAGE)"

# --- stand-ins and the first container -------------------------------------
port="$(free_port)" admin="$(free_port)" studio="$(free_port)" files="$(free_port)"
python3 scripts/container/stand_ins.py "$studio" "$files" "$FIXTURE" >"$work/stand-ins.log" 2>&1 &
stand_ins_pid=$!
wait_for 10 grep -q ready "$work/stand-ins.log" || die "stand-ins did not start"

"${PODMAN[@]}" rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
"${PODMAN[@]}" volume rm -f "$VOLUME" >/dev/null 2>&1 || true
"${PODMAN[@]}" volume create "$VOLUME" >/dev/null
run_container() {
  # As Railway runs it: the image's own user, PORT injected, LISTEN_ADDR
  # left to default to 0.0.0.0:$PORT, the volume at /data/images.
  "${PODMAN[@]}" run -d --name "$NAME" "${RUN_LIMITS[@]}" \
    --user 10001:10001 \
    -v "$VOLUME:/data/images" \
    -e PORT="$port" \
    -e METRICS_ADDR="127.0.0.1:$admin" \
    -e UPSTREAM_URL="http://127.0.0.1:$studio" \
    -e REPLICATE_HOSTS="127.0.0.1:$files" \
    -e IMAGE_ALLOW_HTTP_SOURCES=true \
    -e IMAGE_STRIP_METADATA=false \
    "$IMAGE" >/dev/null
  wait_for 60 curl -fsS "http://127.0.0.1:$port/__permaproxy/healthz" \
    || fail "/__permaproxy/healthz did not answer on the public port $port"
}
run_container
say "public health answers on PORT=$port"
uid="$("${PODMAN[@]}" exec "$NAME" id -u)"
[ "$uid" = 10001 ] || fail "the server runs as uid $uid, not 10001"
"${PODMAN[@]}" healthcheck run "$NAME" || fail "the image's HEALTHCHECK failed"
say "runs as uid 10001; HEALTHCHECK (permaproxy health) passes"

# --- a generate call, rewritten and served ---------------------------------
hosted="$(generate_hosted "http://127.0.0.1:$port" ci-user "http://127.0.0.1:$port" "$work/generate.json")" \
  || fail "generate call failed or was not rewritten"
curl -fsS "http://127.0.0.1:$files/expire" >/dev/null
curl -fsS -o "$work/served.png" "$hosted" || fail "GET $hosted failed"
cmp -s "$work/served.png" "$FIXTURE" || fail "$hosted did not serve the source's bytes"
say "generate rewritten to $hosted; served byte for byte after the source expired"

# --- SIGTERM ---------------------------------------------------------------
started=$SECONDS
"${PODMAN[@]}" stop -t "$STOP_TIMEOUT" "$NAME" >/dev/null
stop_secs=$((SECONDS - started))
code="$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$NAME")"
[ "$code" = 0 ] || fail "exit code $code after SIGTERM (137 means it was killed at the ${STOP_TIMEOUT} s timeout)"
"${PODMAN[@]}" logs "$NAME" 2>&1 | grep -q "graceful stop complete" \
  || fail "no graceful stop in the log"
say "SIGTERM: exited 0 after ${stop_secs} s (kill timeout ${STOP_TIMEOUT} s)"

# --- a new container on the same volume ------------------------------------
"${PODMAN[@]}" rm "$NAME" >/dev/null
run_container
curl -fsS -o "$work/again.png" "$hosted" || fail "GET $hosted after the restart failed"
cmp -s "$work/again.png" "$FIXTURE" || fail "$hosted changed after the restart"
say "a new container on volume $VOLUME serves the same bytes"
"${PODMAN[@]}" stop -t "$STOP_TIMEOUT" "$NAME" >/dev/null

say "passed: build ${build_secs} s, image $((size_bytes / 1000000)) MB"
