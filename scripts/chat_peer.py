#!/usr/bin/env python3
"""A chat peer that no Rust code wrote: checks a tether chat server end to end.

Usage:
    pip install websockets          # version 12 or later
    python3 scripts/chat_peer.py ws://127.0.0.1:8080/ws

Speaks tether protocol v1 (docs/PROTOCOL.md) and the chat example's events with the
Python `websockets` library, as two users:

1. alice and bob authenticate (`sys.auth`) and get `sys.session.created`;
2. both join room `lobby` (`chat.join` -> `chat.joined`; alice sees bob joined in a
   `chat.presence {room, joined: [user, ...], left: [...], ...}`: presence comes coalesced,
   the changes of a room within 50 ms in one announcement);
3. they exchange messages both ways: each sees every `chat.message`, in the order
   sent, and on each connection the session stream numbers `s` go up by exactly 1;
4. alice's TCP connection is aborted (no close handshake); bob sends 5 messages;
5. alice resumes on a new connection with `sys.reconnect.request` -> expects
   `sys.session.restored` with a new resume token and `replayed == 5`, and the 5
   missed messages exactly once, in order, with consecutive `s`;
6. alice (still in `lobby`: rooms survive the resume) sends a message, bob gets it;
7. a resume with alice's OLD resume token is refused: `sys.error` 4106 reason
   `used`, then a fresh `sys.session.created`;
8. presence only for real membership changes, as carol (in room `porch`) sees dave:
   dave's `chat.leave` of `porch` before joining it is answered with `sys.error`
   4201 (not in room) and carol is told nothing; dave's join is announced once, his
   repeated join is answered (`chat.joined`) but not announced again; his leave is
   announced once, and a second leave is again a 4201 that nobody hears of. Presence
   is waited for with a marker user who joins and leaves the room: the server
   announces a room's changes in order, so what carol has not heard of by the
   marker's announcements was never announced.
9. bad input is refused with the chat's codes and never echoed: a room name of
   100,000 characters, with a NUL or with a right-to-left override gets `sys.error`
   4203 (`BAD_ROOM`) for `chat.join`, `chat.leave` and `chat.send` alike, with an
   answer of a few hundred bytes; a text with a control character (other than
   newline and tab) gets 4202 (`BAD_TEXT`), one with a newline and a tab is sent.

Every wait has a 5 s timeout. Each check prints a line; the last line is
`N passed, M failed`; the exit status is 1 when anything failed.
"""

import asyncio
import json
import sys
import time
import uuid

try:  # websockets >= 13: the new asyncio implementation
    from websockets.asyncio.client import connect as ws_connect
except ImportError:  # websockets 12: the legacy implementation
    from websockets import connect as ws_connect

from websockets.exceptions import ConnectionClosed

TIMEOUT = 5.0
ROOM = "lobby"
PRESENCE_ROOM = "porch"
NOT_IN_ROOM = 4201
BAD_TEXT = 4202
BAD_ROOM = 4203


class CheckFailed(Exception):
    """A check that later steps depend on failed: stop the scenario."""


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"PASS {name}")
        else:
            self.failed += 1
            print(f"FAIL {name}" + (f": {detail}" if detail else ""))
        sys.stdout.flush()
        return ok

    def require(self, name, ok, detail=""):
        if not self.check(name, ok, detail):
            raise CheckFailed(name)


def envelope(event, payload=None, c=None):
    env = {"v": "1.0", "e": event}
    if payload is not None:
        env["p"] = payload
    if c is not None:
        env["c"] = c
    env["t"] = int(time.time() * 1000)
    return env


