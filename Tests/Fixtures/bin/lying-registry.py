#!/usr/bin/env python3
"""lying-registry.py - a read-only registry that serves whatever files it is given, under
whatever digest they are filed, without checking anything: the one fault a real registry
cannot produce (docker-registry verifies every digest on push). lazypull test fixture.

Usage:
  lying-registry.py --listen PORT --root DIR [--ready-file FILE]

DIR/manifests/<repo>/<tag-or-digest>  a manifest (Content-Type: its own "mediaType")
DIR/blobs/<digest>                    a blob, with Range support (206 + Content-Range)

GET/HEAD /v2/ answers 200. Anything else is 404. Listens on 127.0.0.1 only.
"""
import argparse, http.server, json, os, re


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body=b"", headers=None, head=False):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def serve(self, head):
        root = self.server.root
        path = self.path.split("?", 1)[0]
        if path in ("/v2", "/v2/"):
            return self.send(200, b"{}", {"Content-Type": "application/json"}, head)
        m = re.match(r"^/v2/(.+)/manifests/([^/]+)$", path)
        if m:
            file = os.path.join(root, "manifests", m.group(1), m.group(2))
            if not os.path.isfile(file):
                return self.send(404, b"{}", {"Content-Type": "application/json"}, head)
            body = open(file, "rb").read()
            media = json.loads(body).get("mediaType", "application/vnd.oci.image.manifest.v1+json")
            return self.send(200, body, {"Content-Type": media}, head)
        m = re.match(r"^/v2/(.+)/blobs/(sha256:[0-9a-f]{64})$", path)
        if m:
            file = os.path.join(root, "blobs", m.group(2))
            if not os.path.isfile(file):
                return self.send(404, b"{}", {"Content-Type": "application/json"}, head)
            body = open(file, "rb").read()
            rng = re.match(r"^bytes=(\d*)-(\d*)$", self.headers.get("Range", ""))
            if rng and body:
                first, last = rng.group(1), rng.group(2)
                if first == "":
                    start, end = max(0, len(body) - int(last)), len(body) - 1
                else:
                    start, end = int(first), min(len(body) - 1, int(last) if last else len(body) - 1)
                if start < len(body) and start <= end:
                    part = body[start:end + 1]
                    return self.send(206, part, {"Content-Range": "bytes %d-%d/%d" % (start, end, len(body))}, head)
            return self.send(200, body, {"Content-Type": "application/octet-stream"}, head)
        self.send(404, b"{}", {"Content-Type": "application/json"}, head)

    def do_GET(self):
        self.serve(False)

    def do_HEAD(self):
        self.serve(True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--ready-file")
    a = p.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", a.listen), Handler)
    server.root = a.root
    if a.ready_file:
        open(a.ready_file, "w").close()
    server.serve_forever()


main()
