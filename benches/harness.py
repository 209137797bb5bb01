#!/usr/bin/env python3
"""Load harness for permaproxy vs nginx (issue 6). Python 3 stdlib only.

Usually run through benches/run.sh, which installs nginx + wrk and builds the
release binary first. Everything listens on 127.0.0.1, on free ports, with all
state in one temp dir:

  upstream   nginx, 1 worker, answers every request with a small JSON body
  peer       nginx, WORKERS workers: proxy_pass + keepalive, and sendfile for images
  permaproxy target/release/permaproxy, WORKER_THREADS=WORKERS, started once with
             IMAGE_MEMORY_CACHE_MB=256 (memory rows) and once with 0 (disk rows)

wrk drives the two sides alternately (nginx, permaproxy, then permaproxy,
nginx, ...) and the table reports the median run per side.

The "generation" rows need permaproxy's rewrite path to work end to end. They
use two small Python stand-ins (a file host serving PNGs and a generate API
answering 4 URLs) and run after the wrk rows; skip them with --no-generation.
"""

import argparse
import datetime
import http.client
import http.server
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import socketserver
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
NGINX_DIR = os.path.join(HERE, "nginx")

UPSTREAM_BODY = '{"ok":true,"service":"studio-api-standin","items":[1,2,3]}'
BENCH_USER = "bench"
# imageId = "img_" + 24 lowercase hex chars
IMAGES = {
    "200k": ("img_000000000000000000000200.png", 200 * 1024),
    "2m": ("img_000000000000000000002000.png", 2 * 1024 * 1024),
    "10m": ("img_000000000000000000010000.png", 10 * 1024 * 1024),
}
CACHE_MB_MEMORY = 256
RSS_HEADROOM_MB = 64
IMAGE_EXTS = ("png", "jpg", "jpeg", "webp", "gif", "avif")
STORE_FILE_RE = re.compile(r"^img_[0-9a-f]{24}\.(%s)$" % "|".join(IMAGE_EXTS))

# Every setting permaproxy reads, taken from the table in src/config/settings.rs
# (the single source of truth) so the list cannot drift. Stripped from the
# inherited environment so a developer's shell cannot change the benchmark.
def _settings_names():
    path = os.path.join(REPO, "src", "config", "settings.rs")
    try:
        with open(path) as f:
            names = re.findall(r'\b(?:s|secret)\("([A-Z][A-Z0-9_]+)"', f.read())
    except OSError:
        names = []
    return set(names) | {"RUST_LOG"}


PERMAPROXY_SETTINGS = _settings_names()

# --------------------------------------------------------------------------
# small helpers


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def percentile(values, p):
    """Nearest-rank percentile of a list (p in 0..100)."""
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, math.ceil(p / 100.0 * len(v)) - 1))
    return v[k]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def http_get(port, path, timeout=5.0, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        conn.close()


def tail(path, n=30):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError as e:
        return "(no log: %s)" % e


def cmd_output(argv):
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        return p.stdout.decode("utf-8", "replace").strip()
    except (OSError, subprocess.SubprocessError) as e:
        return "(unavailable: %s)" % e


# --------------------------------------------------------------------------
# PNG writer: signature, IHDR, IDAT (zlib level 0 = stored deflate blocks of
# pseudo-random RGB rows), IEND, all with correct CRCs. The result is a real,
# decodable image whose file size is close to the requested size.


def png_chunk(ctype, data):
    return (struct.pack(">I", len(data)) + ctype + data
            + struct.pack(">I", zlib.crc32(ctype + data) & 0xFFFFFFFF))


PNG_SIG = b"\x89PNG\r\n\x1a\n"


def make_png(target_bytes, seed):
    width = 256 if target_bytes < 1024 * 1024 else 1024
    row = 1 + width * 3  # filter byte 0 + RGB
    overhead = 8 + 25 + 12 + 12 + 6  # sig, IHDR, IDAT header+crc, IEND, zlib hdr+adler
    height = max(1, (target_bytes - overhead) // (row + row // 65535 * 5 + 1))
    rnd = random.Random(seed)
    raw = b"".join(b"\x00" + rnd.randbytes(width * 3) for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (PNG_SIG + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(raw, 0)) + png_chunk(b"IEND", b""))


def check_png(data):
    """Parse a PNG written by make_png and check CRCs and the decoded size."""
    assert data[:8] == PNG_SIG, "bad signature"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        ctype, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(ctype + body) & 0xFFFFFFFF, "bad CRC in %r" % ctype
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat += body
        pos += 12 + length
    w, h = ihdr[0], ihdr[1]
    assert len(zlib.decompress(idat)) == h * (1 + 3 * w), "IDAT size does not match IHDR"
    return w, h


def seed_images(images_dir):
    d = os.path.join(images_dir, BENCH_USER)
    os.makedirs(d, exist_ok=True)
    os.chmod(images_dir, 0o755)
    os.chmod(d, 0o755)
    out = {}
    for i, (key, (name, size)) in enumerate(sorted(IMAGES.items())):
        data = make_png(size, seed=1000 + i)
        w, h = check_png(data)
        path = os.path.join(d, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o644)
        out[key] = {"name": name, "path": path, "bytes": len(data), "data": data,
                    "url": "/v1/images/hosted/%s/%s" % (BENCH_USER, name), "dims": (w, h)}
        log("seeded %s (%d bytes, %dx%d PNG)" % (path, len(data), w, h))
    return out


# --------------------------------------------------------------------------
# process management

STARTED = []  # Popen objects we own; stopped in reverse order at exit


def start_proc(argv, logfile, env=None, name=""):
    f = open(logfile, "ab")
    p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env,
                         stdin=subprocess.DEVNULL, cwd=os.path.dirname(logfile))
    p.bench_name = name or os.path.basename(argv[0])
    p.bench_log = logfile
    STARTED.append(p)
    return p


def stop_proc(p, sig=signal.SIGTERM, wait=10.0):
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            log("%s (pid %d) did not stop in %.0fs; SIGKILL" % (p.bench_name, p.pid, wait))
            p.kill()
            p.wait(timeout=5)
        except ProcessLookupError:
            pass
    if p in STARTED:
        STARTED.remove(p)


def stop_all():
    for p in reversed(list(STARTED)):
        stop_proc(p, signal.SIGINT if p.bench_name.startswith("permaproxy") else signal.SIGTERM)


def wait_http(port, path, proc, timeout=30.0, want=200):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited with status %s before %s answered.\n--- log tail (%s)\n%s"
                               % (proc.bench_name, proc.returncode, path, proc.bench_log,
                                  tail(proc.bench_log)))
        try:
            status, _, _ = http_get(port, path, timeout=1.0)
            if status == want:
                return
            last = "HTTP %d" % status
        except OSError as e:
            last = str(e)
        time.sleep(0.05)
    raise RuntimeError("%s: no %d from 127.0.0.1:%d%s within %.0fs (last: %s)\n--- log tail (%s)\n%s"
                       % (proc.bench_name, want, port, path, timeout, last, proc.bench_log,
                          tail(proc.bench_log)))