class Peer:
    """One WebSocket connection of one user, with a reader that keeps every
    envelope received, answers `sys.ping`, and audits the `s` numbering."""

    def __init__(self, name, url):
        self.name = name
        self.url = url
        self.ws = None
        self.inbox = []  # envelopes not yet taken by a wait
        self.seen = []  # every envelope, in arrival order
        self.last_seq = 0  # highest s seen on this connection
        self.seq_faults = []  # descriptions of duplicates or gaps in s
        self.cond = asyncio.Condition()
        self.reader = None
        self.closed = False

    async def open(self, last_seq=0):
        self.ws = await asyncio.wait_for(ws_connect(self.url, open_timeout=TIMEOUT), TIMEOUT)
        self.last_seq = last_seq
        self.reader = asyncio.create_task(self._read())

    async def _read(self):
        try:
            async for data in self.ws:
                if not isinstance(data, str):
                    continue
                env = json.loads(data)
                if env.get("e") == "sys.ping":
                    await self.send("sys.pong", env.get("p"), env.get("c"))
                s = env.get("s")
                if isinstance(s, int):
                    if s != self.last_seq + 1:
                        kind = "duplicate" if s <= self.last_seq else "gap"
                        self.seq_faults.append(f"{kind}: s={s} after {self.last_seq} ({env.get('e')})")
                    self.last_seq = max(self.last_seq, s)
                async with self.cond:
                    self.seen.append(env)
                    self.inbox.append(env)
                    self.cond.notify_all()
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            async with self.cond:
                self.cond.notify_all()

    async def send(self, event, payload=None, c=None):
        await self.ws.send(json.dumps(envelope(event, payload, c)))

    async def take(self, pred, what, timeout=TIMEOUT):
        """Wait for and remove the first unread envelope matching `pred`."""

        async def find():
            async with self.cond:
                while True:
                    for i, env in enumerate(self.inbox):
                        if pred(env):
                            return self.inbox.pop(i)
                    if self.closed:
                        raise ConnectionError(f"{self.name}: connection closed while waiting for {what}")
                    await self.cond.wait()

        try:
            return await asyncio.wait_for(find(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"{self.name}: no {what} within {timeout:g} s") from None

    def pending(self, pred):
        return [env for env in self.inbox if pred(env)]

    async def request(self, event, payload):
        """Send a request with a fresh correlation id; return the envelope that
        answers it (the reply or a sys.error)."""
        c = uuid.uuid4().hex
        await self.send(event, payload, c)
        return await self.take(lambda env: env.get("c") == c, f"answer to {event}")

    def abort(self):
        """Drop the TCP connection without a WebSocket close handshake."""
        self.ws.transport.abort()

    async def close(self):
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), TIMEOUT)
            except Exception:
                pass
        if self.reader is not None:
            try:
                await asyncio.wait_for(self.reader, TIMEOUT)
            except Exception:
                pass


def is_chat(text_set):
    return lambda env: env.get("e") == "chat.message" and (env.get("p") or {}).get("text") in text_set


async def login(r, name, url):
    peer = Peer(name, url)
    await peer.open()
    await peer.send("sys.auth", {"token": name})
    env = await peer.take(lambda e: e.get("e") in ("sys.session.created", "sys.error"), "sys.session.created")
    p = env.get("p") or {}
    r.require(f"{name}: sys.auth -> sys.session.created", env.get("e") == "sys.session.created", json.dumps(env))
    missing = [k for k in ("sessionId", "userId", "resumeToken", "heartbeatMs", "resumeWindowMs") if k not in p]
    r.check(f"{name}: session payload has sessionId, userId, resumeToken, heartbeatMs, resumeWindowMs",
            not missing, f"missing {missing}")
    r.check(f"{name}: userId is the name", p.get("userId") == name, repr(p.get("userId")))
    peer.session = p
    return peer


async def join(r, peer, others_expected):
    env = await peer.request("chat.join", {"room": ROOM})
    p = env.get("p") or {}
    r.require(f"{peer.name}: chat.join -> chat.joined", env.get("e") == "chat.joined", json.dumps(env))
    members = p.get("members") or []
    want = {peer.name, *others_expected}
    r.check(f"{peer.name}: chat.joined room {ROOM}, members include {sorted(want)}",
            p.get("room") == ROOM and want <= set(members), json.dumps(p))


async def say(r, peer, text):
    env = await peer.request("chat.send", {"room": ROOM, "text": text})
    r.require(f"{peer.name}: chat.send {text!r} -> chat.sent",
              env.get("e") == "chat.sent" and (env.get("p") or {}).get("room") == ROOM, json.dumps(env))


async def receive_texts(peer, texts, what):
    """Take the chat.messages carrying `texts` (as a set) from peer's inbox, in
    arrival order."""
    want = set(texts)
    got = []
    for _ in texts:
        got.append(await peer.take(is_chat(want), what))
    return got


def seq_ok(r, peer, label):
    r.check(f"{peer.name}: {label}: every s on the connection is the previous + 1",
            not peer.seq_faults, "; ".join(peer.seq_faults[:5]))


