#!/usr/bin/env python3
"""fault-proxy.py - HTTP/1.1 reverse proxy in front of a registry that injects
faults a real registry cannot produce (lazypull test fixture).

Usage:
  fault-proxy.py --listen PORT --upstream http://127.0.0.1:REGPORT --log FILE
                 [--ready-file FILE] [--upstream-timeout S]
                 [--redirect-port PORT2 [--redirect-upstream URL]
                  [--upstream-auth USER:PASS] [--redirect-reject-auth]]
                 [--fail-status CODE --fail-count N [--retry-after S]]
                 [--drop-after-bytes N --drop-count K [--drop-rst]]
                 [--ignore-range] [--flip-byte [--flip-count K]]
                 [--redirect-to URL] [--drip-rate N] [--hang]
                 [--content-range VALUE] [--only-ranged]

Main listener: 127.0.0.1:PORT.  Every request (method, path, query, headers
incl. Authorization, body; chunked request bodies are de-chunked) is forwarded
to the upstream with Host set to the upstream; the answer is streamed back
with its status, headers (WWW-Authenticate challenges included) and a correct
Content-Length.  Location headers that point at the upstream are rewritten to
point at the proxy.  Keep-alive is supported.

"Blob GET" below means: on the main listener, GET /v2/<name>/blobs/<digest>
(not /blobs/uploads/); with --redirect-port, the fault modes apply instead to
the GET /blob/<digest> requests on the redirect listener, since those carry
the bytes.

--redirect-port PORT2
    GET/HEAD /v2/<name>/blobs/<digest> on the main listener is first sent to
    the upstream (with the client's Authorization); if the upstream answers
    2xx, the client gets
      307  Location: http://127.0.0.2:PORT2/blob/<digest>?name=<name>
    otherwise the upstream's answer (e.g. 401 + challenge, 404) is passed on.
    A second listener on 127.0.0.2:PORT2 serves /blob/<digest>?name=<name> by
    fetching <redirect-upstream>/v2/<name>/blobs/<digest> (Range passed on).
    The client's Authorization header is NEVER forwarded there; the proxy uses
    Basic --upstream-auth USER:PASS if given, else no auth.
    --redirect-upstream defaults to --upstream.  For a token-auth upstream,
    start a second plain registry sharing its storage (REGISTRY_STORAGE=... for
    registry.sh) and pass it as --redirect-upstream.
    --redirect-reject-auth: requests on PORT2 that carry an Authorization header
    get 400 (like an object store rejecting two auth mechanisms).
--fail-status CODE --fail-count N [--retry-after S]
    The first N blob GETs are answered CODE (JSON registry error body, plus
    "Retry-After: S" if given) without contacting the upstream.
--drop-after-bytes N --drop-count K [--drop-rst]
    The first K blob GETs that the upstream answers 2xx with a body LONGER than
    N bytes get the upstream's status and headers (incl. Content-Length) but
    only N body bytes, then the connection is closed (FIN; with --drop-rst an
    RST).  Shorter bodies (e.g. a config blob) pass untouched and do not use
    up the budget.
--ignore-range
    Range/If-Range are removed from forwarded requests, so the upstream
    answers 200 with the full body.
--flip-byte [--flip-count K]
    For blob GETs answered 2xx, the byte at offset len(body)//2 of the body
    sent is XORed with 0xFF (all blob GETs, or only the first K).

--redirect-to URL
    Every blob GET on the main listener is answered 307 with "Location: URL"
    (e.g. gopher://127.0.0.1:6379/_INFO or file:///etc/passwd) without
    contacting the upstream: a registry steering its client elsewhere.
--drip-rate N
    Blob GETs answered 2xx get the upstream's status and headers at once,
    then the body at N bytes per second (one byte at a time), until the
    client gives up.
--content-range VALUE
    Blob GETs answered 206 carry "Content-Range: VALUE" instead of the
    upstream's (e.g. "bytes 0-0/-9223372036854775808").
--hang
    Blob GETs are read and never answered; the connection stays open until
    the client closes it.

--only-ranged
    Faults apply only to blob GETs that carry a Range header (TOC and chunk
    reads), not to whole-blob GETs (configs, eager downloads).

Fault order for one blob GET: redirect-to and hang first, then fail-status,
then drop, then drip, then flip.

Log: one JSON line per request appended to --log:
  {"time","listener":"main"|"redirect","method","path","query","range",
   "status","authorization_present","bytes_sent","fault"}
  fault is null or one of "fail-status","drop","flip","redirect",
  "reject-auth","redirect-to","drip","hang","content-range".  bytes_sent counts body bytes written to the client.
Readiness: prints "ready" on stdout and writes --ready-file (if given) once
all listeners accept connections.  SIGTERM/SIGINT stop it cleanly.
"""