# --------------------------------------------------------------------------
# RSS sampling (/proc), for the whole process tree of a server


def proc_children(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                kids.append(int(entry))
        except (OSError, ValueError, IndexError):
            pass
    return kids


def status_kb(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def tree_cpu_seconds(pid):
    """utime + stime of a process (all its threads) and its direct children
    (nginx's workers), in seconds."""
    total = 0
    for p in [pid] + proc_children(pid):
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            pass
    return total / float(CLK_TCK)


class RssSampler:
    """Samples the summed VmRSS of a process tree every 50 ms. For a single
    process it also resets the peak (echo 5 > clear_refs) at start and reads
    VmHWM at the end, which catches spikes between samples."""

    def __init__(self, pid, interval=0.05):
        self.pids = [pid] + proc_children(pid)
        self.interval = interval
        self.peak_kb = 0
        self.hwm_reset = False
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        if len(self.pids) == 1:
            try:
                with open("/proc/%d/clear_refs" % self.pids[0], "w") as f:
                    f.write("5")
                self.hwm_reset = True
            except OSError:
                pass
        self._t.start()
        return self

    def _sample(self):
        total = sum(status_kb(p, "VmRSS") or 0 for p in self.pids)
        self.peak_kb = max(self.peak_kb, total)

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self._sample()
        if self.hwm_reset:
            hwm = status_kb(self.pids[0], "VmHWM")
            if hwm:
                self.peak_kb = max(self.peak_kb, hwm)
        return False

    @property
    def peak_mb(self):
        return self.peak_kb / 1024.0


# --------------------------------------------------------------------------
# wrk

UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
UNIT_B = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}


def parse_duration_ms(text):
    m = re.match(r"^([\d.]+)(us|ms|s|m|h)$", text.strip())
    if not m:
        raise ValueError("cannot parse wrk duration %r" % text)
    return float(m.group(1)) * UNIT_S[m.group(2)] * 1000.0


def parse_wrk(out):
    """Parse wrk 4.x output (run with --latency). Sizes are wrk's binary units;
    MB/s below is MiB/s, as wrk prints it."""
    r = {"rps": None, "mbps": None, "p50_ms": None, "p75_ms": None, "p90_ms": None,
         "p99_ms": None, "requests": None, "non2xx": 0, "socket_errors": 0,
         "socket_detail": "", "raw": out}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB|TB)", out)
    if m:
        r["mbps"] = float(m.group(1)) * UNIT_B[m.group(2)] / UNIT_B["MB"]
    for pct in ("50", "75", "90", "99"):
        m = re.search(r"^\s+%s%%\s+([\d.]+(?:us|ms|s|m|h))\s*$" % pct, out, re.M)
        if m:
            r["p%s_ms" % pct] = parse_duration_ms(m.group(1))
    m = re.search(r"(\d+) requests in ([\d.]+\w+), ([\d.]+)(B|KB|MB|GB|TB) read", out)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        nums = [int(x) for x in m.groups()]
        r["socket_errors"] = sum(nums)
        r["socket_detail"] = "connect %d, read %d, write %d, timeout %d" % tuple(nums)
    r["errors"] = r["non2xx"] + r["socket_errors"]
    return r


def run_wrk(wrk, url, threads, conns, seconds, timeout_s):
    argv = [wrk, "-t%d" % threads, "-c%d" % conns, "-d%ds" % seconds, "--latency",
            "--timeout", "%ds" % timeout_s, url]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=seconds + timeout_s + 60)
    out = p.stdout.decode("utf-8", "replace")
    r = parse_wrk(out)
    if p.returncode != 0 or r["rps"] is None:
        raise RuntimeError("wrk failed (status %d): %s\n%s" % (p.returncode, " ".join(argv), out))
    return r


# --------------------------------------------------------------------------
# nginx


def nginx_temp_paths(nginx, tmpdir, name):
    """*_temp_path lines for the modules this nginx has, so nothing touches
    /var/lib/nginx (which needs root)."""
    v = cmd_output([nginx, "-V"])
    lines = []
    for mod, directive in (("", "client_body_temp_path"), ("proxy", "proxy_temp_path"),
                           ("fastcgi", "fastcgi_temp_path"), ("uwsgi", "uwsgi_temp_path"),
                           ("scgi", "scgi_temp_path")):
        if mod and ("--without-http_%s_module" % mod) in v:
            continue
        d = os.path.join(tmpdir, "%s-%s" % (name, directive.replace("_path", "")))
        lines.append("    %s %s;" % (directive, d))
    return "\n".join(lines)


def render_template(src, dst, values):
    with open(src) as f:
        text = f.read()
    for k, v in values.items():
        text = text.replace("@@%s@@" % k, str(v))
    left = re.findall(r"@@[A-Z_]+@@", text)
    if left:
        raise RuntimeError("unfilled placeholders in %s: %s" % (src, left))
    with open(dst, "w") as f:
        f.write(text)


