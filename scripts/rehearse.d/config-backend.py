"""The rehearsal's config backend: answers rudder-transformer's request for the code of one user
transformation (GET /transformation/getByVersionId?versionId=rehearse-v1), as the control plane
at CONFIG_BACKEND_URL does, so that /customTransform runs it in isolated-vm.

Usage: config-backend.py PORT   (listens on 127.0.0.1 only)
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

CODE = """export function transformEvent(event, metadata) {
  event.properties = event.properties || {};
  event.properties.rehearsed = 'by ' + metadata(event).sourceId;
  return event;
}
"""


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        version = parse_qs(url.query).get("versionId", [""])[0]
        if url.path == "/transformation/getByVersionId" and version == "rehearse-v1":
            body = json.dumps(
                {
                    "id": "rehearse",
                    "versionId": version,
                    "workspaceId": "rehearse-workspace",
                    "name": "rehearsal",
                    "code": CODE,
                    "codeVersion": "1",
                    "language": "javascript",
                    "imports": [],
                }
            ).encode()
            self.send_response(200)
        else:
            body = b'{"error":"not found"}'
            self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
