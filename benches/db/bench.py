#!/usr/bin/env python3
"""Metadata-database benchmark (issue 12). Python 3 stdlib only; usually run
through benches/db.sh, which installs what it needs and builds the binaries.

For each database (SQLite, Postgres) and table size (10k, 100k, 1M rows):

  startup   exec of `permaproxy serve` -> admin /healthz 200, on a seeded
            table (a second start: the schema exists, legacy_import is set),
            RSS at ready; then how long the start-up work that runs after
            ready (the cleanup walk over the whole table) keeps the process
            and the database busy, and RSS once it is done
  get       hosted GET with IMAGE_MEMORY_CACHE_MB=0 (one indexed lookup and
            one disk read per request) over a few thousand keys that have
            files, rotated by a wrk Lua script (benches/db/paths.lua), at
            --conns and once at --latency-conns (1, latency unloaded); RSS
            after the load; and the cost of one /metrics scrape (its gauges
            run a full-table aggregate)
  gen       a generate call through the proxy whose upstream answers 4 image
            URLs on a loopback file host, vs. the same call straight to the
            upstream plus the 4 downloads (benches/harness.py's stand-ins);
            then the database statements of that path, timed by sqlx's own
            query log (RUST_LOG=sqlx::query=debug) in a separate pass

Then, once per run:

  bucket    requests per minute between an idle replica and an S3 bucket
            (Garage, scripts/garage.sh) holding 1,000 images, counted by a
            small HTTP proxy in front of Garage (benches/db/countproxy.py):
            the previous release (16a30fb, --old-bin) against this version
            on SQLite and on Postgres
  import    the first start of this version on a 10k-image disk store
            written by the old version (sidecars, no database), vs. the
            second start

Postgres is a throwaway cluster from scripts/postgres.sh, started durable
(fsync, synchronous_commit and full_page_writes on) so its commits cost what
they cost in production; SQLite runs as permaproxy configures it (WAL,
synchronous=FULL). Everything listens on 127.0.0.1 and lives in one temp dir.
"""

import argparse
import datetime
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHES = os.path.dirname(HERE)
REPO = os.path.dirname(BENCHES)
sys.path.insert(0, BENCHES)
sys.path.insert(0, HERE)
import harness as H  # noqa: E402
import seed  # noqa: E402

SIZES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}
PG_DURABLE = "-c fsync=on -c synchronous_commit=on -c full_page_writes=on"
GEN_PATH = "/v1/images/generate"
log = H.log


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v, spec="%.1f"):
    return "-" if v is None else spec % v


def loadavg():
    return H.loadavg()


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def mem_total():
    try:
        with open("/proc/meminfo") as f:
            return "%.1f GB" % (int(f.readline().split()[1]) / 1048576.0)
    except OSError:
        return "?"


# --------------------------------------------------------------------------
# processes and /proc


