"""An OTLP/HTTP endpoint that accepts only requests signed with AWS SigV4.

Every request is signed again by botocore's own SigV4Auth over the headers
the request says it signed (its SignedHeaders), with the credentials, region
and service given here and the request's own X-Amz-Date; the Authorization
header must be exactly the one botocore computes, and X-Amz-Content-SHA256
must be the SHA-256 of the body as received. A mismatch is answered 403.

Accepted bodies (protobuf or JSON, gzip or none) are decoded with the
OpenTelemetry protobuf classes and counted. One JSON line per request goes to
stdout: {"path", "ok", "items", "encoding", "gzip", "reason", "log_group",
"log_stream", "signed_headers", and for logs "bodies"}. As the CloudWatch Logs
OTLP endpoint does, a logs request without x-aws-log-group or
x-aws-log-stream is refused with 400.

Prometheus remote write (a path ending in /api/v1/remote_write, the
`aps` service of Amazon Managed Service for Prometheus) is decoded with
python-snappy and Prometheus's own protobuf classes (as the OpenTelemetry
Python remote-write exporter ships them); its line also has "series": every
series as {"labels": {...}, "samples": [[value, timestamp_ms], ...]}, and
"items" counts samples.

X-Ray's sampling calls (paths ending in /GetSamplingRules and
/SamplingTargets, as a daemon proxy forwards them) are answered, once their
signature checks, with one rule `spanwire-test` and a target for it; the
line has "sampling": the request body.

With MAX_ITEMS and MAX_BYTES (0: none) it also refuses, with 400, a request
holding more items, or more bytes uncompressed, as the CloudWatch OTLP
endpoint does past its documented limits.

With ROTATE_SECONDS, it also plays the ECS/EKS container credentials
endpoint: GET /creds hands out a new key (ACCESS_KEY and SECRET_KEY are then
prefixes, numbered) with a session token, valid for ROTATE_SECONDS; a
request signed with an unknown or expired key is refused with 403.

With THROTTLE=N, of every N signed requests the first is answered 429 with
`Retry-After: 1` and the second 503 without it (before its spans are
counted), as a throttled CloudWatch endpoint does.

usage: sigv4_server.py PORT REGION ACCESS_KEY SECRET_KEY [MAX_ITEMS MAX_BYTES [ROTATE_SECONDS [THROTTLE]]]
(the service is the first path segment after /: /xray/v1/traces is signed
for `xray`, /logs/v1/logs for `logs`)
"""

import datetime
import gzip
import hashlib
import http.server
import json
import sys
import threading
from unittest import mock

import botocore.auth
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

PORT, REGION, ACCESS_KEY, SECRET_KEY = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
MAX_ITEMS = int(sys.argv[5]) if len(sys.argv) > 5 else 0
MAX_BYTES = int(sys.argv[6]) if len(sys.argv) > 6 else 0
ROTATE = int(sys.argv[7]) if len(sys.argv) > 7 else 0
THROTTLE = int(sys.argv[8]) if len(sys.argv) > 8 else 0
SEEN = [0]  # signed requests so far (for THROTTLE)
CREDENTIALS = Credentials(ACCESS_KEY, SECRET_KEY)
ISSUED = {}  # access key id -> (Credentials, expiry as UTC datetime)
ISSUE = threading.Lock()
PRINT = threading.Lock()  # requests are handled on several threads


class Throttled(Exception):
    """This request is answered 429 or 503 (THROTTLE)."""


def credentials_for(auth, stamp):
    """The credentials the request claims to be signed with, or why not."""
    if not ROTATE:
        return CREDENTIALS, None
    key = auth.partition("Credential=")[2].partition("/")[0]
    with ISSUE:
        issued = ISSUED.get(key)
    if issued is None:
        return None, f"unknown access key {key!r}"
    creds, expiry = issued
    now = datetime.datetime.utcnow()
    if stamp >= expiry or now >= expiry:
        return None, f"access key {key!r} expired at {expiry.isoformat()}Z (signed {stamp.isoformat()}Z)"
    return creds, None


