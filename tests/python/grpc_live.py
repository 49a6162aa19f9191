"""A gRPC subscriber of spanwire's live exporter with Python grpcio: the
stubs are compiled here from proto/spanwire/live/v1/live.proto by
grpcio-tools, and span batches are decoded with the OpenTelemetry protobuf
classes.

usage: grpc_live.py ADDRESS SESSION SPANS
Prints "subscribed" once the stream is open, then one JSON object: the span
ids in arrival order and the last summary's span count.
"""
import json
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "proto")
OUT = tempfile.mkdtemp()
rc = protoc.main(["protoc", f"-I{ROOT}", f"--python_out={OUT}", f"--grpc_python_out={OUT}",
                  os.path.join(ROOT, "spanwire/live/v1/live.proto")])
assert rc == 0, rc
sys.path.insert(0, OUT)
from spanwire.live.v1 import live_pb2, live_pb2_grpc  # noqa: E402

address, session, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
ids, count = [], 0
with grpc.insecure_channel(address) as channel:
    grpc.channel_ready_future(channel).result(timeout=10)
    stream = live_pb2_grpc.LiveStub(channel).Subscribe(
        live_pb2.SubscribeRequest(session_id=session), timeout=20)
    print("subscribed", flush=True)
    for ev in stream:
        kind = ev.WhichOneof("event")
        if kind == "spans":
            for raw in ev.spans.resource_spans:
                rs = ResourceSpans.FromString(raw)
                ids.extend(s.span_id.hex() for ss in rs.scope_spans for s in ss.spans)
        elif kind == "summary":
            count = ev.summary.span_count
        if len(ids) >= want and count >= want:
            break
print(json.dumps({"span_ids": ids, "span_count": count}), flush=True)