def proc_cpu(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / float(H.CLK_TCK)
    except (OSError, ValueError, IndexError):
        return 0.0


def rss_mb(pid, field="VmRSS"):
    kb = H.status_kb(pid, field)
    return None if kb is None else kb / 1024.0


class Postgres:
    """A throwaway cluster from scripts/postgres.sh, one database per table."""

    def __init__(self, tmpdir):
        self.dir = os.path.join(tmpdir, "pg")
        env = dict(os.environ, POSTGRES_OPTS=PG_DURABLE)
        out = subprocess.run([os.path.join(REPO, "scripts", "postgres.sh"), "start", self.dir],
                             env=env, check=True, stdout=subprocess.PIPE)
        self.url = out.stdout.decode().strip().splitlines()[-1]
        with open(os.path.join(self.dir, "data", "postmaster.pid")) as f:
            self.pid = int(f.readline())
        self.base = self.url.rsplit("/", 1)[0]
        log("postgres %s (pid %d), durable: %s" % (self.url, self.pid, self.show("fsync")))

    def psql(self, url, sql):
        out = subprocess.run(["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
                              "-d", url, "-c", sql], check=True, stdout=subprocess.PIPE)
        return out.stdout.decode().strip()

    def show(self, name):
        return self.psql(self.url, "SHOW %s" % name)

    def create(self, name):
        self.psql(self.url, "DROP DATABASE IF EXISTS %s" % name)
        self.psql(self.url, "CREATE DATABASE %s" % name)
        return "%s/%s" % (self.base, name)

    def cpu(self):
        """CPU seconds of the whole cluster: postmaster and every backend."""
        return proc_cpu(self.pid) + sum(proc_cpu(p) for p in H.proc_children(self.pid))

    def version(self):
        return self.psql(self.url, "SHOW server_version")

    def stop(self):
        subprocess.run([os.path.join(REPO, "scripts", "postgres.sh"), "stop", self.dir])


def healthz_once(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=1.0)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        return s.recv(64).startswith(b"HTTP/1.1 200")
    finally:
        s.close()


class Proxy:
    """One permaproxy process; `ready_s` is exec -> first /healthz 200."""

    def __init__(self, binary, tmpdir, label, env, timeout=600.0):
        self.port, self.metrics_port = H.free_ports(2)
        self.env = dict(env, LISTEN_ADDR="127.0.0.1:%d" % self.port,
                        METRICS_ADDR="127.0.0.1:%d" % self.metrics_port)
        self.log = os.path.join(tmpdir, "permaproxy-%s.log" % label)
        t0 = time.perf_counter()
        self.proc = H.start_proc([binary, "serve"], self.log, env=H.permaproxy_env(self.env),
                                 name="permaproxy-" + label)
        deadline = t0 + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("permaproxy (%s) exited with %s\n%s"
                                   % (label, self.proc.returncode, H.tail(self.log)))
            try:
                if healthz_once(self.metrics_port):
                    break
            except OSError:
                pass
            if time.perf_counter() > deadline:
                self.stop()
                raise RuntimeError("permaproxy (%s) not healthy in %.0fs\n%s"
                                   % (label, timeout, H.tail(self.log)))
            time.sleep(0.002)
        self.ready_s = time.perf_counter() - t0
        self.rss_ready = rss_mb(self.proc.pid)
        # The admin listener and the public one start side by side: note
        # when the public port accepts too (it can trail /healthz).
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
                break
            except OSError:
                if time.perf_counter() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("permaproxy (%s): public port never accepted" % label)
                time.sleep(0.0005)
        self.public_s = time.perf_counter() - t0

    @property
    def pid(self):
        return self.proc.pid

    def cpu(self):
        return proc_cpu(self.pid)

    def rss(self):
        return rss_mb(self.pid)

    def stop(self):
        H.stop_proc(self.proc, signal.SIGINT, wait=30.0)


def settle(proxy, pg, timeout, quiet=1.0, budget=0.03):
    """Waits until the proxy (and the database) stop working: less than
    `budget` CPU seconds in a `quiet`-second window. Returns (seconds after
    ready, proxy CPU s, database CPU s, settled?)."""
    t0 = time.perf_counter()
    c0, d0 = proxy.cpu(), (pg.cpu() if pg else 0.0)
    hist = [(t0, c0, d0)]
    while True:
        time.sleep(0.1)
        now = time.perf_counter()
        c, d = proxy.cpu(), (pg.cpu() if pg else 0.0)
        hist.append((now, c, d))
        old = [h for h in hist if h[0] <= now - quiet]
        if old:
            t_, c_, d_ = old[-1]
            if (c - c_) + (d - d_) < budget:
                return t_ - t0, c - c0, d - d0, True
        if now - t0 > timeout:
            return now - t0, c - c0, d - d0, False


# --------------------------------------------------------------------------
# one table: start-up, GET, generate


def base_env(storage, fh_port, gen_port, db_url):
    env = {
        "UPSTREAM_URL": "http://127.0.0.1:%d" % gen_port,
        "IMAGE_STORAGE_PATH": storage,
        "WORKER_THREADS": 2,
        "LOG_FORMAT": "json",
        "RUST_LOG": "warn",
        "IMAGE_DOWNLOAD_RATE_PER_SEC": 1000000000,
        "IMAGE_DOWNLOAD_BURST": 1000000000,
        "IMAGE_MEMORY_CACHE_MB": 0,
        "REPLICATE_HOSTS": "127.0.0.1:%d" % fh_port,
        "IMAGE_ALLOW_HTTP_SOURCES": "true",
        "IMAGE_REWRITE_PATHS": GEN_PATH,
    }
    if db_url:
        env["DATABASE_URL"] = db_url
    return env


def run_wrk_paths(wrk, port, keys_file, conns, seconds):
    argv = [wrk, "-t1", "-c%d" % conns, "-d%ds" % seconds, "--latency", "--timeout", "10s",
            "-s", os.path.join(HERE, "paths.lua"), "http://127.0.0.1:%d" % port]
    env = dict(os.environ, BENCH_KEYS=keys_file)
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                       timeout=seconds + 120)
    out = p.stdout.decode("utf-8", "replace")
    r = H.parse_wrk(out)
    if p.returncode != 0 or r["rps"] is None:
        raise RuntimeError("wrk failed: %s\n%s" % (" ".join(argv), out))
    return r