async def scenario(url, r, peers):
    # 1. authenticate
    alice = await login(r, "alice", url)
    peers.append(alice)
    bob = await login(r, "bob", url)
    peers.append(bob)
    r.check("alice and bob have different sessions",
            alice.session.get("sessionId") != bob.session.get("sessionId"))

    # 2. join the lobby
    await join(r, alice, [])
    await join(r, bob, ["alice"])
    pres = await alice.take(lambda e: presence_entries(e, ROOM, "bob"), "chat.presence for bob")
    r.check("alice: chat.presence {room: lobby, joined: [bob]}",
            presence_entries(pres, ROOM, "bob") == [{"user": "bob", "state": "joined"}]
            and "bob" in pres["p"].get("joined", []),
            json.dumps(pres.get("p")))

    # 3. messages both ways, in order
    sent = [("alice", "hi bob, alice here"), ("bob", "hello alice"),
            ("alice", "how are sessions?"), ("bob", "they outlive connections")]
    by_name = {"alice": alice, "bob": bob}
    for who, text in sent:
        await say(r, by_name[who], text)
        for peer in (alice, bob):
            env = (await receive_texts(peer, [text], f"chat.message {text!r}"))[0]
            p = env.get("p") or {}
            r.check(f"{peer.name}: got {who}'s {text!r} with user, room and a numeric ts",
                    p.get("user") == who and p.get("room") == ROOM and isinstance(p.get("ts"), int)
                    and isinstance(env.get("s"), int), json.dumps(env))
    for peer in (alice, bob):
        order = [(e["p"]["user"], e["p"]["text"]) for e in peer.seen
                 if e.get("e") == "chat.message" and (e.get("p") or {}).get("text") in {t for _, t in sent}]
        r.check(f"{peer.name}: saw all {len(sent)} messages exactly once, in the order sent",
                order == sent, repr(order))
        seq_ok(r, peer, "live exchange")

    # 4. alice drops abruptly; bob talks meanwhile
    old = dict(alice.session)
    alice_last = alice.last_seq
    alice.abort()
    await asyncio.sleep(0.3)  # let the server notice the reset
    missed = [f"missed message {i}" for i in range(1, 6)]
    for text in missed:
        await say(r, bob, text)
    got = await receive_texts(bob, missed, "bob's own message")
    r.check("bob: got his 5 messages while alice was away, in order",
            [e["p"]["text"] for e in got] == missed)

    # 5. alice resumes
    alice2 = Peer("alice", url)
    await alice2.open(last_seq=alice_last)
    peers.append(alice2)
    c = uuid.uuid4().hex
    await alice2.send("sys.reconnect.request", {
        "sessionId": old["sessionId"], "resumeToken": old["resumeToken"],
        "lastSeq": alice_last, "token": "alice"}, c)
    env = await alice2.take(
        lambda e: e.get("e") in ("sys.session.restored", "sys.session.created", "sys.error"),
        "sys.session.restored")
    p = env.get("p") or {}
    r.require("alice: sys.reconnect.request -> sys.session.restored",
              env.get("e") == "sys.session.restored", json.dumps(env))
    r.check("alice: restored the same session", p.get("sessionId", old["sessionId"]) == old["sessionId"],
            json.dumps(p))
    new_token = p.get("resumeToken")
    r.check("alice: restored with a new resume token (rotated)",
            isinstance(new_token, str) and new_token and new_token != old["resumeToken"], json.dumps(p))
    r.check("alice: replayed == 5", p.get("replayed") == 5, json.dumps(p))
    # The replay may come before or after sys.session.restored: the reader kept both.
    replay = await receive_texts(alice2, missed, "replayed chat.message")
    r.check("alice: the 5 missed messages replayed in order",
            [e["p"]["text"] for e in replay] == missed, repr([e["p"]["text"] for e in replay]))
    seqs = [e.get("s") for e in replay]
    r.check(f"alice: replayed s are consecutive from lastSeq+1 = {alice_last + 1}",
            seqs == list(range(alice_last + 1, alice_last + 6)), repr(seqs))
    await asyncio.sleep(0.5)  # give duplicates time to show up
    dups = alice2.pending(is_chat(set(missed)))
    r.check("alice: each missed message delivered exactly once", not dups, f"{len(dups)} extra")
    seq_ok(r, alice2, "after resume")
    await alice2.send("sys.ack", {"seq": alice2.last_seq})

    # 6. rooms survived: alice talks, bob hears
    back = "alice is back"
    await say(r, alice2, back)
    got_b = await receive_texts(bob, [back], "alice's message after resume")
    r.check("bob: got alice's message after her resume", got_b[0]["p"].get("user") == "alice")
    await receive_texts(alice2, [back], "alice's own message after resume")
    r.check("alice: still in lobby after resume (got her own message)", True)
    seq_ok(r, bob, "whole run")

    # 7. the old token is used up
    thief = Peer("alice(old token)", url)
    await thief.open()
    peers.append(thief)
    c = uuid.uuid4().hex
    await thief.send("sys.reconnect.request", {
        "sessionId": old["sessionId"], "resumeToken": old["resumeToken"],
        "lastSeq": alice_last, "token": "alice"}, c)
    err = await thief.take(lambda e: e.get("e") in ("sys.error", "sys.session.restored"),
                           "sys.error 4106")
    ep = err.get("p") or {}
    r.check("old token: refused with sys.error 4106 reason 'used'",
            err.get("e") == "sys.error" and ep.get("code") == 4106 and ep.get("reason") == "used",
            json.dumps(err))
    r.check("old token: the sys.error echoes the request's c", err.get("c") == c, json.dumps(err))
    fresh = await thief.take(lambda e: e.get("e") == "sys.session.created", "a fresh sys.session.created")
    fp = fresh.get("p") or {}
    r.check("old token: a fresh session follows (new sessionId, new token)",
            fp.get("sessionId") not in (None, old["sessionId"])
            and fp.get("resumeToken") not in (None, old["resumeToken"], new_token), json.dumps(fp))


