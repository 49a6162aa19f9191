"""Sends segments with the AWS X-Ray SDK for Python to a daemon address, then
makes the SDK's two centralized-sampling calls through the daemon's TCP
proxy. Prints one JSON object: what it sent (ids, parents, names, times,
http, annotations) and what the sampling calls returned.

usage: send_xray.py UDP_PORT TCP_PORT
"""
import json
import sys
import time

from aws_xray_sdk.core import xray_recorder
from aws_xray_sdk.core.sampling.connector import ServiceConnector

UDP, TCP = int(sys.argv[1]), int(sys.argv[2])
xray_recorder.configure(
    service="checkout",
    sampling=False,
    context_missing="LOG_ERROR",
    daemon_address=f"udp:127.0.0.1:{UDP} tcp:127.0.0.1:{TCP}",
    streaming_threshold=10,
)

sent = []


def record(entity, parent):
    sent.append({
        "id": entity.id,
        "name": entity.name,
        "parent": parent,
        "trace_id": entity.trace_id,
        "start": entity.start_time,
        "end": entity.end_time,
    })


segment = xray_recorder.begin_segment("checkout")
segment.put_http_meta("method", "POST")
segment.put_http_meta("url", "https://shop.example.com/cart")
segment.put_annotation("customer", "c-42")
segment.put_annotation("items", 3)
segment.put_metadata("cart", {"skus": ["a", "b"]}, "debug")
sub = xray_recorder.begin_subsegment("DynamoDB", namespace="aws")
sub.set_aws({"operation": "PutItem", "table_name": "carts", "region": "us-east-1"})
inner = xray_recorder.begin_subsegment("marshal")
time.sleep(0.002)
xray_recorder.end_subsegment()
record(inner, sub.id)
xray_recorder.end_subsegment()
record(sub, segment.id)
# More subsegments than streaming_threshold: the SDK sends some on their own.
for i in range(12):
    s = xray_recorder.begin_subsegment(f"step-{i}")
    if i == 5:
        try:
            raise ValueError("bad cart")
        except ValueError as e:
            s.add_exception(e, [])
    xray_recorder.end_subsegment()
    record(s, segment.id)
segment.put_http_meta("status", 500)
xray_recorder.end_segment()
record(segment, None)

connector = ServiceConnector()
connector.setup_xray_client("127.0.0.1", TCP, None)
rules = connector.fetch_sampling_rules()
targets, modified = connector.fetch_sampling_target(rules)
print(json.dumps({
    "sent": sent,
    "rules": [r.name for r in rules],
    "targets": {k: {"rate": v["rate"], "quota": v["quota"]} for k, v in targets.items()},
}))
