#!/usr/bin/env python3
"""Bulk-seeds a permaproxy `hosted_images` table for the metadata-database
benchmark (issue 12). Python 3 stdlib only; Postgres goes through `psql`
(COPY FROM STDIN), SQLite through the sqlite3 module.

The schema must already exist: let permaproxy create it (start it once on
the empty database, stop it), so the benchmark measures the real migration.

  seed.py sqlite PATH --rows N --files K --storage DIR
  seed.py postgres URL --rows N --files K --storage DIR

Rows look like a real store in steady state:
  - every row is `stored` (format png, real-looking sha256, source URL,
    prediction id, width/height), 20 images per user ("u000000", ...), so
    the default per-user limit (50) never deletes anything;
  - stored within the last 30 days and last requested after that, so the
    default retention (90 days) keeps everything: the cleanup pass that runs
    at every start walks the whole table and deletes nothing;
  - `permaproxy_meta.legacy_import` is set, so no start rescans the store.

K rows, spread evenly over the table, get a real file at
{storage}/{user}/{id}.png (one small valid PNG, copied): those are the keys
the GET benchmark requests. Their list is written to {storage}/bench-keys.txt
as hosted paths. The rest of the rows have no file; only looked-up keys need
bytes.

Deterministic: the same N gives the same rows.
"""

import argparse
import hashlib
import io
import os
import random
import sqlite3
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import harness  # noqa: E402  (make_png, check_png)

PER_USER = 20
DAY_MS = 86_400_000

COLUMNS = ("user_id", "image_id", "state", "format", "size_bytes", "sha256", "width",
           "height", "source_url", "prediction_id", "created_at", "stored_at",
           "requested_at", "views", "attempts", "due_at", "lease_until", "private")


def image_id(i):
    return "img_" + hashlib.blake2b(b"row-%d" % i, digest_size=12).hexdigest()


def user_id(i):
    return "u%06d" % (i // PER_USER)


def file_rows(rows, files):
    """Indices of the rows that get a file: spread evenly over the table."""
    if files <= 0:
        return []
    files = min(files, rows)
    step = rows / files
    return sorted({int(j * step) for j in range(files)})


def make_rows(rows, files, png, now_ms):
    """Yields one tuple per row, in COLUMNS order."""
    rnd = random.Random(rows)
    with_file = set(file_rows(rows, files))
    png_sha = hashlib.sha256(png).hexdigest()
    w, h = harness.check_png(png)
    for i in range(rows):
        stored = now_ms - rnd.randrange(1, 30 * DAY_MS)
        requested = stored + rnd.randrange(0, now_ms - stored)
        if i in with_file:
            size, sha = len(png), png_sha
        else:
            size = rnd.randrange(150_000, 2_000_000)
            sha = hashlib.sha256(b"fake-%d" % i).hexdigest()
        pred = "p%024x" % rnd.getrandbits(96)
        src = "https://replicate.delivery/xezq/%s/out-%d.png" % (
            hashlib.blake2b(b"src-%d" % i, digest_size=16).hexdigest(), i % 4)
        yield (user_id(i), image_id(i), "stored", "png", size, sha, w, h, src, pred,
               stored, stored, requested, rnd.randrange(0, 50), 0, stored, 0, 0)


def write_files(storage, rows, files, png):
    paths = []
    for i in file_rows(rows, files):
        u, img = user_id(i), image_id(i)
        d = os.path.join(storage, u)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, img + ".png"), "wb") as f:
            f.write(png)
        paths.append("/v1/images/hosted/%s/%s.png" % (u, img))
    with open(os.path.join(storage, "bench-keys.txt"), "w") as f:
        f.write("\n".join(paths) + "\n")
    return paths


def seed_sqlite(path, rows, files, png, now_ms):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    # Seeding only: the benchmark's own writes keep the proxy's FULL sync.
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -262144")
    db.execute("BEGIN")
    db.execute("DELETE FROM hosted_images")
    db.executemany("INSERT INTO hosted_images (%s) VALUES (%s)"
                   % (", ".join(COLUMNS), ", ".join("?" * len(COLUMNS))),
                   make_rows(rows, files, png, now_ms))
    db.execute("INSERT INTO permaproxy_meta (name, value) VALUES ('legacy_import', ?) "
               "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
               ("seeded by benches/db/seed.py: %d rows" % rows,))
    db.execute("COMMIT")
    # No ANALYZE: permaproxy never runs it, so a real SQLite database has no
    # statistics and the planner picks indexes the way it does here.
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    n = db.execute("SELECT COUNT(*) FROM hosted_images").fetchone()[0]
    db.close()
    return n


def psql(url, *args, stdin=None):
    # permaproxy's tables live in their own schema on Postgres (issue 20).
    env = dict(os.environ, PGOPTIONS="-c search_path=permaproxy")
    return subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, *args],
                          input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          check=True, env=env)


def seed_postgres(url, rows, files, png, now_ms):
    psql(url, "-c", "TRUNCATE hosted_images")
    buf = io.StringIO()
    for r in make_rows(rows, files, png, now_ms):
        buf.write("\t".join(str(v) for v in r))
        buf.write("\n")
    psql(url, "-c", "\\copy hosted_images (%s) FROM STDIN" % ", ".join(COLUMNS),
         stdin=buf.getvalue().encode())
    psql(url, "-c", "INSERT INTO permaproxy_meta (name, value) VALUES ('legacy_import', "
         "'seeded by benches/db/seed.py: %d rows') ON CONFLICT (name) DO UPDATE SET "
         "value = excluded.value" % rows)
    # Autovacuum would analyze a table this size within a minute of the
    # load; doing it now makes the plans the steady-state ones.
    psql(url, "-c", "VACUUM ANALYZE hosted_images")
    out = psql(url, "-t", "-A", "-c", "SELECT COUNT(*) FROM hosted_images")
    return int(out.stdout.decode().strip())


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=("sqlite", "postgres"))
    ap.add_argument("target", help="SQLite file path, or Postgres URL")
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--file-kb", type=int, default=16)
    ap.add_argument("--storage", required=True, help="IMAGE_STORAGE_PATH")
    args = ap.parse_args()

    png = harness.make_png(args.file_kb * 1024, seed=7)
    now_ms = int(time.time() * 1000)
    t0 = time.time()
    paths = write_files(args.storage, args.rows, args.files, png)
    if args.kind == "sqlite":
        n = seed_sqlite(args.target, args.rows, args.files, png, now_ms)
    else:
        n = seed_postgres(args.target, args.rows, args.files, png, now_ms)
    if n != args.rows:
        sys.exit("seed.py: expected %d rows, found %d" % (args.rows, n))
    print("seeded %d rows (%d with a %d-byte file) into %s in %.1f s"
          % (n, len(paths), len(png), args.kind, time.time() - t0), file=sys.stderr)


if __name__ == "__main__":
    main()
