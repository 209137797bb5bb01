# Shared by scripts/container.sh and scripts/compose-check.sh.
# shellcheck shell=bash

say() { echo "${0##*/}: $*" >&2; }
die() { echo "${0##*/}: error: $*" >&2; exit 1; }

# Debian's podman on these machines: crun refuses (cgroups in hybrid mode),
# runc works; the cgroupfs manager needs no systemd session.
PODMAN=(podman --runtime runc --cgroup-manager=cgroupfs)
# The sandbox refuses to raise limits above these, and has no bridge network.
RUN_LIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096 --network host)

# `rust:X.Y-bookworm` as the Dockerfile's builder stage names it.
dockerfile_rust_tag() {
  awk 'toupper($1) == "FROM" && $2 ~ /^rust:/ {print $2; exit}' Dockerfile
}

# Installs podman, runc and debootstrap with apt-get when missing (CI runs as
# root on a fresh Debian).
ensure_tools() {
  local missing=() p
  for p in podman runc debootstrap "$@"; do
    command -v "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "needs root to install ${missing[*]} (and to run podman as CI does)"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# A loopback TCP port free right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Polls CMD... until it succeeds or SECONDS_ elapse; returns 1 on timeout.
wait_for() { # SECONDS_ CMD...
  local limit=$(( SECONDS + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $limit ] || return 1
    sleep 0.2
  done
}

# POSTs a generate call to the proxy at BASE as USER (the stand-in Studio API
# answers with a Replicate URL); checks the answer's first output was
# rewritten to a URL under HOSTED_BASE and prints it. The answer is kept in
# JSON_OUT for error messages.
generate_hosted() { # BASE USER HOSTED_BASE JSON_OUT
  local url
  curl -fsS -X POST -H 'content-type: application/json' -H "x-user-id: $2" \
    -d '{"prompt":"a photo"}' "$1/v1/images/generate" >"$4" || return 1
  url="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["output"][0])' "$4")" || return 1
  case "$url" in
    "$3/"*) echo "$url" ;;
    *) echo "not rewritten to a hosted URL: $(cat "$4")" >&2; return 1 ;;
  esac
}
