"""A tiny HTTP app for Cairn's hello example: answers every GET with a greeting.

Needs only python3's standard library. Listens on $PORT (set by the platform).
"""
import http.server
import os

PORT = int(os.environ.get("PORT", "8080"))
GREETING = os.environ.get("GREETING", "Hello from Cairn")
DEPLOYMENT = os.environ.get("CAIRN_DEPLOYMENT", "?")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{GREETING}! (deployment v{DEPLOYMENT})\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        print("%s - %s" % (self.address_string(), fmt % args), flush=True)


if __name__ == "__main__":
    server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    print(f"hello listening on 127.0.0.1:{PORT}", flush=True)
    server.serve_forever()
