"""A real Strands Agents agent (strands-agents from PyPI) with two tools,
run under ADOT Python (`opentelemetry-instrument` with
aws-opentelemetry-distro and the botocore instrumentation) against the
local Bedrock Runtime stand-in, as AWS documents for AgentCore
observability. The session id travels as OTel baggage `session.id`.

Usage: strands_agent.py BEDROCK_URL PLAN_JSON

PLAN_JSON: {"agent": name, "model": id, "sessions": [{"id": sid,
"prompts": [text, ...], "model": optional id}]}. A prompt naming
`lookup_weather` makes the model call that tool; `flaky_inventory` is a
tool that always fails; `THROTTLE<n>` throttles the turn's first n model
requests. Prints one JSON line per invocation: session, ok, error.
"""

import json
import sys

from opentelemetry import baggage, context, trace
from strands import Agent, tool
from strands.event_loop._retry import ModelRetryStrategy
from strands.models.bedrock import BedrockModel
from botocore.config import Config as BotocoreConfig


@tool
def lookup_weather(query: str) -> str:
    """Looks up the weather for a place."""
    return f"Sunny in {query[:20]}"


@tool
def flaky_inventory(query: str) -> str:
    """Checks the inventory (always fails: its backend is down)."""
    raise RuntimeError("inventory backend unreachable")


def main():
    url, plan = sys.argv[1], json.loads(sys.argv[2])
    for s in plan["sessions"]:
        model = BedrockModel(
            model_id=s.get("model", plan["model"]),
            endpoint_url=url,
            region_name="us-east-1",
            streaming=s.get("streaming", True),
            # botocore's own retries off: Strands' retry strategy retries throttles.
            boto_client_config=BotocoreConfig(retries={"total_max_attempts": 1}),
        )
        agent = Agent(
            name=plan["agent"],
            model=model,
            tools=[lookup_weather, flaky_inventory],
            system_prompt="You are a travel helper.",
            retry_strategy=ModelRetryStrategy(max_attempts=4, initial_delay=0.05, max_delay=0.2),
            callback_handler=None,
        )
        token = context.attach(baggage.set_baggage("session.id", s["id"]))
        try:
            for p in s["prompts"]:
                try:
                    agent(p)
                    print(json.dumps({"session": s["id"], "ok": True}), flush=True)
                except Exception as e:  # the invocation failed: reported, the run goes on
                    print(json.dumps({"session": s["id"], "ok": False, "error": type(e).__name__}), flush=True)
        finally:
            context.detach(token)
    provider = trace.get_tracer_provider()
    if hasattr(provider, "force_flush"):
        provider.force_flush()


if __name__ == "__main__":
    main()
