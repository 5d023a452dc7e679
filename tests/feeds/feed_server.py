#!/usr/bin/env python3
"""A blocklist feed server for the tests: serves the files of a directory
with ETag and Last-Modified, answers 304 to If-None-Match or
If-Modified-Since, and logs each request as a JSON line.

usage: feed_server.py DIR LOG    (prints the port it listens on)

A file NAME.status next to NAME holds a status code to answer instead."""

import email.utils
import hashlib
import http.server
import json
import os
import sys
import time

ROOT, LOG = sys.argv[1], sys.argv[2]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def record(self, status):
        with open(LOG, "a") as log:
            log.write(json.dumps({
                "path": self.path,
                "if_none_match": self.headers.get("If-None-Match"),
                "if_modified_since": self.headers.get("If-Modified-Since"),
                "status": status,
                "time": time.time(),
            }) + "\n")

    def answer(self, status, body=b"", headers=()):
        self.record(status)
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        name = os.path.basename(self.path)
        path = os.path.join(ROOT, name)
        status_file = path + ".status"
        if os.path.exists(status_file):
            with open(status_file) as f:
                return self.answer(int(f.read().strip()), b"server error\n")
        if not os.path.isfile(path):
            return self.answer(404, b"not found\n")
        with open(path, "rb") as f:
            body = f.read()
        etag = '"%s"' % hashlib.sha256(body).hexdigest()[:16]
        mtime = int(os.stat(path).st_mtime)
        modified = email.utils.formatdate(mtime, usegmt=True)
        headers = [("ETag", etag), ("Last-Modified", modified)]
        match = self.headers.get("If-None-Match")
        since = self.headers.get("If-Modified-Since")
        if match is not None:
            if match == etag:
                return self.answer(304, b"", headers)
        elif since is not None:
            try:
                when = email.utils.parsedate_to_datetime(since).timestamp()
            except (TypeError, ValueError):
                when = None
            if when is not None and mtime <= when:
                return self.answer(304, b"", headers)
        self.answer(200, body, headers + [("Content-Type", "text/plain")])


class Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A client closing its idle keep-alive connection is no error.
        pass


server = Server(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