def expected_authorization(method, host, path, headers, body, service, creds):
    """The Authorization header botocore computes for this request."""
    auth = headers.get("authorization", "")
    signed = ""
    for part in auth.replace("AWS4-HMAC-SHA256 ", "").split(","):
        k, _, v = part.strip().partition("=")
        if k == "SignedHeaders":
            signed = v
    names = [h for h in signed.split(";") if h and h != "host"]
    req = AWSRequest(
        method=method,
        url=f"http://{host}{path}",
        data=body,
        headers={n: headers[n] for n in names if n in headers},
    )
    stamp = datetime.datetime.strptime(headers.get("x-amz-date", ""), "%Y%m%dT%H%M%SZ")
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=stamp):
        SigV4Auth(creds, service, REGION).add_auth(req)
    return req.headers["Authorization"]


def decode(path, raw, content_type):
    """The spans or log records of a request body (series, for remote write)."""
    if path.endswith("/api/v1/remote_write"):
        from opentelemetry.exporter.prometheus_remote_write.gen.remote_pb2 import WriteRequest
        req = WriteRequest.FromString(raw)
        return [{"labels": {l.name: l.value for l in ts.labels},
                 "samples": [[x.value, x.timestamp] for x in ts.samples]}
                for ts in req.timeseries]
    if path.endswith("/v1/traces"):
        msg = ExportTraceServiceRequest()
        groups = lambda m: (s for r in m.resource_spans for sc in r.scope_spans for s in sc.spans)
    else:
        msg = ExportLogsServiceRequest()
        groups = lambda m: (l for r in m.resource_logs for sc in r.scope_logs for l in sc.log_records)
    if content_type.startswith("application/json"):
        json_format.Parse(raw, msg)
    else:
        msg.ParseFromString(raw)
    return list(groups(msg))


