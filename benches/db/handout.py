#!/usr/bin/env python3
"""Times permaproxy's hand-out transaction on its own, against a seeded
table (benches/db/bench.py runs it with the proxy stopped).

  handout.py sqlite PATH [--tx N] [--images 4]
  handout.py postgres URL [--tx N] [--images 4]

One transaction is what a generate response with `--images` sources
commits before any hosted URL leaves the proxy: BEGIN (IMMEDIATE on
SQLite), one INSERT ... ON CONFLICT ... RETURNING per image with fresh
keys, COMMIT. The statement text is read from src/repo/images.rs
(HAND_OUT) and src/repo/row.rs (COLUMNS), so it is the proxy's own. SQLite
runs with the proxy's pragmas (WAL, synchronous=FULL) through Python's
sqlite3; Postgres through pgbench -M prepared (prepared statements, as sqlx
uses), one client, with its per-transaction log. Prints JSON:
{"median_ms", "p90_ms", "p99_ms", "mean_ms", "tx"}.

The rows it inserts are pending rows of users "handout-*"; they stay in the
table, a few hundred among its rows.
"""

import argparse
import glob
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rust_const(path, name):
    with open(path) as f:
        src = f.read()
    m = re.search(r'const %s: &str = "(.*?)";' % name, src, re.S)
    if not m:
        raise SystemExit("handout.py: %s not found in %s" % (name, path))
    return re.sub(r"\\\n\s*", "", m.group(1))


def hand_out_sql():
    return (rust_const(os.path.join(REPO, "src", "repo", "images.rs"), "HAND_OUT")
            + rust_const(os.path.join(REPO, "src", "repo", "row.rs"), "COLUMNS"))


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, max(0, int(round(p / 100.0 * len(v) + 0.5)) - 1))]


def params(n, now):
    user = "handout-%d" % (n % 50)
    img = "img_%024x" % random.getrandbits(96)
    return [user, img, "png", "https://replicate.delivery/xezq/%s/out-0.png" % img[4:],
            "p-handout", now, now, "r-handout", now + 15000]


def run_sqlite(path, tx, images):
    sql = hand_out_sql()
    db = sqlite3.connect(path, isolation_level=None, timeout=10)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    times = []
    n = 0
    for _ in range(tx):
        now = int(time.time() * 1000)
        t0 = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        for _ in range(images):
            p = params(n, now)
            n += 1
            db.execute(sql, {str(i + 1): v for i, v in enumerate(p)}).fetchall()
        db.execute("COMMIT")
        times.append((time.perf_counter() - t0) * 1000.0)
    db.close()
    return {"median_ms": pct(times, 50), "p90_ms": pct(times, 90), "p99_ms": pct(times, 99),
            "mean_ms": sum(times) / len(times), "tx": tx}


def run_postgres(url, tx, images):
    sql = hand_out_sql()
    pgbench = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))
    if not pgbench:
        raise SystemExit("handout.py: pgbench not found")
    lines = ["BEGIN;"]
    for i in range(images):
        lines.append("\\set r%d random(1, 1000000000000)" % i)
    lines.append("\\set now %d" % int(time.time() * 1000))
    lines.append("\\set lease %d" % (int(time.time() * 1000) + 15000))
    for i in range(images):
        stmt = sql
        # -M prepared sends each variable as a parameter: typed by casts.
        vals = ["'handout-' || (:r%d::bigint %% 50)" % i,
                "'img_' || lpad(to_hex(:r%d::bigint), 24, '0')" % i, "'png'",
                "'https://replicate.delivery/xezq/' || :r%d::bigint || '/out-0.png'" % i,
                "'p-handout'", ":now::bigint", ":now::bigint", "'r-handout'", ":lease::bigint"]
        # Highest first, so $1 does not eat the front of $10.
        for k in range(len(vals), 0, -1):
            stmt = stmt.replace("$%d" % k, vals[k - 1])
        lines.append(stmt + ";")
    lines.append("COMMIT;")
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write("\n".join(lines) + "\n")
        script = f.name
    logdir = tempfile.mkdtemp(prefix="handout-pgbench-")
    try:
        # -l writes one line per transaction: client, number, latency (us), ...
        subprocess.run([pgbench[-1], "-n", "-M", "prepared", "-c", "1", "-t", str(tx),
                        "-l", "--log-prefix", os.path.join(logdir, "tx"), "-f", script, url],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=True)
        times = []
        for name in os.listdir(logdir):
            with open(os.path.join(logdir, name)) as f:
                times += [int(line.split()[2]) / 1000.0 for line in f if line.strip()]
    finally:
        os.unlink(script)
        for name in os.listdir(logdir):
            os.unlink(os.path.join(logdir, name))
        os.rmdir(logdir)
    return {"median_ms": pct(times, 50), "p90_ms": pct(times, 90), "p99_ms": pct(times, 99),
            "mean_ms": sum(times) / len(times), "tx": len(times)}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=("sqlite", "postgres"))
    ap.add_argument("target")
    ap.add_argument("--tx", type=int, default=300)
    ap.add_argument("--images", type=int, default=4)
    args = ap.parse_args()
    if args.kind == "sqlite":
        r = run_sqlite(args.target, args.tx, args.images)
    else:
        r = run_postgres(args.target, args.tx, args.images)
    print(json.dumps(r))


if __name__ == "__main__":
    sys.exit(main())
