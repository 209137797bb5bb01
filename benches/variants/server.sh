#!/usr/bin/env bash
# Variants through the real server, beside the peers in the same session
# (issue 14). One command:
#
#   benches/variants/server.sh [SECONDS]        (default 10)
#
# 1. the inputs (make_inputs.py: the 1.9 MB PNG mosaic of scikit-image
#    photographs) in a venv with Pillow and scikit-image (VENV=... to reuse
#    one; thumbor is installed when it can be);
# 2. target/release/permaproxy;
# 3. server_bench.py: makes per second over HTTP (stored and recorded),
#    the hit path against the original's (wrk, memory and disk), peak RSS
#    of 32 makes at once (default pool, and a pool of 32);
# 4. the peers on the same file in the same session: Pillow in process
#    (peers.py) and thumbor over HTTP (thumbor_bench.py).
# Raw JSON lines: target/variants-bench/server.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-10}
OUT=target/variants-bench
VENV=${VENV:-$OUT/venv}
mkdir -p "$OUT"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -c "import PIL, skimage" 2>/dev/null || "$PY" -m pip install -q Pillow scikit-image
HAVE_THUMBOR=1
[ -x "$VENV/bin/thumbor" ] || "$PY" -m pip install -q thumbor >/dev/null 2>&1 || HAVE_THUMBOR=0
"$PY" benches/variants/make_inputs.py "$OUT"
cargo build --release --bin permaproxy
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }

RES="$OUT/server.jsonl"
: > "$RES"
echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg), cores: $(nproc)"
[ -r /proc/pressure/cpu ] && echo "== CPU pressure before: $(head -1 /proc/pressure/cpu)"
python3 benches/variants/server_bench.py target/release/permaproxy "$OUT/bench.png" "$SECS" | tee -a "$RES"
"$PY" benches/variants/peers.py "$OUT/bench.png" "$SECS" | tee -a "$RES"
if [ "$HAVE_THUMBOR" = 1 ]; then
  "$PY" benches/variants/thumbor_bench.py "$OUT/bench.png" "$SECS" 18899 | tee -a "$RES" || echo "thumbor run failed" >&2
fi
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -r /proc/pressure/cpu ] && echo "== CPU pressure after: $(head -1 /proc/pressure/cpu)"

python3 - "$RES" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("\n| peer | clients/workers | variants/s | median ms | output bytes |")
print("|---|---:|---:|---:|---:|")
for r in rows:
    if r.get("mode") in ("makes", "throughput"):
        print(f"| {r['peer']} | {r.get('clients', r.get('workers'))} | {r['per_sec']} | "
              f"{r['median_ms']} | {r.get('out_bytes', '')} |")
print("\n| what | tier | requests/s | p99 ms | errors |")
print("|---|---|---:|---:|---:|")
for r in rows:
    if r.get("mode") == "hit":
        print(f"| {r['what']} | {r['tier']} | {r['rps']:.0f} | {r['p99_ms']} | {r['errors']} |")
print("\n| peer | pool | makes at once | peak RSS before MiB | peak RSS after MiB |")
print("|---|---|---:|---:|---:|")
for r in rows:
    if r.get("mode") == "rss":
        print(f"| {r['peer']} | {r.get('pool', '')} | {r['concurrency']} | "
              f"{r['hwm_before_kib'] / 1024:.0f} | {r['hwm_after_kib'] / 1024:.0f} |")
PYEOF
