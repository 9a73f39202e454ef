#!/usr/bin/env python3
"""A loopback HTTP proxy that adds a fixed delay to every request and counts them.

    benches/latency_proxy.py --upstream 127.0.0.1:MOTO_PORT --port PORT [--delay-ms 50] [--log FILE]

Put it between terraform's aws provider and the local moto server (the
provider's `endpoints` point at the proxy) to give every API call the
round-trip time of a real cloud API, which moto (about 1 ms a call) does not
have. Each request is held for --delay-ms before it is forwarded, on its own
thread, so concurrent requests (terraform refreshes with -parallelism=10) are
delayed concurrently, as on a real network. The response is relayed as is
(re-framed with a Content-Length).

Control, on the proxy's own port (not forwarded, not counted, not delayed):
  GET  /__latency_proxy__/stats           {"requests": N, "delay_ms": D, "delayed_s": S}
  POST /__latency_proxy__/delay?ms=D      change the delay from now on
With --log, one line per forwarded request: "METHOD PATH STATUS DELAY_MS".

Python 3 standard library only. Loopback only: --upstream must be a local address.
"""

import argparse
import http.client
import http.server
import json
import socket
import socketserver
import sys
import threading
import time
import urllib.parse

CONTROL = "/__latency_proxy__/"
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


class State:
    def __init__(self, upstream, delay_ms, log):
        self.host, port = upstream.rsplit(":", 1)
        self.port = int(port)
        if self.host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("latency_proxy: --upstream must be a loopback address")
        self.delay_ms = delay_ms
        self.requests = 0
        self.delayed_s = 0.0
        self.lock = threading.Lock()
        self.log = open(log, "a", buffering=1) if log else None
        self.local = threading.local()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the aws SDK expects

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):
        pass

    def _body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _reply(self, status, body, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        # Status line, headers and body in ONE write: separate small writes on
        # a kept-alive connection meet Nagle's algorithm and the client's
        # delayed ACK, and stall ~40 ms each on loopback.
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD" and body:
            self._headers_buffer.append(body)
        self.flush_headers()

    def _control(self):
        st = self.server.state
        u = urllib.parse.urlsplit(self.path)
        if u.path == CONTROL + "delay" and self.command == "POST":
            ms = urllib.parse.parse_qs(u.query).get("ms", ["0"])[0]
            with st.lock:
                st.delay_ms = float(ms)
        with st.lock:
            body = json.dumps({"requests": st.requests, "delay_ms": st.delay_ms,
                               "delayed_s": round(st.delayed_s, 3)}).encode()
        self._reply(200, body, [("Content-Type", "application/json")])

    def _upstream(self):
        st = self.server.state
        c = getattr(st.local, "conn", None)
        if c is None:
            c = st.local.conn = http.client.HTTPConnection(st.host, st.port, timeout=300)
            c.connect()
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return c

    def _forward(self):
        st = self.server.state
        if self.path.startswith(CONTROL):
            self._body()
            return self._control()
        body = self._body()
        with st.lock:
            delay = st.delay_ms / 1000.0
        if delay > 0:
            time.sleep(delay)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        for attempt in (1, 2):
            conn = self._upstream()
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (ConnectionError, http.client.HTTPException, OSError):
                conn.close()
                st.local.conn = None
                if attempt == 2:
                    return self._reply(502, b"latency_proxy: upstream failed\n")
        with st.lock:
            st.requests += 1
            st.delayed_s += delay
        if st.log:
            st.log.write(f"{self.command} {self.path.split('?')[0]} {resp.status} {delay * 1000:.0f}\n")
        out = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP and k.lower() != "content-length"]
        self._reply(resp.status, data, out)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _forward


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", required=True, help="HOST:PORT of the server to forward to (loopback)")
    ap.add_argument("--port", type=int, default=0, help="port to listen on, on 127.0.0.1 (0: any free port)")
    ap.add_argument("--delay-ms", type=float, default=50.0)
    ap.add_argument("--log", help="append one line per forwarded request to this file")
    ap.add_argument("--port-file", help="write the port listened on to this file once listening")
    a = ap.parse_args()
    srv = Server(("127.0.0.1", a.port), Handler)
    srv.state = State(a.upstream, a.delay_ms, a.log)
    port = srv.server_address[1]
    if a.port_file:
        with open(a.port_file + ".tmp", "w") as f:
            f.write(f"{port}\n")
        import os
        os.replace(a.port_file + ".tmp", a.port_file)
    print(f"latency_proxy: 127.0.0.1:{port} -> {a.upstream}, {a.delay_ms:g} ms per request", file=sys.stderr, flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
