#!/usr/bin/env python3
"""token-issuer.py - a minimal Docker registry token server for lazypull tests.

Usage:
  token-issuer.py --port P --dir DIR [--user USER:PASS] [--ttl SECONDS]
                  [--exp-offset SECONDS]

On start, creates DIR/issuer.key (RSA 2048) and DIR/issuer.crt (self-signed,
CN=lazypull-test-issuer) with the openssl CLI, unless both already exist (then
they are reused, so a restarted issuer keeps matching a running registry).
DIR/issuer.crt is the `rootcertbundle` for `registry.sh ... token`.
Listens on 127.0.0.1:P, then writes DIR/ready (removed again on exit) and
prints "ready" on stdout.

Realm: /token
  GET  /token?service=S&scope=repository:NAME:ACTIONS[&scope=...][&account=A]
       optional Authorization: Basic ...
  POST /token  (application/x-www-form-urlencoded: grant_type=password,
       username, password, service, scope [space separated], client_id...)
       credentials from the form, or from a Basic header.
  Several scopes may be given (repeated params and/or space separated).

Access policy:
  --user given:   correct credentials -> all requested actions;
                  wrong credentials   -> 401;
                  anonymous           -> token with an EMPTY access list.
  no --user:      any credentials     -> all requested actions;
                  anonymous           -> only "pull" of what was requested.

Token: JWT RS256 (signature by `openssl dgst -sha256 -sign DIR/issuer.key`),
header {"alg":"RS256","typ":"JWT","x5c":[base64 DER cert]}, claims
{iss:"lazypull-test-issuer", sub, aud:service, exp:now+ttl, nbf, iat, jti,
access:[{type,name,actions}]}.  --ttl defaults to 300.  --exp-offset S sets
exp = now+S instead while the response still says expires_in=ttl (e.g. -120
gives tokens the registry rejects at once although the client believes them
valid).  NOTE: distribution 2.8 accepts a token until 60 s AFTER its exp
(built-in leeway), so a plain short --ttl only bites after ttl+60 s.
Response: {"token","access_token","expires_in","issued_at"(RFC3339)}.

DIR/requests.log gets one JSON line per request:
  {"time","method","path","service","scope":[...],"account","auth_given":bool,
   "user","status","access":[...]}
"""

import argparse
import base64
import datetime
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ISSUER = "lazypull-test-issuer"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def ensure_key_and_cert(directory):
    key = os.path.join(directory, "issuer.key")
    crt = os.path.join(directory, "issuer.crt")
    if not (os.path.isfile(key) and os.path.isfile(crt)):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
             "-sha256", "-days", "3650", "-subj", "/CN=" + ISSUER,
             "-keyout", key, "-out", crt],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            timeout=60)
        os.chmod(key, 0o600)
    der = subprocess.run(
        ["openssl", "x509", "-in", crt, "-outform", "DER"],
        check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        timeout=30).stdout
    return key, crt, der


def parse_scopes(values):
    """'repository:foo/bar:pull,push' -> dict(type, name, actions)."""
    out = []
    for value in values:
        for item in value.split():
            parts = item.split(":")
            if len(parts) < 3:
                continue
            typ = parts[0]
            actions = [a for a in parts[-1].split(",") if a]
            name = ":".join(parts[1:-1])
            out.append({"type": typ, "name": name, "actions": actions})
    return out