def presence_entries(env, room, user):
    """The entries about `user` of `env` as `{user, state}` when it is a chat.presence
    of `room` (`{room, joined: [user, ...], left: [...], away: [...], online: [...]}`,
    empty lists left out), else []."""
    p = env.get("p") or {}
    if env.get("e") != "chat.presence" or p.get("room") != room:
        return []
    return [{"user": u, "state": state}
            for state in ("joined", "left", "away", "online")
            for u in p.get(state) or [] if u == user]


def presence_of(peer, user):
    """The `state` of every presence entry about `user` in PRESENCE_ROOM that `peer`
    has received so far, in order."""
    return [c.get("state") for e in peer.seen for c in presence_entries(e, PRESENCE_ROOM, user)]


async def presence_barrier(watcher, marker, r, label):
    """`marker` joins PRESENCE_ROOM and leaves it again, and `watcher` hears both: the
    server announces a room's changes in order (a batch in one announcement), so every
    presence of the room made before is then in watcher's inbox."""
    for event, state in (("chat.join", "joined"), ("chat.leave", "left")):
        env = await marker.request(event, {"room": PRESENCE_ROOM})
        r.require(f"{marker.name}: {event} {PRESENCE_ROOM} ({label})",
                  env.get("e") in ("chat.joined", "chat.left"), json.dumps(env))
        await watcher.take(
            lambda e: {"user": marker.name, "state": state} in presence_entries(e, PRESENCE_ROOM, marker.name),
            f"{label}: presence {state} of {marker.name}")


