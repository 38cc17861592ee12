# A small app for the URL-service tests (Python standard library only).
#
#   GET  /            "instance I vN\n"  (CAIRN_INSTANCE, CAIRN_DEPLOYMENT)
#   GET  /headers     the request's headers as JSON
#   HEAD /            the headers of GET /, no body
#   GET  /empty       204, no body
#   GET  /close       "closing\n" with no length, then closes the connection
#   GET  /conn        "instance I port P\n": P is the client's port, so
#                     requests on one connection say the same
#   POST /upload      reads the body (Content-Length or chunked):
#                     "BYTES SHA256\n"
#   GET  /stream?n=N&ms=M   N chunks "chunk K\n", M ms apart (chunked)
#   GET  /ws          a websocket that echoes every message
#   GET  /env         {"pid": its pid, "env": its environment} as JSON
#   GET  /read?path=P "read N bytes" (200) or "cannot read: …" (403): whether
#                     the app can read file P
#
# HTTP/1.1 with keep-alive, one thread per connection, on $PORT.
import base64
import hashlib
import json
import os
import socketserver
import struct
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

INSTANCE = os.environ.get("CAIRN_INSTANCE", "?")
DEPLOYMENT = os.environ.get("CAIRN_DEPLOYMENT", "?")
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes: without TCP_NODELAY the
    # body waits for the ACK of the headers, which the peer delays ~40 ms.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.command, self.path))

    def reply(self, body, ctype="text/plain"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/":
            self.reply("instance %s v%s\n" % (INSTANCE, DEPLOYMENT))
        elif url.path == "/read":
            path = parse_qs(url.query).get("path", [""])[0]
            try:
                with open(path, "rb") as f:
                    n = len(f.read())
                self.reply("read %d bytes\n" % n)
            except OSError as e:
                data = ("cannot read: %s\n" % e).encode()
                self.send_response(403)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
        elif url.path == "/env":
            self.reply(json.dumps({"pid": os.getpid(), "env": dict(os.environ)}), "application/json")
        elif url.path == "/empty":
            self.send_response(204)
            self.end_headers()
        elif url.path == "/close":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"closing\n")
            self.wfile.flush()
            self.close_connection = True
        elif url.path == "/conn":
            self.reply("instance %s port %d\n" % (INSTANCE, self.client_address[1]))
        elif url.path == "/headers":
            self.reply(json.dumps({k.lower(): v for k, v in self.headers.items()}), "application/json")
        elif url.path == "/stream":
            q = parse_qs(url.query)
            n = int(q.get("n", ["5"])[0])
            ms = int(q.get("ms", ["100"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for k in range(n):
                line = ("chunk %d\n" % k).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
                time.sleep(ms / 1000.0)
            self.wfile.write(b"0\r\n\r\n")
        elif url.path == "/ws":
            self.websocket()
        else:
            self.send_error(404)

    def do_HEAD(self):
        body = ("instance %s v%s\n" % (INSTANCE, DEPLOYMENT)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()

    def do_POST(self):
        h = hashlib.sha256()
        total = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = size
                while left:
                    part = self.rfile.read(min(left, 1 << 16))
                    h.update(part)
                    total += len(part)
                    left -= len(part)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length", "0"))
            while left:
                part = self.rfile.read(min(left, 1 << 16))
                if not part:
                    break
                h.update(part)
                total += len(part)
                left -= len(part)
        self.reply("%d %s\n" % (total, h.hexdigest()))

    def websocket(self):
        self.close_connection = True
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode = head[0] & 0x0F
            masked = head[1] & 0x80
            n = head[1] & 0x7F
            if n == 126:
                n = struct.unpack(">H", self.rfile.read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if masked else b"\0\0\0\0"
            data = bytearray(self.rfile.read(n))
            for i in range(len(data)):
                data[i] ^= mask[i % 4]
            if opcode == 8:
                self.wfile.write(b"\x88\x00")
                self.wfile.flush()
                return
            if n < 126:
                out = bytes([0x80 | opcode, n])
            elif n < 65536:
                out = bytes([0x80 | opcode, 126]) + struct.pack(">H", n)
            else:
                out = bytes([0x80 | opcode, 127]) + struct.pack(">Q", n)
            self.wfile.write(out + bytes(data))
            self.wfile.flush()


class Server(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    port = int(os.environ["PORT"])
    print("web listening on 127.0.0.1:%d (instance %s)" % (port, INSTANCE), flush=True)
    Server(("127.0.0.1", port), Handler).serve_forever()
