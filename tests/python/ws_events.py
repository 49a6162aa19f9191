"""GenAI events from spanwire's live exporter, with Python websockets.

usage: ws_events.py URL N
Prints "subscribed" once connected, then reads until N GenAI events
(`{"type":"events"}` messages) arrived or 20 s passed, and prints each
event record as one JSON line, in arrival order.
"""
import asyncio
import json
import sys

import websockets


async def main():
    url, want = sys.argv[1], int(sys.argv[2])
    events = []
    async with websockets.connect(url, max_size=None) as ws:
        print("subscribed", flush=True)
        try:
            async with asyncio.timeout(20):
                while len(events) < want:
                    ev = json.loads(await ws.recv())
                    if ev["type"] == "events":
                        events.extend(ev["events"])
        except TimeoutError:
            pass
    for e in events:
        print(json.dumps(e), flush=True)


asyncio.run(main())