class Issuer:
    def __init__(self, directory, user, ttl, exp_offset=None):
        self.dir = directory
        self.user = user  # (name, password) or None
        self.ttl = ttl
        self.exp_offset = ttl if exp_offset is None else exp_offset
        self.key, self.crt, self.der = ensure_key_and_cert(directory)
        self.log_lock = threading.Lock()
        self.log_path = os.path.join(directory, "requests.log")

    def sign(self, data: bytes) -> bytes:
        res = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", self.key],
            input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            check=True, timeout=30)
        return res.stdout

    def make_token(self, subject, service, access):
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT",
                  "x5c": [base64.b64encode(self.der).decode("ascii")]}
        claims = {"iss": ISSUER, "sub": subject, "aud": service,
                  "exp": now + self.exp_offset, "nbf": now, "iat": now,
                  "jti": secrets.token_hex(16), "access": access}
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode())
                         + "." +
                         b64url(json.dumps(claims, separators=(",", ":")).encode()))
        sig = self.sign(signing_input.encode("ascii"))
        return signing_input + "." + b64url(sig), now

    def log(self, entry):
        line = json.dumps(entry, sort_keys=True)
        with self.log_lock:
            with open(self.log_path, "a") as f:
                f.write(line + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lazypull-token-issuer/1"
    issuer: Issuer = None  # set on the class before serving

    def log_message(self, fmt, *args):  # silence default stderr logging
        pass

    def send_json(self, status, obj, extra_headers=()):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra_headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def basic_creds(self):
        h = self.headers.get("Authorization")
        if not h or not h.lower().startswith("basic "):
            return None
        try:
            raw = base64.b64decode(h[6:].strip()).decode("utf-8")
        except Exception:
            return ("", "")
        user, _, pw = raw.partition(":")
        return (user, pw)

    def handle_token(self, params, creds):
        iss = self.issuer
        service = (params.get("service") or [""])[0]
        account = (params.get("account") or [""])[0]
        scopes = params.get("scope") or []
        requested = parse_scopes(scopes)
        entry = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                 "method": self.command, "path": self.path.split("?")[0],
                 "service": service,
                 "scope": [x for s in scopes for x in s.split()],
                 "account": account,
                 "auth_given": creds is not None,
                 "user": creds[0] if creds else None}
        try:
            if iss.user is not None and creds is not None and tuple(creds) != iss.user:
                entry["status"] = 401
                entry["access"] = None
                self.send_json(401, {"errors": [{
                    "code": "UNAUTHORIZED",
                    "message": "invalid username or password"}]})
                return
            if creds is not None:
                access = requested
                subject = creds[0]
            elif iss.user is not None:
                access = []
                subject = account or ""
            else:
                access = []
                for a in requested:
                    if "pull" in a["actions"]:
                        access.append({"type": a["type"], "name": a["name"],
                                       "actions": ["pull"]})
                subject = account or ""
            token, now = iss.make_token(subject, service, access)
            issued = datetime.datetime.fromtimestamp(
                now, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            entry["status"] = 200
            entry["access"] = access
            self.send_json(200, {"token": token, "access_token": token,
                                 "expires_in": iss.ttl, "issued_at": issued})
        except Exception as e:  # never leave the client hanging
            entry["status"] = 500
            entry["error"] = str(e)
            self.send_json(500, {"error": str(e)})
        finally:
            iss.log(entry)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path.rstrip("/") != "/token":
            self.send_json(404, {"error": "not found"})
            return
        params = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        self.handle_token(params, self.basic_creds())

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if url.path.rstrip("/") != "/token":
            self.send_json(404, {"error": "not found"})
            return
        params = urllib.parse.parse_qs(body.decode("utf-8", "replace"),
                                       keep_blank_values=True)
        # query parameters too, in case a client mixes them
        for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items():
            params.setdefault(k, []).extend(v)
        grant = (params.get("grant_type") or [""])[0]
        creds = None
        if "username" in params or "password" in params:
            creds = ((params.get("username") or [""])[0],
                     (params.get("password") or [""])[0])
        elif self.basic_creds() is not None:
            creds = self.basic_creds()
        if grant not in ("", "password"):
            self.issuer.log({
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "method": "POST", "path": url.path, "service":
                (params.get("service") or [""])[0], "scope": params.get("scope") or [],
                "account": "", "auth_given": creds is not None,
                "user": creds[0] if creds else None, "status": 400,
                "access": None, "grant_type": grant})
            self.send_json(400, {"error": "unsupported_grant_type"})
            return
        self.handle_token(params, creds)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--user", help="USER:PASS required for access")
    ap.add_argument("--ttl", type=int, default=300)
    ap.add_argument("--exp-offset", type=int)
    args = ap.parse_args()

    os.makedirs(args.dir, exist_ok=True)
    directory = os.path.abspath(args.dir)
    ready = os.path.join(directory, "ready")
    try:
        os.unlink(ready)
    except FileNotFoundError:
        pass
    user = None
    if args.user is not None:
        if ":" not in args.user:
            ap.error("--user must be USER:PASS")
        u, _, p = args.user.partition(":")
        user = (u, p)

    Handler.issuer = Issuer(directory, user, args.ttl, args.exp_offset)
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)

    def stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, stop)

    try:
        tmp = ready + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % os.getpid())
        os.replace(tmp, ready)
        try:
            print("ready", flush=True)
        except (BrokenPipeError, OSError):
            pass
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        for p in (ready, ready + ".tmp"):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


if __name__ == "__main__":
    main()
