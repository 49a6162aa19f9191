"""A WebSocket subscriber of spanwire's live exporter, with Python websockets.

usage: ws_client.py URL SPANS [TOKEN]
Prints "subscribed" once connected, then reads events until SPANS spans
and the summary counting them arrived (or 20 s passed), and prints one JSON
object: the span ids in arrival
order, the event types seen, and the last summary.
"""
import asyncio
import json
import sys

import websockets


async def main():
    url, want = sys.argv[1], int(sys.argv[2])
    headers = {"Authorization": f"Bearer {sys.argv[3]}"} if len(sys.argv) > 3 else None
    ids, types, summary = [], [], None
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        print("subscribed", flush=True)
        try:
            async with asyncio.timeout(20):
                # The summary follows its spans: wait for the one that counts them all.
                while len(ids) < want or not summary or summary["span_count"] < want:
                    ev = json.loads(await ws.recv())
                    types.append(ev["type"])
                    if ev["type"] == "spans":
                        ids.extend(s["span_id"] for s in ev["spans"])
                    elif ev["type"] == "summary":
                        summary = ev
        except TimeoutError:
            pass
    print(json.dumps({"span_ids": ids, "types": sorted(set(types)), "summary": summary}), flush=True)


asyncio.run(main())