def start_nginx(nginx, tmpdir, name, values):
    conf = os.path.join(tmpdir, name + ".conf")
    values = dict(values)
    values["TMPDIR"] = tmpdir
    values["TEMP_PATHS"] = nginx_temp_paths(nginx, tmpdir, name)
    values["USER_LINE"] = "user root;" if os.geteuid() == 0 else "# (not root: workers run as this user)"
    render_template(os.path.join(NGINX_DIR, name + ".conf.tmpl"), conf, values)
    errlog = os.path.join(tmpdir, name + "-error.log")
    t = subprocess.run([nginx, "-t", "-p", tmpdir + "/", "-e", errlog, "-c", conf],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if t.returncode != 0:
        raise RuntimeError("nginx -t failed for %s:\n%s" % (conf, t.stdout.decode()))
    return start_proc([nginx, "-p", tmpdir + "/", "-e", errlog, "-c", conf, "-g", "daemon off;"],
                      os.path.join(tmpdir, name + "-stdout.log"), name="nginx-" + name)


# --------------------------------------------------------------------------
# permaproxy


def permaproxy_env(extra):
    env = {k: v for k, v in os.environ.items() if k not in PERMAPROXY_SETTINGS}
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Permaproxy:
    def __init__(self, binary, tmpdir, label, workers, cache_mb, upstream_url, storage, extra=None):
        self.port, self.metrics_port = free_ports(2)
        self.label = label
        self.cache_mb = cache_mb
        env = {
            "LISTEN_ADDR": "127.0.0.1:%d" % self.port,
            "METRICS_ADDR": "127.0.0.1:%d" % self.metrics_port,
            "UPSTREAM_URL": upstream_url,
            "IMAGE_STORAGE_PATH": storage,
            "WORKER_THREADS": workers,
            "LOG_FORMAT": "json",
            "RUST_LOG": "warn",
            "IMAGE_DOWNLOAD_RATE_PER_SEC": 1000000000,
            "IMAGE_DOWNLOAD_BURST": 1000000000,
            "IMAGE_MEMORY_CACHE_MB": cache_mb,
        }
        env.update(extra or {})
        self.env = env
        logfile = os.path.join(tmpdir, "permaproxy-%s.log" % label)
        log("starting permaproxy (%s): %s" % (label, " ".join(
            "%s=%s" % kv for kv in sorted(env.items()))))
        self.proc = start_proc([binary, "serve"], logfile, env=permaproxy_env(env),
                               name="permaproxy-" + label)
        try:
            wait_http(self.metrics_port, "/healthz", self.proc, timeout=60.0)
        except RuntimeError:
            self.stop()
            raise
        log("permaproxy (%s) healthy on 127.0.0.1:%d (pid %d)" % (label, self.port, self.proc.pid))

    def stop(self):
        stop_proc(self.proc, signal.SIGINT, wait=15.0)


# --------------------------------------------------------------------------
# side checks: each side must answer correctly before it is measured


def check_image(port, img, retries=50):
    last = None
    for _ in range(retries):
        try:
            status, headers, body = http_get(port, img["url"], timeout=10.0)
            if status == 200 and body == img["data"]:
                return None
            last = "HTTP %d, %d bytes (want 200, %d bytes identical to the file)" % (
                status, len(body), img["bytes"])
        except OSError as e:
            last = str(e)
        time.sleep(0.2)
    return "GET %s -> %s" % (img["url"], last)


def check_json(port, path):
    try:
        status, headers, body = http_get(port, path, timeout=5.0)
    except OSError as e:
        return "GET %s -> %s" % (path, e)
    if status != 200 or body.decode("utf-8", "replace") != UPSTREAM_BODY:
        return "GET %s -> HTTP %d, body %r (want 200 and the upstream body)" % (path, status, body[:200])
    return None


# --------------------------------------------------------------------------
# wrk scenarios

PASS_PATH = "/v1/models?bench=1"

# name, title, image key (None = pass-through), permaproxy instance, connections, extra
SCENARIOS = [
    dict(name="passthrough", title="pass-through small JSON", image=None, instance="mem", conns=32),
    dict(name="mem200k", title="hosted 200 KB, memory", image="200k", instance="mem", conns=32,
         warm=True),
    dict(name="disk200k", title="hosted 200 KB, disk (cache 0)", image="200k", instance="disk",
         conns=32),
    dict(name="disk2m", title="hosted 2 MB, disk (cache 0)", image="2m", instance="disk", conns=32),
    dict(name="rss10m-mem", title="10 MB x100 clients, cache %d MB" % CACHE_MB_MEMORY, image="10m",
         instance="mem", conns=100, timeout=60, rss_budget_mb=CACHE_MB_MEMORY + RSS_HEADROOM_MB,
         fairness=True),
    dict(name="rss10m-disk", title="10 MB x100 clients, cache 0", image="10m", instance="disk",
         conns=100, timeout=60, rss_budget_mb=0 + RSS_HEADROOM_MB, fairness=True),
    dict(name="serve100", title="load test: 100 simultaneous serves (200 KB)", image="200k",
         instance="mem", conns=100, p99_max_ms=50.0),
    # permaproxy against itself: the same pass-through with the access log at
    # info (the production default, JSON lines to a file) and with it off.
    dict(name="accesslog", title="access log cost, pass-through small JSON", image=None,
         instance="log", conns=32),
]

# Throughput targets, permaproxy / nginx (issue 16).
THROUGHPUT_TARGETS = {"passthrough": 0.85, "mem200k": 1.0, "disk200k": 0.85, "disk2m": 1.0}
# 10 MB x100 rows: p99 at most this multiple of nginx's, and no client starved:
# the most bytes any connection got over the run at most FAIR_MAX_RATIO times
# the fewest.
P99_10M_MAX = 1.5
FAIR_MAX_RATIO = 2.0
# Access log at info: extra server CPU per pass-through request, at most.
ACCESS_LOG_MAX_COST = 0.03
# Peak RSS with 100 generations persisting at once.
GEN_RSS_MAX_MB = 96


class Results:
    def __init__(self):
        self.rows = []      # dicts for the main table
        self.ratios = []    # (scenario, metric, value, target, verdict)
        self.absolute = []  # (scenario, what, measured, target, verdict)
        self.notes = []


def fmt(v, spec="%.0f", none="-"):
    return none if v is None else spec % v


def aggregate(runs):
    """Median per side across runs; errors are summed, peak RSS is the max."""
    if not runs:
        return None
    return {
        "rps": median([r["rps"] for r in runs]),
        "mbps": median([r["mbps"] for r in runs]),
        "p50_ms": median([r["p50_ms"] for r in runs]),
        "p99_ms": median([r["p99_ms"] for r in runs]),
        "errors": sum(r["errors"] for r in runs),
        "socket_detail": "; ".join(r["socket_detail"] for r in runs if r["socket_errors"]),
        "non2xx": sum(r["non2xx"] for r in runs),
        "peak_rss_mb": max((r.get("peak_rss_mb") or 0) for r in runs) or None,
        "cpu_us": median([r.get("cpu_us") for r in runs]),
        "runs": len(runs),
        "rps_all": [r["rps"] for r in runs],
    }


def run_scenario(sc, sides, args, wrk, images, results):
    """sides: list of (side name, port, pid, check_error or None)."""
    log("scenario %s: %s" % (sc["name"], sc["title"]))
    img = images[sc["image"]] if sc["image"] else None
    path = img["url"] if img else PASS_PATH
    timeout_s = sc.get("timeout", 10)
    live = []
    for side, port, pid, err in sides:
        if err is None:
            err = check_image(port, img) if img else check_json(port, path)
        if err:
            log("  %s: SKIPPED, wrong answer: %s" % (side, err))
            results.notes.append("%s / %s skipped: %s" % (sc["name"], side, err))
            results.rows.append(dict(scenario=sc["title"], name=sc["name"], side=side,
                                     agg=None, skipped=err))
            continue
        live.append((side, port, pid))
    # warm-up: fill caches (memory cache, open_file_cache, page cache, keep-alive pools)
    for side, port, pid in live:
        for _ in range(5 if sc.get("warm") or img else 2):
            try:
                http_get(port, path, timeout=30.0)
            except OSError:
                pass
        run_wrk(wrk, "http://127.0.0.1:%d%s" % (port, path), args.wrk_threads,
                sc["conns"], args.warmup, timeout_s)
    per_side = {side: [] for side, _, _ in live}
    for i in range(args.runs):
        # Odd runs go in reverse order: on a busy machine the side measured
        # first in a round was seen to gain a few percent.
        for side, port, pid in (live if i % 2 == 0 else live[::-1]):
            cpu0 = tree_cpu_seconds(pid)
            with RssSampler(pid) as rss:
                r = run_wrk(wrk, "http://127.0.0.1:%d%s" % (port, path), args.wrk_threads,
                            sc["conns"], args.duration, timeout_s)
            cpu = tree_cpu_seconds(pid) - cpu0
            r["peak_rss_mb"] = rss.peak_mb
            # Server CPU per request: steadier than req/s on a shared machine,
            # because it does not depend on how much CPU was left over for us.
            r["cpu_us"] = cpu * 1e6 / r["requests"] if r.get("requests") else None
            per_side[side].append(r)
            log("  run %d/%d %-10s %10.0f req/s %9.1f MB/s p50 %s p99 %s errors %d rss %.1f MB "
                "cpu %s us/req" % (i + 1, args.runs, side, r["rps"], r["mbps"] or 0,
                                   fmt(r["p50_ms"], "%.2fms"), fmt(r["p99_ms"], "%.2fms"),
                                   r["errors"], rss.peak_mb, fmt(r["cpu_us"], "%.1f")))
    if sc.get("fairness") and img:
        run_fairness(sc, live, args, img, results)
    aggs = {}
    for side, _, _ in live:
        aggs[side] = aggregate(per_side[side])
        results.rows.append(dict(scenario=sc["title"], name=sc["name"], side=side,
                                 agg=aggs[side], skipped=None))
    judge(sc, aggs, results)


def verdict(ok):
    return "PASS" if ok else "FAIL"


def judge_access_log(sc, aggs, results):
    off, on = aggs.get("permaproxy, log off"), aggs.get("permaproxy, log on")
    if not (off and on):
        results.absolute.append((sc["title"], "extra CPU per request", "n/a",
                                 "<= +%.0f%%" % (ACCESS_LOG_MAX_COST * 100), "n/a"))
        return
    cost = on["cpu_us"] / off["cpu_us"] - 1 if (on.get("cpu_us") and off.get("cpu_us")) else None
    thr = on["rps"] / off["rps"] - 1 if off["rps"] else None
    results.absolute.append((sc["title"], "extra server CPU per request, info vs warn",
                             fmt(cost * 100 if cost is not None else None, "%+.1f%%"),
                             "<= +%.0f%%" % (ACCESS_LOG_MAX_COST * 100),
                             verdict(cost is not None and cost <= ACCESS_LOG_MAX_COST)))
    results.absolute.append((sc["title"], "throughput change, info vs warn",
                             fmt(thr * 100 if thr is not None else None, "%+.1f%%"),
                             "(reported)", ""))


def fairness_probe(port, path, conns, seconds, timeout_s=60.0):
    """`conns` independent clients, one thread and one keep-alive connection
    each, downloading `path` over and over for `seconds`. Returns the body
    bytes each client received and every response's latency: wrk cannot
    report bytes per connection, and that is what shows a starved client.
    recv_into releases the GIL, so the kernel copies run in parallel as they
    would for separate clients."""
    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path).encode()
    start = time.perf_counter()
    deadline = start + seconds
    counts = [0] * conns
    latencies = []
    errors = []
    lock = threading.Lock()
    ready = threading.Barrier(conns + 1)

    def client(k):
        buf = bytearray(256 * 1024)
        view = memoryview(buf)
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        except OSError as e:
            errors.append(str(e))
            ready.wait()
            return
        mine = []
        try:
            ready.wait()
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                sock.sendall(req)
                head = b""
                while b"\r\n\r\n" not in head:
                    n = sock.recv_into(view)
                    if n == 0:
                        raise OSError("server closed the connection")
                    head += bytes(view[:n])
                end = head.index(b"\r\n\r\n")
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head[:end])
                if not m or not head.startswith(b"HTTP/1.1 200"):
                    raise OSError("bad response %r" % head[:120])
                got = len(head) - end - 4
                left = int(m.group(1)) - got
                counts[k] += got
                while left > 0 and time.perf_counter() < deadline:
                    n = sock.recv_into(view, min(left, len(buf)))
                    if n == 0:
                        raise OSError("server closed the connection mid-body")
                    left -= n
                    counts[k] += n
                if left > 0:
                    break
                mine.append(time.perf_counter() - t0)
        except OSError as e:
            errors.append(str(e))
        finally:
            sock.close()
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(conns)]
    for t in threads:
        t.start()
    ready.wait()
    start = time.perf_counter()
    for t in threads:
        t.join(seconds + timeout_s)
    if errors:
        raise RuntimeError("fairness probe: %d clients failed: %s" % (len(errors), errors[0]))
    return {"per_client": counts, "latencies": latencies, "elapsed": time.perf_counter() - start}