async def presence_scenario(url, r, peers):
    """Step 8: presence is announced for membership changes only."""
    carol = await login(r, "carol", url)
    peers.append(carol)
    dave = await login(r, "dave", url)
    peers.append(dave)
    marker = await login(r, "marker", url)
    peers.append(marker)
    env = await carol.request("chat.join", {"room": PRESENCE_ROOM})
    r.require(f"carol: chat.join {PRESENCE_ROOM} -> chat.joined", env.get("e") == "chat.joined", json.dumps(env))

    async def leave_not_member(label):
        env = await dave.request("chat.leave", {"room": PRESENCE_ROOM})
        p = env.get("p") or {}
        r.check(f"dave: chat.leave of {PRESENCE_ROOM} {label} -> sys.error {NOT_IN_ROOM} (not in room)",
                env.get("e") == "sys.error" and p.get("code") == NOT_IN_ROOM, json.dumps(env))

    await leave_not_member("before joining it")
    await presence_barrier(carol, marker, r, "after dave's leave of a room he is not in")
    r.check("carol: no presence for dave's leave of a room he was not in",
            presence_of(carol, "dave") == [], repr(presence_of(carol, "dave")))

    # Each check looks at the presences since its own step, so that one fault does
    # not hide or fake another.
    before = len(presence_of(carol, "dave"))
    for label in ("join", "repeated join"):
        env = await dave.request("chat.join", {"room": PRESENCE_ROOM})
        members = (env.get("p") or {}).get("members") or []
        r.check(f"dave: {label} of {PRESENCE_ROOM} -> chat.joined with carol and dave",
                env.get("e") == "chat.joined" and {"carol", "dave"} <= set(members), json.dumps(env))
    await presence_barrier(carol, marker, r, "after dave's two joins")
    joins = presence_of(carol, "dave")[before:]
    r.check("carol: exactly one presence {state: joined} for dave's join and repeated join",
            joins == ["joined"], repr(joins))

    before = len(presence_of(carol, "dave"))

    env = await dave.request("chat.leave", {"room": PRESENCE_ROOM})
    r.check(f"dave: chat.leave of {PRESENCE_ROOM} -> chat.left",
            env.get("e") == "chat.left" and (env.get("p") or {}).get("room") == PRESENCE_ROOM,
            json.dumps(env))
    await leave_not_member("a second time")
    await presence_barrier(carol, marker, r, "after dave's two leaves")
    leaves = presence_of(carol, "dave")[before:]
    r.check("carol: exactly one presence {state: left} for dave's leave and second leave",
            leaves == ["left"], repr(leaves))


async def input_scenario(url, r, peers):
    """Step 9: bad room names and texts get the chat's codes, and are not echoed."""
    erin = await login(r, "erin", url)
    peers.append(erin)
    env = await erin.request("chat.join", {"room": ROOM})
    r.require(f"erin: chat.join {ROOM} -> chat.joined", env.get("e") == "chat.joined", json.dumps(env))
    bad_rooms = {"100,000 characters": "r" * 100_000, "a NUL": "lob\u0000by", "a right-to-left override": "lob\u202eby"}
    for label, room in bad_rooms.items():
        for event, payload in (("chat.join", {"room": room}), ("chat.leave", {"room": room}),
                               ("chat.send", {"room": room, "text": "hi"})):
            env = await erin.request(event, payload)
            size = len(json.dumps(env))
            r.check(f"erin: {event} with a room name of {label} -> sys.error {BAD_ROOM}, not echoed",
                    env.get("e") == "sys.error" and (env.get("p") or {}).get("code") == BAD_ROOM and size < 500,
                    f"{size} bytes: {json.dumps(env)[:200]}")
    for label, text in (("a bell", "ding\u0007"), ("an escape", "\u001b[31mred"), ("a NUL", "a\u0000b")):
        env = await erin.request("chat.send", {"room": ROOM, "text": text})
        r.check(f"erin: chat.send of a text with {label} -> sys.error {BAD_TEXT}",
                env.get("e") == "sys.error" and (env.get("p") or {}).get("code") == BAD_TEXT, json.dumps(env))
    env = await erin.request("chat.send", {"room": ROOM, "text": "two\nlines\tand a tab"})
    r.check("erin: chat.send of a text with a newline and a tab -> chat.sent",
            env.get("e") == "chat.sent", json.dumps(env))


async def run(name, steps, url, r):
    """Runs one scenario's `steps(url, r, peers)`: a failed required check or a lost
    connection ends it (the rest depends on it), and its peers are closed either way."""
    peers = []
    try:
        await steps(url, r, peers)
    except CheckFailed:
        print("stopping: a later step depends on the failed check")
    except (TimeoutError, ConnectionError, OSError, ConnectionClosed) as e:
        r.check(f"{name} ran to the end", False, f"{type(e).__name__}: {e}")
    finally:
        for peer in peers:
            await peer.close()


def main():
    if len(sys.argv) != 2 or not sys.argv[1].startswith(("ws://", "wss://")):
        print(f"usage: {sys.argv[0]} ws://HOST:PORT/ws", file=sys.stderr)
        return 2
    r = Report()
    asyncio.run(run("scenario", scenario, sys.argv[1], r))
    asyncio.run(run("presence scenario", presence_scenario, sys.argv[1], r))
    asyncio.run(run("input scenario", input_scenario, sys.argv[1], r))
    print(f"{r.passed} passed, {r.failed} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