def time_metrics(port, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        status, _, _ = H.http_get(port, "/metrics", timeout=60.0)
        out.append((time.perf_counter() - t0) * 1000.0)
        if status != 200:
            raise RuntimeError("/metrics answered %d" % status)
    return median(out)


def check_get(port, path, expect):
    status, _, body = H.http_get(port, path, timeout=10.0)
    if status != 200 or body != expect:
        raise RuntimeError("GET %s -> %d, %d bytes (want 200, %d bytes)"
                           % (path, status, len(body), len(expect)))


class Gen:
    """The generate stand-ins of benches/harness.py: a file host answering
    200 KB PNGs and an upstream answering 4 of its URLs per call."""

    def __init__(self, tmpdir, kb):
        self.fh_port, self.gen_port = H.free_ports(2)
        me = os.path.join(BENCHES, "harness.py")
        self.fh = H.start_proc([sys.executable, me, "--standin", "filehost", str(self.fh_port),
                                str(kb)], os.path.join(tmpdir, "standin-filehost.log"),
                               name="standin-filehost")
        self.gen = H.start_proc([sys.executable, me, "--standin", "generate", str(self.gen_port),
                                 str(self.fh_port)], os.path.join(tmpdir, "standin-generate.log"),
                                name="standin-generate")
        H.wait_http(self.gen_port, "/", self.gen, timeout=15.0)
        H.wait_http(self.fh_port, "/x/1.png", self.fh, timeout=15.0)
        self.ka = H.KeepAlive()
        from concurrent.futures import ThreadPoolExecutor
        self.pool = ThreadPoolExecutor(max_workers=16)
        self.body = json.dumps({"prompt": "bench", "num_outputs": 4}).encode()

    def via_proxy(self, port, user):
        t0 = time.perf_counter()
        status, data = self.ka.request(port, "POST", GEN_PATH, self.body,
                                       {"Content-Type": "application/json", "x-user-id": user})
        dt = time.perf_counter() - t0
        out = json.loads(data)["output"] if status == 200 else []
        ok = len(out) == 4 and all("/v1/images/hosted/" in u for u in out)
        if not ok:
            raise RuntimeError("generate through the proxy: HTTP %d %r" % (status, data[:300]))
        return dt, out

    def direct(self):
        t0 = time.perf_counter()
        status, data = self.ka.request(self.gen_port, "POST", GEN_PATH, self.body,
                                       {"Content-Type": "application/json"})
        urls = json.loads(data)["output"]
        paths = [re.sub(r"^https?://[^/]+", "", u) for u in urls]
        res = list(self.pool.map(lambda p: self.ka.request(self.fh_port, "GET", p), paths))
        if status != 200 or not all(s == 200 for s, _ in res):
            raise RuntimeError("direct generate failed")
        return time.perf_counter() - t0


def sqlx_statements(logfile):
    """sqlx's query log (target sqlx::query, one JSON line per statement):
    (statement text, elapsed ms) in order."""
    out = []
    with open(logfile, encoding="utf-8", errors="replace") as f:
        for line in f:
            if "sqlx::query" not in line:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            fields = ev.get("fields", ev)
            text = fields.get("db.statement") or fields.get("summary") or ""
            el = fields.get("elapsed_secs")
            if el is None:
                m = re.match(r"^([\d.]+)(ns|µs|us|ms|s)$", str(fields.get("elapsed", "")))
                if not m:
                    continue
                el = float(m.group(1)) * {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3,
                                          "s": 1.0}[m.group(2)]
            out.append((" ".join(str(text).split()), float(el) * 1000.0))
    return out


def classify_statement(text):
    t = text.upper()
    if t.startswith("INSERT INTO HOSTED_IMAGES") and "'PENDING'" in t:
        return "hand-out insert (per image)"
    if t.startswith("UPDATE HOSTED_IMAGES SET STATE = 'STORED'"):
        return "mark stored (per image)"
    if t.startswith("DELETE FROM DELETED_OBJECTS"):
        return "dequeue delete (per image)"
    if t.startswith("SELECT USER_ID, IMAGE_ID, REQUESTED_AT FROM HOSTED_IMAGES"):
        return "per-user limit select (per image)"
    if t.startswith("SELECT PG_ADVISORY_XACT_LOCK"):
        return "per-user lock (per image)"
    if t.startswith("UPDATE HOSTED_IMAGES SET REQUESTED_AT"):
        return "hits flush (per image in batch)"
    if t.startswith("BEGIN"):
        return "BEGIN"
    if t.startswith("COMMIT"):
        return "COMMIT"
    return None


def measure_table(args, db, size_name, binary, tmpdir, pg, gen, wrk):
    rows = SIZES[size_name]
    label = "%s-%s" % (db, size_name)
    cell = {"db": db, "size": size_name, "rows": rows, "load_start": loadavg()}
    storage = os.path.join(tmpdir, label)
    os.makedirs(storage)
    db_url = pg.create("pp_" + size_name) if db == "postgres" else None
    env = base_env(storage, gen.fh_port, gen.gen_port, db_url)
    pgc = pg if db == "postgres" else None

    # The schema comes from permaproxy itself: the first start migrates.
    p = Proxy(binary, tmpdir, label + "-create", env)
    cell["empty_ready_ms"] = p.ready_s * 1000.0
    p.stop()

    t0 = time.time()
    target = os.path.join(storage, "permaproxy.db") if db == "sqlite" else db_url
    subprocess.run([sys.executable, os.path.join(HERE, "seed.py"), db, target, "--rows",
                    str(rows), "--files", str(min(args.files, rows)), "--storage", storage],
                   check=True)
    cell["seed_s"] = time.time() - t0
    if db == "sqlite":
        cell["db_mb"] = os.path.getsize(target) / 1048576.0
    else:
        cell["db_mb"] = float(pg.psql(db_url, "SELECT pg_total_relation_size('permaproxy.hosted_images')")) / 1048576.0
    keys_file = os.path.join(storage, "bench-keys.txt")
    with open(keys_file) as f:
        keys = [k for k in f.read().split() if k]
    with open(os.path.join(storage, keys[0].split("/")[-2], keys[0].split("/")[-1]), "rb") as f:
        png = f.read()

    # 1. start-up: a second start on the seeded table, several times.
    starts = []
    for i in range(args.starts):
        p = Proxy(binary, tmpdir, "%s-start%d" % (label, i), env)
        busy_s, cpu_s, db_cpu_s, ok = settle(p, pgc, args.settle_timeout)
        starts.append({"ready_ms": p.ready_s * 1000.0, "public_ms": p.public_s * 1000.0,
                       "rss_ready": p.rss_ready,
                       "busy_s": busy_s, "cpu_s": cpu_s, "db_cpu_s": db_cpu_s, "settled": ok,
                       "rss_settled": p.rss(), "hwm_settled": rss_mb(p.pid, "VmHWM")})
        p.stop()
        log("%s start %d: ready %.0f ms, RSS %.1f MB; busy %.1f s after ready (%s), "
            "CPU %.2f s + db %.2f s, RSS %.1f MB"
            % (label, i, p.ready_s * 1000.0, p.rss_ready or 0, busy_s,
               "settled" if ok else "NOT settled", cpu_s, db_cpu_s, starts[-1]["rss_settled"] or 0))
    cell["starts"] = starts

    # 2. GETs on a memory miss, then generate, on one process.
    p = Proxy(binary, tmpdir, label + "-load", env)
    busy_s, _, _, ok = settle(p, pgc, args.settle_timeout)
    cell["load_settled"] = ok
    # An idle replica's own background work (gauges, leases, flushes).
    c0, d0, t0 = p.cpu(), (pgc.cpu() if pgc else 0.0), time.perf_counter()
    time.sleep(args.idle_cpu)
    dt = time.perf_counter() - t0
    cell["idle_cpu_pct"] = (p.cpu() - c0) / dt * 100.0
    cell["idle_db_cpu_pct"] = ((pgc.cpu() if pgc else 0.0) - d0) / dt * 100.0
    cell["rss_before_load"] = p.rss()
    check_get(p.port, keys[0], png)
    check_get(p.port, keys[-1], png)
    run_wrk_paths(wrk, p.port, keys_file, args.conns, 1)  # warm-up
    gets = []
    for i in range(args.runs):
        c0, d0 = p.cpu(), (pgc.cpu() if pgc else 0.0)
        r = run_wrk_paths(wrk, p.port, keys_file, args.conns, args.duration)
        c1, d1 = p.cpu(), (pgc.cpu() if pgc else 0.0)
        n = max(1, r["requests"] or 1)
        gets.append({"rps": r["rps"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
                     "errors": r["errors"], "cpu_us": (c1 - c0) / n * 1e6,
                     "db_cpu_us": (d1 - d0) / n * 1e6})
        log("%s GET run %d: %.0f req/s, p50 %.2f ms, p99 %.2f ms, %d errors, CPU %.1f + db %.1f us/req"
            % (label, i, r["rps"], r["p50_ms"], r["p99_ms"], r["errors"], gets[-1]["cpu_us"],
               gets[-1]["db_cpu_us"]))
    cell["gets"] = gets
    # The runs above are at --conns, so their latency is mostly queueing on
    # this 2-core machine; one run at --latency-conns (1) gives the latency
    # of a single request on a memory miss.
    r = run_wrk_paths(wrk, p.port, keys_file, args.latency_conns, args.duration)
    cell["get_latency"] = {"conns": args.latency_conns, "rps": r["rps"], "p50_ms": r["p50_ms"],
                           "p99_ms": r["p99_ms"], "errors": r["errors"]}
    log("%s GET at %d connection(s): %.0f req/s, p50 %.3f ms, p99 %.3f ms, %d errors"
        % (label, args.latency_conns, r["rps"], r["p50_ms"], r["p99_ms"], r["errors"]))
    cell["metrics_ms"] = time_metrics(p.metrics_port, 5)

    # generate through the proxy vs. straight to the upstream, alternating.
    direct, proxied = [], []
    for i in range(args.gen):
        direct.append(gen.direct() * 1000.0)
        dt, _ = gen.via_proxy(p.port, "gen-%s-%d" % (size_name, i % 10))
        proxied.append(dt * 1000.0)
    cell["gen_direct"] = direct
    cell["gen_proxy"] = proxied
    cell["rss_after_load"] = p.rss()
    cell["hwm_after_load"] = rss_mb(p.pid, "VmHWM")
    p.stop()

    # Revalidation of a warm memory cache: every key with a file cached,
    # IMAGE_CACHE_REVALIDATE_SECS shortened so a short window holds several
    # passes; the idle baseline above is subtracted.
    env_c = dict(env, IMAGE_MEMORY_CACHE_MB=256, IMAGE_CACHE_REVALIDATE_SECS=args.revalidate_secs)
    p = Proxy(binary, tmpdir, label + "-revalidate", env_c)
    settle(p, pgc, args.settle_timeout)
    ka = H.KeepAlive()
    for k in keys:
        status, _ = ka.request(p.port, "GET", k)
        if status != 200:
            raise RuntimeError("GET %s -> %d" % (k, status))
    settle(p, pgc, args.settle_timeout)
    c0, d0, t0 = p.cpu(), (pgc.cpu() if pgc else 0.0), time.perf_counter()
    time.sleep(args.revalidate_window)
    dt = time.perf_counter() - t0
    passes = dt / args.revalidate_secs
    cpu = (p.cpu() - c0) - cell["idle_cpu_pct"] / 100.0 * dt
    dbc = ((pgc.cpu() if pgc else 0.0) - d0) - cell["idle_db_cpu_pct"] / 100.0 * dt
    cell["revalidate"] = {"keys": len(keys), "passes": passes,
                          "cpu_ms_per_pass": max(0.0, cpu) / passes * 1000.0,
                          "db_cpu_ms_per_pass": max(0.0, dbc) / passes * 1000.0,
                          "rss": p.rss()}
    p.stop()
    log("%s revalidation of %d cached keys: %.1f ms proxy + %.1f ms db CPU per pass"
        % (label, len(keys), cell["revalidate"]["cpu_ms_per_pass"],
           cell["revalidate"]["db_cpu_ms_per_pass"]))

    # 3. the statements of the generate path, timed by sqlx (separate pass:
    # the query log itself costs time).
    env_q = dict(env, RUST_LOG="warn,sqlx::query=debug")
    p = Proxy(binary, tmpdir, label + "-sqlx", env_q)
    settle(p, pgc, args.settle_timeout)
    mark = os.path.getsize(p.log)
    for i in range(args.gen_sqlx):
        gen.via_proxy(p.port, "sqlx-%s-%d" % (size_name, i % 10))
    time.sleep(2.5)  # one hits flush
    p.stop()
    with open(p.log, "rb") as f:
        f.seek(mark)
        tail = f.read()
    tmp = p.log + ".gen"
    with open(tmp, "wb") as f:
        f.write(tail)
    stmts = sqlx_statements(tmp)
    by_kind = {}
    for text, ms in stmts:
        k = classify_statement(text)
        if k:
            by_kind.setdefault(k, []).append(ms)
    cell["sqlx"] = {k: {"n": len(v), "median_ms": median(v), "p90_ms": H.percentile(v, 90)}
                    for k, v in by_kind.items()}

    # 4. the hand-out transaction alone (4 images), proxy stopped.
    out = subprocess.run([sys.executable, os.path.join(HERE, "handout.py"), db, target,
                          "--tx", str(args.handout_tx)], check=True, stdout=subprocess.PIPE)
    cell["handout"] = json.loads(out.stdout)
    log("%s hand-out transaction (4 images): median %.2f ms, p99 %.2f ms"
        % (label, cell["handout"]["median_ms"], cell["handout"]["p99_ms"]))
    cell["load_end"] = loadavg()
    return cell


# --------------------------------------------------------------------------
# generate: this version against the previous release, side by side


def measure_genab(args, binary, old_bin, tmpdir, pg, gen):
    """Generate x4 through 16a30fb (sidecars + journal), through this version
    on SQLite and on Postgres, and direct, in rounds (one of each per round,
    fresh stores), so drift in the machine's load hits every side alike."""
    sides = [("direct", None, None)]
    if old_bin:
        sides.append(("16a30fb", old_bin, None))
    for db in args.dbs:
        sides.append(("this version, " + db, binary,
                      pg.create("pp_genab") if db == "postgres" else None))
    procs = {}
    for name, b, db_url in sides:
        if b:
            storage = os.path.join(tmpdir, "genab-" + re.sub(r"\W+", "-", name))
            procs[name] = Proxy(b, tmpdir, "genab-" + re.sub(r"\W+", "-", name),
                                base_env(storage, gen.fh_port, gen.gen_port, db_url))
    out = {name: [] for name, _, _ in sides}
    try:
        for name, p in procs.items():  # warm-up: connections, first files
            gen.via_proxy(p.port, "ab-warm")
        for i in range(args.gen):
            for name, _, _ in sides:
                if name == "direct":
                    out[name].append(gen.direct() * 1000.0)
                else:
                    dt, _ = gen.via_proxy(procs[name].port, "ab-u%d" % (i % 10))
                    out[name].append(dt * 1000.0)
    finally:
        for p in procs.values():
            p.stop()
    for name, v in out.items():
        log("generate A/B %s: median %.2f ms, p90 %.2f ms" % (name, median(v), H.percentile(v, 90)))
    return out


# --------------------------------------------------------------------------
# bucket requests of an idle replica


def read_env(path):
    out = {}
    with open(path) as f:
        for line in f:
            if "=" in line:
                k, v = line.strip().split("=", 1)
                out[k] = v
    return out


def classify_request(method, target):
    path, _, query = target.partition("?")
    if method == "GET" and "list-type=2" in query:
        return "LIST"
    if method == "GET" and path.rstrip("/").count("/") <= 1:
        return "LIST"
    if "uploads" in query or "uploadId" in query:
        return "MULTIPART"
    return method


def count_log(path, t_from, t_to):
    counts = {}
    if not os.path.exists(path):
        return counts
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 4:
                continue
            t = float(parts[0])
            if t_from <= t < t_to:
                k = classify_request(parts[1], parts[2])
                counts[k] = counts.get(k, 0) + 1
    return counts


def measure_bucket(args, binary, old_bin, tmpdir, pg, gen):
    gdir = os.path.join(tmpdir, "garage")
    subprocess.run([os.path.join(REPO, "scripts", "garage.sh"), "up", gdir], check=True)
    try:
        genv = read_env(os.path.join(gdir, "env"))
        s3_port = int(genv["S3_ENDPOINT"].rsplit(":", 1)[1])
        counters = {}
        for name in ("fill", "old", "new-sqlite", "new-postgres"):
            port = H.free_ports(1)[0]
            logf = os.path.join(tmpdir, "bucket-%s.log" % name)
            pr = H.start_proc([sys.executable, os.path.join(HERE, "countproxy.py"), str(port),
                               str(s3_port), logf], os.path.join(tmpdir, "countproxy-%s.out" % name),
                              name="countproxy-" + name)
            counters[name] = (port, logf, pr)
        time.sleep(0.5)

        def s3env(name, storage, db_url=None):
            e = base_env(storage, gen.fh_port, gen.gen_port, db_url)
            e.update({"IMAGE_STORAGE_BACKEND": "s3",
                      "S3_ENDPOINT": "http://127.0.0.1:%d" % counters[name][0],
                      "S3_BUCKET": genv["S3_BUCKET"], "S3_REGION": genv["S3_REGION"],
                      "S3_FORCE_PATH_STYLE": "true",
                      "AWS_ACCESS_KEY_ID": genv["AWS_ACCESS_KEY_ID"],
                      "AWS_SECRET_ACCESS_KEY": genv["AWS_SECRET_ACCESS_KEY"],
                      "IMAGE_MEMORY_CACHE_MB": 256})
            return e

        # Fill: the old release stores `objects` images through generate
        # calls, so the bucket is one an old version really wrote.
        res = {"objects": args.objects}
        fill_storage = os.path.join(tmpdir, "bucket-fill")
        p = Proxy(old_bin, tmpdir, "bucket-fill-old", s3env("fill", fill_storage))
        calls = (args.objects + 3) // 4
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=8) as ex:
            list(ex.map(lambda i: gen.via_proxy(p.port, "fill-u%02d" % (i % 40)), range(calls)))
        p.stop()
        fill = count_log(counters["fill"][1], 0, time.time() + 1)
        res["fill_requests"] = fill
        log("bucket filled by the old release: %d generate calls, requests %s" % (calls, fill))

        # This version's first start on that bucket imports it (once).
        news = {}
        for name, db_url in (("new-sqlite", None), ("new-postgres", pg.create("pp_bucket"))):
            storage = os.path.join(tmpdir, "bucket-" + name)
            t0 = time.time()
            p = Proxy(binary, tmpdir, "bucket-%s-first" % name, s3env(name, storage, db_url))
            first_ready = p.ready_s
            time.sleep(args.bucket_startup)
            p.stop()
            res[name + "-first"] = {"ready_ms": first_ready * 1000.0,
                                    "requests": count_log(counters[name][1], t0, time.time() + 1)}
            news[name] = s3env(name, storage, db_url)

        # Idle: all three replicas at once, each behind its own counter.
        idle = {}
        procs = {}
        t_start = time.time()
        procs["old"] = Proxy(old_bin, tmpdir, "bucket-old-idle",
                             s3env("old", os.path.join(tmpdir, "bucket-old")))
        for name, e in news.items():
            procs[name] = Proxy(binary, tmpdir, "bucket-%s-idle" % name, e)
        t_idle = time.time() + args.bucket_startup
        log("bucket: %d replicas idle for %d s (+%d s start-up)"
            % (len(procs), args.idle, args.bucket_startup))
        time.sleep(args.bucket_startup + args.idle)
        t_end = t_idle + args.idle
        for name, p in procs.items():
            p.stop()
            idle[name] = {"startup": count_log(counters[name][1], t_start - 1, t_idle),
                          "idle": count_log(counters[name][1], t_idle, t_end),
                          "minutes": args.idle / 60.0}
        res["idle"] = idle
        # A readiness probe touches the bucket too; count one.
        p = Proxy(binary, tmpdir, "bucket-readyz", news["new-sqlite"])
        t0 = time.time()
        H.http_get(p.metrics_port, "/readyz", timeout=10.0)
        time.sleep(0.3)
        res["readyz"] = count_log(counters["new-sqlite"][1], t0, time.time())
        p.stop()
        for _, _, pr in counters.values():
            H.stop_proc(pr)
        return res
    finally:
        subprocess.run([os.path.join(REPO, "scripts", "garage.sh"), "down", gdir])


# --------------------------------------------------------------------------
# first start on a store written by the old version


def write_old_store(storage, n, png):
    """n images with sidecars, as the old version's disk store kept them
    (MetaRecord JSON, pretty-printed like serde_json::to_vec_pretty)."""
    import hashlib
    sha = hashlib.sha256(png).hexdigest()
    now = int(time.time() * 1000)
    keys = []
    for i in range(n):
        user = "old%04d" % (i // 20)
        img = "img_" + hashlib.blake2b(b"old-%d" % i, digest_size=12).hexdigest()
        d = os.path.join(storage, user)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, img + ".png"), "wb") as f:
            f.write(png)
        rec = {"id": img, "user_id": user, "format": "png", "content_type": "image/png",
               "size": len(png), "sha256": sha,
               "source_url": "https://replicate.delivery/xezq/%d/out-0.png" % i,
               "prediction_id": "p%d" % i, "created_at": now - 3_600_000 + i}
        with open(os.path.join(d, img + ".json"), "w") as f:
            json.dump(rec, f, indent=2)
        keys.append("/v1/images/hosted/%s/%s.png" % (user, img))
    return keys


