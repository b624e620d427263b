"""A minimal OTLP/HTTP JSON trace receiver on loopback, standing in for an OpenTelemetry Collector:
it records every `POST /v1/traces` (headers and parsed body) and answers 200 (after `delay` seconds:
a server that works but slowly), or 503 while `down`."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler

from helpers import LoopbackHTTPServer


class OtlpReceiver(LoopbackHTTPServer):
    def __init__(self):
        self.down = False
        self.delay = 0.0
        self.requests: list[dict] = []  # {"headers": {...}, "body": {...}}
        self._lock = threading.Lock()
        super().__init__()

    @property
    def endpoint(self) -> str:
        return self.url

    def spans(self) -> list[dict]:
        """Every span received, each with `_resource` (its resource attributes as a dict) and
        `_attributes` (its attributes as a dict of plain values)."""
        with self._lock:
            requests = list(self.requests)
        out = []
        for request in requests:
            for resource_spans in request["body"].get("resourceSpans", []):
                resource = attributes(resource_spans.get("resource", {}).get("attributes", []))
                for scope in resource_spans.get("scopeSpans", []):
                    for span in scope.get("spans", []):
                        out.append({**span, "_resource": resource, "_attributes": attributes(span.get("attributes", []))})
        return out

    def handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # noqa: A002 - stdlib signature
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.down or self.path != "/v1/traces":
                    status = 503 if receiver.down else 404
                else:
                    time.sleep(receiver.delay)
                    with receiver._lock:
                        receiver.requests.append({"headers": {k.lower(): v for k, v in self.headers.items()},
                                                  "body": json.loads(body)})
                    status = 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        return Handler


def attributes(items: list[dict]) -> dict:
    """OTLP key/value list as {key: plain value}."""
    out = {}
    for item in items:
        value = item.get("value", {})
        if "stringValue" in value:
            out[item["key"]] = value["stringValue"]
        elif "intValue" in value:
            out[item["key"]] = int(value["intValue"])
        elif "doubleValue" in value:
            out[item["key"]] = float(value["doubleValue"])
        elif "boolValue" in value:
            out[item["key"]] = bool(value["boolValue"])
    return out
