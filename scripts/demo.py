"""The whole spanwire path on one machine, with moto server standing in for AWS.

Started by scripts/demo. Steps:
  1. start moto server; create the Kinesis stream `aws-spans`, the log group
     `aws/spans` and a subscription filter from one to the other;
  2. run spanwire with pipelines/demo.yaml;
  3. replay the Bedrock agent trace fixtures into the bedrock receiver, the
     aws/spans fixtures into the `aws/spans` log group (moto delivers them to
     Kinesis in the real subscription envelope), and a small agent trace from
     the OpenTelemetry Python SDK over OTLP/HTTP;
  4. print what arrived: X-Ray segments (BatchGetTraces), EMF events in
     CloudWatch Logs (GetLogEvents), agent metrics on Prometheus /metrics,
     the aws/spans spans spanwire read from Kinesis, and the agent sessions
     on the live page (its URL is printed first: open it in a browser);
and exit 1 if any of it is missing.

Environment: SPANWIRE_BIN (the spanwire binary), SPANWIRE_MOTO_SERVER
(moto_server), DEMO_KEEP=1 to keep the output directory, DEMO_LIVE_PORT to
serve the live page on that port (default: a free one), DEMO_STAY=1 to keep
everything running after the checks, until Ctrl-C, to look at the page.
"""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
AWS_SPANS_FIXTURES = [
    "coralogix_stepfunctions_aws_spans.jsonl",
    "awsdocs_agentcore_understanding_input_spans.jsonl",
    "awsdocs_strands_split_spans.ABBREVIATED.jsonl",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, limit=30.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def poll(check, limit=40.0):
    """Calls check() until it returns something truthy or the limit passes."""
    deadline = time.time() + limit
    while True:
        result = check()
        if result or time.time() > deadline:
            return result
        time.sleep(0.5)


def main():
    spanwire = os.environ.get("SPANWIRE_BIN") or os.path.join(ROOT, "target", "release", "spanwire")
    moto_server = os.environ.get("SPANWIRE_MOTO_SERVER") or os.path.join(ROOT, ".venv", "bin", "moto_server")
    work = tempfile.mkdtemp(prefix="spanwire-demo-")
    procs = []
    failures = []

    def check(ok, what):
        print(("  ok    " if ok else "  MISSING ") + what, flush=True)
        if not ok:
            failures.append(what)

    try:
        # 1. A stand-in for AWS.
        moto_port = free_port()
        moto_log = open(os.path.join(work, "moto.log"), "w")
        procs.append(subprocess.Popen([moto_server, "-H", "127.0.0.1", "-p", str(moto_port)],
                                      stdout=moto_log, stderr=subprocess.STDOUT))
        if not wait_port(moto_port):
            print("moto server did not start", file=sys.stderr)
            return 1
        endpoint = f"http://127.0.0.1:{moto_port}"
        aws = dict(endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
        kinesis = boto3.client("kinesis", **aws)
        logs = boto3.client("logs", **aws)
        xray = boto3.client("xray", **aws)
        kinesis.create_stream(StreamName="aws-spans", ShardCount=2)
        stream_arn = kinesis.describe_stream_summary(StreamName="aws-spans")["StreamDescriptionSummary"]["StreamARN"]
        logs.create_log_group(logGroupName="aws/spans")
        logs.create_log_stream(logGroupName="aws/spans", logStreamName="default")
        logs.put_subscription_filter(
            logGroupName="aws/spans", filterName="to-kinesis", filterPattern="",
            destinationArn=stream_arn, roleArn="arn:aws:iam::123456789012:role/cwl-to-kinesis")
        print(f"moto server on {endpoint}: stream aws-spans <- subscription filter on aws/spans")

        # 2. spanwire.
        ports = {k: free_port() for k in ["otlp", "bedrock", "prometheus", "health", "self"]}
        ports["live"] = int(os.environ.get("DEMO_LIVE_PORT") or free_port())
        env = dict(os.environ,
                   DEMO_AWS_ENDPOINT=endpoint, DEMO_DIR=work,
                   DEMO_OTLP_HTTP=f"127.0.0.1:{ports['otlp']}",
                   DEMO_BEDROCK=f"127.0.0.1:{ports['bedrock']}",
                   DEMO_PROMETHEUS=f"127.0.0.1:{ports['prometheus']}",
                   DEMO_HEALTH=f"127.0.0.1:{ports['health']}",
                   DEMO_SELF_METRICS=f"127.0.0.1:{ports['self']}",
                   DEMO_LIVE=f"127.0.0.1:{ports['live']}",
                   AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                   AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
        spanwire_log = open(os.path.join(work, "spanwire.log"), "w")
        procs.append(subprocess.Popen(
            [spanwire, "run", "--config", os.path.join(ROOT, "pipelines", "demo.yaml")],
            env=env, stdout=spanwire_log, stderr=subprocess.STDOUT))
        healthy = poll(lambda: wait_port(ports["health"], 0.5)
                       and http("GET", f"http://127.0.0.1:{ports['health']}/")[0] == 200, 30)
        if not healthy:
            print("spanwire did not become healthy; its log:", file=sys.stderr)
            print(open(os.path.join(work, "spanwire.log")).read(), file=sys.stderr)
            return 1
        print(f"spanwire running (pipelines/demo.yaml), health on :{ports['health']}")
        live_url = f"http://127.0.0.1:{ports['live']}/"
        print(f"live sessions: open {live_url} in a browser", flush=True)

        # 3a. Bedrock agent trace events.
        bedrock_files = sorted(glob.glob(os.path.join(FIXTURES, "bedrock", "*.json")))
        for f in bedrock_files:
            status, body = http("POST", f"http://127.0.0.1:{ports['bedrock']}/v1/bedrock/traces",
                                open(f, "rb").read(), {"content-type": "application/json"})
            if status != 200:
                failures.append(f"bedrock receiver refused {os.path.basename(f)}: {status} {body[:200]!r}")
        converted = subprocess.run([spanwire, "convert", "--from", "bedrock", "--to", "xray", *bedrock_files],
                                   capture_output=True, text=True, check=True).stdout
        bedrock_docs = [json.loads(line) for line in converted.splitlines() if line.strip()]
        print(f"sent {len(bedrock_files)} Bedrock trace streams ({len(bedrock_docs)} spans once converted)")

        # 3b. aws/spans records through the subscription filter.
        span_ids = set()
        now_ms = int(time.time() * 1000)
        for name in AWS_SPANS_FIXTURES:
            lines = [l for l in open(os.path.join(FIXTURES, "aws-spans", name)) if l.strip()]
            for l in lines:
                rec = json.loads(l)
                span_ids.add((rec["traceId"], rec["spanId"]))
            events = [{"timestamp": now_ms + i, "message": l.strip()} for i, l in enumerate(lines)]
            logs.put_log_events(logGroupName="aws/spans", logStreamName="default", logEvents=events)
        print(f"put aws/spans records into the log group ({len(span_ids)} distinct spans)")

        # 3c. OTLP from the OpenTelemetry Python SDK.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        provider = TracerProvider(resource=Resource.create({"service.name": "python-agent"}))
        provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"http://127.0.0.1:{ports['otlp']}/v1/traces")))
        tracer = provider.get_tracer("demo")
        otlp_traces = []
        for i in range(3):
            with tracer.start_as_current_span("invoke_agent python-agent") as root:
                root.set_attribute("gen_ai.operation.name", "invoke_agent")
                root.set_attribute("gen_ai.agent.name", "python-agent")
                with tracer.start_as_current_span("chat claude") as chat:
                    chat.set_attribute("gen_ai.operation.name", "chat")
                    chat.set_attribute("gen_ai.request.model", "anthropic.claude-3-haiku")
                    chat.set_attribute("gen_ai.usage.input_tokens", 100 + i)
                    chat.set_attribute("gen_ai.usage.output_tokens", 20 + i)
                tid = format(root.get_span_context().trace_id, "032x")
                otlp_traces.append(f"1-{tid[:8]}-{tid[8:]}")
        provider.shutdown()
        print(f"sent {len(otlp_traces)} agent traces from the OpenTelemetry Python SDK")

        # 4. What arrived.
        print("\nwhat arrived:")
        want_traces = sorted({d["trace_id"] for d in bedrock_docs} | set(otlp_traces))
        want_docs = len(bedrock_docs) + 2 * len(otlp_traces)

        def xray_docs():
            docs = []
            for i in range(0, len(want_traces), 5):
                r = xray.batch_get_traces(TraceIds=want_traces[i:i + 5])
                docs += [s for t in r["Traces"] for s in t["Segments"]]
            return docs if len(docs) >= want_docs else None
        docs = poll(xray_docs) or []
        check(len(docs) >= want_docs,
              f"X-Ray: {len(docs)} of {want_docs} segment documents in {len(want_traces)} traces")

        spans_file = os.path.join(work, "aws-spans.jsonl")

        def kinesis_spans():
            got = set()
            if os.path.exists(spans_file):
                for line in open(spans_file):
                    for rs in json.loads(line).get("resourceSpans", []):
                        for ss in rs.get("scopeSpans", []):
                            for s in ss.get("spans", []):
                                got.add((s["traceId"], s["spanId"]))
            return got if span_ids <= got else None
        got = poll(kinesis_spans) or set()
        check(span_ids <= got, f"Kinesis: {len(got & span_ids)} of {len(span_ids)} aws/spans spans read through the subscription filter")

        def prometheus():
            status, body = http("GET", f"http://127.0.0.1:{ports['prometheus']}/metrics")
            lines = [l for l in body.decode().splitlines() if l.startswith("agent_invocations_total")]
            total = sum(float(l.rsplit(" ", 1)[1]) for l in lines)
            return (lines, total) if status == 200 and total > 0 else None
        prom = poll(prometheus)
        check(bool(prom), f"Prometheus: agent_invocations_total in {len(prom[0]) if prom else 0} series, "
                          f"{prom[1] if prom else 0:.0f} invocations")
        if prom:
            for l in prom[0][:5]:
                print("          " + l)

        def emf_events():
            out = []
            try:
                for s in logs.describe_log_streams(logGroupName="/spanwire/demo/metrics")["logStreams"]:
                    r = logs.get_log_events(logGroupName="/spanwire/demo/metrics",
                                            logStreamName=s["logStreamName"], startFromHead=True)
                    out += [json.loads(e["message"]) for e in r["events"]]
            except logs.exceptions.ResourceNotFoundException:
                return None
            return out if any("agent.invocations" in e for e in out) else None
        events = poll(emf_events) or []
        valid = all(
            e["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "SpanwireDemo"
            and all(m["Name"] in e for d in e["_aws"]["CloudWatchMetrics"] for m in d["Metrics"])
            and all(len(ds) <= 30 for d in e["_aws"]["CloudWatchMetrics"] for ds in d["Dimensions"])
            for e in events)
        check(bool(events) and valid,
              f"CloudWatch: {len(events)} EMF events in /spanwire/demo/metrics (namespace SpanwireDemo)")

        def live_sessions():
            status, body = http("GET", live_url + "api/sessions")
            if status != 200:
                return None
            sessions = json.loads(body)["sessions"]
            spans = sum(s["span_count"] for s in sessions)
            return (sessions, spans) if spans >= len(bedrock_docs) + len(otlp_traces) else None
        live = poll(live_sessions)
        page = http("GET", live_url)
        check(bool(live) and page[0] == 200 and b"spanwire" in page[1],
              f"Live: {len(live[0]) if live else 0} agent sessions, {live[1] if live else 0} spans on {live_url}")
        if os.environ.get("DEMO_STAY"):
            print(f"\nstill running: open {live_url} (Ctrl-C to stop)", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        if failures:
            print("\nspanwire's log:", file=sys.stderr)
            try:
                print(open(os.path.join(work, "spanwire.log")).read()[-4000:], file=sys.stderr)
            except OSError:
                pass
        if os.environ.get("DEMO_KEEP"):
            print(f"\noutput kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    if failures:
        print(f"\ndemo FAILED: {len(failures)} check(s) missing", file=sys.stderr)
        return 1
    print("\ndemo passed: every part of the path delivered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