def measure_import(args, binary, old_bin, tmpdir, pg, gen):
    png = H.make_png(16 * 1024, seed=9)
    src = os.path.join(tmpdir, "old-store")
    os.makedirs(src)
    keys = write_old_store(src, args.import_images, png)
    out = {"images": args.import_images}
    if old_bin:
        # The old release must serve it, or the store is not what it wrote.
        p = Proxy(old_bin, tmpdir, "import-old-check", base_env(src, gen.fh_port, gen.gen_port, None))
        check_get(p.port, keys[len(keys) // 2], png)
        out["old_ready_ms"] = p.ready_s * 1000.0
        p.stop()
    for db in args.dbs:
        storage = os.path.join(tmpdir, "old-store-" + db)
        shutil.copytree(src, storage)
        db_url = pg.create("pp_import") if db == "postgres" else None
        env = base_env(storage, gen.fh_port, gen.gen_port, db_url)
        p = Proxy(binary, tmpdir, "import-%s-first" % db, env)
        first = p.ready_s * 1000.0
        check_get(p.port, keys[-1], png)
        p.stop()
        seconds = []
        for i in range(args.starts):
            p = Proxy(binary, tmpdir, "import-%s-second%d" % (db, i), env)
            seconds.append(p.ready_s * 1000.0)
            p.stop()
        out[db] = {"first_ms": first, "second_ms": median(seconds)}
        log("import %s: first start %.0f ms, second %.0f ms" % (db, first, median(seconds)))
    return out


# --------------------------------------------------------------------------
# report


def render(info, cells, genab, bucket, imp):
    L = ["# Metadata database benchmark (issue 12)", ""]
    L += ["| | |", "|---|---|"] + ["| %s | %s |" % kv for kv in info] + [""]
    if cells:
        L += ["## Start-up (second start, seeded table)", "",
              "exec -> /healthz 200, median of %d starts; RSS at ready; then the work that runs "
              "after ready (the cleanup walk over the table): seconds until the proxy and the "
              "database are idle, their CPU seconds, and RSS once idle." % len(cells[0]["starts"]), "",
              "| rows | database | ready | RSS at ready | busy after ready | proxy CPU | db CPU | RSS idle | idle CPU, proxy + db | first start, empty db |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for c in cells:
            s = c["starts"]
            settled = all(x["settled"] for x in s)
            L.append("| %s | %s | %s ms | %s MB | %s%s s | %s s | %s s | %s MB | %s%% + %s%% | %s ms |" % (
                "{:,}".format(c["rows"]), c["db"], fmt(median([x["ready_ms"] for x in s]), "%.0f"),
                fmt(median([x["rss_ready"] for x in s])), "" if settled else ">",
                fmt(median([x["busy_s"] for x in s])), fmt(median([x["cpu_s"] for x in s]), "%.2f"),
                fmt(median([x["db_cpu_s"] for x in s]), "%.2f"),
                fmt(median([x["rss_settled"] for x in s])), fmt(c.get("idle_cpu_pct"), "%.2f"),
                fmt(c.get("idle_db_cpu_pct"), "%.2f"), fmt(c["empty_ready_ms"], "%.0f")))
        L += ["", "## Hosted GET on a memory miss (IMAGE_MEMORY_CACHE_MB=0)", "",
              "wrk -t1 -c%d, Lua script rotating over the keys with files; median of runs."
              % info_dict(info)["conns"], "",
              "| rows | database | req/s | p50 | p99 | errors | p50 / p99 at %s conn | proxy CPU/req | db CPU/req | RSS after load | /metrics scrape | revalidate %s cached keys, CPU per pass |" % (
                  (cells[0].get("get_latency") or {}).get("conns", "-"),
                  (cells[0].get("revalidate") or {}).get("keys", "-")),
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for c in cells:
            g = c["gets"]
            rv = c.get("revalidate") or {}
            lat = c.get("get_latency") or {}
            L.append("| %s | %s | %s | %s ms | %s ms | %d | %s / %s ms | %s us | %s us | %s MB | %s ms | %s + %s ms |" % (
                "{:,}".format(c["rows"]), c["db"], fmt(median([x["rps"] for x in g]), "%.0f"),
                fmt(median([x["p50_ms"] for x in g]), "%.2f"),
                fmt(median([x["p99_ms"] for x in g]), "%.2f"), sum(x["errors"] for x in g),
                fmt(lat.get("p50_ms"), "%.3f"), fmt(lat.get("p99_ms"), "%.3f"),
                fmt(median([x["cpu_us"] for x in g])), fmt(median([x["db_cpu_us"] for x in g])),
                fmt(c["rss_after_load"]), fmt(c["metrics_ms"], "%.0f"),
                fmt(rv.get("cpu_ms_per_pass"), "%.0f"), fmt(rv.get("db_cpu_ms_per_pass"), "%.0f")))
        L += ["", "## Generate x4 images, one at a time: through the proxy vs. direct", "",
              "Medians of %d pairs. Hand-out transaction: BEGIN, 4 upserts, COMMIT, timed alone "
              "(benches/db/handout.py, %d transactions). Statements: sqlx's own elapsed time per "
              "statement, from its query log in a separate pass." % (len(cells[0]["gen_proxy"]),
                                                                      cells[0]["handout"]["tx"]), "",
              "| rows | database | direct | proxy | added | per image | proxy p90 | hand-out tx p50 / p99 | hand-out insert | mark stored | per-user limit select | COMMIT |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for c in cells:
            d, p = median(c["gen_direct"]), median(c["gen_proxy"])
            q = c["sqlx"]
            h = c.get("handout") or {}

            def st(k):
                return fmt(q[k]["median_ms"], "%.2f") + " ms" if k in q else "-"
            L.append("| %s | %s | %s ms | %s ms | %s ms | %s ms | %s ms | %s / %s ms | %s | %s | %s | %s |" % (
                "{:,}".format(c["rows"]), c["db"], fmt(d, "%.2f"), fmt(p, "%.2f"), fmt(p - d, "%.2f"),
                fmt((p - d) / 4.0, "%.2f"), fmt(H.percentile(c["gen_proxy"], 90), "%.2f"),
                fmt(h.get("median_ms"), "%.2f"), fmt(h.get("p99_ms"), "%.2f"),
                st("hand-out insert (per image)"), st("mark stored (per image)"),
                st("per-user limit select (per image)"), st("COMMIT")))
        L += ["", "Seeding and sizes:", ""]
        for c in cells:
            L.append("- %s rows on %s: seeded in %.0f s, table + indexes %.0f MB; load %s -> %s"
                     % ("{:,}".format(c["rows"]), c["db"], c["seed_s"], c["db_mb"],
                        c["load_start"], c["load_end"]))
    if genab:
        d = median(genab["direct"])
        L += ["", "## Generate x4 images: this version vs. 16a30fb, side by side", "",
              "Fresh stores, %d rounds of one call per side, medians." % len(genab["direct"]), "",
              "| side | p50 | p90 | added p50 | per image |", "|---|---:|---:|---:|---:|"]
        for name, v in genab.items():
            m = median(v)
            L.append("| %s | %s ms | %s ms | %s | %s |" % (
                name, fmt(m, "%.2f"), fmt(H.percentile(v, 90), "%.2f"),
                "-" if name == "direct" else fmt(m - d, "%.2f") + " ms",
                "-" if name == "direct" else fmt((m - d) / 4.0, "%.2f") + " ms"))
    if bucket:
        L += ["", "## Bucket requests of an idle replica (Garage, %d objects)" % bucket["objects"], ""]
        L += ["| replica | start-up requests | idle requests/min | idle breakdown (whole window) |",
              "|---|---:|---:|---|"]
        for name, v in bucket["idle"].items():
            total = sum(v["idle"].values())
            L.append("| %s | %d | %.1f | %s |" % (name, sum(v["startup"].values()),
                                                  total / v["minutes"], json.dumps(v["idle"])))
        for name in ("new-sqlite", "new-postgres"):
            f = bucket.get(name + "-first")
            if f:
                L.append("")
                L.append("- %s first start (imports the bucket): ready in %.0f ms, requests %s"
                         % (name, f["ready_ms"], json.dumps(f["requests"])))
        L.append("- one /readyz: %s" % json.dumps(bucket.get("readyz")))
    if imp:
        L += ["", "## First start on a %d-image disk store written by the old version" % imp["images"], ""]
        L += ["| database | first start (import) | second start |", "|---|---:|---:|"]
        for db in ("sqlite", "postgres"):
            if db in imp:
                L.append("| %s | %s ms | %s ms |" % (db, fmt(imp[db]["first_ms"], "%.0f"),
                                                     fmt(imp[db]["second_ms"], "%.0f")))
        if "old_ready_ms" in imp:
            L.append("")
            L.append("- the old release's own start on that store: %.0f ms" % imp["old_ready_ms"])
    return "\n".join(L) + "\n"


def info_dict(info):
    return dict(info)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="10k and 100k rows, 3 starts, 1 x 3 s GET run, shorter idle window")
    ap.add_argument("--bin", default=os.path.join(REPO, "target", "release", "permaproxy"))
    ap.add_argument("--old-bin", help="release build of 16a30fb (bucket and import rows)")
    ap.add_argument("--sizes", help="comma list of 10k,100k,1m")
    ap.add_argument("--dbs", default="sqlite,postgres")
    ap.add_argument("--only", default="tables,genab,import,bucket",
                    help="comma list of tables,genab,import,bucket")
    ap.add_argument("--starts", type=int)
    ap.add_argument("--runs", type=int)
    ap.add_argument("--duration", type=int)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--latency-conns", type=int, default=1,
                    help="connections of the one extra GET run that measures latency unloaded")
    ap.add_argument("--files", type=int, default=2000, help="keys with a file, GET rotates over them")
    ap.add_argument("--gen", type=int, help="generate pairs (direct, proxy) per table")
    ap.add_argument("--gen-sqlx", type=int, default=10)
    ap.add_argument("--handout-tx", type=int, help="hand-out transactions timed alone")
    ap.add_argument("--idle-cpu", type=float, help="seconds of idle CPU measured per table")
    ap.add_argument("--revalidate-secs", type=int, default=5,
                    help="IMAGE_CACHE_REVALIDATE_SECS while the warm-cache revalidation is timed")
    ap.add_argument("--revalidate-window", type=float, help="seconds the revalidation is timed")
    ap.add_argument("--settle-timeout", type=float)
    ap.add_argument("--objects", type=int, default=1000)
    ap.add_argument("--idle", type=int, help="idle window, seconds")
    ap.add_argument("--bucket-startup", type=int, default=15)
    ap.add_argument("--import-images", type=int, default=10000)
    ap.add_argument("--out", default=os.path.join(BENCHES, "results", "db-latest.md"))
    ap.add_argument("--json", default=os.path.join(BENCHES, "results", "db-latest.json"))
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args()
    q = args.quick
    args.sizes = (args.sizes or ("10k,100k" if q else "10k,100k,1m")).split(",")
    args.dbs = args.dbs.split(",")
    args.only = set(args.only.split(","))
    args.starts = args.starts or (3 if q else 5)
    args.runs = args.runs or (1 if q else 3)
    args.duration = args.duration or (3 if q else 10)
    args.gen = args.gen or (10 if q else 30)
    args.handout_tx = args.handout_tx or (100 if q else 300)
    args.idle_cpu = args.idle_cpu or (10.0 if q else 30.0)
    args.revalidate_window = args.revalidate_window or (10.0 if q else 30.0)
    args.settle_timeout = args.settle_timeout or (60.0 if q else 300.0)
    args.idle = args.idle or (130 if q else 300)

    wrk = H.find_tool("wrk")
    if not wrk:
        sys.exit("bench.py: wrk is missing (benches/db.sh installs it)")
    binary = os.path.abspath(args.bin)
    old_bin = os.path.abspath(args.old_bin) if args.old_bin else None
    if ("bucket" in args.only) and not old_bin:
        log("no --old-bin: the bucket rows are skipped")
        args.only.discard("bucket")
    if not old_bin:
        log("no --old-bin: generate and import rows run without the previous release")

    # The partial JSON is written after every table, long before the report.
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmpdir = tempfile.mkdtemp(prefix="permaproxy-dbbench-")
    os.chmod(tmpdir, 0o755)
    log("temp dir %s" % tmpdir)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    pg = None
    cells, genab, bucket, imp = [], None, None, None
    info = [
        ("date", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
        ("machine", "%d cores, %s, %s, kernel %s" % (os.cpu_count(), cpu_model(), mem_total(),
                                                     os.uname().release)),
        ("permaproxy", "%s (git %s)" % (binary, H.cmd_output(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]))),
        ("old release", old_bin or "-"),
        ("command", os.environ.get("DBBENCH_COMMAND")
         or "benches/db/bench.py " + " ".join(sys.argv[1:])),
        ("conns", args.conns),
        ("load average at start", loadavg()),
    ]
    try:
        if "postgres" in args.dbs or "bucket" in args.only:
            pg = Postgres(tmpdir)
            info.append(("postgres", "%s, fsync=%s synchronous_commit=%s" % (
                pg.version(), pg.show("fsync"), pg.show("synchronous_commit"))))
        info.append(("sqlite", "bundled with sqlx (libsqlite3-sys); WAL, synchronous=FULL"))
        gen = Gen(tmpdir, 200)
        if "tables" in args.only:
            for size in args.sizes:
                for db in args.dbs:
                    log("=== %s rows on %s (load %s)" % (size, db, loadavg()))
                    cells.append(measure_table(args, db, size, binary, tmpdir, pg, gen, wrk))
                    with open(args.json, "w") as f:
                        json.dump({"info": info, "cells": cells}, f, indent=1)
        if "genab" in args.only:
            genab = measure_genab(args, binary, old_bin, tmpdir, pg, gen)
        if "import" in args.only:
            imp = measure_import(args, binary, old_bin, tmpdir, pg, gen)
        if "bucket" in args.only:
            bucket = measure_bucket(args, binary, old_bin, tmpdir, pg, gen)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        H.stop_all()
        if pg:
            pg.stop()
        if not args.keep_tmp:
            shutil.rmtree(tmpdir, ignore_errors=True)
        else:
            log("kept %s" % tmpdir)
    info.append(("load average at end", loadavg()))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"info": info, "cells": cells, "genab": genab, "bucket": bucket, "import": imp},
                  f, indent=1)
    text = render(info, cells, genab, bucket, imp)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
