#!/usr/bin/env python3
"""Variants through the real server (issue 14): makes per second, the hit
path against the original's, and peak RSS with 32 makes at once.

    server_bench.py BIN IMG SECONDS        (one JSON line per measurement)

BIN is target/release/permaproxy, IMG the ~1.9 MB benchmark PNG
(make_inputs.py). Python 3 stdlib only; wrk must be on PATH. Everything
listens on 127.0.0.1 and lives in one temp dir:

  file host   serves IMG at /pbxt/{n}/out.png for any n (n distinct sources
              of the same bytes: n distinct images)
  upstream    answers POST /v1/images/generate with the request body, so
              the proxy hosts the URLs the script sends it
  permaproxy  BIN, WORKER_THREADS=2, rate limit out of the way

Measurements:
  makes       ?w=256&format=webp&q=Q for images never asked before, 1 and 8
              clients (each round a new Q, so every request is a make):
              variants made per second through HTTP, the store and the row
  hit         wrk, 1 thread, 32 connections, SECONDS each: the variant URL,
              the image's own URL (1.9 MB), and an image of the variant's
              size (a ~18 KB WebP hosted as an image), from memory; then the
              same three with IMAGE_MEMORY_CACHE_MB=0 (from disk)
  rss         a restarted server (so its high-water mark starts at idle),
              32 makes of 32 different images released at once: VmHWM
              before and after, with the default pool (2 on 2 cores) and
              with IMAGE_TRANSCODE_CONCURRENCY=32
"""
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

BIN, IMG, SECONDS = sys.argv[1], sys.argv[2], float(sys.argv[3])
DATA = open(IMG, "rb").read()
USER = "bench"
IMAGES = 64


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Quiet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, ctype, body):
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FileHost(Quiet):
    files = {}

    def do_GET(self):
        body = self.files.get(self.path.split("?")[0], DATA)
        ctype = "image/webp" if body[8:12] == b"WEBP" else "image/png"
        self.reply(200, ctype, body)


