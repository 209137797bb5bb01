#!/usr/bin/env python3
"""thumbor (Pillow engine) making the same variant over HTTP on loopback.

    thumbor_bench.py IMG SECONDS PORT

Starts `thumbor` with a file loader rooted at IMG's folder, no storage and
no result storage (every request is a fresh make), then asks for
/unsafe/256x0/filters:format(webp):quality(80)/IMG from 1 client, and from
2 clients against `--processes 2`. The numbers include thumbor's HTTP
handling, so they are an upper bound on its per-variant cost.
"""
import concurrent.futures as cf
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

IMG, SECONDS, PORT = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
ROOT, NAME = os.path.split(os.path.abspath(IMG))
PATH = f"/unsafe/256x0/filters:format(webp):quality(80)/{NAME}"

CONF = f"""
LOADER = 'thumbor.loaders.file_loader'
FILE_LOADER_ROOT_PATH = {ROOT!r}
STORAGE = 'thumbor.storages.no_storage'
RESULT_STORAGE = None
ALLOW_UNSAFE_URL = True
QUALITY = 80
MAX_AGE = 0
"""


def client(seconds):
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    lat = []
    end = time.perf_counter() + seconds
    size = 0
    while time.perf_counter() < end:
        t = time.perf_counter()
        conn.request("GET", PATH)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise SystemExit(f"thumbor answered {r.status}: {body[:200]!r}")
        size = len(body)
        lat.append((time.perf_counter() - t) * 1000)
    return lat, size


def run(processes):
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
        f.write(CONF)
    thumbor = os.path.join(os.path.dirname(sys.executable), "thumbor")
    proc = subprocess.Popen(
        [thumbor, "-i", "127.0.0.1", "-p", str(PORT), "-c", f.name, "-l", "error",
         "--processes", str(processes)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        # Its own process group: with --processes N the workers are forked
        # children, which a plain terminate() of the parent would orphan.
        start_new_session=True)
    try:
        for _ in range(100):
            try:
                c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
                c.request("GET", "/healthcheck")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit("thumbor did not start: " + proc.stderr.read1().decode(errors="replace"))
        if proc.poll() is not None:
            # Something else answered on the port: refuse to measure it.
            raise SystemExit(f"port {PORT} is taken by another server")
        client(1.0)  # warm-up
        t = time.perf_counter()
        with cf.ThreadPoolExecutor(processes) as ex:
            res = list(ex.map(lambda _: client(SECONDS), range(processes)))
        elapsed = time.perf_counter() - t
        lat = [x for l, _ in res for x in l]
        print(json.dumps({
            "peer": "thumbor (HTTP)", "mode": "throughput", "workers": processes,
            "n": len(lat), "per_sec": round(len(lat) / elapsed, 2),
            "median_ms": round(statistics.median(lat), 2), "out_bytes": res[0][1],
        }), flush=True)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        os.unlink(f.name)


if __name__ == "__main__":
    run(1)
    run(2)