import argparse
import base64
import datetime
import http.client
import json
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate",
              "proxy-authorization", "te", "trailer", "trailers",
              "transfer-encoding", "upgrade", "expect", "proxy-connection"}
BLOB_RE = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>[A-Za-z0-9_+.-]+:[A-Za-z0-9=_-]+)$")
REDIRECT_RE = re.compile(r"^/blob/(?P<digest>[A-Za-z0-9_+.-]+:[A-Za-z0-9=_-]+)$")
CHUNK = 64 * 1024


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.fail_left = args.fail_count if args.fail_status else 0
        self.drop_left = args.drop_count if args.drop_after_bytes is not None else 0
        self.flip_left = (args.flip_count if args.flip_count is not None else -1) \
            if args.flip_byte else 0
        up = urllib.parse.urlsplit(args.upstream)
        self.upstream = (up.hostname, up.port or 80, up.netloc)
        self.upstream_base = "%s://%s" % (up.scheme, up.netloc)
        rup = urllib.parse.urlsplit(args.redirect_upstream or args.upstream)
        self.redirect_upstream = (rup.hostname, rup.port or 80, rup.netloc)
        self.upstream_auth = None
        if args.upstream_auth:
            self.upstream_auth = "Basic " + base64.b64encode(
                args.upstream_auth.encode()).decode()
        self.log_path = args.log

    def take(self, attr):
        """Consume one unit of a fault budget; -1 means unlimited."""
        with self.lock:
            left = getattr(self, attr)
            if left == 0:
                return False
            if left > 0:
                setattr(self, attr, left - 1)
            return True

    def log(self, entry):
        line = json.dumps(entry, sort_keys=True)
        with self.lock:
            with open(self.log_path, "a") as f:
                f.write(line + "\n")


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lazypull-fault-proxy/1"
    timeout = 120  # idle client sockets
    state: State = None
    listener = "main"

    def log_message(self, fmt, *args):
        pass

    # ---- helpers -------------------------------------------------------
    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            parts = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("eof in chunked body")
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until empty line
                    while True:
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(3)
            return b"".join(parts)
        length = self.headers.get("Content-Length")
        if length:
            return self.rfile.read(int(length))
        return None

    def start_entry(self):
        url = urllib.parse.urlsplit(self.path)
        self.entry = {
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "listener": self.listener, "method": self.command,
            "path": url.path, "query": url.query,
            "range": self.headers.get("Range"),
            "status": None,
            "authorization_present": self.headers.get("Authorization") is not None,
            "bytes_sent": 0, "fault": None}
        return url

    def send_simple(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
            self.entry["bytes_sent"] += len(body)
        self.entry["status"] = status

    def upstream_request(self, target, method, path, headers, body):
        host, port, netloc = target
        conn = http.client.HTTPConnection(host, port,
                                          timeout=self.state.args.upstream_timeout)
        hdrs = {}
        for k, v in headers:
            if k.lower() in HOP_BY_HOP or k.lower() in ("host", "content-length"):
                continue
            hdrs.setdefault(k, [])
            hdrs[k].append(v)
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", netloc)
        for k, vs in hdrs.items():
            for v in vs:
                conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        elif method in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", "0")
        conn.endheaders()
        if body:
            conn.send(body)
        resp = conn.getresponse()
        return conn, resp

    def rewrite_location(self, value):
        base = self.state.upstream_base
        if value.startswith(base):
            host = self.headers.get("Host") or "127.0.0.1:%d" % self.server.server_address[1]
            return "http://" + host + value[len(base):]
        return value

    def relay(self, conn, resp, fault_ok):
        """Stream an upstream response to the client, applying drop/flip."""
        status = resp.status
        headers = [(k, v) for k, v in resp.getheaders()
                   if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"]
        no_body = self.command == "HEAD" or status in (204, 304) or 100 <= status < 200
        length = resp.getheader("Content-Length")
        body = None
        if length is None and not no_body:
            body = resp.read()  # chunked / close-delimited upstream: buffer
            length = str(len(body))
        drop = flip = drip = False
        total_len = int(length) if length is not None else 0
        if fault_ok and 200 <= status < 300 and not no_body:
            if (self.state.args.drop_after_bytes is not None
                    and total_len > self.state.args.drop_after_bytes
                    and self.state.take("drop_left")):
                drop = True
                self.entry["fault"] = "drop"
            elif self.state.args.drip_rate:
                drip = True
                self.entry["fault"] = "drip"
            elif self.state.take("flip_left"):
                flip = True
                self.entry["fault"] = "flip"
        self.send_response(status)
        for k, v in headers:
            if k.lower() == "location":
                v = self.rewrite_location(v)
            if (k.lower() == "content-range" and fault_ok and status == 206
                    and self.state.args.content_range is not None):
                v = self.state.args.content_range
                self.entry["fault"] = self.entry["fault"] or "content-range"
            self.send_header(k, v)
        if length is not None:
            self.send_header("Content-Length", length)
        elif no_body and self.command != "HEAD":
            self.send_header("Content-Length", "0")
        self.end_headers()
        self.entry["status"] = status
        if no_body:
            return
        total = int(length)
        limit = self.state.args.drop_after_bytes if drop else total
        flip_at = total // 2 if flip else -1
        sent = 0
        pos = 0
        src = [body] if body is not None else None
        while sent < limit:
            if src is not None:
                if not src:
                    break
                data = src.pop()
            else:
                data = resp.read(min(CHUNK, total - pos))
                if not data:
                    break
            if 0 <= flip_at - pos < len(data):
                b = bytearray(data)
                b[flip_at - pos] ^= 0xFF
                data = bytes(b)
            pos += len(data)
            if sent + len(data) > limit:
                data = data[:limit - sent]
            if drip:
                self.drip(data)
            else:
                self.wfile.write(data)
            sent += len(data)
            self.entry["bytes_sent"] = sent
        if drop or sent < total:
            self.abort_connection()

    def drip(self, data):
        """Write data one byte at a time at --drip-rate bytes per second."""
        pause = 1.0 / self.state.args.drip_rate
        for i in range(len(data)):
            self.wfile.write(data[i:i + 1])
            self.wfile.flush()
            self.entry["bytes_sent"] += 1
            time.sleep(pause)

    def hang(self):
        """Answer nothing; hold the connection until the client closes it."""
        self.entry["fault"] = "hang"
        self.close_connection = True
        try:
            self.connection.settimeout(None)
            while self.connection.recv(4096):
                pass
        except OSError:
            pass

    def abort_connection(self):
        self.close_connection = True
        try:
            self.wfile.flush()
        except Exception:
            pass
        try:
            if self.state.args.drop_rst:
                # linger 0 + close => RST.  detach() so that the socket object
                # (still referenced by rfile/wfile) never touches the fd again.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                os.close(self.connection.detach())
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def fail_response(self):
        a = self.state.args
        code = a.fail_status
        ecode = {429: "TOOMANYREQUESTS", 503: "UNAVAILABLE"}.get(code, "UNKNOWN")
        body = json.dumps({"errors": [{"code": ecode,
                                       "message": "injected by fault-proxy"}]}).encode()
        hdrs = [("Content-Type", "application/json")]
        if a.retry_after is not None:
            hdrs.append(("Retry-After", a.retry_after))
        self.entry["fault"] = "fail-status"
        self.send_simple(code, body, hdrs)

    def forwarded_headers(self):
        hs = list(self.headers.items())
        if self.state.args.ignore_range:
            hs = [(k, v) for k, v in hs if k.lower() not in ("range", "if-range")]
        return hs

    # ---- dispatch ------------------------------------------------------
    def handle_any(self):
        url = self.start_entry()
        try:
            if self.listener == "redirect":
                self.handle_redirect_listener(url)
            else:
                self.handle_main(url)
        except (ConnectionError, socket.timeout, OSError, http.client.HTTPException) as e:
            self.entry["error"] = "%s: %s" % (type(e).__name__, e)
            if self.entry["status"] is None:
                try:
                    self.send_simple(502, b"upstream error\n",
                                     [("Content-Type", "text/plain")])
                except OSError:
                    pass
            self.close_connection = True
        finally:
            self.state.log(self.entry)

    def handle_main(self, url):
        a = self.state.args
        body = self.read_body()
        m = BLOB_RE.match(url.path)
        is_blob = m is not None and "/blobs/uploads" not in url.path
        redirect = is_blob and a.redirect_port and self.command in ("GET", "HEAD")
        fault_ok = is_blob and self.command == "GET" and not a.redirect_port
        if a.only_ranged and not self.headers.get("Range"):
            fault_ok = False
        if fault_ok and a.redirect_to:
            self.entry["fault"] = "redirect-to"
            self.send_simple(307, b"", [("Location", a.redirect_to)])
            return
        if fault_ok and a.hang:
            self.hang()
            return
        if fault_ok and self.state.take("fail_left"):
            self.fail_response()
            return
        conn, resp = self.upstream_request(self.state.upstream, self.command,
                                           self.path, self.forwarded_headers(), body)
        try:
            if redirect and 200 <= resp.status < 300:
                loc = "http://127.0.0.2:%d/blob/%s?%s" % (
                    a.redirect_port, m.group("digest"),
                    urllib.parse.urlencode({"name": m.group("name")}))
                self.entry["fault"] = "redirect"
                self.send_simple(307, b"", [("Location", loc),
                                            ("Docker-Distribution-Api-Version",
                                             "registry/2.0")])
                return
            self.relay(conn, resp, fault_ok)
        finally:
            conn.close()

    def handle_redirect_listener(self, url):
        a = self.state.args
        self.read_body()
        m = REDIRECT_RE.match(url.path)
        name = (urllib.parse.parse_qs(url.query).get("name") or [""])[0]
        if self.command not in ("GET", "HEAD") or not m or not name:
            self.send_simple(404, b"not found\n", [("Content-Type", "text/plain")])
            return
        if a.redirect_reject_auth and self.headers.get("Authorization") is not None:
            self.entry["fault"] = "reject-auth"
            self.send_simple(400, b"Only one auth mechanism allowed\n",
                             [("Content-Type", "text/plain")])
            return
        fault_ok = self.command == "GET"
        if fault_ok and self.state.take("fail_left"):
            self.fail_response()
            return
        hdrs = [(k, v) for k, v in self.forwarded_headers()
                if k.lower() in ("range", "if-range", "accept", "user-agent")]
        if self.state.upstream_auth:
            hdrs.append(("Authorization", self.state.upstream_auth))
        path = "/v2/%s/blobs/%s" % (name, m.group("digest"))
        conn, resp = self.upstream_request(self.state.redirect_upstream,
                                           self.command, path, hdrs, None)
        try:
            self.relay(conn, resp, fault_ok)
        finally:
            conn.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = handle_any


def make_server(addr, listener, state):
    handler = type("Handler_" + listener, (ProxyHandler,),
                   {"listener": listener, "state": state})
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    return ThreadingHTTPServer(addr, handler)


def main():
    ap = argparse.ArgumentParser(description="registry fault-injecting proxy")
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--ready-file")
    ap.add_argument("--upstream-timeout", type=float, default=30.0)
    ap.add_argument("--redirect-port", type=int)
    ap.add_argument("--redirect-upstream")
    ap.add_argument("--upstream-auth")
    ap.add_argument("--redirect-reject-auth", action="store_true")
    ap.add_argument("--fail-status", type=int)
    ap.add_argument("--fail-count", type=int, default=1)
    ap.add_argument("--retry-after")
    ap.add_argument("--drop-after-bytes", type=int)
    ap.add_argument("--drop-count", type=int, default=1)
    ap.add_argument("--drop-rst", action="store_true")
    ap.add_argument("--ignore-range", action="store_true")
    ap.add_argument("--flip-byte", action="store_true")
    ap.add_argument("--flip-count", type=int)
    ap.add_argument("--redirect-to")
    ap.add_argument("--drip-rate", type=float)
    ap.add_argument("--hang", action="store_true")
    ap.add_argument("--only-ranged", action="store_true")
    ap.add_argument("--content-range")
    args = ap.parse_args()
    if not args.upstream.startswith("http://"):
        ap.error("--upstream must be an http:// URL")

    state = State(args)
    servers = [make_server(("127.0.0.1", args.listen), "main", state)]
    if args.redirect_port:
        servers.append(make_server(("127.0.0.2", args.redirect_port), "redirect", state))

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)

    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2},
                                daemon=True) for s in servers]
    try:
        for t in threads:
            t.start()
        if args.ready_file:
            tmp = args.ready_file + ".tmp"
            with open(tmp, "w") as f:
                f.write("%d\n" % os.getpid())
            os.replace(tmp, args.ready_file)
        try:
            print("ready", flush=True)
        except OSError:
            pass
        while not stop.is_set():
            time.sleep(0.1)  # sleep is cut short by signals; Event.wait is not
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
        if args.ready_file:
            for p in (args.ready_file, args.ready_file + ".tmp"):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass


if __name__ == "__main__":
    main()
