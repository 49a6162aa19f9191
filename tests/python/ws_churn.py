"""Opens and closes N WebSocket subscriptions to spanwire's live exporter
with Python websockets, C at a time, then prints how many succeeded.

usage: ws_churn.py URL N C
"""
import asyncio
import sys

import websockets


async def main():
    url, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ok = 0
    sem = asyncio.Semaphore(c)

    async def one():
        nonlocal ok
        async with sem:
            async with websockets.connect(url, open_timeout=10):
                ok += 1

    await asyncio.gather(*(one() for _ in range(n)))
    print(ok, flush=True)


asyncio.run(main())