def run_access_log(scs, args, binary, tmpdir, up_port, images_dir, wrk, images, results):
    """Two permaproxy processes side by side, identical but for RUST_LOG:
    info (the production default: one JSON access line per request, to a
    file) and warn (no access line)."""
    up = "http://127.0.0.1:%d" % up_port
    procs = []
    try:
        for label, level in (("log off", "warn"), ("log on", "info")):
            procs.append((label, Permaproxy(binary, tmpdir, label.replace(" ", "-"), args.workers,
                                            CACHE_MB_MEMORY, up, images_dir,
                                            extra={"RUST_LOG": level})))
        sides = [("permaproxy, " + label, pp.port, pp.proc.pid, None) for label, pp in procs]
        for sc in scs:
            run_scenario(sc, sides, args, wrk, images, results)
    except RuntimeError as e:
        log("access-log rows failed: %s" % e)
        results.notes.append("access-log rows failed: %s" % str(e).splitlines()[0])
    finally:
        for _, pp in procs:
            pp.stop()


def run_fairness(sc, live, args, img, results):
    """Per-client bytes on each side, sides alternating, args.runs rounds of
    args.duration seconds; the verdict uses the worst round."""
    per_side = {side: [] for side, _, _ in live}
    for i in range(args.runs):
        for side, port, pid in (live if i % 2 == 0 else live[::-1]):
            r = fairness_probe(port, img["url"], sc["conns"], args.duration)
            pc = r["per_client"]
            ratio = max(pc) / min(pc) if min(pc) else float("inf")
            p99 = percentile([x * 1000.0 for x in r["latencies"]], 99)
            per_side[side].append((ratio, min(pc), max(pc), p99, sum(pc) / r["elapsed"]))
            log("  fairness %d/%d %-10s per-client MB min %.1f max %.1f (max/min %.2f), "
                "p99 %s, %.0f MB/s" % (i + 1, args.runs, side, min(pc) / 1e6, max(pc) / 1e6,
                                       ratio, fmt(p99, "%.0f ms"), sum(pc) / r["elapsed"] / 2 ** 20))
    for side, runs in per_side.items():
        worst = max(runs, key=lambda x: x[0])
        results.absolute.append((
            sc["title"], "%s: per-client bytes max/min, worst of %d (fewest / most MB; probe p99)"
            % (side, len(runs)),
            "%.2f (%.0f / %.0f MB; %s)" % (worst[0], worst[1] / 1e6, worst[2] / 1e6,
                                           fmt(median([r[3] for r in runs]), "%.0f ms")),
            "<= %.0f" % FAIR_MAX_RATIO if side == "permaproxy" else "(reference)",
            verdict(worst[0] <= FAIR_MAX_RATIO) if side == "permaproxy" else ""))


