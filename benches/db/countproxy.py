#!/usr/bin/env python3
"""A counting HTTP/1.1 proxy for the bucket-request benchmark (issue 12).

  countproxy.py LISTEN_PORT UPSTREAM_PORT LOGFILE

Listens on 127.0.0.1:LISTEN_PORT and forwards every request to
127.0.0.1:UPSTREAM_PORT (Garage's S3 API), one request at a time per
connection, framing each request and response itself (Content-Length or
chunked), so every request on a keep-alive connection is seen. Each request
becomes one line in LOGFILE:

  <unix time> <method> <path?query> <status>

The replica is pointed at this port instead of Garage's, so the log is
exactly the traffic between the replica and the bucket. SigV4 signatures
stay valid: the Host header is forwarded untouched, and S3 clients sign the
host they were given (this proxy's), which Garage does not check against its
own port. Python 3 stdlib only.
"""

import socket
import sys
import threading
import time

LOCK = threading.Lock()


def read_head(f):
    """Start line + headers, raw bytes; None at a clean EOF."""
    lines = []
    while True:
        line = f.readline(65537)
        if not line:
            if lines:
                raise ConnectionError("EOF inside a header block")
            return None
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)


def headers_of(head):
    out = {}
    for line in head.split(b"\r\n")[1:]:
        if b":" in line:
            k, v = line.split(b":", 1)
            out[k.strip().lower()] = v.strip()
    return out


def copy_body(src, dst, hdrs, no_body=False):
    if no_body:
        return
    te = hdrs.get(b"transfer-encoding", b"").lower()
    if b"chunked" in te:
        while True:
            size_line = src.readline(65537)
            dst.sendall(size_line)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    t = src.readline(65537)
                    dst.sendall(t)
                    if t in (b"\r\n", b"\n", b""):
                        return
            left = size + 2  # data + CRLF
            while left:
                chunk = src.read(min(left, 65536))
                if not chunk:
                    raise ConnectionError("EOF inside a chunk")
                dst.sendall(chunk)
                left -= len(chunk)
        return
    left = int(hdrs.get(b"content-length", b"0") or b"0")
    while left:
        chunk = src.read(min(left, 65536))
        if not chunk:
            raise ConnectionError("EOF inside a body")
        dst.sendall(chunk)
        left -= len(chunk)


def serve(client, upstream_port, logf):
    up = socket.create_connection(("127.0.0.1", upstream_port))
    for s in (client, up):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    cf, uf = client.makefile("rb"), up.makefile("rb")
    try:
        while True:
            head = read_head(cf)
            if head is None:
                return
            start = head.split(b"\r\n", 1)[0].decode("latin-1")
            method, target = start.split(" ")[:2]
            hdrs = headers_of(head)
            up.sendall(head)
            copy_body(cf, up, hdrs)
            rhead = read_head(uf)
            if rhead is None:
                return
            status = int(rhead.split(b" ", 2)[1])
            client.sendall(rhead)
            no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
            copy_body(uf, client, headers_of(rhead), no_body)
            with LOCK:
                logf.write("%.3f %s %s %d\n" % (time.time(), method, target, status))
                logf.flush()
    except (OSError, ValueError, ConnectionError):
        return
    finally:
        for s in (client, up):
            try:
                s.close()
            except OSError:
                pass


def main():
    listen_port, upstream_port, logfile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    logf = open(logfile, "a")
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", listen_port))
    srv.listen(256)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c, upstream_port, logf), daemon=True).start()


if __name__ == "__main__":
    main()
