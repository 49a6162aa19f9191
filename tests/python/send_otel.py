"""Sends spans, metrics and logs with the OpenTelemetry Python SDK.

Used by the end-to-end tests: one run exports over OTLP/gRPC, another over
OTLP/HTTP (protobuf). Prints a JSON summary of what it sent.
"""
import argparse
import json
import logging
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.metrics import Observation


def exporters(protocol, endpoint):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        return (OTLPSpanExporter(endpoint=endpoint, insecure=True),
                OTLPMetricExporter(endpoint=endpoint, insecure=True),
                OTLPLogExporter(endpoint=endpoint, insecure=True))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    return (OTLPSpanExporter(endpoint=endpoint + "/v1/traces"),
            OTLPMetricExporter(endpoint=endpoint + "/v1/metrics"),
            OTLPLogExporter(endpoint=endpoint + "/v1/logs"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", choices=["grpc", "http"], required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--spans", type=int, default=10)
    ap.add_argument("--logs", type=int, default=5)
    a = ap.parse_args()

    resource = Resource.create({"service.name": "py-agent-" + a.tag, "deployment.environment": "test"})
    span_exp, metric_exp, log_exp = exporters(a.protocol, a.endpoint)

    tp = TracerProvider(resource=resource)
    tp.add_span_processor(SimpleSpanProcessor(span_exp))
    tracer = tp.get_tracer("spanwire.e2e", "1.0")
    with tracer.start_as_current_span("invoke_agent travel-" + a.tag) as root:
        root.set_attribute("gen_ai.operation.name", "invoke_agent")
        root.set_attribute("gen_ai.agent.name", "travel")
        root.set_attribute("test.tag", a.tag)
        for i in range(a.spans - 1):
            with tracer.start_as_current_span(f"chat {a.tag}-{i}") as s:
                s.set_attribute("gen_ai.operation.name", "chat")
                s.set_attribute("gen_ai.usage.input_tokens", 100 + i)
                s.set_attribute("gen_ai.request.temperature", 0.5)
                s.set_attribute("test.tag", a.tag)
                s.set_attribute("test.index", i)
    tp.shutdown()

    reader = PeriodicExportingMetricReader(metric_exp, export_interval_millis=60000)
    mp = MeterProvider(resource=resource, metric_readers=[reader])
    meter = mp.get_meter("spanwire.e2e")
    meter.create_counter("e2e.requests", unit="1").add(3, {"test.tag": a.tag})
    hist = meter.create_histogram("e2e.latency", unit="ms")
    for v in (5, 50, 500):
        hist.record(v, {"test.tag": a.tag})
    meter.create_up_down_counter("e2e.sessions").add(2, {"test.tag": a.tag})
    meter.create_observable_gauge("e2e.queue", callbacks=[lambda _: [Observation(7, {"test.tag": a.tag})]])
    mp.shutdown()

    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(SimpleLogRecordProcessor(log_exp))
    logger = logging.getLogger("e2e." + a.tag)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(LoggingHandler(level=logging.INFO, logger_provider=lp))
    for i in range(a.logs):
        logger.warning("agent log %s %d", a.tag, i, extra={"test.tag": a.tag})
    lp.shutdown()

    print(json.dumps({"spans": a.spans, "metrics": 4, "logs": a.logs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
