#!/usr/bin/env bash
# Variants core vs its peers, on the same machine, files and sizes.
#
#   benches/variants/run.sh [SECONDS_PER_MEASUREMENT]   (default 10; RUNS=3)
#
# 1. a Python venv with Pillow and scikit-image (+ pyvips and thumbor when
#    they install), under target/variants-bench/;
# 2. inputs from scikit-image's photographs (make_inputs.py);
# 3. RUNS rounds of: ours (examples/variant_bench.rs, release) with 1 and 2
#    threads, Pillow with 1 thread and 2 processes, libvips (pyvips) with 1
#    and 2 threads, thumbor over HTTP with 1 and 2 processes; all making
#    the same 256 px WebP q80 variant of the same ~1.9 MB PNG;
# 4. peak RSS of 32 simultaneous makes (ours and Pillow's), and of 2;
# 5. AVIF (and WebP, for scale) encode time at 256 and 1024 px;
# 6. IMAGE_STORE_FORMAT=webp|avif at q90 on the photographs: sizes, SSIM.
# Raw JSON lines go to target/variants-bench/results.jsonl; the summary
# (medians over the rounds) is printed as markdown.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-10}
RUNS=${RUNS:-3}
OUT=target/variants-bench
VENV=${VENV:-$OUT/venv}
mkdir -p "$OUT"

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q Pillow scikit-image
"$PY" -m pip install -q pyvips >/dev/null 2>&1 || echo "pyvips did not install: libvips column skipped" >&2
HAVE_THUMBOR=1
"$PY" -m pip install -q thumbor >/dev/null 2>&1 || { HAVE_THUMBOR=0; echo "thumbor did not install: skipped" >&2; }
"$PY" benches/variants/make_inputs.py "$OUT"

cargo build --release --example variant_bench
BIN=target/release/examples/variant_bench
IMG="$OUT/bench.png"
RES="$OUT/results.jsonl"
: > "$RES"

echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg), cores: $(nproc)"
# CPU pressure: the share of time runnable tasks waited for a core.
[ -r /proc/pressure/cpu ] && echo "== CPU pressure before: $(head -1 /proc/pressure/cpu)"
for round in $(seq "$RUNS"); do
  echo "== round $round/$RUNS (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  "$BIN" throughput "$IMG" 256 webp 1 "$SECS" | tee -a "$RES"
  "$BIN" throughput "$IMG" 256 webp 2 "$SECS" | tee -a "$RES"
  "$PY" benches/variants/peers.py "$IMG" "$SECS" | tee -a "$RES"
  if [ "$HAVE_THUMBOR" = 1 ]; then
    "$PY" benches/variants/thumbor_bench.py "$IMG" "$SECS" 18899 | tee -a "$RES" || echo "thumbor run failed" >&2
  fi
  "$BIN" rss "$IMG" 256 webp 32 | tee -a "$RES"
  "$BIN" rss "$IMG" 256 webp 2 | tee -a "$RES"
done
for w in 256 1024; do
  "$BIN" encode "$IMG" "$w" avif 3 | tee -a "$RES"
  "$BIN" encode "$IMG" "$w" webp 5 | tee -a "$RES"
done
# One make alone: measured peak vs the estimate the budget check uses.
"$BIN" rss "$IMG" 256 webp 1 | tee -a "$RES"
"$BIN" rss "$IMG" 1024 avif 1 | tee -a "$RES"
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -r /proc/pressure/cpu ] && echo "== CPU pressure after: $(head -1 /proc/pressure/cpu)"

"$PY" - "$RES" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
groups = {}
for r in rows:
    if r.get("mode") == "throughput":
        groups.setdefault((r["peer"], r["workers"] if "workers" in r else r["threads"]), []).append(r)
print("\n| peer | workers | variants/s (median of rounds) | median latency ms | CPU ms per variant | output bytes |")
print("|---|---:|---:|---:|---:|---:|")
for (peer, w), rs in groups.items():
    cpu = [r["cpu_ms_per_variant"] for r in rs if "cpu_ms_per_variant" in r]
    print(f"| {peer} | {w} | {statistics.median(r['per_sec'] for r in rs):.1f} | "
          f"{statistics.median(r['median_ms'] for r in rs):.1f} | "
          f"{statistics.median(cpu) if cpu else '':} | {rs[0].get('out_bytes', '')} |")
print("\n| peer | output | simultaneous makes | peak RSS MiB (median) | before MiB | estimate per make MiB |")
print("|---|---|---:|---:|---:|---:|")
rss = {}
for r in rows:
    if r.get("mode") == "rss":
        rss.setdefault((r["peer"], r.get("out", "256 webp"), r["concurrency"]), []).append(r)
for (peer, out, n), rs in rss.items():
    est = rs[0].get("estimate_per_make_kib")
    print(f"| {peer} | {out} | {n} | {statistics.median(r['hwm_after_kib'] for r in rs) / 1024:.0f} | "
          f"{statistics.median(r['hwm_before_kib'] for r in rs) / 1024:.0f} | "
          f"{'' if est is None else round(est / 1024)} |")
print("\n| encode | output | median ms | min ms | bytes |")
print("|---|---|---:|---:|---:|")
for r in rows:
    if r.get("mode") == "encode":
        print(f"| {r['format']} | {r['w']}x{r['h']} | {r['median_ms']:.0f} | {r['min_ms']:.0f} | {r['bytes']} |")
PYEOF

mkdir -p "$OUT/store"
"$PY" benches/variants/storage.py "$BIN" "$OUT/photos" "$OUT/store"
