#!/usr/bin/env python3
"""A/B of two permaproxy binaries on one scenario, for "what each change
bought" (issue 16). Python 3 stdlib only; reuses benches/harness.py.

  python3 benches/ab.py OLD_BINARY NEW_BINARY [--scenario disk200k] [--rounds 4]
      [--seconds 3] [--conns 32] [--env KEY=VALUE ...] [--nginx]

Both binaries run at once with the harness's settings; wrk drives them in
turn (old, new, then new, old, ...). Printed per side: median req/s and median
server CPU per request (user + system time of the process over the run,
divided by the requests served): on a shared machine the CPU per request is
the steadier of the two. --nginx adds the harness's nginx peer as a third
side. Scenarios: the harness's (passthrough, mem200k, disk200k, disk2m,
rss10m-mem, rss10m-disk, serve100).
"""

import argparse
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--scenario", default="passthrough")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--conns", type=int)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for both sides")
    ap.add_argument("--old-env", action="append", default=[], help="extra KEY=VALUE, old side")
    ap.add_argument("--new-env", action="append", default=[], help="extra KEY=VALUE, new side")
    ap.add_argument("--nginx", action="store_true", help="measure the nginx peer too")
    args = ap.parse_args()

    sc = next((s for s in h.SCENARIOS if s["name"] == args.scenario), None)
    if sc is None:
        sys.exit("unknown scenario %s" % args.scenario)
    conns = args.conns or sc["conns"]
    nginx, wrk = h.find_tool("nginx"), h.find_tool("wrk")
    tmpdir = h.tempfile.mkdtemp(prefix="permaproxy-ab-")
    os.chmod(tmpdir, 0o755)
    extra = dict(kv.split("=", 1) for kv in args.env)
    try:
        images = h.seed_images(os.path.join(tmpdir, "images"))
        up_port, pass_port, static_port = h.free_ports(3)
        upstream = h.start_nginx(nginx, tmpdir, "upstream", {"UPSTREAM_PORT": up_port,
                                                             "UPSTREAM_BODY": h.UPSTREAM_BODY})
        h.wait_http(up_port, "/", upstream, timeout=15.0)
        cache = h.CACHE_MB_MEMORY if sc["instance"] == "mem" else 0
        sides = []
        if args.nginx:
            peer = h.start_nginx(nginx, tmpdir, "peer", {
                "WORKERS": args.workers, "UPSTREAM_PORT": up_port, "PASS_PORT": pass_port,
                "STATIC_PORT": static_port, "IMAGES_DIR": os.path.join(tmpdir, "images")})
            h.wait_http(pass_port, "/", peer, timeout=15.0)
            sides.append(("nginx", static_port if sc["image"] else pass_port, peer.pid))
        for label, binary, own in (("old", args.old, args.old_env),
                                   ("new", args.new, args.new_env)):
            env = dict(extra, **dict(kv.split("=", 1) for kv in own))
            pp = h.Permaproxy(os.path.abspath(binary), tmpdir, label, args.workers, cache,
                              "http://127.0.0.1:%d" % up_port, os.path.join(tmpdir, "images"),
                              extra=env)
            sides.append((label, pp.port, pp.proc.pid))
        img = images[sc["image"]] if sc["image"] else None
        path = img["url"] if img else h.PASS_PATH
        for label, port, _ in sides:
            for _ in range(5):
                h.http_get(port, path, timeout=30.0)
            h.run_wrk(wrk, "http://127.0.0.1:%d%s" % (port, path), 1, conns, 1, 60)
        res = {label: [] for label, _, _ in sides}
        for i in range(args.rounds):
            # Odd rounds run the sides in reverse: whoever goes first in a
            # round has been measured to gain a few percent on a busy machine.
            for label, port, pid in (sides if i % 2 == 0 else sides[::-1]):
                cpu0 = h.tree_cpu_seconds(pid)
                r = h.run_wrk(wrk, "http://127.0.0.1:%d%s" % (port, path), 1, conns,
                              args.seconds, 60)
                cpu = h.tree_cpu_seconds(pid) - cpu0
                us = cpu * 1e6 / r["requests"] if r["requests"] else None
                res[label].append((r["rps"], us, r["p99_ms"], r["errors"]))
                h.log("round %d %-5s %9.0f req/s  %7.1f us/req  p99 %s  errors %d  load %s" % (
                    i + 1, label, r["rps"], us or 0, h.fmt(r["p99_ms"], "%.2f ms"), r["errors"],
                    h.loadavg()))
        print("scenario %s, %d rounds x %d s, %d connections, load %s"
              % (args.scenario, args.rounds, args.seconds, conns, h.loadavg()))
        for label, runs in res.items():
            print("  %-5s median %9.0f req/s  %8.1f us/req  p99 %s  errors %d" % (
                label, h.median([r[0] for r in runs]), h.median([r[1] for r in runs]),
                h.fmt(h.median([r[2] for r in runs]), "%.2f ms"), sum(r[3] for r in runs)))
        o, n = res["old"], res["new"]
        print("  new/old: req/s %.3fx, CPU/req %.3fx" % (
            h.median([r[0] for r in n]) / h.median([r[0] for r in o]),
            h.median([r[1] for r in n]) / h.median([r[1] for r in o])))
    finally:
        h.stop_all()
        h.shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    main()
