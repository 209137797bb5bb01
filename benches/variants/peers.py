#!/usr/bin/env python3
"""The peers, on the same file and the same operation as variant_bench:
decode a PNG, resize to 256 px wide (Lanczos), encode WebP quality 80.

    peers.py IMG SECONDS          (prints one JSON line per measurement)

- Pillow: Image.open, draft, resize(LANCZOS), save(WEBP, quality=80).
  One thread; two processes (Python threads share the GIL for part of the
  work, so processes are Pillow's best case on 2 cores); peak RSS with 32
  threads each making one variant at the same instant.
- libvips through pyvips (the C library a Rust libvips binding would
  call): thumbnail_buffer + webpsave_buffer, operation cache off, one
  libvips thread per operation; one thread and two threads.
"""
import concurrent.futures as cf
import io
import json
import multiprocessing as mp
import resource
import statistics
import sys
import threading
import time

from PIL import Image

IMG = sys.argv[1]
SECONDS = float(sys.argv[2])
DATA = open(IMG, "rb").read()


def pillow_once(data=DATA):
    im = Image.open(io.BytesIO(data))
    w, h = im.size
    nh = max(1, round(h * 256 / w))
    im = im.convert("RGB").resize((256, nh), Image.LANCZOS)
    out = io.BytesIO()
    im.save(out, "WEBP", quality=80, method=4)
    return out.getvalue()


def loop(fn, seconds):
    lat = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        fn()
        lat.append((time.perf_counter() - t) * 1000)
    return lat


def _proc(args):
    return loop(pillow_once, args)


def report(peer, mode, workers, lat, elapsed, cpu=None, **extra):
    d = {
        "peer": peer,
        "mode": mode,
        "workers": workers,
        "n": len(lat),
        "per_sec": round(len(lat) / elapsed, 2),
        "median_ms": round(statistics.median(lat), 2) if lat else None,
    }
    if cpu is not None and lat:
        d["cpu_ms_per_variant"] = round(cpu * 1000 / len(lat), 2)
    d.update(extra)
    print(json.dumps(d), flush=True)


def main():
    out = pillow_once()
    # Pillow, one thread.
    t, c = time.perf_counter(), time.process_time()
    lat = loop(pillow_once, SECONDS)
    report("pillow", "throughput", 1, lat, time.perf_counter() - t,
           cpu=time.process_time() - c, out_bytes=len(out))
    # Pillow, two processes.
    t = time.perf_counter()
    with mp.Pool(2) as pool:
        lats = pool.map(_proc, [SECONDS, SECONDS])
    report("pillow", "throughput", 2, lats[0] + lats[1], time.perf_counter() - t)
    # Pillow, 32 at once (threads, one process): peak RSS.
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    barrier = threading.Barrier(32)

    def one():
        barrier.wait()
        return len(pillow_once())

    t = time.perf_counter()
    with cf.ThreadPoolExecutor(32) as ex:
        list(ex.map(lambda _: one(), range(32)))
    print(json.dumps({
        "peer": "pillow", "mode": "rss", "concurrency": 32,
        "hwm_before_kib": before,
        "hwm_after_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "wall_ms": round((time.perf_counter() - t) * 1000),
    }), flush=True)

    try:
        import pyvips
    except Exception as e:  # pyvips or libvips missing
        print(json.dumps({"peer": "libvips", "skipped": str(e)}), flush=True)
        return
    pyvips.cache_set_max(0)

    def vips_once():
        im = pyvips.Image.thumbnail_buffer(DATA, 256)
        return im.webpsave_buffer(Q=80, strip=True)

    out = vips_once()
    for workers in (1, 2):
        t, c = time.perf_counter(), time.process_time()
        with cf.ThreadPoolExecutor(workers) as ex:
            lats = list(ex.map(lambda _: loop(vips_once, SECONDS), range(workers)))
        lat = [x for l in lats for x in l]
        version = ".".join(str(pyvips.version(i)) for i in range(3))
        report("libvips " + version, "throughput", workers, lat, time.perf_counter() - t,
               cpu=time.process_time() - c, out_bytes=len(out))


if __name__ == "__main__":
    main()