class Upstream(Quiet):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.reply(200, "application/json", body)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def serve(handler):
    port = free_port()
    srv = Server(("127.0.0.1", port), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return port


class Proxy:
    def __init__(self, workdir, host_port, up_port, **env):
        self.port, self.admin = free_port(), free_port()
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "UPSTREAM_URL": f"http://127.0.0.1:{up_port}",
            "LISTEN_ADDR": f"127.0.0.1:{self.port}",
            "METRICS_ADDR": f"127.0.0.1:{self.admin}",
            "IMAGE_STORAGE_PATH": os.path.join(workdir, "store"),
            "REPLICATE_HOSTS": f"127.0.0.1:{host_port}",
            "IMAGE_ALLOW_HTTP_SOURCES": "true",
            "IMAGE_PER_USER_LIMIT": "0",
            "IMAGE_DOWNLOAD_RATE_PER_SEC": "10000000",
            "IMAGE_DOWNLOAD_BURST": "10000000",
            "WORKER_THREADS": "2",
            "LOG_FORMAT": "json",
            "RUST_LOG": "warn",
        }
        self.env.update({k: str(v) for k, v in env.items()})
        self.log = open(os.path.join(workdir, f"proxy-{self.port}.log"), "w")
        self.proc = subprocess.Popen([BIN, "serve"], env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        for _ in range(300):
            try:
                if get(self.port, "/__permaproxy/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit("permaproxy did not start; see " + self.log.name)

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)
        self.log.close()

    def status(self, field):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def metric(self, name):
        text = get(self.admin, "/metrics")[1].decode()
        return sum(float(l.split()[-1]) for l in text.splitlines()
                   if l.startswith(name) and not l.startswith("#"))


def get(port, path, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    return r.status, r.read()


def host(proxy, urls):
    """Hosts `urls` through one generate call; returns the hosted paths."""
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=120)
    c.request("POST", "/v1/images/generate", body=json.dumps({"output": urls}),
              headers={"content-type": "application/json", "x-user-id": USER})
    out = json.loads(c.getresponse().read())["output"]
    paths = [re.sub(r"^https?://[^/]+", "", u) for u in out]
    assert all(p.startswith("/v1/images/hosted/") for p in paths), out
    return paths


def makes(proxy, paths, clients, q):
    def one(p):
        t = time.perf_counter()
        status, body = get(proxy.port, f"{p}?w=256&format=webp&q={q}")
        assert status == 200, (status, body[:200])
        return (time.perf_counter() - t) * 1000, len(body)

    made = proxy.metric('permaproxy_variants_total{outcome="made"}')
    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        res = list(ex.map(one, paths))
    elapsed = time.perf_counter() - t
    assert proxy.metric('permaproxy_variants_total{outcome="made"}') - made == len(paths)
    lat = [r[0] for r in res]
    return {"peer": "permaproxy (HTTP, stored)", "mode": "makes", "clients": clients,
            "n": len(paths), "per_sec": round(len(paths) / elapsed, 2),
            "median_ms": round(statistics.median(lat), 1), "out_bytes": res[0][1]}


def wrk(port, path, what, tier):
    out = subprocess.run(["wrk", "-t1", "-c32", f"-d{int(SECONDS)}s", "--latency",
                          f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"mode": "hit", "what": what, "tier": tier, "rps": rps,
            "p99_ms": round(float(p99.group(1)) * scale, 2),
            "errors": int(non2xx.group(1)) if non2xx else 0}


def rss_run(workdir, ports, paths, **env):
    proxy = Proxy(workdir, *ports, **env)
    try:
        before = proxy.status("VmHWM")
        barrier = threading.Barrier(len(paths))

        def one(p):
            barrier.wait()
            status, _ = get(proxy.port, f"{p}?w=256&format=webp&q=71")
            return status

        t = time.perf_counter()
        with ThreadPoolExecutor(len(paths)) as ex:
            statuses = list(ex.map(one, paths))
        wall = time.perf_counter() - t
        assert statuses == [200] * len(paths), statuses
        return {"peer": "permaproxy (HTTP, stored)", "mode": "rss",
                "concurrency": len(paths),
                "pool": env.get("IMAGE_TRANSCODE_CONCURRENCY", "default"),
                "hwm_before_kib": before, "hwm_after_kib": proxy.status("VmHWM"),
                "wall_ms": round(wall * 1000)}
    finally:
        proxy.stop()


def emit(d):
    print(json.dumps(d), flush=True)


def main():
    workdir = tempfile.mkdtemp(prefix="pp-variants-")
    try:
        host_port, up_port = serve(FileHost), serve(Upstream)
        ports = (host_port, up_port)
        urls = [f"http://127.0.0.1:{host_port}/pbxt/{n}/out.png" for n in range(IMAGES)]
        proxy = Proxy(workdir, *ports)
        paths = host(proxy, urls)
        # Makes: 1 client over 16 images, then 8 clients over 48, fresh q each.
        emit(makes(proxy, paths[:16], 1, 79))
        emit(makes(proxy, paths[16:], 8, 78))
        emit(makes(proxy, paths, 8, 77))

        # The hit path. A WebP of the variant's size, hosted as an image.
        status, variant = get(proxy.port, f"{paths[0]}?w=256&format=webp")
        assert status == 200
        FileHost.files["/pbxt/small/out.webp"] = variant
        small = host(proxy, [f"http://127.0.0.1:{host_port}/pbxt/small/out.webp"])[0]
        targets = [("variant ?w=256&format=webp", f"{paths[0]}?w=256&format=webp"),
                   ("its image (1.9 MB PNG)", paths[0]),
                   (f"an image of the variant's size ({len(variant)} B WebP)", small)]
        for what, path in targets:
            get(proxy.port, path)  # warm: loaded into memory
            emit(wrk(proxy.port, path, what, "memory"))
        proxy.stop()
        disk = Proxy(workdir, *ports, IMAGE_MEMORY_CACHE_MB=0)
        for what, path in targets:
            get(disk.port, path)
            emit(wrk(disk.port, path, what, "disk"))
        disk.stop()

        # Peak RSS, 32 makes at once, from an idle restarted server.
        emit(rss_run(workdir, ports, paths[:32]))
        emit(rss_run(workdir, ports, paths[32:64], IMAGE_TRANSCODE_CONCURRENCY=32,
                     IMAGE_TRANSCODE_QUEUE=0))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
