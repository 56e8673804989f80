"""An OTLP/HTTP trace receiver for tests, speaking http/protobuf.

Each export request is decoded with the OpenTelemetry protocol's own generated classes (the
`opentelemetry-proto` package from PyPI), then written to standard output as one JSON line in the
protocol's JSON mapping, with trace and span ids as hex, as OTLP/JSON has them. The first line
names the port it listens on. tests/support/otlp-receiver.ts starts it and reads the lines.
"""

import base64
import gzip
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def hex_ids(item):
    for key in ID_FIELDS:
        if key in item:
            item[key] = base64.b64decode(item[key]).hex()


class Handler(BaseHTTPRequestHandler):
    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                self.rfile.readline()
                return body
            body += self.rfile.read(size)
            self.rfile.readline()

    def do_POST(self):
        body = self.read_body()
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        content_type = self.headers.get("Content-Type", "")
        if content_type != "application/x-protobuf":
            self.send_error(415, f"expected application/x-protobuf, got {content_type}")
            return
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        decoded = MessageToDict(request, use_integers_for_enums=True)
        for resource_spans in decoded.get("resourceSpans", []):
            for scope_spans in resource_spans.get("scopeSpans", []):
                for span in scope_spans.get("spans", []):
                    hex_ids(span)
                    for link in span.get("links", []):
                        hex_ids(link)
        sys.stdout.write(json.dumps({"contentType": content_type, "request": decoded}) + "\n")
        sys.stdout.flush()
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
sys.stdout.write(json.dumps({"port": server.server_port}) + "\n")
sys.stdout.flush()
server.serve_forever()