def sampling_answer(path, request):
    """X-Ray's answer to GetSamplingRules / GetSamplingTargets."""
    if path.endswith("/GetSamplingRules"):
        return {"SamplingRuleRecords": [{
            "CreatedAt": 1700000000, "ModifiedAt": 1700000000,
            "SamplingRule": {
                "RuleName": "spanwire-test", "RuleARN": "arn:aws:xray:us-east-1:111122223333:sampling-rule/spanwire-test",
                "ResourceARN": "*", "Priority": 1, "FixedRate": 0.25, "ReservoirSize": 3,
                "ServiceName": "*", "ServiceType": "*", "Host": "*", "HTTPMethod": "*",
                "URLPath": "*", "Version": 1, "Attributes": {},
            }}]}
    docs = request.get("SamplingStatisticsDocuments", [])
    return {
        "LastRuleModification": 1700000000,
        "SamplingTargetDocuments": [
            {"RuleName": d["RuleName"], "FixedRate": 0.5, "ReservoirQuota": 7,
             "ReservoirQuotaTTL": 1900000000, "Interval": 10} for d in docs],
        "UnprocessedStatistics": [],
    }


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, content_type, retry_after=False):
        self.send_response(status)
        self.send_header("content-type", content_type)
        if retry_after:
            self.send_header("retry-after", "1")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if not ROTATE or self.path != "/creds":
            return self.reply(404, b"{}", "application/json")
        with ISSUE:
            n = len(ISSUED) + 1
            key = f"{ACCESS_KEY}{n:04d}"
            expiry = datetime.datetime.utcnow().replace(microsecond=0) + datetime.timedelta(seconds=ROTATE)
            ISSUED[key] = (Credentials(key, f"{SECRET_KEY}-{n}", f"token-{n}"), expiry)
        body = json.dumps({
            "AccessKeyId": key,
            "SecretAccessKey": f"{SECRET_KEY}-{n}",
            "Token": f"token-{n}",
            "Expiration": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }).encode()
        with PRINT:
            print(json.dumps({"issued": key, "expires": expiry.isoformat()}), flush=True)
        self.reply(200, body, "application/json")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        service = self.path.strip("/").split("/")[0]
        ctype = headers.get("content-type", "")
        line = {"path": self.path, "ok": False, "items": 0, "encoding": ctype,
                "gzip": headers.get("content-encoding") == "gzip", "reason": "", "bytes": 0}
        status = 403
        try:
            got = headers.get("authorization", "")
            stamp = datetime.datetime.strptime(headers.get("x-amz-date", ""), "%Y%m%dT%H%M%SZ")
            creds, refused = credentials_for(got, stamp)
            want = creds and expected_authorization(
                "POST", headers.get("host", ""), self.path, headers, body, service, creds)
            line["key"] = got.partition("Credential=")[2].partition("/")[0]
            line["signed_headers"] = got.partition("SignedHeaders=")[2].partition(",")[0].split(";")
            line["log_group"] = headers.get("x-aws-log-group")
            line["log_stream"] = headers.get("x-aws-log-stream")
            if refused:
                line["reason"] = refused
            elif got != want:
                line["reason"] = f"signature mismatch: got {got!r}, botocore computed {want!r}"
            elif headers.get("x-amz-content-sha256") != hashlib.sha256(body).hexdigest():
                line["reason"] = "x-amz-content-sha256 is not the SHA-256 of the body"
            else:
                with ISSUE:
                    SEEN[0] += 1
                    nth = SEEN[0] % THROTTLE if THROTTLE else -1
                if nth in (1, 2):
                    line["reason"], status = ("throttled", 429) if nth == 1 else ("unavailable", 503)
                    line["throttled"] = status
                    raise Throttled()
                if self.path.endswith(("/GetSamplingRules", "/SamplingTargets")):
                    line["ok"] = True
                    line["sampling"] = json.loads(body or b"{}")
                    with PRINT:
                        print(json.dumps(line), flush=True)
                    return self.reply(200, json.dumps(sampling_answer(self.path, line["sampling"])).encode(),
                                      "application/json")
                raw = gzip.decompress(body) if line["gzip"] else body
                if headers.get("content-encoding") == "snappy":
                    import snappy
                    raw = snappy.uncompress(body)
                items = decode(self.path, raw, ctype)
                line["items"] = len(items)
                if self.path.endswith("/api/v1/remote_write"):
                    line["series"] = items
                    line["items"] = sum(len(i["samples"]) for i in items)
                    line["version"] = headers.get("x-prometheus-remote-write-version")
                line["bytes"] = len(raw)
                if service == "logs" and len(items) <= 1000:
                    line["bodies"] = [l.body.string_value for l in items]
                missing = [h for h in ("x-aws-log-group", "x-aws-log-stream") if h not in headers]
                if service == "logs" and missing:
                    # As the CloudWatch Logs OTLP endpoint does.
                    line["reason"], status = f"missing header {missing[0]}", 400
                elif MAX_ITEMS and line["items"] > MAX_ITEMS:
                    line["reason"], status = f"{line['items']} items exceed {MAX_ITEMS}", 400
                elif MAX_BYTES and len(raw) > MAX_BYTES:
                    line["reason"], status = f"{len(raw)} bytes exceed {MAX_BYTES}", 400
                else:
                    line["ok"] = True
        except Throttled:
            pass
        except Exception as e:  # a request that cannot be checked is refused
            line["reason"] = f"cannot check: {e!r}"
        with PRINT:
            print(json.dumps(line), flush=True)
        if line["ok"]:
            json_reply = ctype.startswith("application/json")
            self.reply(200, b"{}" if json_reply else b"", ctype or "application/x-protobuf")
        else:
            message = json.dumps({"code": 16 if status == 403 else 3, "message": line["reason"]}).encode()
            self.reply(status, message, "application/json", retry_after=status == 429)


server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print(json.dumps({"listening": PORT}), flush=True)
server.serve_forever()
