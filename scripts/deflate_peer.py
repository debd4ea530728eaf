#!/usr/bin/env python3
"""permessage-deflate against a peer that no Rust code wrote: Python `websockets`.

Usage (in a venv with `pip install websockets==16.0`):
    python3 scripts/deflate_peer.py client ws://127.0.0.1:19001/   # our server
    python3 scripts/deflate_peer.py server CLIENT_BINARY [ARGS...]  # our client

`client`: connects to an echo server (ours) once per set of extension parameters
(context takeover or not, windows of 9 and 10 bits both ways), checks that
permessage-deflate was agreed with those parameters, and that every message comes
back intact: chat-like JSON, large text, binary that does not compress, empty
messages, and messages websockets fragments.

`server`: serves Autobahn's client protocol (/getCaseCount, /runCase, /updateReports)
with websockets, once per set of server-side parameters, each on its own port, and
runs CLIENT_BINARY HOST:PORT [ARGS...] (ours: autobahn_client, autobahn_client_tokio)
against it: every case sends messages that the client must echo, compressed.

Prints one line per check and ends with `N passed, M failed`; exits 1 on failure.
"""

import asyncio
import json
import random
import subprocess
import sys

try:
    import websockets
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve
    from websockets.extensions.permessage_deflate import (
        ClientPerMessageDeflateFactory,
        PerMessageDeflate,
        ServerPerMessageDeflateFactory,
    )
except ImportError:
    sys.exit("websockets is missing: python3 -m venv target/ci-venv && target/ci-venv/bin/pip install websockets==16.0")

passed = 0
failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok    {what}")
    else:
        failed += 1
        print(f"FAIL  {what}")


def messages():
    rng = random.Random(7692)
    chat = [
        json.dumps({"v": 1, "e": "chat.message", "p": {"room": "lobby", "from": f"user-{i % 5}", "text": f"hello {i}"}, "s": i})
        for i in range(200)
    ]
    words = ["tether", "deflate", "window", "context", "frame", "ünïcødé", "日本語", "🙂"]
    big_text = " ".join(rng.choice(words) for _ in range(60000))
    noise = rng.randbytes(200_000)
    out = chat + ["", "x", big_text, big_text[:70000], noise, noise[:131072], b"", bytes(300_000)]
    # Sliding windows over the text, as Autobahn's case 12 does.
    for i in range(20):
        start = i * 9973 % len(big_text)
        out.append((big_text[start:] + big_text[:start])[:4096 * (i + 1)])
    return out


CLIENT_PARAMS = [
    ("defaults (context takeover both ways)", dict()),
    ("no context takeover both ways", dict(server_no_context_takeover=True, client_no_context_takeover=True)),
    ("server_max_window_bits=9", dict(server_max_window_bits=9)),
    ("client_max_window_bits=10", dict(client_max_window_bits=10)),
    ("both windows 9, no context takeover", dict(server_max_window_bits=9, client_max_window_bits=9, server_no_context_takeover=True)),
]


def agreed(ws):
    return [e for e in ws.protocol.extensions if isinstance(e, PerMessageDeflate)]


async def as_client(url):
    for label, params in CLIENT_PARAMS:
        factory = ClientPerMessageDeflateFactory(**params)
        try:
            async with connect(url, extensions=[factory], compression=None, max_size=2**24) as ws:
                pmd = agreed(ws)
                check(len(pmd) == 1, f"{label}: permessage-deflate agreed ({ws.response.headers.get('Sec-WebSocket-Extensions')})")
                if params.get("server_max_window_bits") and pmd:
                    check(pmd[0].remote_max_window_bits == params["server_max_window_bits"], f"{label}: server window agreed")
                bad = 0
                msgs = messages()
                for i, msg in enumerate(msgs):
                    if i % 7 == 3 and len(msg) > 1000:
                        # Fragmented by websockets: an iterable of pieces.
                        await ws.send([msg[j:j + 1000] for j in range(0, len(msg), 1000)])
                    else:
                        await ws.send(msg)
                    echo = await asyncio.wait_for(ws.recv(), 10)
                    if echo != msg:
                        bad += 1
                        print(f"      message {i} of {len(msg)} came back as {len(echo)}")
                check(bad == 0, f"{label}: {len(msgs)} messages echoed intact")
        except Exception as err:  # noqa: BLE001
            check(False, f"{label}: {err!r}")


SERVER_PARAMS = [
    ("defaults", dict()),
    ("no context takeover both ways", dict(server_no_context_takeover=True, client_no_context_takeover=True)),
    ("client_max_window_bits=9 (our client sends stored blocks: no back-reference reaches past 512 bytes)", dict(client_max_window_bits=9)),
    ("server_max_window_bits=10", dict(server_max_window_bits=10)),
]


async def as_server(client_cmd):
    msgs = messages()
    for n, (label, params) in enumerate(SERVER_PARAMS):
        outcome = {"cases": 0, "bad": 0, "agreed": 0}

        async def handler(ws):
            path = ws.request.path
            if path.startswith("/getCaseCount"):
                await ws.send(str(len(msgs)))
            elif path.startswith("/runCase"):
                case = int(path.split("case=")[1].split("&")[0]) - 1
                outcome["cases"] += 1
                outcome["agreed"] += bool(agreed(ws))
                msg = msgs[case]
                if case % 5 == 2 and len(msg) > 1000:
                    await ws.send([msg[j:j + 1000] for j in range(0, len(msg), 1000)])
                else:
                    await ws.send(msg)
                echo = await asyncio.wait_for(ws.recv(), 10)
                if echo != msg:
                    outcome["bad"] += 1
                    print(f"      case {case + 1}: {len(msg)} bytes came back as {len(echo)}")
            await ws.close()

        factory = ServerPerMessageDeflateFactory(**params)
        async with serve(handler, "127.0.0.1", 0, extensions=[factory], compression=None, max_size=2**24) as server:
            port = server.sockets[0].getsockname()[1]
            proc = await asyncio.create_subprocess_exec(
                client_cmd[0], f"127.0.0.1:{port}", *client_cmd[1:],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            code = await asyncio.wait_for(proc.wait(), 120)
        check(code == 0, f"{label}: our client exited {code}")
        check(outcome["cases"] == len(msgs), f"{label}: {outcome['cases']} of {len(msgs)} cases run")
        check(outcome["agreed"] == outcome["cases"], f"{label}: permessage-deflate agreed in {outcome['agreed']} cases")
        check(outcome["bad"] == 0, f"{label}: every message echoed intact")


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("client", "server"):
        sys.exit(__doc__)
    if sys.argv[1] == "client":
        asyncio.run(as_client(sys.argv[2]))
    else:
        asyncio.run(as_server(sys.argv[2:]))
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
