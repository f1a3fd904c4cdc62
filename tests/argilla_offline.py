"""The argilla client, made to build its own objects (Settings, Record) with no Argilla server.

The client checks its connection once, when it is made (GET /api/v1/me), and its settings
objects want a client. An Argilla server needs Elasticsearch or OpenSearch, which does not fit on
the test machines, so a local stand-in answers that one question; nothing else is asked of it
while objects are only built and converted.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

USER = {"id": str(uuid.UUID(int=1)), "username": "icm-test", "role": "owner"}


@contextlib.contextmanager
def argilla_client() -> Iterator[Any]:
    import argilla as rg

    class Me(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(USER if self.path.startswith("/api/v1/me") else {"detail": "not here"}).encode()
            self.send_response(200 if self.path.startswith("/api/v1/me") else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Me)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # Made the default client too: Settings.from_json builds its properties with it.
        yield rg.Argilla(api_url=f"http://127.0.0.1:{server.server_address[1]}", api_key="offline-test-key")
    finally:
        server.shutdown()
        server.server_close()
