#!/usr/bin/env bash
# One-node Garage S3 server for integration tests and CI.
#
#   garage.sh up    DIR   fresh instance: config, bucket "images", key, DIR/env
#   garage.sh stop  DIR   stop the server but keep everything (outage tests)
#   garage.sh start DIR   restart a stopped instance on the same ports, same data/key
#   garage.sh down  DIR   stop for good (idempotent, fine to call from a trap)
#   garage.sh status DIR  exit 0 if running
#
# All state lives under DIR, so parallel test runs just use different DIRs.
# Needs only bash, coreutils, python3 (stdlib) and the garage binary
# (GARAGE_BIN, PATH or ~/.cargo/bin; see scripts/install-garage.sh).
set -euo pipefail

BUCKET="images"
REGION="garage"
KEY_NAME="permaproxy-test"
# Generous but well inside the 30 s budget; a healthy node is ready in ~1-2 s.
READY_TIMEOUT_S=20
STOP_TIMEOUT_S=10

die() { echo "garage.sh: error: $*" >&2; exit 1; }
say() { echo "garage.sh: $*" >&2; }

usage() {
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

find_garage() {
  if [[ -n "${GARAGE_BIN:-}" ]]; then
    [[ -x "${GARAGE_BIN}" ]] || die "GARAGE_BIN=${GARAGE_BIN} is not executable"
    echo "${GARAGE_BIN}"; return
  fi
  if command -v garage >/dev/null 2>&1; then command -v garage; return; fi
  local c="${CARGO_HOME:-$HOME/.cargo}/bin/garage"
  [[ -x "$c" ]] && { echo "$c"; return; }
  die "garage binary not found (set GARAGE_BIN, or run scripts/install-garage.sh)"
}

# Absolute paths so every call is independent of the caller's cwd, and so the
# pid check below can match the exact config path on the server's cmdline.
resolve_dir() {
  local d="$1" create="$2"
  # Checked before mkdir too, so a rejected path leaves nothing behind.
  [[ "$d" =~ ^[A-Za-z0-9._/+@:-]+$ ]] || die "DIR path '$d' contains characters unsafe for DIR/env; pick a plain path"
  if [[ "$create" == yes ]]; then mkdir -p -- "$d" || die "cannot create $d"; fi
  [[ -d "$d" ]] || die "$d does not exist (did you run 'garage.sh up $d'?)"
  d="$(cd -- "$d" && pwd -P)"
  # DIR/env is meant to be sourced by shells and read by simple KEY=VALUE
  # parsers, so refuse paths that would need quoting there.
  [[ "$d" =~ ^[A-Za-z0-9._/+@:-]+$ ]] || die "DIR path '$d' contains characters unsafe for DIR/env; pick a plain path"
  echo "$d"
}

# Loopback ports the kernel says are free right now. All sockets stay bound
# until every port is chosen so the three are distinct.
pick_ports() {
  python3 - <<'PY'
import socket
socks = []
for _ in range(3):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

port_free() {
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # same rule the server uses
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
}

# True only if PID is alive (not a zombie) AND is a garage server for this
# config: guards against pid reuse, so we never signal an unrelated process.
is_our_server() {
  local pid="$1" cfg="$2"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  local state
  state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
  [[ "$state" != Z && -n "$state" ]] || return 1
  local cmdline
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *" -c $cfg server"* ]]
}

read_pid() { [[ -f "$1/garage.pid" ]] && cat "$1/garage.pid" || true; }

# Garage CLI talks to the local node over RPC; bounded so a wedged node
# cannot hang a CI job.
gcli() { timeout 10 "$GARAGE" -c "$CFG" "$@"; }

start_server() {
  local dir="$1"
  # stdin/stdout/stderr redirected so a caller capturing our output (e.g.
  # $(garage.sh up ...) or Command::output()) is not kept waiting on a pipe
  # the long-lived server inherited. Deliberately not setsid'd: a Ctrl-C on
  # the test run then also stops the server instead of leaking it.
  NO_COLOR=1 RUST_LOG="${RUST_LOG:-garage=info}" "$GARAGE" -c "$CFG" server \
    </dev/null >>"$dir/garage.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$dir/garage.pid"
  echo "$pid"
}