def judge(sc, aggs, results):
    n, p = aggs.get("nginx"), aggs.get("permaproxy")
    name = sc["title"]
    if sc["name"] == "accesslog":
        judge_access_log(sc, aggs, results)
        return
    thr_target = THROUGHPUT_TARGETS.get(sc["name"])
    if n and p:
        thr = p["rps"] / n["rps"] if n["rps"] else None
        p99 = p["p99_ms"] / n["p99_ms"] if (n["p99_ms"] and p["p99_ms"] is not None) else None
        if thr_target is not None:
            results.ratios.append((name, "throughput", thr, ">= %gx" % thr_target,
                                   verdict(thr is not None and thr >= thr_target)))
        else:
            results.ratios.append((name, "throughput", thr, "(no target)", ""))
        if n.get("cpu_us") and p.get("cpu_us"):
            results.ratios.append((name, "server CPU per request", p["cpu_us"] / n["cpu_us"],
                                   "(no target; lower is better)", ""))
        if sc["name"] == "passthrough":
            results.ratios.append((name, "p99", p99, "<= 1.0x",
                                   verdict(p99 is not None and p99 <= 1.0)))
        elif sc.get("fairness"):
            results.ratios.append((name, "p99", p99, "<= %.1fx" % P99_10M_MAX,
                                   verdict(p99 is not None and p99 <= P99_10M_MAX)))
        else:
            results.ratios.append((name, "p99", p99, "(no target)", ""))
    elif thr_target is not None:
        results.ratios.append((name, "throughput", None, ">= %gx" % thr_target, "n/a"))
    if p and sc.get("rss_budget_mb") is not None:
        results.absolute.append((name, "permaproxy peak RSS", "%.1f MB" % p["peak_rss_mb"],
                                 "<= %d MB (cache + %d)" % (sc["rss_budget_mb"], RSS_HEADROOM_MB),
                                 verdict(p["peak_rss_mb"] <= sc["rss_budget_mb"])))
    if p and sc.get("p99_max_ms") is not None:
        results.absolute.append((name, "permaproxy p99", fmt(p["p99_ms"], "%.2f ms"),
                                 "< %.0f ms" % sc["p99_max_ms"],
                                 verdict(p["p99_ms"] is not None and p["p99_ms"] < sc["p99_max_ms"])))
        results.absolute.append((name, "permaproxy errors", str(p["errors"]), "0",
                                 verdict(p["errors"] == 0)))


# --------------------------------------------------------------------------
# generation rows: stand-ins run as separate Python processes (no shared GIL
# with the client threads)


class QuietHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits
    # for the client's delayed ACK of the headers (40 ms on Linux), which made
    # every direct download look 40 ms slow.
    disable_nagle_algorithm = True

    def log_message(self, *a):
        pass


class FastThreadingServer(http.server.ThreadingHTTPServer):
    request_queue_size = 4096
    daemon_threads = True
    allow_reuse_address = True


def standin_filehost(port, kb):
    """Serves GET /x/<n>.png: one valid PNG of about `kb` KB, made unique per n
    with a tEXt chunk (so no two URLs carry the same bytes)."""
    base = make_png(kb * 1024, seed=42)
    head, rest = base[:33], base[33:]  # signature + IHDR | IDAT + IEND

    class H(QuietHandler):
        def do_GET(self):
            m = re.match(r"^/x/(\d+)\.png$", self.path)
            if not m:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = head + png_chunk(b"tEXt", b"Comment\x00n=" + m.group(1).encode()) + rest
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    FastThreadingServer(("127.0.0.1", port), H).serve_forever()


