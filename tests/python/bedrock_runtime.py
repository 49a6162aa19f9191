"""A local Bedrock Runtime stand-in: the Converse and ConverseStream APIs
(moto has no Bedrock Runtime), with a usage log that is the truth the agent
tests compare spanwire's numbers to.

Usage: bedrock_runtime.py PORT_FILE LOG_FILE

- Binds 127.0.0.1 on a free port and writes it to PORT_FILE.
- Every request is one JSON line in LOG_FILE: model id, status, input and
  output tokens billed (0 for a refused request), the session header and
  what was answered.
- The model: when the conversation's last message is the user's and the
  request offers tools, it asks for the first tool whose name the user's
  text mentions (else answers); after a tool result it answers. Usage is a
  function of the request's size, so every call differs.
- Faults, chosen by the user's text: `THROTTLE<n>` makes the first n
  requests of that conversation turn answer 429 ThrottlingException; a model
  id containing `invalid` answers 400 ValidationException.
"""

import json
import sys
import threading
import binascii
import struct
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

LOCK = threading.Lock()
THROTTLED = {}  # turn key -> throttles answered so far


def usage_of(body):
    text = json.dumps(body.get("messages", []), sort_keys=True)
    system = json.dumps(body.get("system", []), sort_keys=True)
    return 50 + len(text) // 7 + len(system) // 11


def last_user_text(messages):
    for m in reversed(messages):
        if m.get("role") != "user":
            continue
        for c in m.get("content", []):
            if "text" in c:
                return c["text"]
    return ""


def answer(body):
    messages = body.get("messages", [])
    last = messages[-1] if messages else {}
    tools = [t["toolSpec"]["name"] for t in body.get("toolConfig", {}).get("tools", []) if "toolSpec" in t]
    after_tool = any("toolResult" in c for c in last.get("content", []))
    text = last_user_text(messages)
    if not after_tool:
        for name in tools:
            if name in text:
                n = sum(1 for m in messages for c in m.get("content", []) if "toolUse" in c)
                return {
                    "content": [
                        {"text": f"Calling {name}."},
                        {"toolUse": {"toolUseId": f"tooluse_{n}_{name}", "name": name, "input": {"query": text[:40]}}},
                    ],
                    "stop": "tool_use",
                    "output": 17 + len(name),
                }
    reply = f"Done: {text[:30]}" if not after_tool else "The tool says it is done."
    return {"content": [{"text": reply}], "stop": "end_turn", "output": 9 + len(reply) // 3}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    log_path = None

    def log_message(self, *args):
        pass

    def log(self, entry):
        with LOCK, open(self.log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def send(self, code, payload, headers=()):
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        parts = self.path.split("/")
        # /model/{modelId}/converse or /model/{modelId}/converse-stream
        if len(parts) < 4 or parts[1] != "model":
            self.send(404, {"message": "not found"})
            return
        model = unquote(parts[2])
        op = parts[3]
        body = json.loads(raw or b"{}")
        messages = body.get("messages", [])
        text = last_user_text(messages)
        first = ""
        for c in (messages[0].get("content", []) if messages else []):
            if "text" in c:
                first = c["text"]
                break
        # The session a request belongs to: the first word of the
        # conversation's first prompt (the tests start each with it).
        tag = first.split(" ", 1)[0].rstrip(":")
        entry = {"model": model, "op": op, "messages": len(messages), "session": tag}
        if "invalid" in model:
            entry.update(status=400, input=0, output=0)
            self.log(entry)
            self.send(400, {"message": "The provided model identifier is invalid."},
                      [("x-amzn-ErrorType", "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/")])
            return
        want = 0
        for word in text.split():
            if word.startswith("THROTTLE") and word[8:].isdigit():
                want = int(word[8:])
        turn = (text, len(messages))
        with LOCK:
            done = THROTTLED.get(turn, 0)
            throttle = done < want
            if throttle:
                THROTTLED[turn] = done + 1
        if throttle:
            entry.update(status=429, input=0, output=0)
            self.log(entry)
            self.send(429, {"message": "Too many requests, please wait before trying again."},
                      [("x-amzn-ErrorType", "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/")])
            return
        a = answer(body)
        inp = usage_of(body)
        out = a["output"]
        entry.update(status=200, input=inp, output=out, stop=a["stop"])
        self.log(entry)
        usage = {"inputTokens": inp, "outputTokens": out, "totalTokens": inp + out}
        message = {"role": "assistant", "content": a["content"]}
        if op == "converse":
            self.send(200, {
                "output": {"message": message},
                "stopReason": a["stop"],
                "usage": usage,
                "metrics": {"latencyMs": 12},
            })
            return
        self.stream(message, a["stop"], usage)

    def stream(self, message, stop, usage):
        events = [("messageStart", {"role": "assistant"})]
        for i, c in enumerate(message["content"]):
            if "text" in c:
                events.append(("contentBlockDelta", {"contentBlockIndex": i, "delta": {"text": c["text"]}}))
            else:
                tu = c["toolUse"]
                events.append(("contentBlockStart", {"contentBlockIndex": i, "start": {"toolUse": {"toolUseId": tu["toolUseId"], "name": tu["name"]}}}))
                events.append(("contentBlockDelta", {"contentBlockIndex": i, "delta": {"toolUse": {"input": json.dumps(tu["input"])}}}))
            events.append(("contentBlockStop", {"contentBlockIndex": i}))
        events.append(("messageStop", {"stopReason": stop}))
        events.append(("metadata", {"usage": usage, "metrics": {"latencyMs": 12}}))
        data = b"".join(event_message(name, payload) for name, payload in events)
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.amazon.eventstream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def header(name, value):
    n = name.encode()
    v = value.encode()
    return struct.pack("B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v


def event_message(event_type, payload):
    """One message of the AWS event stream encoding (prelude, headers,
    payload, CRC32s), as Bedrock's ConverseStream sends it."""
    headers = (header(":event-type", event_type) + header(":content-type", "application/json")
               + header(":message-type", "event"))
    body = json.dumps(payload).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", binascii.crc32(prelude) & 0xFFFFFFFF)
    msg = prelude + headers + body
    return msg + struct.pack(">I", binascii.crc32(msg) & 0xFFFFFFFF)


def main():
    port_file, log_file = sys.argv[1], sys.argv[2]
    Handler.log_path = log_file
    open(log_file, "w").close()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