# Poll until the node's RPC answers (the CLI needs it for every admin step).
# `node id` alone is not enough: it succeeds as soon as the node key file
# exists, before the RPC listener is bound; `status` needs the listener.
wait_rpc() {
  local dir="$1" pid="$2" deadline=$((SECONDS + READY_TIMEOUT_S))
  while ! { gcli node id -q && gcli status; } >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "garage server exited during startup; last log lines:"
      tail -n 20 "$dir/garage.log" >&2 || true
      return 1
    fi
    (( SECONDS < deadline )) || { say "RPC not ready after ${READY_TIMEOUT_S}s; log: $dir/garage.log"; return 1; }
    sleep 0.2
  done
}

# A signed ListObjectsV2 on the bucket: proves the S3 listener, layout, bucket
# and key grants all work, not merely that the port is open (right after
# start, Garage can answer 500/503 while the layout/quorum settles).
s3_probe() {  # s3_probe ENDPOINT KEY_ID SECRET -> exit 0 on HTTP 200
  python3 - "$@" "$BUCKET" "$REGION" <<'PY'
import datetime, hashlib, hmac, sys, urllib.request, urllib.error
endpoint, key_id, secret, bucket, region = sys.argv[1:6]
host = endpoint.split("://", 1)[1]
now = datetime.datetime.now(datetime.timezone.utc)
amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
query = "list-type=2&max-keys=1"
payload = hashlib.sha256(b"").hexdigest()
headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
signed = ";".join(sorted(headers))
canonical = "\n".join(["GET", f"/{bucket}", query,
                       "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
                       signed, payload])
scope = f"{day}/{region}/s3/aws4_request"
to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                     hashlib.sha256(canonical.encode()).hexdigest()])
k = ("AWS4" + secret).encode()
for part in (day, region, "s3", "aws4_request"):
    k = hmac.new(k, part.encode(), hashlib.sha256).digest()
sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
req = urllib.request.Request(f"{endpoint}/{bucket}?{query}", headers={
    "x-amz-content-sha256": payload, "x-amz-date": amz_date,
    "Authorization": f"AWS4-HMAC-SHA256 Credential={key_id}/{scope}, "
                     f"SignedHeaders={signed}, Signature={sig}"})
try:
    with urllib.request.urlopen(req, timeout=3) as r:
        sys.exit(0 if r.status == 200 else 1)
except (urllib.error.URLError, OSError) as e:
    print(f"s3 probe: {e}", file=sys.stderr)
    sys.exit(1)
PY
}

wait_s3() {
  local dir="$1" pid="$2" endpoint="$3" key_id="$4" secret="$5"
  local deadline=$((SECONDS + READY_TIMEOUT_S))
  until s3_probe "$endpoint" "$key_id" "$secret" 2>"$dir/s3probe.err"; do
    kill -0 "$pid" 2>/dev/null || { say "garage server died; see $dir/garage.log"; return 1; }
    if (( SECONDS >= deadline )); then
      say "S3 API not ready after ${READY_TIMEOUT_S}s: $(tail -n1 "$dir/s3probe.err" 2>/dev/null)"
      return 1
    fi
    sleep 0.2
  done
  rm -f "$dir/s3probe.err"
}

write_env() {  # write_env DIR PID ; reads the rest from DIR/creds and config
  local dir="$1" pid="$2"
  # shellcheck disable=SC1091
  source "$dir/creds"
  # Written to a temp file then renamed so readers never see half a file.
  cat >"$dir/env.tmp" <<EOF
S3_ENDPOINT=http://127.0.0.1:${S3_PORT}
S3_BUCKET=${BUCKET}
S3_REGION=${REGION}
S3_FORCE_PATH_STYLE=true
AWS_ACCESS_KEY_ID=${KEY_ID}
AWS_SECRET_ACCESS_KEY=${SECRET}
GARAGE_PID=${pid}
GARAGE_CONFIG=${CFG}
GARAGE_ADMIN_ENDPOINT=http://127.0.0.1:${ADMIN_PORT}
GARAGE_RPC_PORT=${RPC_PORT}
EOF
  mv -f "$dir/env.tmp" "$dir/env"
}

