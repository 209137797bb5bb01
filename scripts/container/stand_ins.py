#!/usr/bin/env python3
"""Loopback stand-ins of Studio API and Replicate's file host, for the
container checks (scripts/container.sh, scripts/compose-check.sh).

  stand_ins.py STUDIO_PORT FILES_PORT IMAGE_FILE [FILES_BASE_URL]

They listen on 127.0.0.1, or on STAND_INS_BIND (0.0.0.0 in a container).
FILES_BASE_URL is how the proxy reaches the file host (default
http://127.0.0.1:FILES_PORT; http://stand-ins:3001 in compose).

Studio API: POST /v1/images/generate answers a Replicate-style prediction
whose output is a URL on the file host; anything else answers a small JSON.
File host: GET /pbxt/<id>/out-0.png serves IMAGE_FILE's bytes until
GET /expire, then 404 (as Replicate's URLs do after an hour), so an image
served afterwards can only come from permaproxy's own store.
Prints "ready" once both listen; stops on SIGTERM.
"""
import json
import os
import signal
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

studio_port, files_port, image_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
files_base = sys.argv[4] if len(sys.argv) > 4 else f"http://127.0.0.1:{files_port}"
bind = os.environ.get("STAND_INS_BIND", "127.0.0.1")
IMAGE = open(image_file, "rb").read()
expired = threading.Event()


class Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def drain_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)


class Studio(Quiet):
    def do_POST(self):
        self.drain_body()
        if self.path.split("?")[0] == "/v1/images/generate":
            pid = uuid.uuid4().hex[:16]
            url = f"{files_base}/pbxt/{pid}/out-0.png"
            body = {"id": pid, "status": "succeeded", "output": [url]}
            return self.reply(200, "application/json", json.dumps(body).encode())
        self.reply(200, "application/json", b'{"ok":true}')

    def do_GET(self):
        self.reply(200, "application/json", b'{"service":"studio-api stand-in","ok":true}')


class Files(Quiet):
    def do_GET(self):
        if self.path == "/expire":
            expired.set()
            return self.reply(200, "text/plain", b"expired\n")
        if not expired.is_set() and self.path.startswith("/pbxt/") and self.path.endswith("/out-0.png"):
            return self.reply(200, "image/png", IMAGE)
        self.reply(404, "text/plain", b"Not found\n")

    do_HEAD = do_GET


servers = [
    ThreadingHTTPServer((bind, studio_port), Studio),
    ThreadingHTTPServer((bind, files_port), Files),
]
for s in servers:
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
stop.wait()
