#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: a steady measure
# of permaproxy's user-space cost on a noisy shared machine (issue 6).
#
#   benches/callgrind.sh [BINARY] [SCENARIO] [REQUESTS]
#     BINARY    default target/release/permaproxy
#     SCENARIO  pass (small JSON pass-through), mem (200 KB hosted image from
#               the memory cache) or disk (the same with IMAGE_MEMORY_CACHE_MB=0);
#               default pass
#     REQUESTS  default 2000
#   RUST_LOG=info benches/callgrind.sh ... counts the JSON access line too (the
#   default here is warn, as in benches/run.sh).
#
# It starts a one-worker nginx upstream and permaproxy under callgrind, sends
# 200 warm-up requests, zeroes the counters, sends REQUESTS keep-alive requests
# from 4 connections, and prints total and per-request instruction counts. The
# profile stays in the temp dir it prints (open it with callgrind_annotate or
# kcachegrind). Kernel work (syscalls, TCP, copies) is not counted.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/release/permaproxy}")
scenario=${2:-pass}
n=${3:-2000}
command -v valgrind >/dev/null || { echo "callgrind.sh: apt-get install valgrind" >&2; exit 2; }
nginx=$(command -v nginx || echo /usr/sbin/nginx)

tmp=$(mktemp -d /tmp/permaproxy-callgrind-XXXXXX)
read -r up port admin < <(python3 -c '
import socket
s=[socket.socket() for _ in range(3)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])')
PYTHONDONTWRITEBYTECODE=1 python3 - "$tmp/images" <<'EOF'
import sys
sys.path.insert(0, "benches")
import harness
harness.seed_images(sys.argv[1])
EOF
cat > "$tmp/up.conf" <<EOF
worker_processes 1; daemon off; pid $tmp/up.pid; error_log $tmp/up-error.log warn;
events { worker_connections 1024; }
http {
  access_log off; keepalive_requests 100000000;
  client_body_temp_path $tmp/t1; proxy_temp_path $tmp/t2; fastcgi_temp_path $tmp/t3;
  uwsgi_temp_path $tmp/t4; scgi_temp_path $tmp/t5;
  server { listen 127.0.0.1:$up; location / { default_type application/json;
    return 200 '{"ok":true,"service":"studio-api-standin","items":[1,2,3]}'; } }
}
EOF
"$nginx" -p "$tmp/" -e "$tmp/up-error.log" -c "$tmp/up.conf" &
ngx=$!
cache=256
path=/v1/images/hosted/bench/img_000000000000000000000200.png
case "$scenario" in
  pass) path="/v1/models?bench=1" ;;
  mem) ;;
  disk) cache=0 ;;
  *) echo "callgrind.sh: unknown scenario $scenario (pass, mem, disk)" >&2; exit 2 ;;
esac
env -i PATH="$PATH" LISTEN_ADDR=127.0.0.1:$port METRICS_ADDR=127.0.0.1:$admin \
  UPSTREAM_URL=http://127.0.0.1:$up IMAGE_STORAGE_PATH="$tmp/images" WORKER_THREADS=2 \
  LOG_FORMAT=json RUST_LOG="${RUST_LOG:-warn}" IMAGE_DOWNLOAD_RATE_PER_SEC=1000000000 \
  IMAGE_DOWNLOAD_BURST=1000000000 IMAGE_MEMORY_CACHE_MB=$cache \
  valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$tmp/callgrind.out" \
  "$bin" serve > "$tmp/permaproxy.log" 2>&1 &
vg=$!
trap 'kill $vg $ngx 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do
  python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$admin/healthz', timeout=1)" \
    2>/dev/null && break
  sleep 0.5
done
drive() {
  python3 - "$port" "$path" "$1" <<'EOF'
import http.client, sys, threading
port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
bad = []
def worker(k):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for _ in range(k):
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        if r.status != 200:
            bad.append(r.status)
ts = [threading.Thread(target=worker, args=(n // 4,)) for _ in range(4)]
[t.start() for t in ts]
[t.join() for t in ts]
if bad:
    sys.exit("callgrind.sh: %d requests failed (%s)" % (len(bad), bad[:3]))
EOF
}
drive 200
callgrind_control -z $vg >/dev/null
drive "$n"
callgrind_control -d $vg >/dev/null
sleep 1
out=$(ls -t "$tmp"/callgrind.out.* | head -1)
total=$(sed -n 's/^summary: //p' "$out")
echo "scenario $scenario, $n requests: $total instructions, $((total / n)) per request"
echo "profile: $out"