# Stop the server recorded in DIR, waiting until it is really gone so a
# following "start" can rebind the same ports.
stop_server() {
  local dir="$1" pid
  pid="$(read_pid "$dir")"
  if [[ -z "$pid" ]] || ! is_our_server "$pid" "$CFG"; then
    rm -f "$dir/garage.pid"
    return 1   # nothing was running
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT_S))
  while is_our_server "$pid" "$CFG"; do
    if (( SECONDS >= deadline )); then
      say "pid $pid ignored SIGTERM for ${STOP_TIMEOUT_S}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 5))
      while is_our_server "$pid" "$CFG"; do
        (( SECONDS < deadline )) || die "pid $pid still alive after SIGKILL"
        sleep 0.1
      done
      break
    fi
    sleep 0.1
  done
  rm -f "$dir/garage.pid"
  return 0
}

write_config() {
  local dir="$1" s3="$2" rpc="$3" admin="$4"
  local rpc_secret admin_token
  rpc_secret="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
  admin_token="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
  # sqlite: no huge sparse mmap like lmdb, and fine for test volumes.
  # Everything bound to 127.0.0.1 so tests never expose a server.
  cat >"$CFG" <<EOF
# Generated by scripts/garage.sh for a throwaway test instance.
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1

rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$rpc_secret"

[s3_api]
s3_region = "$REGION"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin"
admin_token = "$admin_token"
EOF
  chmod 600 "$CFG"
}

cmd_up() {
  local dir="$1"
  if [[ -f "$CFG" ]]; then
    local pid; pid="$(read_pid "$dir")"
    if [[ -n "$pid" ]] && is_our_server "$pid" "$CFG"; then
      die "an instance is already running in $dir (pid $pid); use 'down' first"
    fi
    die "$dir already holds a Garage instance; use 'start $dir' to resume it, or 'down' and remove the directory for a fresh one"
  fi
  mkdir -p "$dir/meta" "$dir/data"
  : >"$dir/garage.log"

  # The ports are free when picked but another process could grab one before
  # Garage binds it; on such a race just pick again.
  local attempt pid="" s3 rpc admin
  local mark
  for attempt in 1 2 3; do
    mark="$(wc -l <"$dir/garage.log")"
    read -r s3 rpc admin < <(pick_ports)
    write_config "$dir" "$s3" "$rpc" "$admin"
    pid="$(start_server "$dir")"
    if wait_rpc "$dir" "$pid"; then break; fi
    stop_server "$dir" || true
    pid=""
    # Only this attempt's log lines decide whether retrying can help.
    tail -n "+$((mark + 1))" "$dir/garage.log" | grep -qi "address.*in use" || break
    say "port clash (attempt $attempt), retrying with new ports"
  done
  [[ -n "$pid" ]] || { rm -f "$CFG"; die "garage failed to start; see $dir/garage.log"; }

  # From here on, a failure (die or set -e) must not leave a half-configured
  # server running; the EXIT trap is cleared once everything checks out.
  # (Expanded now: locals are gone by the time an EXIT trap runs; the path
  # was validated to need no quoting.)
  trap "stop_server $dir >/dev/null 2>&1 || true; say 'up failed; remove $dir before retrying'" EXIT

  local node_id
  node_id="$(gcli node id -q)"
  node_id="${node_id%%@*}"
  # Garage 2.x syntax; capacity is only a weight for a single node.
  gcli layout assign -z dc1 -c 1G "$node_id" >/dev/null
  gcli layout apply --version 1 >/dev/null
  gcli bucket create "$BUCKET" >/dev/null

  local key_out key_id secret
  key_out="$(gcli key create "$KEY_NAME")"
  key_id="$(awk -F': *' '/^Key ID:/ {print $2; exit}' <<<"$key_out")"
  secret="$(awk -F': *' '/^Secret key:/ {print $2; exit}' <<<"$key_out")"
  [[ -n "$key_id" && -n "$secret" ]] || die "could not parse 'garage key create' output:"$'\n'"$key_out"
  gcli bucket allow --read --write --owner "$BUCKET" --key "$KEY_NAME" >/dev/null

  # Kept separately from env so "start" can rebuild env after a restart.
  cat >"$dir/creds" <<EOF
S3_PORT=$s3
RPC_PORT=$rpc
ADMIN_PORT=$admin
KEY_ID=$key_id
SECRET=$secret
EOF
  chmod 600 "$dir/creds"

  wait_s3 "$dir" "$pid" "http://127.0.0.1:$s3" "$key_id" "$secret" || die "S3 API never became ready"
  trap - EXIT
  write_env "$dir" "$pid"
  say "up: pid $pid, S3 http://127.0.0.1:$s3, env in $dir/env (ready in ${SECONDS}s)"
}

