"""Real instrumentation from PyPI calling the local Bedrock Runtime stand-in,
exported with the OpenTelemetry SDK over OTLP/HTTP:

- `openinference`: boto3's bedrock-runtime Converse, instrumented by
  openinference-instrumentation-bedrock (Arize), sessions by OpenInference's
  `using_session`;
- `openllmetry`: the same calls instrumented by opentelemetry-instrumentation-
  bedrock (Traceloop's OpenLLMetry);
- `langchain`: langchain-aws's ChatBedrockConverse, instrumented by
  openinference-instrumentation-langchain and -bedrock together (a LangChain
  LLM span over the Bedrock client's LLM span: one call reported twice).

The application's own request span (`handle <session>`) names the session
(`session.id`) where the instrumentation has no session of its own, as an
application does.

Usage: framework_agents.py MODE BEDROCK_URL OTLP_TRACES_URL PLAN_JSON
PLAN_JSON: {"model": id, "sessions": [{"id": sid, "prompts": [text, ...]}]}
Prints one JSON line per call: session, ok, error.
"""

import json
import sys

import boto3
from botocore.config import Config
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter


def main():
    mode, bedrock_url, otlp, plan = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    provider = TracerProvider(resource=Resource.create({"service.name": f"{mode}-app"}))
    exporter = ConsoleSpanExporter() if otlp == "console" else OTLPSpanExporter(endpoint=otlp)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    trace.set_tracer_provider(provider)
    if mode in ("openinference", "langchain"):
        from openinference.instrumentation.bedrock import BedrockInstrumentor
        BedrockInstrumentor().instrument(tracer_provider=provider)
    if mode == "openllmetry":
        from opentelemetry.instrumentation.bedrock import BedrockInstrumentor as TraceloopBedrock
        TraceloopBedrock().instrument(tracer_provider=provider)
    if mode == "langchain":
        from openinference.instrumentation.langchain import LangChainInstrumentor
        LangChainInstrumentor().instrument(tracer_provider=provider)
    tracer = trace.get_tracer("framework-agents-app")
    client = boto3.client(
        "bedrock-runtime",
        endpoint_url=bedrock_url,
        region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}),
    )
    for s in plan["sessions"]:
        history = []
        for prompt in s["prompts"]:
            with tracer.start_as_current_span(f"handle {s['id']}", attributes={"session.id": s["id"]}):
                try:
                    if mode == "langchain":
                        from langchain_aws import ChatBedrockConverse
                        llm = ChatBedrockConverse(model=plan["model"], client=client, region_name="us-east-1")
                        history.append(("user", prompt))
                        reply = llm.invoke(history)
                        history.append(("assistant", reply.content if isinstance(reply.content, str) else json.dumps(reply.content)))
                    else:
                        call(client, plan["model"], s["id"], prompt, history, mode)
                    print(json.dumps({"session": s["id"], "ok": True}), flush=True)
                except Exception as e:  # a failed call is reported; the run goes on
                    print(json.dumps({"session": s["id"], "ok": False, "error": type(e).__name__}), flush=True)
    provider.force_flush()
    provider.shutdown()


def call(client, model, session, prompt, history, mode):
    history.append({"role": "user", "content": [{"text": prompt}]})
    if mode == "openinference":
        from openinference.instrumentation import using_session
        with using_session(session):
            r = client.converse(modelId=model, messages=history)
    else:
        r = client.converse(modelId=model, messages=history)
    history.append(r["output"]["message"])


if __name__ == "__main__":
    main()
