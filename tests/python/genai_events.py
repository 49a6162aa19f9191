"""An agent turn with the OpenTelemetry Python SDK: an `invoke_agent` span
with a `chat` span under it, and the GenAI events of the turn
(`gen_ai.user.message`, `gen_ai.choice`) emitted as OTLP log records in the
chat span's context, all over OTLP/HTTP.

usage: genai_events.py ENDPOINT SESSION
Prints one JSON object: the trace id, the chat span id and the event names
in the order they were emitted.
"""
import json
import sys

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

endpoint, session = sys.argv[1], sys.argv[2]
resource = Resource.create({"service.name": "events-agent", "session.id": session})
tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint + "/v1/traces")))
logger_provider = LoggerProvider(resource=resource)
logger_provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=endpoint + "/v1/logs")))
tracer = tracer_provider.get_tracer("genai-agent")
logger = logger_provider.get_logger("genai-agent")

emitted = []
with tracer.start_as_current_span("invoke_agent travel", attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "travel"}):
    with tracer.start_as_current_span("chat claude", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "anthropic.claude-3-haiku",
            "gen_ai.usage.input_tokens": 42, "gen_ai.usage.output_tokens": 7}) as chat:
        for name, body in [
            ("gen_ai.user.message", {"content": "Find me a flight to Lisbon"}),
            ("gen_ai.choice", {"index": 0, "finish_reason": "stop",
                               "message": {"content": "<b>TP 1351</b> leaves at 09:40"}}),
        ]:
            logger.emit(event_name=name, body=body, attributes={"gen_ai.system": "aws.bedrock"})
            emitted.append(name)
        ctx = chat.get_span_context()
        out = {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x"),
               "events": emitted}
tracer_provider.shutdown()
logger_provider.shutdown()
print(json.dumps(out), flush=True)