cmd_start() {
  local dir="$1"
  [[ -f "$CFG" && -f "$dir/creds" ]] || die "no instance in $dir; run 'garage.sh up $dir' first"
  local pid; pid="$(read_pid "$dir")"
  # shellcheck disable=SC1091
  source "$dir/creds"
  if [[ -n "$pid" ]] && is_our_server "$pid" "$CFG"; then
    say "start: already running (pid $pid)"
    write_env "$dir" "$pid"
    return 0
  fi
  # Same ports are part of the contract (the proxy under test keeps its
  # configured endpoint across the outage), so fail loudly if one was taken.
  local p
  for p in "$S3_PORT" "$RPC_PORT" "$ADMIN_PORT"; do
    port_free "$p" || die "port $p needed by $dir is now in use by another process; cannot restart on the same ports"
  done
  pid="$(start_server "$dir")"
  wait_rpc "$dir" "$pid" || { stop_server "$dir" || true; die "garage failed to restart; see $dir/garage.log"; }
  wait_s3 "$dir" "$pid" "http://127.0.0.1:$S3_PORT" "$KEY_ID" "$SECRET" \
    || { stop_server "$dir" || true; die "garage restarted but S3 is not serving; see $dir/garage.log"; }
  write_env "$dir" "$pid"
  say "start: pid $pid, S3 http://127.0.0.1:$S3_PORT (ready in ${SECONDS}s)"
}

cmd_stop() {
  local dir="$1"
  [[ -f "$CFG" ]] || die "no instance in $dir"
  if stop_server "$dir"; then say "stop: stopped (data kept; 'start $dir' resumes it)"
  else say "stop: was not running"; fi
}

cmd_down() {
  local dir="$1"
  if [[ ! -f "$CFG" ]]; then say "down: no instance in $dir, nothing to do"; return 0; fi
  if stop_server "$dir"; then say "down: stopped"; else say "down: was not running"; fi
  # Drop env so nothing keeps using credentials of a dead instance; data and
  # log stay for post-mortem, the caller removes DIR when done.
  rm -f "$dir/env"
}

cmd_status() {
  local dir="$1" pid
  [[ -f "$CFG" ]] || { echo "no instance"; return 1; }
  pid="$(read_pid "$dir")"
  if [[ -n "$pid" ]] && is_our_server "$pid" "$CFG"; then echo "running (pid $pid)"; return 0; fi
  echo "stopped"; return 1
}

main() {
  [[ $# -eq 2 ]] || usage
  local cmd="$1" dir
  # Resolved first so a missing binary fails before anything is created.
  if [[ "$cmd" == up || "$cmd" == start ]]; then GARAGE="$(find_garage)"; fi
  case "$cmd" in
    up) dir="$(resolve_dir "$2" yes)" ;;
    down)
      # Idempotent for cleanup traps: a missing DIR means nothing to stop.
      [[ -d "$2" ]] || { say "down: $2 does not exist, nothing to do"; return 0; }
      dir="$(resolve_dir "$2" no)" ;;
    start|stop|status) dir="$(resolve_dir "$2" no)" ;;
    *) usage ;;
  esac
  CFG="$dir/garage.toml"
  "cmd_$cmd" "$dir"
}

main "$@"