def standin_generate(port, fh_port):
    """Answers POST (any path) with {"output": [4 file-host URLs]}, new n per call."""
    counter = [0]
    lock = threading.Lock()

    class H(QuietHandler):
        def _answer(self):
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                self.rfile.read(n)
            with lock:
                counter[0] += 1
                c = counter[0]
            urls = ["http://127.0.0.1:%d/x/%d.png" % (fh_port, c * 4 + i) for i in range(4)]
            body = json.dumps({"id": "bench-%d" % c, "status": "succeeded",
                               "output": urls}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = _answer
        do_GET = _answer

    FastThreadingServer(("127.0.0.1", port), H).serve_forever()


class KeepAlive:
    """Per-thread keep-alive HTTP/1.1 connections, reconnecting on failure."""

    def __init__(self):
        self.local = threading.local()

    def request(self, port, method, path, body=None, headers=None, timeout=120.0):
        conns = self.local.__dict__.setdefault("conns", {})
        for attempt in (0, 1):
            c = conns.get(port)
            if c is None:
                c = conns[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            try:
                c.request(method, path, body=body, headers=headers or {})
                r = c.getresponse()
                data = r.read()
                return r.status, data
            except (OSError, http.client.HTTPException):
                c.close()
                conns.pop(port, None)
                if attempt:
                    raise


def store_count(storage):
    n = 0
    for _, _, files in os.walk(storage):
        n += sum(1 for f in files if STORE_FILE_RE.match(f))
    return n


def run_generation(args, binary, tmpdir, results):
    """Generation rows (need the proxy's rewrite path to work end to end)."""
    log("generation rows: stand-in file host + generate API")
    fh_port, gen_port = free_ports(2)
    me = os.path.abspath(__file__)
    fh = start_proc([sys.executable, me, "--standin", "filehost", str(fh_port), str(args.gen_image_kb)],
                    os.path.join(tmpdir, "standin-filehost.log"), name="standin-filehost")
    gen = start_proc([sys.executable, me, "--standin", "generate", str(gen_port), str(fh_port)],
                     os.path.join(tmpdir, "standin-generate.log"), name="standin-generate")
    wait_http(gen_port, "/", gen, timeout=15.0)
    wait_http(fh_port, "/x/1.png", fh, timeout=15.0)
    storage = os.path.join(tmpdir, "gen-images")
    os.makedirs(storage)
    pp = Permaproxy(binary, tmpdir, "gen", args.workers, CACHE_MB_MEMORY,
                    "http://127.0.0.1:%d" % gen_port, storage, extra={
                        "REPLICATE_HOSTS": "127.0.0.1:%d" % fh_port,
                        "IMAGE_ALLOW_HTTP_SOURCES": "true",
                        "IMAGE_REWRITE_PATHS": "/v1/images/generate",
                        "IMAGE_PER_USER_LIMIT": 1000000,
                    })
    ka = KeepAlive()
    pool4 = ThreadPoolExecutor(max_workers=400)
    gen_path = "/v1/images/generate"
    body = json.dumps({"prompt": "bench", "num_outputs": 4}).encode()
    hosted = []  # hosted paths handed out, for the read-back check
    hosted_lock = threading.Lock()

    def headers(i):
        return {"Content-Type": "application/json", "x-user-id": "bench-u%d" % (i % 20)}

    def via_proxy(i):
        """One generate through permaproxy -> (seconds, error or None)."""
        t0 = time.perf_counter()
        try:
            status, data = ka.request(pp.port, "POST", gen_path, body, headers(i))
        except (OSError, http.client.HTTPException) as e:
            return time.perf_counter() - t0, "exception: %s" % e
        dt = time.perf_counter() - t0
        if status != 200:
            return dt, "HTTP %d: %r" % (status, data[:200])
        try:
            out = json.loads(data)["output"]
        except (ValueError, KeyError, TypeError) as e:
            return dt, "bad JSON: %s" % e
        paths = [re.sub(r"^https?://[^/]+", "", u) for u in out if isinstance(u, str)]
        if len(paths) != 4 or not all(p.startswith("/v1/images/hosted/") for p in paths):
            return dt, "output not rewritten: %r" % (out,)
        with hosted_lock:
            hosted.extend(paths)
        return dt, None

    def direct(i):
        """The same generate straight from the upstream, then the 4 downloads in
        parallel from the file host: what the client would pay without the proxy."""
        t0 = time.perf_counter()
        try:
            status, data = ka.request(gen_port, "POST", gen_path, body, headers(i))
            urls = json.loads(data)["output"]
            paths = [re.sub(r"^https?://[^/]+", "", u) for u in urls]
            res = list(pool4.map(lambda p: ka.request(fh_port, "GET", p), paths))
            err = None if all(s == 200 for s, _ in res) else "download failed"
        except (OSError, http.client.HTTPException, ValueError) as e:
            err = "exception: %s" % e
        return time.perf_counter() - t0, err

    def concurrent(fn, n):
        barrier = threading.Barrier(n)
        out = [None] * n

        def worker(i):
            barrier.wait()
            out[i] = fn(i)

        ts = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return out

    def summarize(samples):
        lat = [s * 1000.0 for s, _ in samples]
        errs = [e for _, e in samples if e]
        return lat, errs

    try:
        # 1. rewrite latency, one generation at a time
        seq = {"direct": [], "proxy": []}
        for i in range(args.gen_sequential):
            seq["direct"].append(direct(i))
            seq["proxy"].append(via_proxy(i))
        # 2. 100 concurrent generations, alternating rounds
        conc = {"direct": [], "proxy": []}
        rss_peak = 0.0
        for r in range(args.gen_rounds):
            conc["direct"].extend(concurrent(direct, 100))
            with RssSampler(pp.proc.pid) as rss:
                conc["proxy"].extend(concurrent(via_proxy, 100))
            rss_peak = max(rss_peak, rss.peak_mb)
        for label, data, conns in (("1 generation at a time", seq, 1),
                                   ("load test: 100 concurrent generations", conc, 100)):
            dl, derr = summarize(data["direct"])
            pl, perr = summarize(data["proxy"])
            for side, lat, errs in (("direct (no proxy)", dl, derr), ("permaproxy", pl, perr)):
                results.rows.append(dict(scenario="generate x4 images, " + label, name="gen",
                                         side=side, skipped=None, agg={
                                             "rps": None, "mbps": None, "p50_ms": percentile(lat, 50),
                                             "p99_ms": percentile(lat, 99), "errors": len(errs),
                                             "peak_rss_mb": rss_peak if (conns == 100 and side == "permaproxy") else None,
                                             "runs": len(lat)}))
                for e in sorted(set(errs))[:3]:
                    results.notes.append("%s / %s error: %s" % (label, side, e))
            added = (median(pl) - median(dl)) if (pl and dl) else None
            if conns == 1:
                # The rewrite target: one generate response with 4 images costs
                # no more than the 4 downloads themselves plus 5 ms.
                results.absolute.append(("rewrite, " + label,
                                         "added latency = median(proxy) - median(direct)",
                                         fmt(added, "%.2f ms"), "<= 5 ms",
                                         verdict(added is not None and added <= 5.0 and not perr)))
            else:
                # Under load the proxy also stores 400 images (fsynced) and caps
                # downloads at IMAGE_DOWNLOAD_CONCURRENCY; reported, not judged.
                results.absolute.append(("rewrite, " + label,
                                         "added latency = median(proxy) - median(direct)",
                                         fmt(added, "%.2f ms"), "(reported)", ""))
            results.absolute.append(("rewrite, " + label, "permaproxy errors", str(len(perr)), "0",
                                     verdict(not perr)))
        results.absolute.append(("load test: 100 concurrent generations",
                                 "permaproxy peak RSS (issue 16)", "%.1f MB" % rss_peak,
                                 "<= %d MB" % GEN_RSS_MAX_MB, verdict(rss_peak <= GEN_RSS_MAX_MB)))
        results.absolute.append(("load test: 100 concurrent generations", "permaproxy peak RSS",
                                 "%.1f MB" % rss_peak,
                                 "<= %d MB (cache + %d)" % (CACHE_MB_MEMORY + RSS_HEADROOM_MB, RSS_HEADROOM_MB),
                                 verdict(rss_peak <= CACHE_MB_MEMORY + RSS_HEADROOM_MB)))

        # 3. keep generating until 1000 images are stored, then read them all back
        log("generation: filling the store to 1000 images")
        t0 = time.time()
        fill = []
        fill_lock = threading.Lock()
        stop = threading.Event()
        counter = [100000]

        def filler():
            while not stop.is_set():
                with fill_lock:
                    counter[0] += 1
                    i = counter[0]
                res = via_proxy(i)
                with fill_lock:
                    fill.append(res)
                if res[1] and len([1 for _, e in fill if e]) > 200:
                    stop.set()

        ts = [threading.Thread(target=filler) for _ in range(16)]
        for t in ts:
            t.start()
        stored = store_count(storage)
        while stored < 1000 and time.time() - t0 < args.gen_fill_timeout and not stop.is_set():
            time.sleep(0.2)
            stored = store_count(storage)
        stop.set()
        for t in ts:
            t.join()
        elapsed = time.time() - t0
        stored = store_count(storage)
        fl, ferr = summarize(fill)
        with hosted_lock:
            paths = list(dict.fromkeys(hosted))
        read = list(pool4.map(lambda p: ka.request(pp.port, "GET", p)[0], paths))
        bad_reads = sum(1 for s in read if s != 200)
        results.rows.append(dict(scenario="load test: fill store to 1000 images (16 clients)",
                                 name="gen", side="permaproxy", skipped=None, agg={
                                     "rps": len(fill) / elapsed if elapsed else None, "mbps": None,
                                     "p50_ms": percentile(fl, 50), "p99_ms": percentile(fl, 99),
                                     "errors": len(ferr) + bad_reads, "peak_rss_mb": None,
                                     "runs": len(fl)}))
        for e in sorted(set(ferr))[:3]:
            results.notes.append("fill store / permaproxy error: %s" % e)
        results.absolute.append(("load test: 1000 images stored", "images in the store",
                                 str(stored), ">= 1000", verdict(stored >= 1000)))
        results.absolute.append(("load test: 1000 images stored",
                                 "errors (generate + read-back of %d hosted URLs)" % len(paths),
                                 str(len(ferr) + bad_reads), "0", verdict(not ferr and not bad_reads)))
    finally:
        pool4.shutdown(wait=False)
        pp.stop()


# --------------------------------------------------------------------------
# report


def machine_info(nginx, wrk, binary, args):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = status = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = "%.1f GB" % (int(f.readline().split()[1]) / 1024.0 / 1024.0)
    except OSError:
        pass
    rev = cmd_output(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    if "unavailable" in rev or "fatal" in rev:
        rev = "(no commit)"
    return [
        ("date", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
        ("nproc", str(os.cpu_count())),
        ("CPU", cpu),
        ("memory", mem),
        ("kernel", os.uname().release),
        ("nginx", cmd_output([nginx, "-v"]).replace("nginx version: ", "")),
        ("wrk", cmd_output([wrk, "-v"]).splitlines()[0] if wrk else "?"),
        ("permaproxy", "%s (git %s)" % (binary if binary else "not built", rev)),
        ("workers", "%d (nginx worker_processes = permaproxy WORKER_THREADS)" % args.workers),
        ("runs", "%d x %ds per side, alternating, median reported; wrk -t%d, %ds warm-up"
         % (args.runs, args.duration, args.wrk_threads, args.warmup)),
        ("command", "benches/run.sh " + " ".join(sys.argv[1:])),
    ]


def render(info, results, images):
    L = ["# permaproxy vs nginx: load benchmark", ""]
    L += ["| machine | |", "|---|---|"] + ["| %s | %s |" % kv for kv in info] + [""]
    L += ["Images: " + ", ".join("%s = %d bytes (%dx%d PNG)" % (k, v["bytes"], v["dims"][0], v["dims"][1])
                                 for k, v in sorted(images.items())), ""]
    L += ["| scenario | side | req/s | MB/s | p50 | p99 | errors | peak RSS | CPU/req |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results.rows:
        a = row["agg"]
        if a is None:
            L.append("| %s | %s | skipped | | | | | | |" % (row["scenario"], row["side"]))
            continue
        L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            row["scenario"], row["side"], fmt(a["rps"], "%.0f"), fmt(a["mbps"], "%.1f"),
            fmt(a["p50_ms"], "%.2f ms"), fmt(a["p99_ms"], "%.2f ms"), a["errors"],
            fmt(a["peak_rss_mb"], "%.1f MB"), fmt(a.get("cpu_us"), "%.1f us")))
    L += ["", "## Ratios (permaproxy / nginx)", "",
          "| scenario | metric | ratio | target | verdict |", "|---|---|---:|---|---|"]
    for name, metric, value, target, v in results.ratios:
        L.append("| %s | %s | %s | %s | %s |" % (name, metric, fmt(value, "%.2fx", "n/a"), target, v))
    if results.absolute:
        L += ["", "## Absolute targets", "", "| scenario | measured | value | target | verdict |",
              "|---|---|---:|---|---|"]
        for row in results.absolute:
            L.append("| %s | %s | %s | %s | %s |" % row)
    if results.notes:
        L += ["", "## Notes", ""] + ["- " + n for n in results.notes]
    L += ["", "MB/s is wrk's Transfer/sec in MiB. p50/p99 come from wrk --latency (per run, median "
          "across runs); errors = wrk non-2xx/3xx + socket errors, summed across runs. Peak RSS = "
          "max across runs of the process tree's VmRSS sampled every 50 ms (and VmHWM after a "
          "clear_refs reset for single-process servers). CPU/req = the server's user + system "
          "CPU time during the run (all threads, and nginx's workers) divided by the requests "
          "served (median across runs): it does not count wrk or the upstream, and it is "
          "steadier than req/s when other work shares the machine."]
    return "\n".join(L) + "\n"


# --------------------------------------------------------------------------


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "0 0 0"


def find_tool(name):
    return shutil.which(name) or next((p for p in ("/usr/sbin/" + name, "/usr/bin/" + name)
                                       if os.path.exists(p)), None)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 run x 3 s per side (default 3 x 10 s)")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--duration", type=int, help="seconds per wrk run")
    ap.add_argument("--warmup", type=int, default=1, help="seconds of wrk warm-up per side")
    ap.add_argument("--workers", type=int, default=int(os.environ.get("BENCH_WORKERS", "2")),
                    help="nginx worker_processes = permaproxy WORKER_THREADS (default 2)")
    ap.add_argument("--wrk-threads", type=int, default=1)
    ap.add_argument("--bin", default=os.path.join(REPO, "target", "release", "permaproxy"))
    ap.add_argument("--nginx-only", action="store_true", help="measure nginx only")
    ap.add_argument("--only", help="comma list of scenarios: " + ",".join(s["name"] for s in SCENARIOS)
                    + ",gen")
    ap.add_argument("--no-generation", action="store_true",
                    help="skip the generation rows (they need the rewrite path end to end)")
    ap.add_argument("--gen-image-kb", type=int, default=200)
    ap.add_argument("--gen-sequential", type=int)
    ap.add_argument("--gen-rounds", type=int)
    ap.add_argument("--gen-fill-timeout", type=int, default=300)
    ap.add_argument("--max-load", type=float, default=1.5,
                    help="wait while the 1-minute load average is above this (default 1.5)")
    ap.add_argument("--load-wait", type=int,
                    help="seconds to wait for --max-load, polling every 30 s "
                    "(default 900, 0 with --quick); then run anyway and say so")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "latest.md"))
    ap.add_argument("--keep-tmp", action="store_true")
    ap.add_argument("--standin", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.standin:
        kind = args.standin[0]
        if kind == "filehost":
            standin_filehost(int(args.standin[1]), int(args.standin[2]))
        elif kind == "generate":
            standin_generate(int(args.standin[1]), int(args.standin[2]))
        return 0

    args.runs = args.runs or (1 if args.quick else 3)
    args.duration = args.duration or (3 if args.quick else 10)
    args.gen_sequential = args.gen_sequential or (10 if args.quick else 30)
    args.gen_rounds = args.gen_rounds or (1 if args.quick else 3)
    if args.load_wait is None:
        args.load_wait = 0 if args.quick else 900
    only = set(args.only.split(",")) if args.only else None

    nginx, wrk = find_tool("nginx"), find_tool("wrk")
    if not nginx or not wrk:
        print("error: need nginx and wrk (apt-get install -y nginx-light wrk, or run benches/run.sh)",
              file=sys.stderr)
        return 2
    binary = None
    if not args.nginx_only:
        if not os.access(args.bin, os.X_OK):
            print("\nerror: permaproxy binary not found at %s.\n"
                  "  Build it with `cargo build --release` (benches/run.sh does), or run the nginx rows\n"
                  "  alone with `benches/run.sh --nginx-only`.\n" % args.bin, file=sys.stderr)
            return 2
        binary = os.path.abspath(args.bin)

    tmpdir = tempfile.mkdtemp(prefix="permaproxy-bench-")
    os.chmod(tmpdir, 0o755)
    log("temp dir %s" % tmpdir)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    results = Results()
    info = machine_info(nginx, wrk, binary, args)
    deadline = time.time() + args.load_wait
    while float(loadavg().split()[0]) > args.max_load and time.time() < deadline:
        log("load average %s is above %.1f; waiting (up to %ds more)"
            % (loadavg(), args.max_load, deadline - time.time()))
        time.sleep(30)
    load_start = loadavg()
    if float(load_start.split()[0]) > args.max_load:
        results.notes.append("load average was %s at start, above --max-load %.1f: other work "
                             "shared the machine" % (load_start, args.max_load))
    if float(load_start.split()[0]) > 0.5 * (os.cpu_count() or 1):
        log("WARNING: load average is %s on %d CPUs; other work on this machine will skew the "
            "numbers" % (load_start, os.cpu_count() or 1))
    images = {}
    rc = 0
    try:
        images_dir = os.path.join(tmpdir, "images")
        images = seed_images(images_dir)

        up_port, pass_port, static_port = free_ports(3)
        upstream = start_nginx(nginx, tmpdir, "upstream", {"UPSTREAM_PORT": up_port,
                                                           "UPSTREAM_BODY": UPSTREAM_BODY})
        wait_http(up_port, "/", upstream, timeout=15.0)
        peer = start_nginx(nginx, tmpdir, "peer", {
            "WORKERS": args.workers, "UPSTREAM_PORT": up_port, "PASS_PORT": pass_port,
            "STATIC_PORT": static_port, "IMAGES_DIR": images_dir})
        wait_http(pass_port, "/", peer, timeout=15.0)
        log("upstream nginx on :%d, peer nginx pass-through :%d static :%d (%d workers)"
            % (up_port, pass_port, static_port, args.workers))

        wanted = [s for s in SCENARIOS if only is None or s["name"] in only]
        for instance, cache_mb in (("mem", CACHE_MB_MEMORY), ("disk", 0)):
            scs = [s for s in wanted if s["instance"] == instance]
            if not scs:
                continue
            pp, pp_err = None, None
            if binary:
                try:
                    pp = Permaproxy(binary, tmpdir, instance, args.workers, cache_mb,
                                    "http://127.0.0.1:%d" % up_port, images_dir)
                except RuntimeError as e:
                    pp_err = "permaproxy did not start: %s" % str(e).splitlines()[0]
                    log(str(e))
            try:
                for sc in scs:
                    nport = static_port if sc["image"] else pass_port
                    sides = [("nginx", nport, peer.pid, None)]
                    if binary:
                        sides.append(("permaproxy", pp.port if pp else 0,
                                      pp.proc.pid if pp else 0, pp_err))
                    run_scenario(sc, sides, args, wrk, images, results)
            finally:
                if pp:
                    pp.stop()

        log_scs = [s for s in wanted if s["instance"] == "log"]
        if binary and log_scs:
            run_access_log(log_scs, args, binary, tmpdir, up_port, images_dir, wrk, images,
                           results)

        if binary and not args.no_generation and (only is None or "gen" in only):
            try:
                run_generation(args, binary, tmpdir, results)
            except RuntimeError as e:
                log("generation rows failed: %s" % e)
                results.notes.append("generation rows failed: %s" % str(e).splitlines()[0])
        elif not binary:
            results.notes.append("nginx only: permaproxy rows and generation rows not run.")
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    except RuntimeError as e:
        log("error: %s" % e)
        rc = 1
    finally:
        stop_all()
        if args.keep_tmp or rc not in (0, 130):
            log("kept temp dir (configs and logs): %s" % tmpdir)
        else:
            shutil.rmtree(tmpdir, ignore_errors=True)

    if images and results.rows:
        order = {s["title"]: i for i, s in enumerate(SCENARIOS)}
        side_order = {"nginx": 0, "direct (no proxy)": 0}
        results.rows.sort(key=lambda r: (order.get(r["scenario"], len(order)),
                                         side_order.get(r["side"], 1)))  # stable otherwise
        results.ratios.sort(key=lambda r: order.get(r[0], len(order)))
        results.absolute.sort(key=lambda r: order.get(r[0], len(order)))
        info.append(("load average", "%s at start, %s at end" % (load_start, loadavg())))
        report = render(info, results, images)
        print(report)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(report)
        log("wrote %s" % args.out)
    return rc


if __name__ == "__main__":
    sys.exit(main())
