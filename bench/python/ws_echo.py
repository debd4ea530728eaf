"""A plain WebSocket echo server on Python's `websockets` (asyncio, no compression):
a peer of tether-bench.

python ws_echo.py PORT
"""

import asyncio
import sys

from websockets.asyncio.server import serve


async def echo(connection):
    async for message in connection:
        await connection.send(message)


async def main(port):
    async with serve(echo, "127.0.0.1", port, compression=None, ping_interval=None):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 9108))
